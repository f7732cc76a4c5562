"""Streamlit pieces of comparing runs: the leaderboard table, the Compare page's URL state and its
cached per-run computations (the logic lives in :mod:`core.studies.compare`)."""
from __future__ import annotations

import streamlit as st

from core.studies import compare

RANDOM_MARK = "⚠ "  # prefixed to random-weight runs wherever they are listed with real ones


def leaderboard_table(rows: list[dict], key: str, scene: str, tau: float = compare.TAU) -> list[dict]:
    """The leaderboard (:func:`core.runner.leaderboard` rows) as a sortable table with units,
    column help and ``—`` for missing values; random-weight runs hidden unless the toggle is on
    (then marked ⚠); a CSV download of what is shown. Returns the rows shown."""
    randoms = sum(r.get("weights") in compare.RANDOM_WEIGHTS for r in rows)
    include = st.toggle(f"Show random-weight runs ({randoms})", key=f"{key}.random", disabled=not randoms,
                        help="their geometry and scores are meaningless; hidden so they do not rank with real runs")
    shown = compare.leaderboard_view(rows, include)
    columns = compare.leaderboard_columns(tau)
    config = {}
    for column in columns:
        if column.format is None:
            config[column.key] = st.column_config.TextColumn(column.title, help=column.help)
        else:
            config[column.key] = st.column_config.NumberColumn(column.title, help=column.help, format=column.format)
    table = [dict(r, label=(RANDOM_MARK + r["label"]) if r.get("weights") in compare.RANDOM_WEIGHTS else r["label"])
             for r in shown]
    st.dataframe(table, width="stretch", hide_index=True, column_order=[c.key for c in columns],
                 column_config=config, placeholder=compare.NO_VALUE, key=f"{key}.table")
    left, right = st.columns([3, 1])
    left.caption("Click a column header to sort. Distances in normalised units (ground truth inside the unit "
                 "sphere); ↓ lower is better, ↑ higher is better."
                 + (f" {randoms} random-weight run(s) hidden." if randoms and not include else ""))
    right.download_button("Download CSV", compare.leaderboard_csv(shown, tau), file_name=f"leaderboard-{scene}.csv",
                          mime="text/csv", key=f"{key}.csv", icon=":material/download:")
    return shown


def list_label(run: compare.ComparedRun) -> str:
    """How a run reads in a selection list (random-weight runs marked)."""
    return (RANDOM_MARK if run.random else "") + run.short()


@st.cache_resource(show_spinner=False, max_entries=64)
def _error_cloud(scene_key: tuple, run_key: tuple, max_points: int, _scene, _run):
    return compare.error_cloud(_scene, _run, max_points)


def error_cloud(scene, run: compare.ComparedRun, max_points: int) -> compare.ErrorCloud | None:
    """:func:`core.studies.compare.error_cloud`, computed once per scene, run and evaluation version."""
    return _error_cloud(_scene_key(scene), _run_key(run), max_points, scene, run)


@st.cache_resource(show_spinner=False, max_entries=64)
def _depth_maps(scene_key: tuple, run_key: tuple, max_views: int, _scene, _run):
    return compare.depth_error_maps(_scene, _run.record.load(), max_views)


def depth_error_maps(scene, run: compare.ComparedRun, max_views: int) -> list:
    """:func:`core.studies.compare.depth_error_maps` of a stored run, computed once per run."""
    return _depth_maps(_scene_key(scene), _run_key(run), max_views, scene, run)


def _scene_key(scene) -> tuple:
    return scene.name, len(scene.gt_points) if scene.gt_points is not None else 0, scene.num_views


def _run_key(run: compare.ComparedRun) -> tuple:
    evaluation = run.record.path / "evaluation.json"
    return run.ref, evaluation.stat().st_mtime if evaluation.is_file() else 0.0


def url_value(name: str, default: str = "") -> str:
    """A query parameter of the page URL (``default`` when absent)."""
    return st.query_params.get(name, default)


def set_url(**values: str) -> None:
    """Write the page state into the URL (only the parameters that changed; empty values removed)."""
    for name, value in values.items():
        if value:
            if st.query_params.get(name) != value:
                st.query_params[name] = value
        elif name in st.query_params:
            del st.query_params[name]
