"""Tiny random configurations of the three stages (tests and offline demos).

The models are the real classes (transformers Grounding DINO and Depth Anything, the
``segment_anything`` package's SAM) with small sizes and seeded random weights, so every code
path runs in well under a second on a CPU; their outputs are meaningless.
"""
from __future__ import annotations

import string
import tempfile
from pathlib import Path

import torch

TINY_WORDS = ("a", "an", "the", "toy", "object", "rabbit", "bunny", "plush", "doll", "cup", "chair", "car",
              "miffy", "white", "red", "blue", "nothing", "and", "of")


def tiny_vocabulary() -> list[str]:
    """A WordPiece vocabulary covering any lower-case ASCII prompt (letters, digits, punctuation)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits) + list(".,;:!?'\"-()")
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    return specials + chars + pieces + [w for w in TINY_WORDS if w not in chars]


def write_vocabulary(path: Path, vocabulary: list[str] | None = None) -> Path:
    """Write a WordPiece ``vocab.txt`` (one token a line) and return its path."""
    path = Path(path)
    path.write_text("\n".join(vocabulary or tiny_vocabulary()) + "\n")
    return path


def tokenizer_from_vocab_file(path: Path):
    """A ``BertTokenizerFast`` (lower-casing WordPiece) over the tokens of a ``vocab.txt``."""
    from transformers import BertTokenizerFast

    tokens = [line.rstrip("\n") for line in Path(path).read_text().splitlines() if line.strip()]
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)


def tiny_tokenizer(vocabulary: list[str] | None = None):
    """A ``BertTokenizerFast`` built from a small vocabulary written to a temporary file."""
    with tempfile.TemporaryDirectory() as folder:
        return tokenizer_from_vocab_file(write_vocabulary(Path(folder) / "vocab.txt", vocabulary))


def tiny_grounding_dino_config(vocab_size: int):
    """GroundingDinoConfig with a 2-stage Swin, a 1-layer BERT, d_model 32 and 2 decoder layers."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(image_size=128, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                          num_heads=[1, 1, 2, 2], window_size=4, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=37, max_position_embeddings=64)
    return GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, num_queries=20,
                               encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                               encoder_attention_heads=2, decoder_attention_heads=2, num_feature_levels=4,
                               encoder_n_points=2, decoder_n_points=2, max_text_len=32)


def tiny_grounding_dino_processor(tokenizer=None):
    """GroundingDinoProcessor resizing to a 128-pixel short side (the model's minimum)."""
    from transformers import GroundingDinoImageProcessor, GroundingDinoProcessor

    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 224})
    return GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer or tiny_tokenizer())


def tiny_depth_anything_config():
    """DepthAnythingConfig with a 4-layer DINOv2 of width 32 (patch 14)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, out_indices=[1, 2, 3, 4], reshape_hidden_states=False,
                            apply_layernorm=True)
    return DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
                               neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
                               depth_estimation_type="relative")


def tiny_depth_processor():
    """DPTImageProcessor as Depth Anything's, at 56 pixels (multiples of 14, aspect kept)."""
    from transformers import DPTImageProcessor

    return DPTImageProcessor(do_resize=True, size={"height": 56, "width": 56}, keep_aspect_ratio=True,
                             ensure_multiple_of=14, resample=3, do_rescale=True, do_normalize=True,
                             image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_pad=False)


def tiny_sam(seed: int = 0):
    """A SAM with a 128-pixel, 2-block ViT image encoder (width 32) and a 32-wide mask decoder.

    Built from ``segment_anything.modeling``'s own classes, like ``build_sam_vit_b`` at small size.
    """
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    img_size, patch, dim = 128, 16, 32
    encoder = ImageEncoderViT(img_size=img_size, patch_size=patch, embed_dim=dim, depth=2, num_heads=2, mlp_ratio=2.0,
                              out_chans=dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                              use_rel_pos=True, window_size=4, global_attn_indexes=(1,))
    prompt = PromptEncoder(embed_dim=dim, image_embedding_size=(img_size // patch, img_size // patch),
                           input_image_size=(img_size, img_size), mask_in_chans=8)
    decoder = MaskDecoder(num_multimask_outputs=3,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2),
                          transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32)
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder).eval()


def calibrate_tiny_depth_head(model, seed: int = 0) -> None:
    """Scale the random depth head so its relative inverse depth is ~1 +- 0.2 (not all ReLU zeros).

    Random DINOv2 features are ~1e-6 in size; the last 1x1 convolution is rescaled on a seeded
    noise input so its output has a standard deviation of 0.2 around a bias of 1.
    """
    features = {}
    hook = model.head.activation1.register_forward_hook(lambda module, args, out: features.__setitem__("x", out))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model(pixel_values=torch.rand(1, 3, 70, 56, generator=generator))
        hook.remove()
        pre = torch.nn.functional.conv2d(features["x"], model.head.conv3.weight)
        model.head.conv3.weight.mul_(0.2 / max(float(pre.std()), 1e-20))
        model.head.conv3.bias.fill_(1.0)
