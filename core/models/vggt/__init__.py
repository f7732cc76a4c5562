"""VGGT (Visual Geometry Grounded Transformer), implemented for ReconBench.

``from core.models.vggt import VGGT, VGGTConfig``; parameter names load the published
``facebook/VGGT-1B`` / ``facebook/VGGT-1B-Commercial`` checkpoints (the track head only with
``with_track_head=True``, see :mod:`.checkpoints`; tracking: :mod:`.track_head`, :mod:`.tracker`). The method wrapper is :mod:`.method` (imported separately, it pulls in
the registry), the benchmark :mod:`.bench`.
"""
from .attention import AttentionCapture, attention_rollout, token_index
from .config import VGGTConfig
from .flops import vggt_flops
from .modeling_vggt import VGGT, VGGTOutput
from .pose_encoding import extrinsics_intrinsics_to_pose_encoding, pose_encoding_to_extrinsics_intrinsics
from .processing import ImageTransform, confidence_keep, point_cloud, preprocess_images
from .track_head import MAX_QUERY_POINTS, TrackHead, check_query_points
from .tracker import TrackCapture, TrackInputError

__all__ = ["VGGT", "VGGTConfig", "VGGTOutput", "AttentionCapture", "attention_rollout", "token_index",
           "pose_encoding_to_extrinsics_intrinsics", "extrinsics_intrinsics_to_pose_encoding",
           "vggt_flops", "ImageTransform", "preprocess_images",
           "point_cloud", "confidence_keep", "TrackHead", "TrackCapture", "TrackInputError",
           "check_query_points", "MAX_QUERY_POINTS"]
