"""Published Shap-E checkpoints, their SHA-256 values, and loading them into :class:`ShapE`.

Files (openai/shap-e ``shap_e/models/download.py``: OpenAI's public storage, path
``main/shap-e/<file>``): ``text_cond.pt`` (text300M), ``image_cond.pt`` (image300M),
``vector_decoder.pt`` (the decoder: params_proj + NeRSTF renderer). CLIP ViT-L/14 (both towers)
is the Hugging Face ``openai/clip-vit-large-patch14`` ``model.safetensors`` (shared with
Point-E), its BPE tokenizer the ``vocab.json`` / ``merges.txt`` of the same repository.

Every Shap-E file is checked against the SHA-256 the authors publish, then loaded with
``torch.load(weights_only=True)`` and its tensor names and shapes checked against the model
(:class:`core.models.weights.BadCheckpoint` names what does not fit).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from core.models import weights
from core.models.pointe.checkpoints import CLIP_VIT_L14, _clip_state
from core.models.random_weights import fill_random_
from core.models.weights import BadCheckpoint, Checkpoint

from .config import ShapEConfig
from .modeling_shape import MODES, ShapE, build_random

log = logging.getLogger(__name__)

_BASE = "https://openaipublic.azureedge.net/main/shap-e/"

TEXT300M = Checkpoint(
    key="shape-text300M", filename="text_cond.pt", url=_BASE + "text_cond.pt", size_mb=1263,
    description="Shap-E text300M (latent diffusion conditioned on CLIP text)", licence="MIT")
IMAGE300M = Checkpoint(
    key="shape-image300M", filename="image_cond.pt", url=_BASE + "image_cond.pt", size_mb=1264,
    description="Shap-E image300M (latent diffusion conditioned on the CLIP image grid)",
    licence="MIT")
DECODER = Checkpoint(
    key="shape-decoder", filename="vector_decoder.pt", url=_BASE + "vector_decoder.pt",
    size_mb=905, description="Shap-E latent decoder (params_proj + NeRSTF renderer)",
    licence="MIT")
CLIP_VOCAB = Checkpoint(
    key="clip-vit-large-patch14-vocab", filename="vocab.json", repo_id="openai/clip-vit-large-patch14",
    size_mb=0.9, description="CLIP BPE vocabulary (Shap-E prompts)", licence="MIT")
CLIP_MERGES = Checkpoint(
    key="clip-vit-large-patch14-merges", filename="merges.txt", repo_id="openai/clip-vit-large-patch14",
    size_mb=0.5, description="CLIP BPE merges (Shap-E prompts)", licence="MIT")

SHA256 = {
    "text_cond.pt": "e6b4fa599a7b3c3b16c222d5f5fe56f9db9289ff0b6575fbe5c11bc97106aad4",
    "image_cond.pt": "cb8072c64bbbcf6910488814d212227de5db291780d4ea99c6152f9346cf12aa",
    "vector_decoder.pt": "d7e7ebbfe3780499ae89b2da5e7c1354012dba5a6abfe295bed42f25c3be1b98",
    "transmitter.pt": "af02a0b85a8abdfb3919584b63c540ba175f6ad4790f574a7fef4617e5acdc3b",
}

MODE_CHECKPOINT = {"text": TEXT300M, "image": IMAGE300M}

weights.register(TEXT300M, IMAGE300M, DECODER, CLIP_VOCAB, CLIP_MERGES)

_verified: dict[tuple, bool] = {}


def sha256_of(path: str | Path, chunk: int = 2 ** 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise :class:`BadCheckpoint` when the file's SHA-256 is not ``expected`` (remembered per
    path, size and modification time within the process)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
    if _verified.get(key):
        return
    actual = sha256_of(path)
    if actual != expected:
        raise BadCheckpoint(f"{path.name}: SHA-256 {actual[:16]}... does not match the published "
                            f"{expected[:16]}... (a damaged or different file); fetch it again")
    _verified[key] = True


def empty_model(config: ShapEConfig, mode: str) -> ShapE:
    """A :class:`ShapE` for ``mode`` built on the meta device and materialised on the CPU
    without initialising its weights (they are loaded or filled next); the buffers that no
    checkpoint holds (CLIP's ``position_ids``, the void background) are set."""
    with torch.device("meta"):
        model = ShapE(config, modes=(mode,))
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("position_ids"):
                buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
        model.decoder.renderer.void.background.copy_(
            torch.tensor(model.config.decoder_config().background) / 255.0)
    return model


def _load_module(module: torch.nn.Module, path: Path, expected_sha256: str | None,
                 strip_prefix: str = "") -> None:
    if expected_sha256:
        verify_sha256(path, expected_sha256)
    state = weights.load_state_dict(path)
    if strip_prefix:   # the transmitter's decode path: encoder.params_proj.* -> params_proj.*
        state = {k[len(strip_prefix):] if k.startswith(strip_prefix + "params_proj.") else k: v
                 for k, v in state.items()
                 if not k.startswith(strip_prefix) or k.startswith(strip_prefix + "params_proj.")}
    weights.check_state_dict(module, state)
    module.load_state_dict(state, strict=True)


def load_pretrained(mode: str, latent_path: str | Path, decoder_path: str | Path,
                    clip_path: str | Path, device: str | torch.device = "cpu",
                    config: ShapEConfig | None = None, check_sha256: bool = True) -> ShapE:
    """:class:`ShapE` for ``mode`` (text or image) from the files, eval mode on ``device``.

    ``decoder_path`` may be ``vector_decoder.pt`` or ``transmitter.pt`` (its decode path).
    Raises :class:`BadCheckpoint` for a SHA-256 or tensor mismatch.
    """
    if mode not in MODES:
        raise ValueError(f"unknown Shap-E mode {mode!r}")
    latent_path, decoder_path = Path(latent_path), Path(decoder_path)
    transmitter = decoder_path.name == "transmitter.pt"
    if check_sha256:   # before building anything: a wrong file costs no memory
        verify_sha256(latent_path, SHA256[MODE_CHECKPOINT[mode].filename])
        verify_sha256(decoder_path, SHA256["transmitter.pt" if transmitter else DECODER.filename])
    model = empty_model(config or ShapEConfig(), mode)
    _load_module(model.latent_model(mode), latent_path, None)
    _load_module(model.decoder, decoder_path, None, strip_prefix="encoder." if transmitter else "")
    clip_state = _clip_state(Path(clip_path)) if mode == "image" else _clip_text_state(Path(clip_path))
    tower = model.clip_vision if mode == "image" else model.clip_text
    tower.load_transformers_state_dict(clip_state, strict=True)
    return model.to(device).eval()


def _clip_text_state(path: Path) -> dict:
    """The text tensors of a CLIP checkpoint (safetensors: only those keys are read)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as handle:
            keys = [k for k in handle.keys() if k.startswith(("text_model.", "text_projection."))]
            if not keys:
                raise BadCheckpoint(f"{path.name} holds no CLIP text tensors")
            return {k: handle.get_tensor(k) for k in keys}
    return weights.load_state_dict(path)


def clip_tokenizer(vocab_path: str = "", merges_path: str = ""):
    """CLIP's BPE tokenizer from local ``vocab.json`` / ``merges.txt`` (raises MissingWeights)."""
    from transformers import CLIPTokenizer
    vocab = weights.resolve(CLIP_VOCAB, vocab_path or None)
    merges = weights.resolve(CLIP_MERGES, merges_path or None)
    return CLIPTokenizer(vocab_file=str(vocab), merges_file=str(merges))


def random_tiny(mode: str, seed: int = 0, device: str | torch.device = "cpu") -> ShapE:
    """:meth:`ShapEConfig.tiny` with seeded random weights for ``mode``."""
    return build_random(ShapEConfig.tiny(), seed, modes=(mode,)).to(device)


def random_full(mode: str, seed: int = 0, device: str | torch.device = "cpu",
                config: ShapEConfig | None = None) -> ShapE:
    """The published sizes (or ``config``) with seeded random weights (N(0, 0.02), norms 1,
    biases 0; :func:`core.models.random_weights.fill_random_`), built without a default
    initialisation first (meta device), for benchmarks."""
    model = empty_model(config or ShapEConfig(), mode)
    fill_random_(model, seed, is_norm_weight=lambda name, p: (
        ("norm" in name or "ln_" in name or "layer_norm" in name or "layrnorm" in name
         or "clip_embed.0" in name) and name.endswith("weight")))
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith(".weight"):   # the meta layers' unused stored weights
                generator = torch.Generator().manual_seed(seed)
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.02)
    return model.to(device).eval()


def resolve_all(mode: str, latent_path: str = "", decoder_path: str = "",
                clip_path: str = "") -> tuple[Path, Path, Path]:
    """Local files of the latent model, the decoder and CLIP (raises MissingWeights)."""
    return (weights.resolve(MODE_CHECKPOINT[mode], latent_path or None),
            weights.resolve(DECODER, decoder_path or None),
            weights.resolve(CLIP_VIT_L14, clip_path or None))
