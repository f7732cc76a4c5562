"""Plotly figures: point clouds, camera frustums, error overlays, depth maps.

Large clouds are subsampled (seeded) to ``max_points``; every figure builder returns the
figure and a caption saying how many points it shows of how many. Colours are numeric arrays
(fast) and 3-D layouts keep ``uirevision`` so the camera survives reruns.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from core import geometry
from core.eval.metrics import subsample_indices

DEFAULT_MAX_POINTS = 60_000


_LEVELS = 8  # per channel; RGB is drawn through a 512-entry palette so colours stay numeric


def _palette() -> list[list]:
    steps = np.linspace(0, 255, _LEVELS).round().astype(int)
    n = _LEVELS ** 3
    return [[i / (n - 1), f"rgb({steps[i // _LEVELS**2]},{steps[(i // _LEVELS) % _LEVELS]},{steps[i % _LEVELS]})"]
            for i in range(n)]


PALETTE = _palette()


def rgb_to_palette_index(colors: np.ndarray) -> np.ndarray:
    """uint8 ``[N,3]`` -> float ``[N]`` index into :data:`PALETTE` (8 levels per channel)."""
    q = np.round(np.asarray(colors, dtype=np.float64) / 255 * (_LEVELS - 1)).astype(int)
    return (q[:, 0] * _LEVELS**2 + q[:, 1] * _LEVELS + q[:, 2]).astype(np.float64)


def cloud_trace(points: np.ndarray, colors: np.ndarray | None = None, values: np.ndarray | None = None,
                name: str = "points", max_points: int = DEFAULT_MAX_POINTS, size: float = 1.5,
                colorscale: str = "Viridis", colorbar_title: str | None = None, seed: int = 0,
                cmin: float | None = None, cmax: float | None = None) -> tuple[go.Scatter3d, int, int]:
    """A Scatter3d of ``points [N,3]`` coloured by RGB ``colors [N,3]`` or scalar ``values [N]``.

    Returns (trace, points shown, points total).
    """
    points = np.asarray(points)
    total = len(points)
    idx = subsample_indices(total, max_points, seed)
    p = points[idx]
    marker: dict = {"size": size}
    if values is not None:
        marker.update(color=np.asarray(values)[idx], colorscale=colorscale, showscale=True,
                      colorbar={"title": colorbar_title or ""}, cmin=cmin, cmax=cmax)
    elif colors is not None:
        marker.update(color=rgb_to_palette_index(np.asarray(colors)[idx]), colorscale=PALETTE,
                      cmin=0, cmax=_LEVELS**3 - 1, showscale=False)
    else:
        marker.update(color="#888")
    trace = go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers", marker=marker, name=name,
                         hoverinfo="skip")
    return trace, len(idx), total


def frustum_trace(intrinsics: np.ndarray, cam_from_world: np.ndarray, image_size: tuple[int, int],
                  depth: float, name: str = "cameras", color: str = "#d62728",
                  labels: list[str] | None = None, transform: np.ndarray | None = None) -> list[go.Scatter3d]:
    """All frustums of a camera set as one line trace (None-separated) plus a label trace.

    Args:
        intrinsics: ``[V,3,3]``; cam_from_world: ``[V,4,4]`` (rows of NaN are skipped).
        image_size: (H, W) of the images the intrinsics belong to.
        depth: frustum length in world units.
        transform: optional 4x4 applied to the drawn points (e.g. into the normalised frame).
    """
    xs, ys, zs, label_points, label_text = [], [], [], [], []
    order = [0, 1, 0, 2, 0, 3, 0, 4, 1, 2, 3, 4, 1]
    for i, (k, pose) in enumerate(zip(intrinsics, cam_from_world)):
        if not np.isfinite(pose).all():
            continue
        corners = geometry.frustum_corners(k, pose, image_size, depth)
        if transform is not None:
            corners = geometry.transform_points(transform, corners)
        for j in order:
            xs.append(corners[j, 0]); ys.append(corners[j, 1]); zs.append(corners[j, 2])  # noqa: E702
        xs.append(None); ys.append(None); zs.append(None)  # noqa: E702
        label_points.append(corners[0])
        label_text.append(labels[i] if labels else str(i))
    traces = [go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line={"color": color, "width": 2}, name=name,
                           hoverinfo="skip")]
    if label_points:
        lp = np.array(label_points)
        traces.append(go.Scatter3d(x=lp[:, 0], y=lp[:, 1], z=lp[:, 2], mode="text", text=label_text,
                                   textfont={"color": color, "size": 10}, name=f"{name} (ids)",
                                   showlegend=False, hoverinfo="text"))
    return traces


def figure_3d(traces: list, title: str = "", height: int = 520, revision: str = "fixed") -> go.Figure:
    fig = go.Figure(data=traces)
    fig.update_layout(
        title=title, height=height, margin={"l": 0, "r": 0, "t": 30 if title else 0, "b": 0},
        scene={"aspectmode": "data", "xaxis": {"visible": False}, "yaxis": {"visible": False},
               "zaxis": {"visible": False}},
        legend={"orientation": "h", "y": 0.02}, uirevision=revision)
    return fig


def scene_figure(scene, max_points: int = DEFAULT_MAX_POINTS, show_cameras: bool = True,
                 view_ids: list[int] | None = None) -> tuple[go.Figure, str]:
    """Ground-truth points with the scene's camera frustums (world frame)."""
    traces, caption = [], "no ground-truth points"
    scale = 0.1
    if scene.has_ground_truth:
        trace, shown, total = cloud_trace(scene.gt_points, scene.gt_colors, name="ground truth",
                                          max_points=max_points)
        traces.append(trace)
        caption = f"showing {shown:,} of {total:,} ground-truth points"
        scale = 0.15 * float(np.ptp(scene.gt_points, axis=0).max())
    if show_cameras:
        ids = list(range(scene.num_views)) if view_ids is None else view_ids
        traces += frustum_trace(scene.intrinsics[ids], scene.cam_from_world[ids], scene.image_size, scale,
                                name="cameras", labels=[str(i) for i in ids])
    return figure_3d(traces, revision=f"scene-{scene.name}"), caption


def reconstruction_figure(recon, color_by: str = "rgb", max_points: int = DEFAULT_MAX_POINTS,
                          image_size: tuple[int, int] | None = None, show_cameras: bool = True,
                          extra_cameras: tuple | None = None) -> tuple[go.Figure, str]:
    """A method's cloud (its own frame) coloured by RGB or confidence, with predicted frustums.

    ``extra_cameras`` = (intrinsics, cam_from_world, image_size, name) draws another camera set
    (e.g. the ground truth after alignment) in green.
    """
    values = recon.confidence if color_by == "confidence" and recon.confidence is not None else None
    trace, shown, total = cloud_trace(recon.points, None if values is not None else recon.colors, values,
                                      name=recon.method, max_points=max_points,
                                      colorbar_title="confidence" if values is not None else None)
    traces = [trace]
    finite = recon.points[np.isfinite(recon.points).all(axis=1)]
    extent = float(np.ptp(finite, axis=0).max()) if len(finite) else 1.0
    if show_cameras and recon.has_cameras and recon.intrinsics is not None and image_size is not None:
        labels = [str(v) for v in recon.view_ids] if recon.view_ids else None
        traces += frustum_trace(recon.intrinsics, recon.cam_from_world, image_size, 0.1 * extent,
                                name="predicted cameras", labels=labels)
    if extra_cameras is not None:
        k, poses, size, name = extra_cameras
        traces += frustum_trace(k, poses, size, 0.1 * extent, name=name, color="#2ca02c")
    return figure_3d(traces, revision=f"recon-{recon.method}"), f"showing {shown:,} of {total:,} points"


def error_overlay_figure(evaluation, max_points: int = DEFAULT_MAX_POINTS, clip: float | None = None
                         ) -> tuple[go.Figure, str]:
    """Aligned prediction coloured by distance to the ground truth, over the ground truth (grey)."""
    errors = evaluation.point_errors
    cmax = clip if clip is not None else float(np.percentile(errors, 95)) if len(errors) else 1.0
    gt_trace, gt_shown, gt_total = cloud_trace(evaluation.gt_points, name="ground truth",
                                               max_points=max_points // 2, size=1.0, seed=1)
    gt_trace.marker.color = "rgba(150,150,150,0.35)"
    pred_trace, shown, total = cloud_trace(evaluation.aligned_points, values=errors, name="prediction",
                                           max_points=max_points, colorscale="Turbo",
                                           colorbar_title="distance to GT (normalised)", cmin=0.0, cmax=cmax)
    caption = (f"showing {shown:,} of {total:,} aligned prediction points (colour = distance to the ground "
               f"truth, normalised units, clipped at {cmax:.3g}) over {gt_shown:,} of {gt_total:,} "
               "ground-truth points")
    return figure_3d([gt_trace, pred_trace], revision="overlay"), caption


def depth_figure(depths: list[np.ndarray], titles: list[str], columns: int = 4,
                 colorscale: str = "Viridis") -> go.Figure:
    """A grid of depth heat maps (0 = invalid shown blank), each with its own colour range."""
    from plotly.subplots import make_subplots

    rows = (len(depths) + columns - 1) // columns
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.06)
    for i, depth in enumerate(depths):
        d = np.where(np.asarray(depth) > 0, depth, np.nan).astype(np.float32)
        step = max(1, int(np.ceil(max(d.shape) / 160)))  # keep the heat maps light
        fig.add_trace(go.Heatmap(z=d[::step, ::step], colorscale=colorscale, showscale=False,
                                 hovertemplate="depth %{z:.3f}<extra></extra>"),
                      row=i // columns + 1, col=i % columns + 1)
    fig.update_yaxes(autorange="reversed", scaleanchor=None, showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=260 * rows, margin={"l": 0, "r": 0, "t": 30, "b": 0})
    return fig


def mesh_figure(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None,
                max_faces: int = 150_000, name: str = "mesh") -> tuple[go.Figure, str]:
    """A Mesh3d of ``vertices [V,3]`` / ``faces [F,3]`` (faces subsampled to ``max_faces``)."""
    faces = np.asarray(faces)
    idx = subsample_indices(len(faces), max_faces, 0)
    f = faces[idx]
    kwargs = {}
    if colors is not None and len(colors) == len(vertices):
        kwargs["vertexcolor"] = [f"rgb({r},{g},{b})" for r, g, b in np.asarray(colors)[:, :3]]
    else:
        kwargs["color"] = "#c8a27a"
    trace = go.Mesh3d(x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2],
                      name=name, flatshading=True, **kwargs)
    return figure_3d([trace], revision=f"mesh-{name}"), f"showing {len(f):,} of {len(faces):,} faces"


def renders_from_extra(recon) -> list[np.ndarray]:
    """The ``uint8 [H,W,3]`` images a run rendered (novel views, orbit strips): its ``renders``
    array, or the base64 PNGs that runs stored before that kept in ``extra`` (one reader:
    :func:`core.models.lrm.method.decode_renders`)."""
    from core.models.lrm.method import decode_renders

    return list(decode_renders(recon))
