"""Running a trained 3D-LMNet on a photo: preprocessing, loading, the Generative page's helpers.

The output cloud lives in the model's object-centred canonical frame (the training shapes'
frame: y up, front towards +z, unit box), not in any camera's frame.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import OptionError, UserError
from core.models import weights

from .config import VARIANTS, LMNetConfig, tiny_config
from .data import composite_on_white

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
SHIPPED_DIR = REPO_ROOT / "checkpoints" / "lmnet"
RENDER_SIZE = 137        # the training renderings' side
OBJECT_FILL = 0.77       # object bbox longest side / RENDER_SIZE: mean over the training renders (0.58-0.95)
WHITE_THRESHOLD = 235    # a pixel with every channel above this counts as background


class LMNetInputError(UserError):
    """A picture 3D-LMNet cannot use: not an image, the wrong shape or dtype, or no object in it."""


def shipped_dir(variant: str) -> Path:
    """Folder of the checkpoint trained here for ``variant`` (model.safetensors, config.json, train_log.csv)."""
    if variant not in VARIANTS:
        raise OptionError(f"unknown 3D-LMNet variant {variant!r}; choose {' or '.join(VARIANTS)}")
    return SHIPPED_DIR / variant


def as_image_array(image) -> np.ndarray:
    """An upload (``np.ndarray``, PIL image or encoded bytes) as ``uint8 [H,W,3|4]``.

    Raises :class:`LMNetInputError` with a one-line message for anything that is not an image.
    """
    if isinstance(image, (bytes, bytearray, io.BytesIO)):
        try:
            with Image.open(io.BytesIO(image) if not isinstance(image, io.BytesIO) else image) as pil:
                pil.load()
                image = np.asarray(pil.convert("RGBA") if pil.mode in ("RGBA", "LA", "P") else pil.convert("RGB"))
        except Exception:
            raise LMNetInputError("the upload is not an image (could not decode it as PNG/JPEG/...)") from None
    elif isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise LMNetInputError(f"expected an image array, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 8:
        raise LMNetInputError(f"expected an image of shape HxWx3 or HxWx4 (at least 8x8), got {list(image.shape)}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1:
            image = np.round(image * 255).astype(np.uint8)
        else:
            raise LMNetInputError(f"expected uint8 pixels (or floats in [0,1]), got {image.dtype}")
    return image


def object_mask(image: np.ndarray) -> np.ndarray:
    """``bool [H,W]``: alpha > 127 for RGBA, else pixels that are not near-white."""
    if image.shape[2] == 4:
        return image[..., 3] > 127
    return (image[..., :3] < WHITE_THRESHOLD).any(axis=2)


def preprocess(image, mask: np.ndarray | None = None, image_size: int = 128) -> np.ndarray:
    """A photo -> the network's input ``float32 [3,S,S]`` in [0,1], like the training renders.

    The object (``mask``, else alpha, else non-white pixels) is put on white, cropped to a
    square around its bounding box so that it fills ``OBJECT_FILL`` of a 137x137 frame,
    resized to 137 and centre-cropped to 128 (then resized to ``image_size`` if different).
    Raises :class:`LMNetInputError` when there is no object.
    """
    image = as_image_array(image)
    if mask is None:
        mask = object_mask(image)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise LMNetInputError(f"mask shape {list(mask.shape)} does not match the image {list(image.shape[:2])}")
    if mask.sum() < 16:
        raise LMNetInputError("no object found in the image (it is empty or all white; "
                         "give an object on a white background or an object mask)")
    rgb = composite_on_white(image)
    rgb = np.where(mask[..., None], rgb, 255).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / OBJECT_FILL
    half = side / 2
    box = (cx - half, cy - half, cx + half, cy + half)
    framed = Image.fromarray(rgb).transform((RENDER_SIZE, RENDER_SIZE), Image.EXTENT, box,
                                            resample=Image.BILINEAR, fillcolor=(255, 255, 255))
    from .data import crop_to_tensor_array

    return crop_to_tensor_array(np.asarray(framed), 128, None, image_size)


def load_run(folder: Path | str, expect_variant: str | None = None):
    """An ``LMNet`` from ``folder`` (``config.json`` + ``model.safetensors``), in eval mode.

    Raises MissingWeights when the files are absent and BadCheckpoint (naming tensors) when the
    weights do not fit the configuration or ``expect_variant``.
    """
    folder = Path(folder)
    if folder.is_file():
        folder, path = folder.parent, folder
    else:
        path = folder / "model.safetensors"
    if not path.is_file() or not (folder / "config.json").is_file():
        raise weights.MissingWeights(f"no 3D-LMNet checkpoint in {folder} (needs model.safetensors and config.json)")
    config = LMNetConfig.from_dict(json.loads((folder / "config.json").read_text()))
    return load_model(config, path, expect_variant)


def load_model(config: LMNetConfig, path: Path | str, expect_variant: str | None = None):
    """Build ``config``'s model and load ``path`` (checked by :func:`weights.check_state_dict`)."""
    from .modeling import LMNet

    if expect_variant is not None and expect_variant != config.variant:
        config = LMNetConfig.from_dict({**config.to_dict(),
                                        "point_encoder": "pointnet" if expect_variant == "original" else "dgcnn"})
    model = LMNet(config)
    state = weights.load_state_dict(path)
    weights.check_state_dict(model, state)
    model.load_state_dict(state)
    return model.eval()


def random_tiny_model(variant: str = "original", seed: int = 0):
    """The tiny configuration with seeded random weights (tests, demos; meaningless geometry)."""
    import torch

    from .modeling import LMNet

    torch.manual_seed(seed)
    return LMNet(tiny_config(variant)).eval()


def build_model(variant: str, weights_kind: str = "shipped", checkpoint_path: str = ""):
    """A new model: ``shipped`` (checkpoints/lmnet/<variant>, or ``checkpoint_path``) or
    ``random-tiny``. Callers that keep models warm go through the runner's model cache."""
    if weights_kind == "random-tiny":
        return random_tiny_model(variant)
    if weights_kind != "shipped":
        raise OptionError(f"unknown weights {weights_kind!r} (shipped or random-tiny)")
    if checkpoint_path:
        path = Path(checkpoint_path).expanduser()
        if not path.exists():
            raise weights.MissingWeights(f"checkpoint file {path} does not exist")
        folder = path if path.is_dir() else path.parent
        file = path if path.is_file() else folder / "model.safetensors"
        config_file = folder / "config.json"  # else: the shipped architecture of the variant
        if not config_file.is_file():
            config_file = shipped_dir(variant) / "config.json"
        config = LMNetConfig.from_dict(json.loads(config_file.read_text()))
        return load_model(config, file, variant)
    return load_run(shipped_dir(variant), variant)


def predict(model, image, mask: np.ndarray | None = None) -> np.ndarray:
    """``float32 [num_points,3]`` cloud (canonical object frame) for one photo (array/PIL/bytes),
    computed on the device the model's weights are on."""
    import torch

    device = next(model.parameters()).device
    x = torch.from_numpy(preprocess(image, mask, model.config.image_size))[None].to(device)
    with torch.no_grad():
        return model(x)[0].cpu().numpy().astype(np.float32)


def read_training_log(path: Path | str) -> dict[str, list]:
    """Columns of a ``train_log.csv`` as lists: ``stage`` (str), ``step`` (int), ``loss``,
    ``val_loss``, ``val_chamfer``, ``lr``, ``seconds`` (float, NaN where empty)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training log {path}")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    out: dict[str, list] = {"stage": [r["stage"] for r in rows], "step": [int(r["step"]) for r in rows]}
    for key in ("loss", "val_loss", "val_chamfer", "lr", "seconds"):
        out[key] = [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]
    return out


def training_curves(variant: str) -> dict[str, list]:
    """:func:`read_training_log` of the shipped checkpoint of ``variant``."""
    return read_training_log(shipped_dir(variant) / "train_log.csv")


def shipped_evaluation() -> dict:
    """The test-split scores of the shipped checkpoints (``checkpoints/lmnet/evaluation.json``:
    ``overall`` / ``per_category`` -> model -> {chamfer, emd, fscore}, and the ``protocol``)."""
    path = SHIPPED_DIR / "evaluation.json"
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation file {path}")
    return json.loads(path.read_text())
