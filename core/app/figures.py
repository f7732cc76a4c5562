"""Every figure the pages show, built here so the pages hold widgets and layout only.

Sections: 3-D clouds (points, camera frustums, error overlays, meshes) and depth grids; the
Dataset page's crop view; the studies' plots (view-count scaling fits, quality and the
several-method overlay, 3D-LMNet training curves); the attention viewer's click target,
heat-map overlays (images as arrays), clicked points' tracks across the views and attribution
heat maps.

Large clouds are subsampled (seeded) to ``max_points``; every cloud figure builder returns the
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


def colorbar(title: str | None) -> dict:
    """A colour bar whose title runs along its right side and which stops short of the top, so
    neither collides with Plotly's toolbar (top right of every figure)."""
    return {"title": {"text": title or "", "side": "right"}, "len": 0.8, "y": 0.0, "yanchor": "bottom",
            "thickness": 14}


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
                      colorbar=colorbar(colorbar_title), cmin=cmin, cmax=cmax)
    elif colors is not None:
        marker.update(color=rgb_to_palette_index(np.asarray(colors)[idx]), colorscale=PALETTE,
                      cmin=0, cmax=_LEVELS**3 - 1, showscale=False)
    else:
        marker.update(color="#888")
    trace = go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers", marker=marker, name=name,
                         hoverinfo="skip")
    return trace, len(idx), total


def height_cloud_figure(points: np.ndarray, name: str, revision: str,
                        max_points: int = DEFAULT_MAX_POINTS) -> go.Figure:
    """A cloud in an object-centred frame with +y up (e.g. 3D-LMNet's unit box), coloured by
    height (its y coordinate, same units as the points), larger markers for sparse clouds.

    Args:
        points: ``float [N,3]``.
    """
    points = np.asarray(points)
    trace, _, _ = cloud_trace(points, values=points[:, 1], name=name, size=2.5, max_points=max_points)
    return figure_3d([trace], revision=revision)


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
    label_every = max(1, int(np.ceil(len(cam_from_world) / 12)))
    for i, (k, pose) in enumerate(zip(intrinsics, cam_from_world)):
        if not np.isfinite(pose).all():
            continue
        corners = geometry.frustum_corners(k, pose, image_size, depth)
        if transform is not None:
            corners = geometry.transform_points(transform, corners)
        for j in order:
            xs.append(corners[j, 0]); ys.append(corners[j, 1]); zs.append(corners[j, 2])  # noqa: E702
        xs.append(None); ys.append(None); zs.append(None)  # noqa: E702
        if i % label_every == 0:       # at most ~12 labels, so they do not overlap
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


def figure_3d(traces: list, title: str = "", height: int = 520, revision: str = "fixed",
              focus: np.ndarray | None = None) -> go.Figure:
    """A 3-D figure of ``traces`` with equal axis scales (``aspectmode="data"``).

    ``focus`` (``[N,3]``, the object's points) frames the view on the object rather than on
    everything drawn (cameras around it would otherwise shrink it to a speck): the camera looks
    at the object's centre from Plotly's default direction, at a distance that makes the object
    fill the view as the whole scene would by default. The user's own camera survives reruns
    (``uirevision``)."""
    fig = go.Figure(data=traces)
    scene = {"aspectmode": "data", "xaxis": {"visible": False}, "yaxis": {"visible": False},
             "zaxis": {"visible": False}}
    camera = _object_camera(traces, focus) if focus is not None else None
    if camera is not None:
        scene["camera"] = camera
    fig.update_layout(
        title=title, height=height, margin={"l": 0, "r": 0, "t": 30 if title else 0, "b": 0},
        scene=scene, legend={"orientation": "h", "y": 0.02}, uirevision=revision)
    return fig


def _object_camera(traces: list, focus: np.ndarray) -> dict | None:
    """Plotly scene camera (``center``/``eye`` in its normalised scene units) aimed at the
    bounding box of ``focus`` inside the bounding box of every trace; None when there is nothing
    to fit. With ``aspectmode="data"`` Plotly scales the drawn box so its longest side is 1 and
    centres it at 0, so a world point ``p`` sits at ``(p - box centre) / longest side``."""
    focus = np.asarray(focus, dtype=np.float64).reshape(-1, 3)
    focus = focus[np.isfinite(focus).all(axis=1)]
    coords = []
    for trace in traces:
        xyz = [getattr(trace, axis, None) for axis in ("x", "y", "z")]
        if any(v is None for v in xyz):
            continue
        block = np.stack([np.array(column, dtype=np.float64) for column in xyz], axis=1)   # None -> NaN
        coords.append(block[np.isfinite(block).all(axis=1)])
    drawn = np.concatenate(coords) if coords else np.zeros((0, 3))
    if len(focus) < 2 or len(drawn) < 2:
        return None
    low, high = drawn.min(axis=0), drawn.max(axis=0)
    longest = float((high - low).max())
    # Robust to stray points (random weights, background): the median and the 2nd-98th percentiles.
    obj_low, obj_high = np.percentile(focus, 2, axis=0), np.percentile(focus, 98, axis=0)
    obj_size = float((obj_high - obj_low).max())
    if longest <= 0 or obj_size <= 0:
        return None
    center = (np.median(focus, axis=0) - (low + high) / 2) / longest
    ratio = min(1.0, 1.4 * obj_size / longest)       # a margin round the object
    eye = center + np.array([1.25, 1.25, 1.25]) * ratio
    return {"center": dict(zip("xyz", center.tolist())), "eye": dict(zip("xyz", eye.tolist()))}


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
    return figure_3d(traces, revision=f"scene-{scene.name}",
                     focus=scene.gt_points if scene.has_ground_truth else None), caption


def reconstruction_figure(recon, color_by: str = "rgb", max_points: int = DEFAULT_MAX_POINTS,
                          image_size: tuple[int, int] | None = None, show_cameras: bool = True,
                          extra_cameras: tuple | None = None) -> tuple[go.Figure, str]:
    """A method's cloud (its own frame) coloured by RGB or confidence, with predicted frustums.

    ``extra_cameras`` = (intrinsics, cam_from_world, image_size, name) draws another camera set
    (e.g. the ground truth after alignment) in green.
    """
    values = recon.confidence if color_by == "confidence" and recon.confidence is not None else None
    title = "confidence" if values is not None else None
    if values is None and recon.colors is None:    # no colours (3D-LMNet, Point-E without RGB): height
        values, title = np.asarray(recon.points)[:, 1], "height (y)"
    trace, shown, total = cloud_trace(recon.points, None if values is not None else recon.colors, values,
                                      name=recon.method, max_points=max_points, colorbar_title=title)
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
    return (figure_3d(traces, revision=f"recon-{recon.method}", focus=finite),
            f"showing {shown:,} of {total:,} points")


def without_least_confident(recon, percent: float):
    """A copy of ``recon`` without its least confident ``percent`` % of points (a display
    filter: the stored run is unchanged); ``recon`` itself when it has no confidence."""
    from dataclasses import replace

    if recon.confidence is None or percent <= 0:
        return recon
    keep = recon.confidence >= np.percentile(recon.confidence, percent)
    return replace(recon, points=recon.points[keep],
                   colors=None if recon.colors is None else recon.colors[keep],
                   confidence=recon.confidence[keep],
                   source_view=None if recon.source_view is None else recon.source_view[keep])


def loss_curve_figure(losses: list[float]) -> go.Figure:
    """DUSt3R's global-alignment loss per iteration (unitless, the optimiser's objective)."""
    curve = go.Figure(go.Scatter(y=losses, mode="lines", name="loss"))
    curve.update_layout(height=260, xaxis_title="iteration", yaxis_title="alignment loss", margin={"t": 20})
    return curve


GT_COLOUR = "rgba(214,39,214,0.55)"  # magenta: the ground truth, a colour no distance scale (Turbo) contains


def error_overlay_figure(evaluation, max_points: int = DEFAULT_MAX_POINTS, clip: float | None = None,
                         show_ground_truth: bool = True) -> tuple[go.Figure, str]:
    """Aligned prediction coloured by distance to the ground truth (Turbo, normalised units, 0 to
    ``clip`` or the 95th percentile), over the ground truth in :data:`GT_COLOUR` unless
    ``show_ground_truth`` is False."""
    errors = evaluation.point_errors
    cmax = clip if clip is not None else float(np.percentile(errors, 95)) if len(errors) else 1.0
    traces = []
    if show_ground_truth:
        gt_trace, gt_shown, gt_total = cloud_trace(evaluation.gt_points, name="ground truth",
                                                   max_points=max_points // 2, size=1.5, seed=1)
        gt_trace.marker.color, gt_trace.marker.opacity = GT_COLOUR, 0.4
        traces.append(gt_trace)
    pred_trace, shown, total = cloud_trace(evaluation.aligned_points, values=errors, name="prediction",
                                           max_points=max_points, colorscale="Turbo",
                                           colorbar_title="distance to GT (normalised)", cmin=0.0, cmax=cmax)
    traces.append(pred_trace)
    caption = (f"showing {shown:,} of {total:,} aligned prediction points (colour = distance to the ground "
               f"truth, normalised units, clipped at {cmax:.3g})")
    caption += (f" over {gt_shown:,} of {gt_total:,} ground-truth points (magenta)" if show_ground_truth
                else "; ground truth hidden")
    return figure_3d(traces, revision="overlay"), caption


def depth_figure(depths: list[np.ndarray], titles: list[str], columns: int = 4,
                 colorscale: str = "Viridis", units: str = "the method's units") -> go.Figure:
    """A grid of depth heat maps ``[h,w]`` (0 = invalid shown blank) on one colour scale, the 2nd to
    98th percentile of every valid depth, with one colour bar titled with ``units``."""
    from plotly.subplots import make_subplots

    rows = (len(depths) + columns - 1) // columns
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.06)
    valid = np.concatenate([np.asarray(d, np.float32)[np.asarray(d) > 0].ravel() for d in depths] or [np.zeros(0)])
    low, high = (np.percentile(valid, [2, 98]) if len(valid) else (0.0, 1.0))
    for i, depth in enumerate(depths):
        d = np.where(np.asarray(depth) > 0, depth, np.nan).astype(np.float32)
        step = max(1, int(np.ceil(max(d.shape) / 160)))  # keep the heat maps light
        fig.add_trace(go.Heatmap(z=d[::step, ::step], coloraxis="coloraxis",
                                 hovertemplate="depth %{z:.3f}<extra></extra>"),
                      row=i // columns + 1, col=i % columns + 1)
    fig.update_yaxes(autorange="reversed", scaleanchor=None, showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=260 * rows, margin={"l": 0, "r": 0, "t": 30, "b": 0},
                      coloraxis={"colorscale": colorscale, "cmin": float(low), "cmax": float(max(high, low + 1e-9)),
                                 "colorbar": colorbar(f"depth ({units})")})
    return fig


def camera_error_rows(cameras) -> list[dict]:
    """The camera errors of a scored run (:class:`core.eval.scores` cameras: ``rre_deg``,
    ``rte_deg``, ``rra``/``rta`` {threshold in degrees: fraction}, ``auc30``, ``pairs``) as display
    rows ``{"measure", "value"}``: degrees with one decimal, fractions as percentages
    (``AUC@30 100 %``, ``RRA@15° 100 %``, ``pairs 210``)."""
    rows = [{"measure": "mean rotation error (RRE)", "value": f"{cameras.rre_deg:.1f}°"},
            {"measure": "mean translation-direction error (RTE)", "value": f"{cameras.rte_deg:.1f}°"}]
    rows += [{"measure": f"RRA@{t:g}°", "value": f"{100 * v:.0f} %"} for t, v in cameras.rra.items()]
    rows += [{"measure": f"RTA@{t:g}°", "value": f"{100 * v:.0f} %"} for t, v in cameras.rta.items()]
    rows += [{"measure": "AUC@30", "value": f"{100 * cameras.auc30:.0f} %"},
             {"measure": "pairs", "value": f"{cameras.pairs:,}"}]
    return rows


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


# --------------------------------------------------------------------------- dataset
_BOX_EDGES = ((0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 3), (2, 6), (3, 7), (4, 5), (4, 6), (5, 7), (6, 7))


def box_trace(corners: np.ndarray, name: str = "crop box", color: str = "#ff7f0e") -> go.Scatter3d:
    """The 12 edges of a box as one None-separated line trace.

    Args:
        corners: ``[8,3]`` corners in the order of :meth:`core.data.prepare.crop.CropBox.corners`
            (signs (x, y, z) in ``itertools.product((-1, 1), repeat=3)`` order), any world frame.
    """
    xs, ys, zs = [], [], []
    for a, b in _BOX_EDGES:
        xs += [corners[a, 0], corners[b, 0], None]
        ys += [corners[a, 1], corners[b, 1], None]
        zs += [corners[a, 2], corners[b, 2], None]
    return go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line={"color": color, "width": 4}, name=name,
                        hoverinfo="skip")


def crop_figure(cloud: np.ndarray, colors: np.ndarray | None, box, scene, revision: str
                ) -> tuple[go.Figure, str]:
    """A prepared scene's dense cloud split by the object crop box, with the box and the cameras.

    Args:
        cloud: ``float [N,3]`` dense points in the scene's world frame (COLMAP's, arbitrary scale);
            colors: ``uint8 [N,3]`` or None.
        box: a :class:`core.data.prepare.crop.CropBox` (or None: every point counts as inside).
        scene: the :class:`core.data.scene.Scene` whose cameras are drawn (frustums 15 % of the
            object's extent long).
    Returns:
        (figure, caption saying how many points lie inside and how many of each part are drawn).
        Points inside are drawn (up to 40,000) in their colours, points outside smaller (up to 20,000).
    """
    inside = box.contains(cloud) if box is not None else np.ones(len(cloud), bool)
    part = lambda mask: None if colors is None else colors[mask]  # noqa: E731
    outside_trace, shown_out, _ = cloud_trace(cloud[~inside], part(~inside), name="outside the crop",
                                              max_points=20_000, size=1.0)
    inside_trace, shown_in, _ = cloud_trace(cloud[inside], part(inside), name="object", max_points=40_000)
    traces = [outside_trace, inside_trace]
    if box is not None:
        traces.append(box_trace(box.corners()))
    extent = float(np.ptp(cloud[inside], axis=0).max()) if inside.sum() > 1 else 1.0
    traces += frustum_trace(scene.intrinsics, scene.cam_from_world, scene.image_size, 0.15 * extent)
    caption = (f"{int(inside.sum()):,} of {len(cloud):,} dense points inside the box (drawn: {shown_in:,} inside, "
               f"{shown_out:,} outside)")
    return figure_3d(traces, revision=revision), caption


# --------------------------------------------------------------------------- studies
def scaling_fit_figure(views: list[int], values: list[float], fits: list, flops=None,
                       label: str = "") -> go.Figure:
    """Measured cost against the number of views, with each fitted model's curve over 1..max(views).

    Args:
        views: ``[P]`` view count of each measured point; values: ``[P]`` the measured quantity
            (seconds, or MB of peak memory) in the unit ``label`` names.
        fits: :class:`core.studies.scaling.ModelFit` list from ``fit_models(views, values, flops)``.
        flops: the ``n -> FLOPs`` function the fits used (needed by the ``flops`` model).
    """
    from core.studies import scaling

    figure = go.Figure(go.Scatter(x=views, y=values, mode="markers", name="measured"))
    grid = np.arange(1, max(views) + 1)
    for fit in fits:
        figure.add_trace(go.Scatter(x=grid, y=[scaling.predict(fit, int(g), flops) for g in grid], mode="lines",
                                    name=fit.formula))
    figure.update_layout(height=320, xaxis_title="views", yaxis_title=label, margin={"t": 30})
    return figure


def fit_table(fits: list) -> list[dict]:
    """One display row per :class:`core.studies.scaling.ModelFit`: formula, coefficients, RMSE
    (unit of the fitted quantity), BIC and the signed residual of each point, as text."""
    return [{"model": f.formula, **{k: f"{v:.4g}" for k, v in f.coefficients.items()}, "RMSE": f"{f.rmse:.3g}",
             "BIC": f"{f.bic:.2f}", "residuals": ", ".join(f"{r:+.2g}" for r in f.residuals)} for f in fits]


def scaling_quality_figure(rows: list[dict]) -> go.Figure:
    """Each score of the scaling summary (Chamfer, EMD, F-score at 0.01; normalised units) against
    the number of views, with error bars of one standard deviation over the subsets.

    Args:
        rows: :func:`core.studies.scaling.summary_table` rows (``views``; each score of
            ``QUALITY_COLUMNS`` as ``<key>`` with its spread as ``<key>_std``, in the rows whose
            subsets were scored).
    """
    from core.studies.scaling import QUALITY_COLUMNS

    figure = go.Figure()
    for key in QUALITY_COLUMNS:
        kept = [r for r in rows if key in r]
        figure.add_trace(go.Scatter(x=[r["views"] for r in kept], y=[r[key] for r in kept], mode="lines+markers",
                                    name=key, error_y={"type": "data", "array": [r[f"{key}_std"] for r in kept]}))
    figure.update_layout(height=320, xaxis_title="views", yaxis_title="score (normalised units)")
    return figure


def scaling_overlay_figure(curves: dict[str, dict], labels: dict[str, str] | None = None) -> go.Figure:
    """Several methods' time (left) and peak memory (right) against the number of views, measured
    back to back: per method one colour, its measured points (markers, one trace per method and
    quantity) and its best fit over ``1..max(views)`` (dashed, one trace, when a fit is decided).

    Args:
        curves: method -> :func:`core.studies.scaling.curves` output (``seconds`` and
            ``peak_memory_mb`` -> :class:`core.studies.scaling.Curve`).
        labels: method -> display name (default: the method name).
    """
    import plotly.colors
    from plotly.subplots import make_subplots

    from core.studies.scaling import QUANTITIES

    labels = labels or {}
    colours = plotly.colors.qualitative.Plotly
    figure = make_subplots(rows=1, cols=2, subplot_titles=list(QUANTITIES.values()), horizontal_spacing=0.1)
    for index, (method, by_quantity) in enumerate(curves.items()):
        colour, label = colours[index % len(colours)], labels.get(method, method)
        for column, quantity in enumerate(QUANTITIES, start=1):
            curve = by_quantity[quantity]
            first = column == 1
            figure.add_trace(go.Scatter(x=curve.views, y=curve.values, mode="markers", name=label, legendgroup=method,
                                        showlegend=first, marker={"color": colour}), row=1, col=column)
            if curve.fitted is not None:
                figure.add_trace(go.Scatter(x=curve.grid, y=curve.fitted, mode="lines", legendgroup=method,
                                            name=f"{label}: {curve.best.formula}", showlegend=first,
                                            line={"color": colour, "dash": "dash"}), row=1, col=column)
    for column, title in enumerate(QUANTITIES.values(), start=1):
        figure.update_xaxes(title_text="views", row=1, col=column)
        figure.update_yaxes(title_text=title, row=1, col=column)
    figure.update_layout(height=360, margin={"t": 40})
    return figure


def training_curves_figure(curves: dict[str, dict[str, list]]) -> go.Figure:
    """Training loss against step (log scale), one line per model and training stage.

    Args:
        curves: model name -> :func:`core.models.lmnet.training_curves` output (parallel lists
            ``step``, ``stage`` (``ae`` or ``latent``) and ``loss``).
    """
    figure = go.Figure()
    for name, curve in curves.items():
        for stage in ("ae", "latent"):
            steps = [s for s, g in zip(curve["step"], curve["stage"]) if g == stage]
            losses = [v for v, g in zip(curve["loss"], curve["stage"]) if g == stage]
            if steps:
                figure.add_trace(go.Scatter(x=steps, y=losses, mode="lines", name=f"{name} · {stage}"))
    figure.update_layout(height=300, xaxis_title="step", yaxis_title="training loss", yaxis_type="log",
                         margin={"t": 20})
    return figure


# --------------------------------------------------------------------------- attention viewer
def attention_click_figure(image: np.ndarray, grid: tuple[int, int], pick: tuple[int, int]) -> go.Figure:
    """The source view as a click target: one nearly invisible marker per patch centre (a click
    selects it) and a red cross on the picked pixel.

    Args:
        image: ``uint8 [H,W,3]`` network input of the source view; grid: (rows, cols) of patches
            (square patches of ``W // cols`` pixels); pick: (u, v) network pixel (column, row).
    """
    rows, cols = grid
    patch = image.shape[1] // cols
    centres_y, centres_x = np.mgrid[0:rows, 0:cols] * patch + patch / 2
    figure = go.Figure(go.Image(z=image))
    figure.add_trace(go.Scatter(x=centres_x.ravel(), y=centres_y.ravel(), mode="markers",
                                marker={"size": max(4, patch // 2), "opacity": 0.01}, hoverinfo="x+y",
                                showlegend=False))
    figure.add_trace(go.Scatter(x=[pick[0]], y=[pick[1]], mode="markers",
                                marker={"size": 12, "symbol": "x", "color": "red"}, showlegend=False))
    h, w = image.shape[:2]
    # The axes span exactly the image's pixels (a 518-px image clicks 0..517, not the container's width).
    figure.update_xaxes(range=[-0.5, w - 0.5], constrain="domain", showgrid=False)
    figure.update_yaxes(range=[h - 0.5, -0.5], scaleanchor="x", constrain="domain", showgrid=False)
    figure.update_layout(height=360, margin={"l": 0, "r": 0, "t": 0, "b": 0})
    return figure


_LINK_COLOURS = (("predicted", (255, 60, 60)), ("ground_truth", (60, 255, 60)))


def attention_overlay(image: np.ndarray, maps: np.ndarray, frame: int, links: dict) -> np.ndarray:
    """One view with the attention heat map blended over it and the clicked point's correspondences.

    Args:
        image: ``uint8 [H,W,3]`` network input of ``frame``.
        maps: ``float [S,rows,cols]`` attention of the clicked patch over every frame's patches;
            the colour scale (inferno, nearest-neighbour upsampled) is shared by all frames
            (``maps.max()`` = brightest).
        links: :meth:`core.studies.attention.AttentionSession.correspondences` output; its
            ``predicted`` (red) and ``ground_truth`` (green) pixels in this frame are marked with
            a cross, tilted when the point is hidden there.
    Returns:
        ``uint8 [H,W,3]``: 45 % image + 55 % heat map, with the markers.
    """
    import cv2

    h, w = image.shape[:2]
    scale = float(maps.max()) or 1.0
    heat = cv2.resize((maps[frame] / scale * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    coloured = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    out = np.ascontiguousarray((0.45 * image + 0.55 * coloured).astype(np.uint8))
    for key, colour in _LINK_COLOURS:
        entries = links.get(key)
        if entries and entries[frame]["uv"] is not None:
            x, y = (int(round(c)) for c in entries[frame]["uv"])
            if 0 <= x < w and 0 <= y < h:
                marker = cv2.MARKER_TILTED_CROSS if entries[frame]["occluded"] else cv2.MARKER_CROSS
                cv2.drawMarker(out, (x, y), colour, marker, 18, 2)
    return out


def correspondence_status(links: dict, key: str, frame: int) -> str:
    """What the clicked point's ``key`` (``predicted`` or ``ground_truth``) correspondence is in
    ``frame``: ``no depth`` (no correspondence computed), ``outside`` (behind the camera or out of
    the image), ``occluded``, ``visible`` or ``unknown`` (no depth to test occlusion)."""
    entries = links.get(key)
    if not entries:
        return "no depth"
    entry = entries[frame]
    if entry["uv"] is None or not entry["in_bounds"]:
        return "outside"
    return "occluded" if entry["occluded"] else ("visible" if entry["occluded"] is False else "unknown")


def track_colours(count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct RGB colours (hues evenly spaced, full saturation) for clicked points."""
    import colorsys

    return [tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(i / max(count, 1), 0.9, 1.0))
            for i in range(count)]


def tracks_figure(images: np.ndarray, uv: np.ndarray, visibility: np.ndarray, truth: np.ndarray,
                  view_ids: list[int], visible_threshold: float = 0.5) -> go.Figure:
    """The views side by side with each clicked point drawn as a coloured track across them.

    Args:
        images: ``uint8 [S,H,W,3]`` network inputs in the session's order.
        uv: ``[S,N,2]`` the tracking head's network pixels (x, y) per view and point.
        visibility: ``[S,N]`` in [0, 1]; below ``visible_threshold`` the marker is hollow.
        truth: ``[S,N,2]`` ground-truth pixels (NaN where none); drawn as crosses in the same colour.
        view_ids: scene view of each frame (panel titles).
    Returns:
        One figure: the views concatenated left to right (view ``f`` shifted by ``f·W``); per point a
        line through its tracked positions and circle markers, ground truth as ``x`` markers.
    """
    s, h, w = images.shape[:3]
    strip = np.concatenate(list(images), axis=1)
    figure = go.Figure(go.Image(z=strip, hoverinfo="skip"))
    offsets = np.arange(s)[:, None] * w
    for index, colour in enumerate(track_colours(uv.shape[1])):
        rgb = f"rgb{colour}"
        x = uv[:, index, 0] + offsets[:, 0]
        y = uv[:, index, 1]
        shown = visibility[:, index] >= visible_threshold
        figure.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=f"point {index}", line={"color": rgb, "width": 1},
            marker={"color": rgb, "size": 9, "symbol": ["circle" if v else "circle-open" for v in shown],
                    "line": {"color": rgb, "width": 2}},
            text=[f"view {view_ids[f]} · vis {visibility[f, index]:.2f}" for f in range(s)], hoverinfo="text"))
        gt = truth[:, index]
        keep = np.isfinite(gt).all(axis=1)
        if keep.any():
            figure.add_trace(go.Scatter(x=gt[keep, 0] + offsets[keep, 0], y=gt[keep, 1], mode="markers",
                                        marker={"color": rgb, "size": 10, "symbol": "x-thin",
                                                "line": {"color": rgb, "width": 2}},
                                        name=f"point {index} · truth", showlegend=False, hoverinfo="skip"))
    figure.update_xaxes(range=[-0.5, s * w - 0.5], showticklabels=False)
    figure.update_yaxes(range=[h - 0.5, -0.5], showticklabels=False)
    figure.update_layout(height=max(220, int(900 * h / (s * w)) + 60), margin={"l": 0, "r": 0, "t": 10, "b": 0},
                         legend={"orientation": "h"})
    return figure


def heat_overlay(image: np.ndarray, heat: np.ndarray, scale: float | None = None,
                 mark: tuple[float, float] | None = None) -> np.ndarray:
    """``uint8 [H,W,3]``: 45 % image + 55 % ``heat`` (inferno), with an optional cross at ``mark``.

    Args:
        image: ``uint8 [H,W,3]``.
        heat: ``float [H,W]`` (pixel resolution) or ``[rows,cols]`` (upsampled nearest-neighbour), >= 0.
        scale: the value drawn brightest (default ``heat.max()``; pass one scale for all views).
        mark: network pixel (x, y) marked with a white cross (the clicked pixel).
    """
    import cv2

    h, w = image.shape[:2]
    top = float(scale if scale is not None else heat.max()) or 1.0
    levels = (np.clip(np.asarray(heat, np.float64) / top, 0, 1) * 255).astype(np.uint8)
    if levels.shape != (h, w):
        levels = cv2.resize(levels, (w, h), interpolation=cv2.INTER_NEAREST)
    coloured = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    out = np.ascontiguousarray((0.45 * image + 0.55 * coloured).astype(np.uint8))
    if mark is not None:
        cv2.drawMarker(out, (int(round(mark[0])), int(round(mark[1]))), (255, 255, 255), cv2.MARKER_CROSS, 16, 2)
    return out


# --------------------------------------------------------------------------- data set browsers (CO3D)
def mask_overlay(image: np.ndarray, mask: np.ndarray | None, color=(255, 40, 40), alpha: float = 0.45
                 ) -> np.ndarray:
    """``uint8 [H,W,3]``: ``image`` with ``mask [H,W]`` (bool) tinted in ``color``; the image when no mask."""
    out = np.asarray(image, np.float32).copy()
    if mask is not None:
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def cloud_with_cameras_figure(points: np.ndarray | None, colors: np.ndarray | None, intrinsics: np.ndarray,
                              cam_from_world: np.ndarray, image_size: tuple[int, int], labels: list[str],
                              highlight: int | None = None, revision: str = "cloud-cameras",
                              max_points: int = DEFAULT_MAX_POINTS) -> tuple[go.Figure, str]:
    """A point cloud (world frame, any units) with every camera's frustum, one of them highlighted.

    Args:
        points: ``[M,3]`` or None; colors: ``uint8 [M,3]`` or None.
        intrinsics ``[V,3,3]`` / cam_from_world ``[V,4,4]`` (OpenCV) of images of ``image_size`` (H, W).
        labels: V frustum labels; highlight: index of the camera drawn in another colour.
    Returns:
        (figure, caption saying how many points and cameras it shows).
    """
    traces, caption = [], "no point cloud"
    centres = geometry.camera_center(cam_from_world)
    extent = float(np.ptp(centres, axis=0).max()) if len(centres) > 1 else 1.0
    if points is not None and len(points):
        trace, shown, total = cloud_trace(points, colors, name="point cloud", max_points=max_points)
        traces.append(trace)
        caption = f"showing {shown:,} of {total:,} points"
        extent = float(np.ptp(points, axis=0).max()) or extent
    depth = 0.1 * extent
    others = [i for i in range(len(cam_from_world)) if i != highlight]
    traces += frustum_trace(intrinsics[others], cam_from_world[others], image_size, depth, name="cameras",
                            labels=[labels[i] for i in others])
    if highlight is not None:
        traces += frustum_trace(intrinsics[[highlight]], cam_from_world[[highlight]], image_size, depth,
                                name="this frame", color="#2ca02c", labels=[labels[highlight]])
    return figure_3d(traces, revision=revision), f"{caption} and {len(cam_from_world)} cameras"
