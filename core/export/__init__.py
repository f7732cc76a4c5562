"""Exports of stored runs into the formats other tools read: the FORMATS registry and the one
entry point that writes any of them into a folder atomically.

Formats (one module each): ``colmap`` (a COLMAP sparse model + images, :mod:`core.export.colmap`),
``ply`` (points with colours and confidence, :mod:`core.export.ply`), ``glb`` (points or mesh with
camera frustums, :mod:`core.export.glb`), ``nerfstudio`` (``transforms.json`` + images,
:mod:`core.export.nerfstudio`) and ``html`` (a self-contained report of one or several runs,
:mod:`core.export.report`). Every format writes into an empty folder; :func:`export_to` builds it
under a temporary name beside the destination and renames it into place, so a failed export leaves
nothing behind and a destination is never half written. :func:`archive` gives one file (the folder
zipped when it holds several) for a download button.

Coordinates are the run's own world frame (DESIGN.md: OpenCV cameras, ``cam_from_world``); each
module's docstring says what it converts (COLMAP's and nerfstudio's +0.5 pixel centres, nerfstudio's
OpenGL camera axes).
"""
from __future__ import annotations

import importlib
import io
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data.scene import Reconstruction, Scene
from core.errors import UserError


class ExportError(UserError):
    """An export that cannot be made: unknown format, a run without what the format needs, a bad
    destination. Raised before anything is written."""


@dataclass
class StoredRun:
    """What an export reads: a run's reconstruction, the scene it ran on, and its store identity.

    Attributes:
        recon: the run's output (its own world frame).
        scene: the scene whose views ``recon.view_ids`` index (images, image size, fallback intrinsics).
        method / key: the run's store address (``cache/runs/<scene>/<method>/<key>``); empty for
            a run that is not stored.
        evaluation: the run's ``evaluation.json`` object, if scored.
        record: the :class:`core.store.cache.RunRecord` it was read from (None for an unstored run).
    """

    recon: Reconstruction
    scene: Scene
    method: str = ""
    key: str = ""
    evaluation: dict | None = None
    record: Any = None

    @classmethod
    def from_record(cls, record, scene: Scene) -> "StoredRun":
        """From a :class:`core.store.cache.RunRecord` and its scene."""
        return cls(record.load(), scene, record.method, record.key, record.evaluation, record)

    @property
    def label(self) -> str:
        """``scene/method/key`` (the address the CLI takes), or the method name for an unstored run."""
        return f"{self.scene.name}/{self.method or self.recon.method}/{self.key}" if self.key else self.recon.method

    @property
    def has_geometry(self) -> bool:
        return len(self.recon.points) > 0 or (self.recon.mesh_faces is not None and len(self.recon.mesh_faces) > 0)


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: the CLI's ``--format`` value.
        label: shown on the download button.
        module: the module whose ``write(runs, folder)`` writes the format into an empty folder.
        file_name: the single file the format writes (``None``: several files, downloaded as a zip).
        mime: MIME type of the download.
        needs_cameras: the run must have predicted cameras (COLMAP, nerfstudio).
        several_runs: the format takes several runs at once (the report); the others take exactly one.
        description: one line for help texts.
    """

    name: str
    label: str
    module: str
    file_name: str | None
    mime: str
    needs_cameras: bool
    several_runs: bool
    description: str

    def writer(self):
        return importlib.import_module(self.module).write

    def download_name(self, run: StoredRun) -> str:
        """File name of the download: ``<scene>-<method>-<key8>.<suffix>``."""
        stem = f"{run.scene.name}-{run.method or run.recon.method}" + (f"-{run.key[:8]}" if run.key else "")
        suffix = Path(self.file_name).suffix if self.file_name else ".zip"
        return f"{stem}-{self.name}{suffix}" if self.file_name is None else f"{stem}{suffix}"


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("colmap", "COLMAP model (.zip)", "core.export.colmap", None, "application/zip", True, False,
                 "COLMAP sparse model (sparse/0/*.bin, PINHOLE cameras, poses, coloured points with tracks) + images/"),
    ExportFormat("ply", "Point cloud (.ply)", "core.export.ply", "points.ply", "application/octet-stream", False, False,
                 "binary PLY: x y z, red green blue, confidence (when the method has one)"),
    ExportFormat("glb", "3-D scene (.glb)", "core.export.glb", "scene.glb", "model/gltf-binary", False, False,
                 "glTF binary: the points (or the mesh) with one line frustum per camera"),
    ExportFormat("nerfstudio", "nerfstudio (.zip)", "core.export.nerfstudio", None, "application/zip", True, False,
                 "nerfstudio transforms.json (OpenGL c2w, per-frame intrinsics) + images/ + points.ply"),
    ExportFormat("html", "Report (.html)", "core.export.report", "report.html", "text/html", False, True,
                 "one self-contained HTML page (plotly.js inline, works offline): scores table and figures"),
)}


def get_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ExportError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}") from None


def check(fmt: ExportFormat, runs: list[StoredRun]) -> None:
    """Raise ExportError when ``fmt`` cannot be made from ``runs`` (before anything is written)."""
    if not runs:
        raise ExportError("name at least one run to export")
    if len(runs) > 1 and not fmt.several_runs:
        raise ExportError(f"the {fmt.name} export takes one run, got {len(runs)} (only html takes several)")
    for run in runs:
        if not run.has_geometry and fmt.name != "html":
            raise ExportError(f"run {run.label} has neither points nor a mesh; nothing to export")
        if fmt.needs_cameras and not run.recon.has_cameras:
            raise ExportError(f"run {run.label} has no cameras; the {fmt.name} export needs them "
                              f"(use ply or glb for its points)")


def unavailable_reason(fmt: ExportFormat, run: StoredRun) -> str | None:
    """Why ``fmt`` cannot be made from ``run`` (one line), or None when it can."""
    try:
        check(fmt, [run])
    except ExportError as error:
        return str(error)
    return None


def _write_into(fmt: ExportFormat, runs: list[StoredRun], folder: Path) -> None:
    fmt.writer()(runs if fmt.several_runs else runs[0], folder)
    for path in folder.rglob("*"):  # atomic writes create owner-only files; exports are to share
        path.chmod(0o755 if path.is_dir() else 0o644)


def export_to(fmt_name: str, runs: list[StoredRun], out: Path | str, force: bool = False) -> Path:
    """Write ``runs`` in format ``fmt_name`` into the folder ``out`` and return it.

    ``out`` must not exist, be empty, or (with ``force``) is replaced. The export is built in a
    temporary folder beside ``out`` and renamed into place at the end; on any error nothing is left
    and an existing ``out`` is unchanged.
    """
    fmt = get_format(fmt_name)
    check(fmt, runs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"--out {out} is not empty; choose another folder or pass --force to replace it")
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        _write_into(fmt, runs, staging)
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(trash)
            staging.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # innermost first: remove only the folders this call made
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return out


def archive(fmt_name: str, runs: list[StoredRun] | StoredRun) -> tuple[str, bytes, str]:
    """``(file name, bytes, MIME type)`` of one export for a download: the format's single file,
    or its folder as a zip (paths relative to the folder)."""
    runs = [runs] if isinstance(runs, StoredRun) else list(runs)
    fmt = get_format(fmt_name)
    check(fmt, runs)
    with tempfile.TemporaryDirectory(prefix="reconbench-export-") as tmp:
        folder = Path(tmp) / "export"
        folder.mkdir()
        _write_into(fmt, runs, folder)
        name = fmt.download_name(runs[0])
        if fmt.file_name is not None:
            return name, (folder / fmt.file_name).read_bytes(), fmt.mime
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder).as_posix())
        return name, buffer.getvalue(), fmt.mime
