"""3D-LMNet (Mandikal et al., BMVC 2018) and its improved variants (DGCNN point encoder,
DINOv2 image encoder), with a procedural ShapeNet-like data set, training and evaluation.

Entry points for the app: :func:`core.models.lmnet.method.run_on_image` (an uploaded image ->
``[2048,3]`` points), :func:`training_curves` / :func:`read_training_log` (the shipped runs' CSV
logs). The model class (``LMNet``, torch) is imported on first use, so the command line and the
pages that only read logs do not load torch.
"""
from .config import LMNetConfig, shipped_config, tiny_config
from .inference import (build_model, predict, preprocess, read_training_log, shipped_dir,
                        shipped_evaluation, training_curves)

__all__ = ["LMNet", "LMNetConfig", "shipped_config", "tiny_config", "build_model", "predict", "preprocess",
           "read_training_log", "shipped_dir", "shipped_evaluation", "training_curves"]


def __getattr__(name: str):
    if name == "LMNet":
        from .modeling import LMNet

        return LMNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
