"""Fast3R (Yang et al., CVPR 2025): many views in one forward pass through a fusion transformer.

``from core.models.fast3r import Fast3R, Fast3RConfig``; the method runner is
``core.models.fast3r.method``, camera estimation ``core.models.fast3r.poses``.
"""
from .alignment import align_local_to_global
from .config import CHECKPOINT, Fast3RConfig
from .modeling_fast3r import Fast3R, Fast3ROutput, Fast3RViewOutput, default_image_idx, sincos_table

__all__ = ["Fast3R", "Fast3RConfig", "Fast3ROutput", "Fast3RViewOutput", "CHECKPOINT",
           "align_local_to_global", "default_image_idx", "sincos_table"]
