"""Attention sessions stored in the cache, so that the viewer's model passes run as jobs.

A capture (:func:`core.studies.attention.capture_session`, one VGGT forward) computed by a job is
written once to ``<cache>/attention/<key>/`` and every page session that shows it reads those
files instead of running (and holding) the model itself:

* ``meta.json``: ``format``, ``key``, ``scene``, ``view_ids``, ``grid``, ``tokens_per_frame``,
  ``patch_start``, ``layers``, ``heads``, ``qk_dtype`` (``float32`` | ``float16``),
  ``random_weights``, ``seconds``, ``peak_memory_bytes``, ``weights``, ``checkpoint``,
  ``checkpoint_path``, ``transforms`` (one :class:`core.models.vggt.ImageTransform` as a dict
  per view) and ``model_config`` (:meth:`core.models.vggt.VGGTConfig.to_dict`). Written last.
* ``images.npy`` ``uint8 [S,H',W',3]``, ``inputs.npy`` ``float32 [S,3,H',W']`` in [0, 1],
  ``depth.npy`` ``float32 [S,H',W']``, ``cam_from_world.npy`` ``float64 [S,4,4]`` and
  ``intrinsics.npy`` ``float64 [S,3,3]`` (network pixels).
* ``q-<layer>.npy`` and ``k-<layer>.npy`` per captured global layer: ``[1, heads, S·P, head_dim]``
  in ``qk_dtype`` (post-norm, post-RoPE, as :class:`core.models.vggt.AttentionCapture` keeps them).
* ``attributions/<attribution key>.npz``: gradient attributions of clicked pixels
  (:func:`write_attribution`).

:func:`load_session` memory-maps the queries, keys and inputs (``np.load(mmap_mode="c")``): the
operating system's page cache holds one copy of a file for every session that reads it (thirty
students on one capture do not hold thirty copies), and copy-on-write keeps the stored file
intact whatever a reader does with its arrays. A folder appears whole or not at all: it is
written under ``.tmp-<key>-*`` beside its place and renamed in (:func:`store_session`).

The capture key (:func:`capture_key`) hashes what the capture depends on: the model (VGGT's
version and :meth:`core.models.registry.Method.model_key` of the weights options: the weights kind,
the checkpoint's key and the file a checkpoint path names), the views' pixels, the view ids, the
preprocessing, the captured layers, the key precision, and the scene's ground-truth fingerprint
(as the run key, :func:`core.runner.key_for`).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from core.errors import UserError

log = logging.getLogger(__name__)

FORMAT = 1
FOLDER = "attention"
ARRAYS = ("images", "inputs", "depth", "cam_from_world", "intrinsics")
MAPPED = ("inputs",)


class DamagedCapture(UserError):
    """A stored capture folder whose files cannot be read as a session (the message says why)."""


def relative_folder(key: str) -> str:
    """The capture's folder relative to the cache root: ``attention/<key>``."""
    return f"{FOLDER}/{key}"


def attribution_file(capture: str, key: str) -> str:
    """An attribution's file relative to the cache root: ``attention/<capture>/attributions/<key>.npz``."""
    return f"{relative_folder(capture)}/attributions/{key}.npz"


def capture_key(scene, view_ids: list[int], weights: str = "pretrained", checkpoint: str = "vggt-1b",
                checkpoint_path: str = "", preprocess: str = "crop", layers: list[int] | None = None,
                half: bool = False) -> str:
    """Hex digest (20 chars) of everything a capture of ``scene.images[v]`` (``v`` in ``view_ids``)
    depends on (see the module docstring); the options are parsed like a run's (UserError for bad
    ones)."""
    from core.data.fingerprint import ground_truth_fingerprint
    from core.models import registry

    method = registry.get("vggt")
    options = method.parse_options({"weights": weights, "checkpoint": checkpoint,
                                    "checkpoint_path": checkpoint_path, "device": "cpu"})
    header = {"kind": "attention", "format": FORMAT, "vggt": method.version,
              "model": [list(item) for item in method.model_key(options)], "views": [int(v) for v in view_ids],
              "preprocess": preprocess, "layers": None if layers is None else sorted({int(l) for l in layers}),
              "half": bool(half), "ground_truth": ground_truth_fingerprint(scene)}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode())
    for v in view_ids:
        digest.update(hashlib.sha256(np.ascontiguousarray(scene.images[v]).tobytes()).digest())
    return digest.hexdigest()[:20]


def attribution_key(capture: str, frame: int, pixel: tuple[int, int], target: str, layer: int,
                    checkpoint: bool) -> str:
    """Hex digest (20 chars) of a capture key and the attribution's choices."""
    values = [capture, int(frame), [int(pixel[0]), int(pixel[1])], str(target), int(layer), bool(checkpoint)]
    return hashlib.sha256(json.dumps(["attribution", FORMAT, values]).encode()).hexdigest()[:20]


def write_session(session, folder: Path | str, key: str, scene_name: str) -> Path:
    """Write ``session``'s files (module docstring) into ``folder`` (created; ``meta.json`` last)."""
    import dataclasses

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ARRAYS:
        np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(session, name)))
    dtypes = set()
    for layer, (q, k) in session.capture.qk.items():
        for kind, tensor in (("q", q), ("k", k)):
            array = tensor.detach().cpu().contiguous().numpy()
            dtypes.add(array.dtype.name)
            np.save(folder / f"{kind}-{int(layer)}.npy", array)
    meta = {"format": FORMAT, "key": key, "scene": scene_name, "view_ids": [int(v) for v in session.view_ids],
            "grid": list(session.grid), "tokens_per_frame": int(session.tokens_per_frame),
            "patch_start": int(session.patch_start), "layers": [int(l) for l in session.layers],
            "heads": int(session.heads), "qk_dtype": dtypes.pop() if len(dtypes) == 1 else "float32",
            "random_weights": bool(session.random_weights), "seconds": float(session.seconds),
            "peak_memory_bytes": int(session.peak_memory_bytes), "weights": session.weights,
            "checkpoint": session.checkpoint, "checkpoint_path": session.checkpoint_path,
            "transforms": [dataclasses.asdict(t) for t in session.transforms],
            "model_config": session.model_config}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def is_complete(folder: Path | str) -> bool:
    """Whether ``folder`` holds a finished capture (its ``meta.json``, written last, is there)."""
    return (Path(folder) / "meta.json").is_file()


def store_session(session, root: Path | str, key: str, scene_name: str, before_write=None) -> Path:
    """Store ``session`` as ``<root>/attention/<key>`` and return that folder.

    ``before_write()`` is called before anything is written (a job asks for its commit there: a
    cancelled job raises and nothing is written). The files go to a staging folder
    ``.tmp-<key>-*`` beside the final one, which is then renamed into place; a folder that is
    already complete (stored meanwhile) is kept and the staging removed.
    """
    final = Path(root) / relative_folder(key)
    if is_complete(final):
        return final
    if before_write is not None:
        before_write()
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=final.parent))
    try:
        write_session(session, staging, key, scene_name)
        try:
            os.rename(staging, final)
        except OSError:
            if not is_complete(final):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def load_session(folder: Path | str):
    """The :class:`core.studies.attention.AttentionSession` stored in ``folder``: the same viewer
    queries as the session that was stored (its queries, keys and inputs memory-mapped, see the
    module docstring). Raises :class:`DamagedCapture` when a file is missing or unreadable."""
    import torch

    from core.models.vggt import AttentionCapture
    from core.models.vggt.processing import ImageTransform
    from core.studies.attention import AttentionSession

    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} capture")
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="c" if name in MAPPED else None,
                                allow_pickle=False) for name in ARRAYS}
        capture = AttentionCapture([], layers=meta["layers"], keep_qk=True,
                                   qk_dtype=getattr(torch, meta["qk_dtype"]))
        for layer in meta["layers"]:
            capture.qk[int(layer)] = tuple(
                torch.from_numpy(np.load(folder / f"{kind}-{int(layer)}.npy", mmap_mode="c", allow_pickle=False))
                for kind in ("q", "k"))
        transforms = [ImageTransform(**{name: tuple(value) for name, value in t.items()}) for t in meta["transforms"]]
        session = AttentionSession(
            view_ids=list(meta["view_ids"]), images=arrays["images"], transforms=transforms,
            grid=tuple(meta["grid"]), tokens_per_frame=int(meta["tokens_per_frame"]),
            patch_start=int(meta["patch_start"]), depth=arrays["depth"], cam_from_world=arrays["cam_from_world"],
            intrinsics=arrays["intrinsics"], capture=capture, layers=[int(l) for l in meta["layers"]],
            heads=int(meta["heads"]), random_weights=bool(meta["random_weights"]), seconds=float(meta["seconds"]),
            peak_memory_bytes=int(meta["peak_memory_bytes"]), inputs=arrays["inputs"], weights=meta["weights"],
            checkpoint=meta["checkpoint"], checkpoint_path=meta["checkpoint_path"],
            model_config=meta["model_config"], key=str(meta["key"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DamagedCapture(f"stored attention capture {folder.name} is damaged ({type(error).__name__}: "
                             f"{error})") from None
    return session


def find(root: Path | str, key: str):
    """The stored session with capture key ``key`` under cache root ``root``, or None when there is
    none. A damaged folder is removed (so that the capture is computed and stored again) and
    reported as absent."""
    folder = Path(root) / relative_folder(key)
    if not is_complete(folder):
        return None
    try:
        return load_session(folder)
    except DamagedCapture as error:
        log.warning("%s; removing it", error)
        shutil.rmtree(folder, ignore_errors=True)
        return None


# ----------------------------------------------------------------------------- attributions
ATTRIBUTION_ARRAYS = ("input_gradient", "input_x_gradient", "token_gradient", "grad_cam")


def write_attribution(result, path: Path | str) -> Path:
    """Write an :class:`core.studies.attribution.Attribution` as one ``.npz`` (its arrays, and its
    scalars as JSON), atomically."""
    from core.data.scene import atomic_write_bytes

    scalars = {"frame": int(result.frame), "pixel": [int(p) for p in result.pixel], "target": result.target,
               "layer": int(result.layer), "value": float(result.value), "seconds": float(result.seconds),
               "peak_memory_bytes": int(result.peak_memory_bytes),
               "estimate": None if result.estimate is None else result.estimate.parts}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(scalars)),
             **{name: np.asarray(getattr(result, name)) for name in ATTRIBUTION_ARRAYS})
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def read_attribution(path: Path | str):
    """The :class:`core.studies.attribution.Attribution` written by :func:`write_attribution`, or
    None when the file is absent or unreadable."""
    from core.studies.attribution import Attribution, MemoryEstimate

    try:
        with np.load(Path(path), allow_pickle=False) as data:
            scalars = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in ATTRIBUTION_ARRAYS}
    except (OSError, ValueError, KeyError) as error:
        if Path(path).exists():
            log.warning("unreadable stored attribution %s: %s", path, error)
        return None
    estimate = scalars.pop("estimate")
    return Attribution(frame=scalars["frame"], pixel=tuple(scalars["pixel"]), target=scalars["target"],
                       layer=scalars["layer"], value=scalars["value"], seconds=scalars["seconds"],
                       peak_memory_bytes=scalars["peak_memory_bytes"],
                       estimate=None if estimate is None else MemoryEstimate(estimate), **arrays)


# ----------------------------------------------------------------------------- tracks
def tracks_to_json(tracks) -> dict:
    """A :class:`core.studies.attention.Tracks` as JSON-able lists (a job's result)."""
    return {"source": int(tracks.source), "queries": np.asarray(tracks.queries, np.float64).tolist(),
            "uv": np.asarray(tracks.uv, np.float64).tolist(),
            "visibility": np.asarray(tracks.visibility, np.float64).tolist(),
            "confidence": np.asarray(tracks.confidence, np.float64).tolist(), "seconds": float(tracks.seconds)}


def tracks_from_json(values: dict):
    """The :class:`core.studies.attention.Tracks` of :func:`tracks_to_json` (arrays float64)."""
    from core.studies.attention import Tracks

    s = len(values["uv"])
    n = len(values["queries"])
    return Tracks(source=int(values["source"]), queries=np.asarray(values["queries"], np.float64).reshape(n, 2),
                  uv=np.asarray(values["uv"], np.float64).reshape(s, n, 2),
                  visibility=np.asarray(values["visibility"], np.float64).reshape(s, n),
                  confidence=np.asarray(values["confidence"], np.float64).reshape(s, n),
                  seconds=float(values["seconds"]))
