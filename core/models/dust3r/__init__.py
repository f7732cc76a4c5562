"""DUSt3R (Wang et al., CVPR 2024): pairwise pointmaps from a CroCo ViT, fused by global alignment.

``from core.models.dust3r import DUSt3R, DUSt3RConfig``; the method runner is
``core.models.dust3r.method`` and global alignment ``core.models.dust3r.global_alignment``.
"""
from .config import CHECKPOINT, DUSt3RConfig
from .modeling_dust3r import DUSt3R, DUSt3RView1Output, DUSt3RView2Output

__all__ = ["DUSt3R", "DUSt3RConfig", "DUSt3RView1Output", "DUSt3RView2Output", "CHECKPOINT"]
