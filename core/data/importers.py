"""Point-cloud and mesh files: reading reconstructions made elsewhere, writing PLY.

Readers: PLY point clouds or meshes, OBJ/GLB meshes, VGGT ``predictions.npz``. Every reader takes
the file's bytes and its (user-given) name and returns a :class:`core.data.scene.Reconstruction`
with ``method="imported"``, or raises :class:`ReconstructionFileError` with a one-line message that
says what is wrong with the file.

Writer: :func:`ply_bytes`, a binary PLY point cloud (what the prepare pipeline exports and
:func:`read_reconstruction` reads back).
"""
from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path

import numpy as np

from core.data.scene import Reconstruction
from core.errors import UserError

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
MESH_SAMPLE_POINTS = 100_000
SUPPORTED_SUFFIXES = (".ply", ".obj", ".glb", ".npz")
VGGT_POINT_KEYS = ("world_points", "world_points_from_depth")


class ReconstructionFileError(UserError):
    """An imported file cannot be read as a reconstruction; the message says why."""


def _trimesh_geometry(data: bytes, file_type: str, name: str):
    import trimesh

    try:
        loaded = trimesh.load(io.BytesIO(data), file_type=file_type, process=False)
    except Exception as error:  # trimesh raises many types on malformed files
        raise ReconstructionFileError(f"{name} is not a readable {file_type.upper()} file ({error})") from None
    if isinstance(loaded, trimesh.Scene):
        geometries = list(loaded.dump()) if hasattr(loaded, "dump") else list(loaded.geometry.values())
        meshes = [g for g in geometries if isinstance(g, trimesh.Trimesh)]
        clouds = [g for g in geometries if isinstance(g, trimesh.PointCloud)]
        if meshes:
            return trimesh.util.concatenate(meshes)
        if clouds:
            return trimesh.PointCloud(np.concatenate([c.vertices for c in clouds]))
        raise ReconstructionFileError(f"{name} contains no points (no mesh or point cloud in it)")
    return loaded


def _vertex_colors(geometry) -> np.ndarray | None:
    try:
        colors = np.asarray(geometry.visual.vertex_colors)[:, :3] if hasattr(geometry, "visual") else None
    except Exception:
        return None
    if colors is None or len(colors) != len(geometry.vertices):
        colors = getattr(geometry, "colors", None)
        colors = None if colors is None or len(colors) != len(geometry.vertices) else np.asarray(colors)[:, :3]
    return None if colors is None else colors.astype(np.uint8)


def read_mesh_or_cloud(data: bytes, name: str) -> Reconstruction:
    """PLY (points or mesh), OBJ or GLB. Meshes are sampled to 100k surface points (seeded)."""
    import trimesh

    suffix = Path(name).suffix.lower().lstrip(".")
    geometry = _trimesh_geometry(data, suffix, name)
    vertices = np.asarray(getattr(geometry, "vertices", np.zeros((0, 3))), dtype=np.float64)
    if len(vertices) == 0:
        raise ReconstructionFileError(f"{name} contains no points")
    if isinstance(geometry, trimesh.Trimesh) and len(geometry.faces) > 0:
        if not np.isfinite(vertices).all():
            raise ReconstructionFileError(f"{name}: mesh vertices contain NaN or infinite values")
        points, face_index = trimesh.sample.sample_surface(geometry, MESH_SAMPLE_POINTS, seed=0)
        colors = _vertex_colors(geometry)
        point_colors = None
        if colors is not None:
            point_colors = colors[geometry.faces[face_index, 0]]
        return Reconstruction(method="imported", points=points, colors=point_colors,
                              mesh_vertices=vertices, mesh_faces=np.asarray(geometry.faces),
                              mesh_colors=colors, options={"file": name, "kind": "mesh"})
    return Reconstruction(method="imported", points=vertices, colors=_vertex_colors(geometry),
                          options={"file": name, "kind": "points"})


def _open_npz(data: bytes, name: str):
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        return archive, set(archive.files)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ReconstructionFileError(f"{name} is not a readable .npz archive ({error})") from None


def read_vggt_cameras(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The cameras of a VGGT-style ``.npz``: ``cam_from_world float64 [S,4,4]`` (OpenCV, from
    ``extrinsic [S,3,4]`` or ``[1,S,3,4]``) and ``intrinsic float64 [S,3,3]`` (pixels of the
    method's input images) or None when absent. ``world_points`` is not needed."""
    archive, keys = _open_npz(data, name)
    if "extrinsic" not in keys:
        raise ReconstructionFileError(f"{name} has no extrinsic [S,3,4] (found: {', '.join(sorted(keys)) or 'nothing'})")
    extrinsic = np.asarray(archive["extrinsic"], dtype=np.float64)
    if extrinsic.ndim == 4 and extrinsic.shape[0] == 1:  # [1,S,3,4]
        extrinsic = extrinsic[0]
    if extrinsic.ndim != 3 or extrinsic.shape[1:] not in ((3, 4), (4, 4)) or len(extrinsic) == 0:
        raise ReconstructionFileError(f"{name}: extrinsic must be [S,3,4], got {list(extrinsic.shape)}")
    if not np.isfinite(extrinsic).all():
        raise ReconstructionFileError(f"{name}: extrinsic holds NaN or infinite values")
    cams = np.tile(np.eye(4), (len(extrinsic), 1, 1))
    cams[:, :3, :] = extrinsic[:, :3, :]
    intrinsic = None
    if "intrinsic" in keys:
        intrinsic = np.asarray(archive["intrinsic"], dtype=np.float64)
        if intrinsic.ndim == 4 and intrinsic.shape[0] == 1:
            intrinsic = intrinsic[0]
        if intrinsic.shape != (len(cams), 3, 3):
            raise ReconstructionFileError(f"{name}: intrinsic must be [{len(cams)},3,3] like extrinsic, "
                                          f"got {list(intrinsic.shape)}")
    return cams, intrinsic


def read_vggt_predictions(data: bytes, name: str, view_ids: list[int] | None = None,
                          confidence_percentile: float = 50.0, require_points: bool = True) -> Reconstruction:
    """A ``predictions.npz`` as saved by the VGGT demos.

    Uses ``world_points`` (or ``world_points_from_depth``) ``[S,H,W,3]`` with its confidence
    ``world_points_conf`` ``[S,H,W]`` (points below the given percentile dropped, like the demo),
    colours from ``images`` (``[S,3,H,W]`` or ``[S,H,W,3]`` in [0,1]) and cameras from
    ``extrinsic [S,3,4]`` (camera-from-world). ``view_ids`` says which scene views the S frames
    are; without it the cameras are not used for alignment.

    A file with cameras but no point map (what a pose benchmark needs) gives, with
    ``require_points=False``, a Reconstruction with no points and the cameras; otherwise (a point
    evaluation) it is refused with a message that names the pose protocol.
    """
    archive, keys = _open_npz(data, name)
    point_key = next((k for k in VGGT_POINT_KEYS if k in keys), None)
    if point_key is None:
        found = ", ".join(sorted(keys)) or "nothing"
        if "extrinsic" not in keys:
            raise ReconstructionFileError(
                f"{name} has neither a point map ({', '.join(VGGT_POINT_KEYS)}) nor cameras (extrinsic) "
                f"(found: {found})")
        if require_points:
            raise ReconstructionFileError(
                f"{name} lacks the point map: expected one of {', '.join(VGGT_POINT_KEYS)} (found: {found}); "
                f"its cameras alone can be scored with --protocol co3d-pose")
        cams, _ = read_vggt_cameras(data, name)
        if view_ids is not None and len(view_ids) != len(cams):
            raise ReconstructionFileError(f"{name} has {len(cams)} frames but {len(view_ids)} view ids were given")
        return Reconstruction(
            method="imported", points=np.zeros((0, 3), np.float32),
            view_ids=list(view_ids) if view_ids is not None else [],
            cam_from_world=cams if view_ids is not None else None,
            options={"file": name, "kind": "vggt-cameras"})
    world = np.asarray(archive[point_key], dtype=np.float64)
    if world.ndim == 5:  # [B,S,H,W,3]
        world = world[0]
    if world.ndim != 4 or world.shape[-1] != 3:
        raise ReconstructionFileError(f"{name}: {point_key} must be [S,H,W,3], got {list(world.shape)}")
    s, h, w, _ = world.shape
    conf = None
    conf_key = "world_points_conf" if point_key == "world_points" else "depth_conf"
    if conf_key in keys:
        conf = np.asarray(archive[conf_key], dtype=np.float64).reshape(s, h, w)
    colors = None
    if "images" in keys:
        images = np.asarray(archive["images"], dtype=np.float64)
        if images.ndim == 5:
            images = images[0]
        if images.shape[1] == 3:
            images = images.transpose(0, 2, 3, 1)
        if images.shape[:3] == (s, h, w):
            colors = np.clip(images * (255 if images.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    valid = np.isfinite(world).all(axis=-1)
    if conf is not None and confidence_percentile > 0 and valid.any():
        valid &= conf >= np.percentile(conf[valid], confidence_percentile)
    source_view = np.broadcast_to(np.arange(s)[:, None, None], (s, h, w))
    cams = None
    if "extrinsic" in keys:
        extrinsic = np.asarray(archive["extrinsic"], dtype=np.float64).reshape(s, 3, 4)
        cams = np.tile(np.eye(4), (s, 1, 1))
        cams[:, :3, :] = extrinsic
    if view_ids is not None and len(view_ids) != s:
        raise ReconstructionFileError(f"{name} has {s} frames but {len(view_ids)} view ids were given")
    return Reconstruction(
        method="imported", points=world[valid], colors=None if colors is None else colors[valid],
        confidence=None if conf is None else conf[valid], source_view=source_view[valid],
        view_ids=list(view_ids) if view_ids is not None and cams is not None else [],
        cam_from_world=cams if view_ids is not None else None,
        options={"file": name, "kind": "vggt-predictions", "confidence_percentile": confidence_percentile})


def read_reconstruction(data: bytes, name: str, view_ids: list[int] | None = None,
                        require_points: bool = True) -> Reconstruction:
    """Dispatch on the file suffix; checks size and emptiness first.

    ``require_points=False`` accepts a VGGT-style ``.npz`` that has cameras but no point map
    (for protocols that score cameras only)."""
    if len(data) == 0:
        raise ReconstructionFileError(f"{name} is empty (0 bytes)")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ReconstructionFileError(f"{name} is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
    suffix = Path(name).suffix.lower()
    from core import limits

    try:  # headers only: dtype, uncompressed size and point counts before any array is read
        if suffix == ".npz":
            limits.npz_headers(data, name)
        elif suffix == ".ply":
            limits.ply_vertex_count(data, name)
    except limits.LimitError:
        raise
    except UserError as error:
        raise ReconstructionFileError(str(error)) from None
    if suffix == ".npz":
        recon = read_vggt_predictions(data, name, view_ids, require_points=require_points)
    elif suffix in (".ply", ".obj", ".glb"):
        recon = read_mesh_or_cloud(data, name)
    else:
        raise ReconstructionFileError(
            f"{name}: unsupported file type {suffix or '(none)'}; use {', '.join(SUPPORTED_SUFFIXES)}")
    recon.options["sha256"] = hashlib.sha256(data).hexdigest()
    return recon


def ply_bytes(points: np.ndarray, colors: np.ndarray | None = None) -> bytes:
    """Binary little-endian PLY of ``points [N,3]`` (stored float32) with optional ``colors [N,3]`` (uint8)."""
    points = np.asarray(points, np.float32).reshape(-1, 3)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    rows = np.empty(len(points), dtype=fields)
    rows["x"], rows["y"], rows["z"] = points.T
    if colors is not None:
        rows["red"], rows["green"], rows["blue"] = np.asarray(colors, np.uint8).reshape(-1, 3).T
    return ("\n".join(header) + "\n").encode() + rows.tobytes()
