"""Plotly figures of the Compare page (no Streamlit): linked 3-D error views, the depth-error
grid, score bars with their better direction, cost against quality with the Pareto front, and
quality against the number of views.

Colours: one colour per run (:func:`run_colours`, same order in every chart); distances on the
``Turbo`` scale through one shared ``coloraxis`` (one colour bar per figure); the ground truth
in :data:`GT_COLOUR`, a magenta that the Turbo scale does not contain. The Plotly tool bar stands
upright at the right edge so that it never covers a title.

Linking the 3-D views: the clouds are subplots of one figure (``scene``, ``scene2``, ...) with
equal axis ranges and equal starting cameras; :func:`linked_html` writes the figure as a
standalone page whose script listens to ``plotly_relayouting`` (while dragging) and
``plotly_relayout`` (after a drag, a zoom or a reset) on any scene and copies that scene's camera
to every other scene with ``Plotly.relayout`` — one camera drives all.
"""
from __future__ import annotations

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.app.figures import GT_COLOUR
from core.studies.compare import SCORES, SPECS, ComparedRun, ErrorCloud, ViewsPoint, pareto_front

DISTANCE_SCALE = "Turbo"
CAMERA_PRESETS = ("oblique", "front", "side", "top")


def run_colours(count: int) -> list[str]:
    """``count`` distinct colours (Plotly's qualitative palette, repeating past 10)."""
    palette = plotly.colors.qualitative.Plotly
    return [palette[i % len(palette)] for i in range(count)]


def panel_title(label: str, views_text: str = "", mark: str = "") -> str:
    """A run's label broken into short lines for a subplot title: the method, then its options and
    weights, then the view count (``"COLMAP (SfM + stereo)<br>21 views"``)."""
    parts = label.split(" · ")
    lines = [mark + parts[0]] + ([" · ".join(parts[1:])] if len(parts) > 1 else []) + ([views_text] if views_text else [])
    return "<br>".join(lines)


def camera_for(preset: str, up: np.ndarray) -> dict:
    """A Plotly scene camera (``eye``, ``up``, ``center``; eye in the scene box's units) looking
    at the centre from ``preset`` (:data:`CAMERA_PRESETS`), with ``up [3]`` the world's up.

    ``front`` and ``side`` look horizontally along two perpendicular directions, ``top`` straight
    down (then the front direction is the screen's up), ``oblique`` from between front and side,
    raised by about 25°; close enough that the object fills most of its panel. Unknown presets fall back to ``oblique``."""
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    front = np.cross(up, helper)
    front /= np.linalg.norm(front)
    side = np.cross(up, front)
    screen_up = up
    if preset == "front":
        eye = 1.6 * front
    elif preset == "side":
        eye = 1.6 * side
    elif preset == "top":
        eye, screen_up = 1.8 * up, front
    else:
        eye = 1.05 * front + 1.05 * side + 0.7 * up
    as_dict = lambda v: {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}  # noqa: E731
    return {"eye": as_dict(eye), "up": as_dict(screen_up), "center": {"x": 0.0, "y": 0.0, "z": 0.0}}


def linked_clouds_figure(panels: list[tuple[str, ErrorCloud]], ground_truth: np.ndarray | None, scale: float,
                         camera: dict, height: int = 520) -> go.Figure:
    """Up to 4 runs' aligned clouds side by side, coloured by distance to the ground truth.

    Args:
        panels: ``(title, ErrorCloud)`` per run (:func:`panel_title`), points in the normalised
            ground-truth frame.
        ground_truth: ``float [M,3]`` normalised ground truth drawn in every panel in
            :data:`GT_COLOUR` (one legend entry toggles all), or None to leave it out.
        scale: top of the shared distance colour range (normalised units); 0 is the bottom.
        camera: the starting camera of every panel (:func:`camera_for`).
    Returns:
        One figure with scenes ``scene``..``scene{n}``: equal axis ranges (the union of the
        clouds' and the ground truth's boxes), equal cameras, one colour bar.
    """
    count = len(panels)
    figure = make_subplots(rows=1, cols=count, specs=[[{"type": "scene"}] * count],
                           subplot_titles=[title for title, _ in panels], horizontal_spacing=0.01)
    boxes = [cloud.points for _, cloud in panels if len(cloud.points)]
    if ground_truth is not None and len(ground_truth):
        boxes.append(ground_truth)
    stacked = np.concatenate(boxes) if boxes else np.zeros((1, 3))
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    pad = 0.05 * float((high - low).max() or 1.0)
    low, high = low - pad, high + pad
    ratio = (high - low) / (high - low).max()
    for index, (title, cloud) in enumerate(panels, start=1):
        if ground_truth is not None and len(ground_truth):
            figure.add_trace(go.Scatter3d(
                x=ground_truth[:, 0], y=ground_truth[:, 1], z=ground_truth[:, 2], mode="markers",
                marker={"size": 1.5, "color": GT_COLOUR, "opacity": 0.3}, name="ground truth", legendgroup="ground truth",
                showlegend=index == 1, hoverinfo="skip"), row=1, col=index)
        p = cloud.points
        figure.add_trace(go.Scatter3d(
            x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers", name=title, showlegend=False,
            marker={"size": 1.8, "color": cloud.errors, "coloraxis": "coloraxis"},
            hovertemplate="distance %{marker.color:.3f}<extra></extra>"), row=1, col=index)
    axis = lambda i: {"range": [float(low[i]), float(high[i])], "visible": False}  # noqa: E731
    for index in range(1, count + 1):
        figure.update_layout({f"scene{'' if index == 1 else index}": {
            "xaxis": axis(0), "yaxis": axis(1), "zaxis": axis(2), "aspectmode": "manual",
            "aspectratio": {"x": float(ratio[0]), "y": float(ratio[1]), "z": float(ratio[2])}, "camera": camera}})
    figure.update_annotations(font_size=12)
    figure.update_layout(
        height=height, margin={"l": 0, "r": 0, "t": 60, "b": 0}, legend={"orientation": "h", "y": 0.0},
        modebar={"orientation": "v"},
        coloraxis={"colorscale": DISTANCE_SCALE, "cmin": 0.0, "cmax": float(scale),
                   "colorbar": {"title": {"text": "distance to ground truth (normalised)", "side": "right"},
                                "thickness": 14, "len": 0.8, "y": 0.45}},
        uirevision="compare")
    return figure


_LINK_SCRIPT = """
var gd = document.getElementById('{plot_id}');
var scenes = Object.keys(gd._fullLayout).filter(function (k) { return /^scene\\d*$/.test(k); });
var busy = false;
function linkCameras(event) {
  if (busy || !event) { return; }
  for (var key in event) {
    var match = key.match(/^(scene\\d*)\\.camera$/);
    if (!match) { continue; }
    var update = {};
    scenes.forEach(function (name) { if (name !== match[1]) { update[name + '.camera'] = event[key]; } });
    busy = true;
    Plotly.relayout(gd, update).then(function () { busy = false; }, function () { busy = false; });
    return;
  }
}
gd.on('plotly_relayouting', linkCameras);
gd.on('plotly_relayout', linkCameras);
gd.setAttribute('data-linked-scenes', scenes.join(','));
"""


def linked_html(figure: go.Figure) -> str:
    """The figure as one standalone HTML page (plotly.js inlined: works offline) whose scenes'
    cameras are linked (module docstring)."""
    html = figure.to_html(include_plotlyjs=True, full_html=True, post_script=_LINK_SCRIPT,
                          config={"displaylogo": False, "responsive": True},
                          default_height=f"{figure.layout.height or 520}px", default_width="100%")
    return html.replace("<body>", '<body style="margin:0;overflow:hidden">', 1)


def depth_error_figure(rows: list[tuple[str, list[tuple[int, np.ndarray]]]], scale: float) -> go.Figure:
    """A grid of relative depth error maps: one row per run (its title on the left), one column
    per view (``view <scene id>`` above each map), one colour bar.

    Args:
        rows: ``(run title, [(scene view id, float [h,w] error, NaN = no value)])`` per run
            (:func:`core.studies.compare.depth_error_maps`); titles may hold ``<br>``.
        scale: top of the shared colour range (a fraction; 0 is the bottom).
    """
    columns = max(len(maps) for _, maps in rows)
    titles = []
    for _, maps in rows:
        titles += [f"view {view}" for view, _ in maps] + [""] * (columns - len(maps))
    figure = make_subplots(rows=len(rows), cols=columns, subplot_titles=titles, horizontal_spacing=0.01,
                           vertical_spacing=0.08 if len(rows) > 1 else 0.0)
    for r, (title, maps) in enumerate(rows, start=1):
        for c, (_, error) in enumerate(maps, start=1):
            step = max(1, int(np.ceil(max(error.shape) / 120)))
            figure.add_trace(go.Heatmap(z=error[::step, ::step], coloraxis="coloraxis",
                                        hovertemplate="relative error %{z:.3f}<extra></extra>"), row=r, col=c)
        figure.update_yaxes(title_text=title, title_font_size=11, row=r, col=1)
    figure.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    figure.update_xaxes(showticklabels=False, constrain="domain")
    figure.update_annotations(font_size=11)
    figure.update_layout(height=220 * len(rows) + 40, margin={"l": 10, "r": 0, "t": 30, "b": 0}, modebar={"orientation": "v"},
                         coloraxis={"colorscale": "Viridis", "cmin": 0.0, "cmax": float(scale),
                                    "colorbar": {"title": {"text": "|d − d*| / d*", "side": "right"}, "thickness": 14}})
    return figure


def score_bars_figure(runs: list[ComparedRun], columns: int = 4) -> go.Figure:
    """One bar chart per score that at least one run has (:data:`core.studies.compare.SCORES`),
    titled with its better direction (``Chamfer ↓ lower is better``); one colour and one legend
    entry per run, the same in every chart."""
    specs = [s for s in SCORES if any(r.value(s.key) is not None for r in runs)]
    rows = max(1, (len(specs) + columns - 1) // columns)
    figure = make_subplots(rows=rows, cols=columns, horizontal_spacing=0.06, vertical_spacing=0.16,
                           subplot_titles=[f"{s.title} {s.direction}" for s in specs])
    for colour, run in zip(run_colours(len(runs)), runs):
        for index, spec in enumerate(specs):
            value = run.value(spec.key)
            figure.add_trace(go.Bar(x=[run.short()], y=[value], name=run.short(), legendgroup=run.ref,
                                    showlegend=index == 0, marker_color=colour,
                                    hovertemplate=f"{spec.title}: %{{y:.4g}} ({spec.unit})<extra>{run.short()}</extra>"),
                             row=index // columns + 1, col=index % columns + 1)
    figure.update_xaxes(showticklabels=False)
    figure.update_annotations(font_size=12)
    figure.update_layout(height=260 * rows + 60, barmode="group", margin={"t": 40, "b": 10}, modebar={"orientation": "v"},
                         legend={"orientation": "h", "y": -0.05})
    return figure


def pareto_figure(runs: list[ComparedRun], quality: str = "chamfer") -> go.Figure:
    """Quality (``quality``, a key of :data:`SCORES`) against time (left) and peak memory (right),
    log-scaled costs; the Pareto front of each panel (runs that no other run beats on both) joined
    by a dashed line and ringed."""
    spec = SPECS[quality]
    costs = [SPECS["seconds"], SPECS["peak_memory_mb"]]
    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                           subplot_titles=[f"{spec.title} {spec.arrow} against {c.title.lower()}" for c in costs])
    colours = run_colours(len(runs))
    for column, cost in enumerate(costs, start=1):
        xs = [r.value(cost.key) for r in runs]
        ys = [r.value(quality) for r in runs]
        for run, colour, x, y in zip(runs, colours, xs, ys):
            if x is None or y is None:
                continue
            figure.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=run.short(), legendgroup=run.ref,
                                        showlegend=column == 1, marker={"color": colour, "size": 11},
                                        hovertemplate=f"{cost.title} %{{x:.3g}} {cost.unit}<br>{spec.title} "
                                                      f"%{{y:.4g}}<extra>{run.short()}</extra>"), row=1, col=column)
        front = pareto_front(xs, ys, spec.lower_is_better)
        if front:
            figure.add_trace(go.Scatter(
                x=[xs[i] for i in front], y=[ys[i] for i in front], mode="lines+markers", name="Pareto front",
                legendgroup="front", showlegend=column == 1, line={"color": "black", "dash": "dash", "width": 1},
                marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 2}},
                hoverinfo="skip"), row=1, col=column)
        figure.update_xaxes(type="log", title_text=f"{cost.title} ({cost.unit}, log)", row=1, col=column)
        figure.update_yaxes(title_text=f"{spec.title} ({spec.unit}) {spec.arrow}", row=1, col=column)
    figure.update_layout(height=380, margin={"t": 40}, legend={"orientation": "h", "y": -0.25},
                         modebar={"orientation": "v"})
    return figure


def views_figure(series: dict[str, list[ViewsPoint]], quality: str = "chamfer") -> go.Figure:
    """Quality against the number of views, one line per method label (mean over its runs at
    each count, error bars one standard deviation)."""
    spec = SPECS[quality]
    figure = go.Figure()
    for colour, (label, points) in zip(run_colours(len(series)), series.items()):
        figure.add_trace(go.Scatter(
            x=[p.views for p in points], y=[p.mean for p in points], mode="lines+markers", name=label,
            line={"color": colour}, error_y={"type": "data", "array": [p.std for p in points]},
            customdata=[p.runs for p in points],
            hovertemplate="%{x} views: %{y:.4g} (%{customdata} runs)<extra>" + label + "</extra>"))
    figure.update_layout(height=340, margin={"t": 20}, xaxis_title="views",
                         yaxis_title=f"{spec.title} ({spec.unit}) {spec.direction}")
    return figure

