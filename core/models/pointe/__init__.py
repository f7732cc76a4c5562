"""Point-E (Nichol et al. 2022) image -> coloured point cloud, implemented for ReconBench.

Exports the pipeline (:class:`PointE`, :class:`PointEConfig`), the two diffusion transformers
with the published checkpoints' parameter names, the CLIP conditioning helpers, the Gaussian
diffusion constants and the Karras Heun sampler.
"""
from .clip_conditioning import CLIPGridOutput, CLIPImageGrid, openai_clip_to_transformers, preprocess
from .config import PointDiffusionTransformerConfig, PointEConfig
from .diffusion import GaussianDiffusion
from .modeling_pointe import (MULTIVIEW_MODES, PointE, PointEOutput, build_random, combine_views,
                              samples_to_points)
from .modeling_transformer import (CLIPImageGridPointDiffusionTransformer,
                                   CLIPImageGridUpsamplePointDiffusionTransformer)
from .sampler import GuidedDenoiser, NoiseSource, heun_step, karras_sigmas, sample_stage

__all__ = [
    "PointE", "PointEOutput", "PointEConfig", "PointDiffusionTransformerConfig",
    "CLIPImageGridPointDiffusionTransformer", "CLIPImageGridUpsamplePointDiffusionTransformer",
    "CLIPImageGrid", "CLIPGridOutput", "preprocess", "openai_clip_to_transformers", "GaussianDiffusion",
    "GuidedDenoiser", "NoiseSource", "heun_step", "karras_sigmas", "sample_stage",
    "MULTIVIEW_MODES", "combine_views", "samples_to_points", "build_random",
]
