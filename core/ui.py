"""Thin Streamlit adapters shared by the pages: scene choice, progress, option widgets, results.

The only module of ``core`` that imports Streamlit; nothing else in ``core`` depends on it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from core.cache import REPO_ROOT, RunStore, cache_root
from core.progress import Progress
from core.scene import Scene, find_scenes

SCENE_KEY = "scene_name"
SAMPLE_ROOT = REPO_ROOT / "sample_data"
DEFAULT_SCENE = "toy"


def scene_roots() -> list[Path]:
    return [SAMPLE_ROOT, cache_root() / "scenes"]


def available_scenes() -> dict[str, Path]:
    return find_scenes(*scene_roots())


@st.cache_resource(show_spinner="Loading scene…", max_entries=8)
def _load_scene(path: str, stamp: float) -> Scene:
    return Scene.load(path)


def load_scene(path: Path) -> Scene:
    """Load (once per process and folder version) a scene folder."""
    return _load_scene(str(path), (Path(path) / "scene.json").stat().st_mtime)


def scene_picker() -> None:
    """Sidebar selectbox of the scenes; the choice is kept in ``st.session_state[SCENE_KEY]``."""
    scenes = available_scenes()
    if not scenes:
        st.sidebar.warning("No scene found. Render the sample: `python -m core synth toy --out sample_data/toy`.")
        return
    names = sorted(scenes, key=lambda n: (n != DEFAULT_SCENE, n))
    current = st.session_state.get(SCENE_KEY, names[0])
    index = names.index(current) if current in names else 0
    st.session_state[SCENE_KEY] = st.sidebar.selectbox("Scene", names, index=index, key="scene_picker")


def current_scene() -> Scene | None:
    """The scene chosen in the sidebar, or None (with a message shown) when there is none."""
    scenes = available_scenes()
    name = st.session_state.get(SCENE_KEY) or (DEFAULT_SCENE if DEFAULT_SCENE in scenes else None)
    if name is None or name not in scenes:
        st.info("Pick a scene in the sidebar.")
        return None
    return load_scene(scenes[name])


def store() -> RunStore:
    return RunStore()


class StreamlitProgress:
    """A ``core.progress.Progress`` that drives an ``st.progress`` bar with elapsed time."""

    def __init__(self, label: str) -> None:
        self.bar = st.progress(0.0, text=label)
        self.progress = Progress(self._update)

    def _update(self, fraction: float, message: str) -> None:
        self.bar.progress(fraction, text=f"{message} — {self.progress.elapsed():.1f} s")

    def done(self, message: str = "done") -> None:
        self.bar.progress(1.0, text=f"{message} — {self.progress.elapsed():.1f} s")


def option_widgets(options_type: type, key: str, show_advanced: bool = False):
    """Widgets for an options dataclass (built with ``core.models.registry.option``); returns an instance."""
    from core.models.registry import option_specs

    values = {}
    for spec in option_specs(options_type):
        if spec.get("advanced") and not show_advanced:
            values[spec["name"]] = spec["default"]
            continue
        label = spec["name"].replace("_", " ")
        widget_key = f"{key}.{spec['name']}"
        default, help_text = spec["default"], spec.get("help") or None
        if spec.get("choices"):
            choices = list(spec["choices"])
            values[spec["name"]] = st.selectbox(label, choices, index=choices.index(default) if default in choices else 0,
                                                help=help_text, key=widget_key)
        elif isinstance(default, bool):
            values[spec["name"]] = st.checkbox(label, value=default, help=help_text, key=widget_key)
        elif isinstance(default, int):
            values[spec["name"]] = int(st.number_input(
                label, value=default, step=int(spec.get("step") or 1),
                min_value=None if spec.get("min") is None else int(spec["min"]),
                max_value=None if spec.get("max") is None else int(spec["max"]), help=help_text, key=widget_key))
        elif isinstance(default, float):
            values[spec["name"]] = float(st.number_input(
                label, value=default, step=float(spec.get("step") or 0.1),
                min_value=None if spec.get("min") is None else float(spec["min"]),
                max_value=None if spec.get("max") is None else float(spec["max"]), help=help_text, key=widget_key))
        else:
            values[spec["name"]] = st.text_input(label, value=str(default), help=help_text, key=widget_key)
    return options_type(**values)


def score_cards(scores: dict, tau: str = "0.01") -> None:
    """The headline scores as metric cards, with units and subsample sizes underneath."""
    cols = st.columns(5)
    cols[0].metric("Chamfer", f"{scores['chamfer']:.4g}", help="mean nearest distance both ways, summed")
    cols[1].metric("EMD", f"{scores['emd']:.4g}", help="exact optimal transport, mean distance")
    cols[2].metric(f"F-score @ {tau}", f"{scores['fscore'].get(tau, float('nan')):.3f}")
    cols[3].metric("Accuracy", f"{scores['accuracy']:.4g}", help="mean distance prediction → ground truth")
    cols[4].metric("Completeness", f"{scores['completeness']:.4g}", help="mean distance ground truth → prediction")
    counted = scores["points_scored"]
    align = scores["alignment"]
    fitness = align.get("fitness")
    st.caption(
        f"Units: {scores['units']}. Chamfer/F-score on {counted['prediction']:,} prediction and "
        f"{counted['ground_truth']:,} ground-truth query points (seeded subsamples, searched against the full "
        f"other cloud); EMD on {counted['emd_per_side']:,} points per side. Alignment: {align['method']}, "
        f"scale {align['scale']:.4g}" + (f", ICP fitness {fitness:.3f}" if fitness is not None else "") + ".")
    table = {f"tau={t}": {"precision": scores["precision"][t], "recall": scores["recall"][t], "F-score": f}
             for t, f in scores["fscore"].items()}
    st.dataframe(table, width="stretch")


def options_summary(options) -> str:
    values = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    return ", ".join(f"{k}={v}" for k, v in values.items())
