"""HTML report export: one self-contained page (a class handout) with tables and Plotly figures.

:func:`write_html` takes any list of figures and tables (the Compare page passes its own);
:func:`run_items` builds the default content for some stored runs: a scores table, then the
Compare page's figures (:mod:`core.app.compare_figures`: distance-coloured clouds in one
camera, score bars with their better direction, quality against time and memory, quality
against the number of views) for the scored runs, and each run's own cloud with its cameras
(:func:`core.app.figures.reconstruction_figure`).

The page includes plotly.js once, inline in its ``<head>`` (about 4.8 MB), so it opens offline;
each figure is a ``<div id="figure-<i>" class="plotly-graph-div">`` with its own small script.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go

from core.data.scene import atomic_write_bytes

FILE_NAME = "report.html"
NO_VALUE = "—"
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class FigureItem:
    """A figure of the report: ``title`` (a heading), the Plotly ``figure``, a ``caption`` below it
    and an optional ``post_script`` (JavaScript run after the plot is drawn; ``{plot_id}`` is
    replaced by the figure's div id, as in ``Figure.to_html``)."""

    title: str
    figure: go.Figure
    caption: str = ""
    post_script: str | None = None


@dataclass(frozen=True)
class Table:
    """A table of the report: ``rows`` are dicts with the same keys (the column titles, in order);
    ``help`` maps a column title to a tooltip; numbers are shown with 4 significant digits, None as —."""

    title: str
    rows: list[dict]
    caption: str = ""
    help: dict[str, str] = field(default_factory=dict)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NO_VALUE
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def table_html(table: Table) -> str:
    """The ``<table>`` of ``table`` (header from the first row's keys)."""
    columns = list(table.rows[0]) if table.rows else []
    head = "".join(f'<th title="{html.escape(table.help.get(c, ""))}">{html.escape(c)}</th>' for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; } td { font-variant-numeric: tabular-nums; }
.caption { color: #555; font-size: 0.9em; }
"""


def render_html(items: list, title: str = "ReconBench report", intro: str = "") -> str:
    """The report page: ``items`` are :class:`FigureItem`, :class:`Table` or ``(title, Figure)``
    pairs, shown in order under ``title`` and the ``intro`` paragraph."""
    from plotly.offline import get_plotlyjs

    parts = [f"<h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    figure_count = 0
    for item in items:
        if isinstance(item, tuple):
            item = FigureItem(*item)
        parts.append(f"<h2>{html.escape(item.title)}</h2>")
        if isinstance(item, Table):
            parts.append(table_html(item))
        elif isinstance(item, FigureItem):
            height = item.figure.layout.height or 520
            parts.append(item.figure.to_html(
                full_html=False, include_plotlyjs=False, div_id=f"figure-{figure_count}", config=PLOT_CONFIG,
                post_script=item.post_script, default_height=f"{height}px", default_width="100%"))
            figure_count += 1
        else:
            raise TypeError(f"a report item is a FigureItem, a Table or (title, Figure), not {type(item).__name__}")
        if item.caption:
            parts.append(f'<p class="caption">{html.escape(item.caption)}</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_html(items: list, path: Path | str, title: str = "ReconBench report", intro: str = "") -> Path:
    """Write :func:`render_html` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, render_html(items, title, intro).encode("utf-8"))
    return path


# ------------------------------------------------------------------------------- default content
def _scores_table_basic(runs) -> Table:
    """Scores of each run read straight from its evaluation (used when the Compare page's study
    module is not installed)."""
    from core.eval.scores import Scores, ScoresFormatError

    rows = []
    for run in runs:
        scores = None
        if run.evaluation is not None:
            try:
                scores = Scores.from_json(run.evaluation)
            except ScoresFormatError:
                scores = None
        scored = scores if scores is not None and scores.scored else None
        rows.append({"Run": run.label, "Views": len(run.recon.view_ids) or None,
                     "Weights": run.recon.weights_kind or NO_VALUE,
                     "Chamfer ↓": scored and scored.chamfer, "EMD ↓": scored and scored.emd,
                     "F@0.01 ↑": scored and scored.fscore_at(0.01), "Time (s)": run.recon.seconds,
                     "Peak memory (MB)": run.recon.peak_memory_bytes / 2**20 or None})
    return Table("Runs and scores", rows, "Distances in normalised units (ground truth inside the unit sphere).")


def _compare_items(runs) -> list | None:
    """Table and figures from the Compare page's builders, or None when they are not installed
    or the runs were not read from a store."""
    try:
        from core.app import compare_figures as cf
        from core.studies import compare
    except ImportError:
        return None
    if any(run.record is None for run in runs):
        return None
    compared = [compare.compare_run(run.record) for run in runs]
    specs = [s for s in compare.SCORES if any(c.value(s.key) is not None for c in compared)]
    costs = [compare.SPECS["seconds"], compare.SPECS["peak_memory_mb"]]
    rows, help_text = [], {}
    for c in compared:
        row = {"Run": c.short(), "Weights": c.weights_kind or NO_VALUE}
        for spec in specs + costs:
            column = f"{spec.title} {spec.arrow} ({spec.unit})"
            row[column] = c.value(spec.key)
            help_text[column] = f"{spec.help}; {spec.direction}"
        rows.append(row)
    items: list = [Table("Runs and scores", rows, "Normalised units: the ground truth is scaled into the unit sphere. "
                                         "Hover a column title for its definition.", help_text)]
    scored = [c for c in compared if c.scored]
    if not scored:
        return items
    scene = runs[0].scene
    same_scene = all(run.scene.name == scene.name for run in runs)
    if same_scene and scene.has_ground_truth:
        clouds = [(c.short(), compare.error_cloud(scene, c)) for c in scored[:4]]
        clouds = [(title, cloud) for title, cloud in clouds if cloud is not None]
        if clouds:
            scale = compare.shared_scale([cloud.errors for _, cloud in clouds])
            figure = cf.linked_clouds_figure(clouds, compare.normalised_ground_truth(scene), scale,
                                             cf.camera_for("oblique", compare.scene_up(scene)))
            # The Compare page's camera link: turning one view turns them all.
            items.append(FigureItem("Distance to the ground truth", figure,
                                    f"Aligned predictions coloured by distance to the ground truth (one scale, "
                                    f"top {scale:.3g} normalised units, the 95th percentile); ground truth in magenta; "
                                    "the views turn together.", post_script=cf._LINK_SCRIPT))
    items.append(FigureItem("Score charts", cf.score_bars_figure(scored), "Each chart's title says which way is better."))
    if any(c.value("seconds") is not None for c in scored):
        items.append(FigureItem("Quality against cost", cf.pareto_figure(scored),
                                "Runs on the dashed line are beaten by no other run on both quality and cost."))
    series = compare.views_series(scored)
    if series:
        items.append(FigureItem("Quality against the number of views", cf.views_figure(series),
                                "Mean over the runs at each view count; bars: one standard deviation."))
    return items


def run_items(runs) -> list:
    """The default report of some :class:`core.export.StoredRun`: see the module docstring."""
    from core.app import figures

    items = _compare_items(runs)
    if items is None:
        items = [_scores_table_basic(runs)]
    for run in runs:
        recon = run.recon
        figure, caption = figures.reconstruction_figure(recon, image_size=run.scene.image_size, max_points=30_000)
        figure.update_layout(height=460)
        items.append(FigureItem(f"{run.label}: points and cameras", figure,
                                caption + " in the method's own frame" + (
                                    "; red: predicted cameras, numbered by scene view" if recon.has_cameras else "")))
    return items


def write(runs, folder: Path) -> None:
    """Write ``folder/report.html`` for one or several :class:`core.export.StoredRun`."""
    scenes = sorted({run.scene.name for run in runs})
    intro = (f"{len(runs)} run{'s' if len(runs) != 1 else ''} of scene {', '.join(scenes)}, exported from ReconBench. "
             "This page works offline: the plotting library is included.")
    write_html(run_items(runs), Path(folder) / FILE_NAME, title=f"ReconBench report: {', '.join(scenes)}", intro=intro)
