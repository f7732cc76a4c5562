"""Finding model checkpoints: explicit path, ``RECONBENCH_WEIGHTS``, Hugging Face cache, download.

Each method package declares its checkpoints as :class:`Checkpoint` objects and registers them
with :func:`register`; ``python -m core weights fetch KEY`` downloads one (online machines only).
Resolution never downloads: a missing checkpoint raises :class:`MissingWeights` whose message
names the file and the one command that fetches it.

Loading helpers accept only safe formats: safetensors, or ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError

log = logging.getLogger(__name__)

WEIGHTS_ENV = "RECONBENCH_WEIGHTS"


class MissingWeights(UserError):
    """A checkpoint is not on this machine. ``str(error)`` says what and how to get it."""


class BadCheckpoint(UserError):
    """A checkpoint file exists but does not fit the model (names, shapes, format)."""


@dataclass(frozen=True)
class Checkpoint:
    """Where a published checkpoint lives.

    Attributes:
        key: short name used on the command line (``vggt``, ``sam-vit-b``...).
        filename: file name inside the repository / URL / local folder.
        repo_id: Hugging Face repository id, when hosted there.
        url: direct download URL, when not on the Hub.
        size_mb: approximate download size, for messages.
        description: one line shown to users.
        fetch_key: the name to pass to ``python -m core weights fetch`` (defaults to ``key``).
        licence: the checkpoint's licence as its authors publish it (shown next to the weights
            choice and recorded in each run's provenance).
    """

    key: str
    filename: str
    repo_id: str | None = None
    url: str | None = None
    size_mb: float = 0.0
    description: str = ""
    fetch_key: str | None = None
    licence: str = "unknown"

    @property
    def fetch_command(self) -> str:
        return f"python -m core weights fetch {self.fetch_key or self.key}"


_REGISTRY: dict[str, Checkpoint] = {}


def register(*checkpoints: Checkpoint) -> None:
    for checkpoint in checkpoints:
        _REGISTRY[checkpoint.key] = checkpoint


def registered() -> dict[str, Checkpoint]:
    return dict(_REGISTRY)


def weights_folder() -> Path | None:
    value = os.environ.get(WEIGHTS_ENV)
    return Path(value).expanduser() if value else None


def _hf_cached(checkpoint: Checkpoint) -> Path | None:
    if checkpoint.repo_id is None:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(checkpoint.repo_id, checkpoint.filename)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def candidates(checkpoint: Checkpoint) -> list[Path]:
    """The local places looked at, in order (for messages and the Weights table)."""
    places = []
    folder = weights_folder()
    if folder is not None:
        places.append(folder / checkpoint.key / checkpoint.filename)
        places.append(folder / checkpoint.filename)
    return places


def resolve(checkpoint: Checkpoint, explicit_path: str | Path | None = None) -> Path:
    """Return the local file of ``checkpoint`` or raise :class:`MissingWeights`.

    Order (DESIGN.md): explicit path, ``$RECONBENCH_WEIGHTS/<key>/<file>`` or
    ``$RECONBENCH_WEIGHTS/<file>``, the Hugging Face cache. Never downloads.
    """
    if explicit_path:
        path = Path(explicit_path).expanduser()
        if path.is_file():
            return path
        raise MissingWeights(f"checkpoint file {path} does not exist")
    for path in candidates(checkpoint):
        if path.is_file():
            return path
    cached = _hf_cached(checkpoint)
    if cached is not None:
        return cached
    raise MissingWeights(missing_message(checkpoint))


def missing_message(checkpoint: Checkpoint) -> str:
    where = checkpoint.repo_id or checkpoint.url or "its publisher"
    folder = weights_folder()
    size = f", {checkpoint.size_mb:,.0f} MB" if checkpoint.size_mb else ""
    from core.hosted import is_hosted

    # a hosted server's folders are not shown to its web users
    looked = f"${WEIGHTS_ENV} ({folder})" if folder and not is_hosted() else f"${WEIGHTS_ENV} ({'set' if folder else 'unset'})"
    return (f"{checkpoint.description or checkpoint.key}: checkpoint {checkpoint.filename} "
            f"({where}{size}) is not on this machine (looked in {looked} and the Hugging Face "
            f"cache). Fetch it on a machine with internet: {checkpoint.fetch_command}")


def is_available(checkpoint: Checkpoint) -> bool:
    try:
        resolve(checkpoint)
        return True
    except MissingWeights:
        return False


def fetch(checkpoint: Checkpoint) -> Path:
    """Download ``checkpoint`` (needs internet). Into the HF cache, or ``$RECONBENCH_WEIGHTS``."""
    folder = weights_folder()
    if checkpoint.repo_id is not None:
        from huggingface_hub import hf_hub_download
        kwargs = {"local_dir": folder / checkpoint.key} if folder else {}
        return Path(hf_hub_download(checkpoint.repo_id, checkpoint.filename, **kwargs))
    if checkpoint.url is not None:
        import urllib.request
        target_dir = folder or Path.home() / ".cache" / "reconbench"
        target = target_dir / checkpoint.key / checkpoint.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        log.info("downloading %s to %s", checkpoint.url, target)
        urllib.request.urlretrieve(checkpoint.url, tmp)
        os.replace(tmp, target)
        return target
    raise MissingWeights(f"{checkpoint.key} has no download location")


def load_state_dict(path: str | Path) -> dict:
    """Load tensors from a ``.safetensors`` file or a torch pickle with ``weights_only=True``.

    A torch file holding ``{"model": state_dict}`` or ``{"state_dict": ...}`` is unwrapped.
    Raises :class:`BadCheckpoint` when the file is neither.
    """
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise BadCheckpoint(f"{path.name} is not a readable checkpoint: {error}") from None
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise BadCheckpoint(f"{path.name} does not hold a state dict of tensors")
    return state


def check_state_dict(model, state: dict, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Raise :class:`BadCheckpoint` naming missing, unexpected and mis-shaped tensors.

    Args:
        model: a ``torch.nn.Module`` whose ``state_dict()`` names are the expected ones.
        state: the checkpoint's tensors.
        ignore_prefixes: checkpoint names starting with these are allowed extras
            (e.g. ``track_head.`` when the model is built without its track head).
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items() if not k.startswith(ignore_prefixes)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if expected[k] != given[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:5])})")
        if wrong:
            parts.append("mis-shaped: " + ", ".join(
                f"{k} {list(given[k])} != {list(expected[k])}" for k in wrong[:5]))
        raise BadCheckpoint(f"checkpoint does not fit {type(model).__name__}: " + "; ".join(parts))
