"""CroCo building blocks shared by DUSt3R and Fast3R: ViT layers with 2-D RoPE, DPT head,
image preparation and small pointmap geometry."""
from .dpt import DPTHead, LinearHead, activate_pointmap, add_tied_aliases, tied_aliases
from .layers import Block, CroCoEncoder, DecoderBlock, PatchEmbed
from .rope import RoPE2D, patch_positions

__all__ = ["Block", "CroCoEncoder", "DecoderBlock", "PatchEmbed", "RoPE2D", "patch_positions",
           "DPTHead", "LinearHead", "activate_pointmap", "add_tied_aliases", "tied_aliases"]
