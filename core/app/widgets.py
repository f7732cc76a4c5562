"""Thin Streamlit adapters shared by the pages: scene choice, progress, option widgets, results.

The only module of ``core`` that imports Streamlit; nothing else in ``core`` depends on it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from core.store.cache import REPO_ROOT, RunStore, cache_root
from core.progress import Progress
from core.data.scene import Scene, find_scenes
from core.eval.scores import Scores, threshold_key
from core.app.access import current_user, submit_allowed
from core.data.fingerprint import ground_truth_fingerprint

SCENE_KEY = "scene_name"
APP_RAN_KEY = "_reconbench_app_ran"
SAMPLE_ROOT = REPO_ROOT / "sample_data"
DEFAULT_SCENE = "toy"


def require_app_navigation() -> None:
    """Call first in every page. A page opened by its URL on a freshly started server, before
    ``app.py`` ever ran, is run by Streamlit's legacy ``pages/`` mode (no scene picker, a raw file
    menu); switch the process to ``app.py``'s ``st.navigation`` and rerun the same URL through it."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not st.session_state.get(APP_RAN_KEY):
        PagesManager.uses_pages_directory = False
        st.rerun()


def mark_app_ran() -> None:
    """Called by ``app.py``: this session has been through its navigation (see above)."""
    st.session_state[APP_RAN_KEY] = True


@st.cache_resource(show_spinner=False)
def _cleaned_staging(root: str) -> int:
    return len(RunStore(root).clean_staging())


def clean_staging_once() -> None:
    """Called by ``app.py``: remove the store's staging leftovers (``.tmp-*`` older than an hour,
    :meth:`core.store.cache.RunStore.clean_staging`) once per server process and cache root."""
    _cleaned_staging(str(cache_root()))


def damaged_runs_notice(run_store: RunStore, scene_name: str | None = None) -> None:
    """A warning listing the store's damaged run folders (skipped by every listing) and the
    command that removes them; nothing when there is none."""
    damaged = run_store.damaged(scene_name)
    if not damaged:
        return
    with st.expander(f"⚠️ {len(damaged)} damaged run(s) skipped", expanded=False):
        st.caption("These run folders cannot be read; they are left out of the leaderboard and computed "
                   "again when asked for. Remove them with `python -m core cache repair`.")
        st.dataframe([{"method": d.method, "key": d.key, "reason": d.reason} for d in damaged],
                     hide_index=True, width="stretch")


def scene_roots() -> list[Path]:
    return [SAMPLE_ROOT, cache_root() / "scenes"]


def available_scenes() -> dict[str, Path]:
    """{name: folder} of the scenes this session may open: the bundled samples and the prepared
    scenes; in hosted mode the prepared scenes are the user's own and the shared ones, named
    ``<owner namespace>/<scene>`` (:func:`core.hosted.namespaces.visible_scenes`)."""
    from core.hosted import is_hosted

    if not is_hosted():
        return find_scenes(*scene_roots())
    from core.hosted.namespaces import visible_scenes

    found = find_scenes(SAMPLE_ROOT)
    user = current_user()
    if user is not None:
        found.update({ref.label: ref.path for ref in visible_scenes(user)})
    return found


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

    def clear(self) -> None:
        """Remove the bar (for work whose result replaces it on screen)."""
        self.bar.empty()


def option_widgets(options_type: type, key: str, show_advanced: bool = False, defaults: dict | None = None,
                   advanced_expander: bool = False, columns: int = 1):
    """One widget per option of ``options_type`` (declared with :func:`core.options.option`),
    inside whatever container is current; returns a validated instance.

    ``defaults`` overrides declared defaults (e.g. the weights choice that is available here).
    Advanced options go into one "Advanced options" expander when ``advanced_expander``, are
    shown inline when ``show_advanced``, else keep their defaults. ``columns`` > 1 spreads the
    widgets over that many columns (in declaration order, row by row). Raises
    :class:`core.errors.OptionError` only if a widget could produce an invalid value.
    """
    from core import options as option_surface

    values = {}
    specs = option_surface.specs(options_type)
    if defaults:
        specs = [dataclasses.replace(spec, default=defaults[spec.name]) if spec.name in defaults else spec
                 for spec in specs]
    advanced = [spec for spec in specs if spec.advanced]
    shown = [spec for spec in specs if show_advanced or not spec.advanced]
    values.update({spec.name: spec.default for spec in specs if spec not in shown})
    slots = st.columns(columns) if columns > 1 else None
    for index, spec in enumerate(shown):
        if slots is None:
            values[spec.name] = _option_widget(spec, key)
        else:
            with slots[index % columns]:
                values[spec.name] = _option_widget(spec, key)
    if advanced and advanced_expander and not show_advanced:
        with st.expander("Advanced options"):
            slots = st.columns(columns) if columns > 1 else None
            for index, spec in enumerate(advanced):
                if slots is None:
                    values[spec.name] = _option_widget(spec, key)
                else:
                    with slots[index % columns]:
                        values[spec.name] = _option_widget(spec, key)
    return option_surface.parse(options_type, values)


def _option_widget(spec, key: str):
    """The widget of one option spec (its value)."""
    label = spec.name.replace("_", " ")
    widget_key = f"{key}.{spec.name}"
    help_text = spec.help or None
    if spec.kind == "choice":
        choices = list(spec.choices)
        index = choices.index(spec.default) if spec.default in choices else 0
        return st.selectbox(label, choices, index=index, help=help_text, key=widget_key)
    if spec.kind == "bool":
        return st.checkbox(label, value=spec.default, help=help_text, key=widget_key)
    if spec.kind == "int":
        return int(st.number_input(
            label, value=int(spec.default), step=int(spec.step or 1),
            min_value=None if spec.min is None else int(spec.min),
            max_value=None if spec.max is None else int(spec.max), help=help_text, key=widget_key))
    if spec.kind == "float":
        return float(st.number_input(
            label, value=float(spec.default), step=float(spec.step or 0.1),
            min_value=None if spec.min is None else float(spec.min),
            max_value=None if spec.max is None else float(spec.max), help=help_text, key=widget_key))
    from core.options import is_path_option

    if spec.kind == "str" and is_path_option(spec.name):  # never a free-text server path
        return checkpoint_choice(label, widget_key, help_text)
    return st.text_input(label, value=str(spec.default), help=help_text, key=widget_key)


def checkpoint_choice(label: str, key: str, help_text: str | None = None, match: str = "") -> str:
    """A select box of the checkpoint files ``python -m core weights list`` finds on this machine
    (their keys shown, never their paths), with "(default)" = ""; no widget and "" in hosted mode,
    where explicit checkpoint files are not accepted at all. ``match`` keeps the checkpoints whose
    key contains it."""
    from core.hosted import is_hosted

    if is_hosted():
        return ""
    from core.models import weights

    found = {}
    for checkpoint_key, checkpoint in sorted(weights.registered().items()):
        if match in checkpoint_key and weights.is_available(checkpoint):
            found[str(weights.resolve(checkpoint))] = f"{checkpoint_key} ({checkpoint.filename})"
    choices = [""] + list(found)
    return st.selectbox(label, choices, format_func=lambda value: found.get(value, "(default)"),
                        help=help_text, key=key)


def weights_defaults(method) -> dict:
    """``{"weights": the best available choice}`` (:func:`core.models.registry.default_weights`),
    or {} for a method without weights."""
    from core.models import registry

    choice = registry.default_weights(method)
    return {} if choice is None else {"weights": choice}


def weights_notice(method, options, availability) -> None:
    """One box about the weights in use: the random-weights banner, or (when they are missing)
    one warning listing each missing file and the one command that fetches them all."""
    from core.options import RANDOM_WEIGHTS

    kind = getattr(options, "weights", None)
    if kind in RANDOM_WEIGHTS:
        st.info(f"Random weights ({kind}): {method.label} runs with untrained weights, so its geometry and "
                "scores are meaningless; use it to try the pipeline and to measure time and memory.")
    if availability.ok:
        return
    lines = availability.details or (availability.missing,)
    text = (f"**{method.label} cannot run with these weights**: not on this machine (looked in "
            "`$RECONBENCH_WEIGHTS` and the Hugging Face cache):\n\n"
            + "\n".join(f"- {line}" for line in lines))
    if availability.fix_command:
        text += ("\n\nFetch on a machine with internet (then copy the folder to `$RECONBENCH_WEIGHTS`):"
                 f"\n```bash\n{availability.fix_command}\n```")
    text += "\n\nOr choose `random-tiny` weights to try the pipeline."
    st.warning(text)


def cost_notice(method_name: str, options, n_views: int, scene: Scene, key: str) -> bool:
    """The cost estimate (:mod:`core.studies.cost`) shown before Run: "Estimated: about N s, M GB"
    with how it was made; above ``RECONBENCH_CONFIRM_SECONDS`` a checkbox must confirm. Returns
    whether the run may start (True when no confirmation is needed or it was given)."""
    from core.studies import cost

    try:
        found = cost.estimate(method_name, options, n_views, scene, store())
    except Exception as error:  # noqa: BLE001 -- an estimate must never block the page
        st.caption(f"No cost estimate: {error}")
        return True
    st.caption(f"Estimated cost: **{found.text()}** on {n_views} view(s) (" + "; ".join(found.basis) + ").")
    if not cost.needs_confirmation(found):
        return True
    return st.checkbox(f"Run anyway: this will take {found.text().removeprefix('about ')} "
                       f"(more than {cost.format_seconds(cost.confirm_seconds())})", key=f"{key}.confirm")


def parse_view_ids(text: str) -> list[int]:
    """View ids from comma- or space-separated text; UserError on anything else."""
    from core.errors import UserError

    items = text.replace(",", " ").split()
    try:
        return [int(item) for item in items]
    except ValueError:
        raise UserError(f"view ids must be whole numbers separated by commas; got {text!r}") from None


def score_cards(scores: Scores, tau: float = 0.01) -> None:
    """The headline scores of a scored run (``scores.scored``) as metric cards, with units and
    subsample sizes underneath and precision / recall / F-score at every threshold in a table."""
    fscore = scores.fscore_at(tau)
    cols = st.columns(5)
    cols[0].metric("Chamfer", f"{scores.chamfer:.4g}", help="mean nearest distance both ways, summed")
    cols[1].metric("EMD", f"{scores.emd:.4g}", help="exact optimal transport, mean distance")
    cols[2].metric(f"F-score @ {threshold_key(tau)}", "—" if fscore is None else f"{fscore:.3f}")
    cols[3].metric("Accuracy", f"{scores.accuracy:.4g}", help="mean distance prediction → ground truth")
    cols[4].metric("Completeness", f"{scores.completeness:.4g}", help="mean distance ground truth → prediction")
    counted, align = scores.points_scored, scores.alignment
    st.caption(
        f"Units: {scores.units}. Chamfer/F-score on {counted.prediction:,} prediction and "
        f"{counted.ground_truth:,} ground-truth query points (seeded subsamples, searched against the full "
        f"other cloud); EMD on {counted.emd_per_side:,} points per side. Alignment: {align.method}, "
        f"scale {align.scale:.4g}" + (f", ICP fitness {align.fitness:.3f}" if align.fitness is not None else "")
        + ".")
    table = {f"tau={t.key}": {"precision": t.precision, "recall": t.recall, "F-score": t.fscore}
             for t in scores.thresholds}
    st.dataframe(table, width="stretch")
    cameras = scores.cameras
    if cameras is not None and cameras.available:
        from core.app.figures import camera_error_rows

        st.caption(f"Camera errors over all {cameras.pairs:,} view pairs (after Sim(3) alignment of the cameras):")
        st.dataframe(camera_error_rows(cameras), hide_index=True, key=None,
                     column_config={"measure": "Measure", "value": "Value"})


def options_summary(options) -> str:
    values = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    return ", ".join(f"{k}={v}" for k, v in values.items())


NOT_SCORED_RANDOM = ("Not scored: random weights make the scores meaningless. To see the protocol run anyway, "
                     "score this run on the Metrics page.")


def show_notes(notes: list[str], weights_kind: str | None = None) -> None:
    """A warning when the run used random weights (its scores mean nothing); notes as a caption."""
    from core.options import RANDOM_WEIGHTS
    from core.runner import RANDOM_NOTE

    if weights_kind in RANDOM_WEIGHTS:
        st.warning(f"{RANDOM_NOTE} ({weights_kind})")
    others = [n for n in notes if n != RANDOM_NOTE]
    if others:
        st.caption("Notes: " + " · ".join(others))


def _pick_views(scene: Scene, method, key: str) -> list[int]:
    """View picker: a count spaced uniformly around the capture (default), or an explicit choice."""
    limit = min(scene.num_views, method.max_views or scene.num_views)
    low = min(method.min_views, limit)
    if limit == 1:
        view = st.number_input("View", 0, scene.num_views - 1, 0, key=f"{key}.view")
        return [int(view)]
    default = min(max(5, low), limit)
    count = st.slider("Number of views", low, limit, default, key=f"{key}.count",
                      help="spaced evenly around the orbit")
    uniform = scene.uniform_views(count)
    chosen = st.multiselect("Views (edit to choose them yourself)", list(range(scene.num_views)), default=uniform,
                            key=f"{key}.views.{count}")
    return sorted(int(v) for v in chosen)


def method_workbench(family: str) -> None:
    """Layout shared by the Discriminative and Generative pages: pick a method, views and options,
    run it through the cache, and show its cloud, cameras, depth maps, mesh and scores."""
    from core.app import figures
    from core.models import registry
    from core.errors import UserError
    from core.progress import Stopped
    from core.runner import is_random, run_method
    from core.app.exports import export_buttons
    from core.app import jobs as app_jobs

    scene = current_scene()
    if scene is None:
        st.stop()
    names = registry.names(family)
    if not names:
        st.info("No method of this family is installed.")
        st.stop()
    methods = {registry.get(n).label: registry.get(n) for n in names}
    label = st.selectbox("Method", list(methods), key=f"{family}.method")
    method = methods[label]
    st.caption(method.description)
    # Inputs: no st.form, so the view list follows the count and the weights notice follows
    # the weights choice at once (a form would hold both until Run).
    with st.container(border=True):
        left, right = st.columns([1, 1])
        with left:
            view_ids = _pick_views(scene, method, f"{family}.{method.name}")
        with right:
            options = option_widgets(method.options_type, f"{family}.{method.name}.options",
                                     defaults=weights_defaults(method), advanced_expander=True)
        availability = method.availability(options)
        licences = method.licences(options)
        if licences:
            st.caption("Checkpoint licence: " + "; ".join(licences))
        weights_notice(method, options, availability)
        confirmed = cost_notice(method.name, options, len(view_ids), scene, f"{family}.{method.name}") \
            if availability.ok and view_ids else True
        may_submit = submit_allowed()
        submitted = st.button("Run", type="primary", key=f"{family}.run",
                              disabled=not availability.ok or not may_submit)
    run_store = store()
    shown_key = f"{family}.shown"
    if submitted and not confirmed:
        st.warning("Tick “Run anyway” to start this long run.")
    elif submitted and not app_jobs.inline():
        # A job on Ray: it outlives this session; follow() below shows it and reattaches after a reload.
        try:
            from core.jobs.client import run_spec

            app_jobs.submit(run_spec(scene, scene.path, method.name, view_ids, options, run_store,
                                     score_random_weights=False), f"{family}.job")
        except UserError as error:
            st.error(f"{method.label} cannot run: {error}")
    elif submitted:
        bar = StreamlitProgress(f"Running {method.label} on {len(view_ids)} view(s)")
        try:
            # Random-weight runs are not scored here (their scores mean nothing and scoring costs
            # more than the run on a CPU); the Metrics page scores any stored run on request.
            result = run_method(scene, method.name, view_ids, options, bar.progress, run_store,
                                score_random_weights=False)
            bar.done("cached result" if result.cached else "finished")
            st.session_state[shown_key] = (scene.name, method.name, result.key)
        except Stopped:
            bar.clear()
            st.warning("Stopped: nothing was stored.")
        except UserError as error:
            bar.clear()
            st.error(f"{method.label} cannot run: {error}")
    if not app_jobs.inline():
        final = app_jobs.follow(f"{family}.job")
        if final is not None and app_jobs.show_outcome(final, method.label):
            st.session_state[shown_key] = (scene.name, method.name, final["result"]["key"])

    runs = [r for r in run_store.runs(scene.name, ground_truth_fingerprint(scene))
            if r.method == method.name]  # this method's runs on this ground truth only
    if not runs:
        st.info(f"No stored run of {method.label} for this scene yet.")
        return
    labels = {(r.scene, r.method, r.key): f"{registry.run_label(r.method, r.meta)} · "
              f"{len(r.meta.get('view_ids') or [])} views · {r.meta.get('seconds', 0):.1f} s · {r.key[:8]}"
              for r in runs}
    keys = list(labels)
    wanted = st.session_state.get(shown_key)
    if wanted in keys:
        st.session_state[f"{family}.inspect"] = wanted
    elif st.session_state.get(f"{family}.inspect") not in keys:
        st.session_state.pop(f"{family}.inspect", None)
    choice = st.selectbox("Stored runs", keys, format_func=labels.get, key=f"{family}.inspect")
    record = next(r for r in runs if (r.scene, r.method, r.key) == choice)
    recon = record.load()
    show_notes(recon.notes, recon.weights_kind)
    cols = st.columns(4)
    cols[0].metric("Time", f"{recon.seconds:.1f} s")
    cols[1].metric("Peak memory", f"{recon.peak_memory_bytes / 2**20:,.0f} MB")
    cols[2].metric("Parameters", f"{recon.parameter_count / 1e6:,.1f} M" if recon.parameter_count else "—")
    cols[3].metric("Points", f"{len(recon.points):,}")
    st.caption(f"Views {recon.view_ids} on {recon.device}; weights: {recon.weights_kind or 'none'}"
               + (f" ({'; '.join(recon.extra['licences'])})" if recon.extra.get("licences") else "")
               + f"; options: {', '.join(f'{k}={v}' for k, v in recon.options.items())}")

    images = [scene.images[v] for v in recon.view_ids if 0 <= v < scene.num_views]
    if images:
        st.image(images[:8], caption=[f"input view {v}" for v in recon.view_ids[:8]], width=110)
    renders = figures.renders_from_extra(recon)
    if renders:
        st.image(renders, caption=[f"render {i}" for i in range(len(renders))], width=110)

    if recon.confidence is not None:
        left, right = st.columns(2)
        hide = left.slider("Hide the least confident points (%)", 0, 95, 0, step=5, key=f"{family}.hide",
                           help="display filter only; the stored run and its scores are unchanged")
        color_by = right.radio("Colour", ["rgb", "confidence"], horizontal=True, key=f"{family}.color")
    else:   # nothing to filter or colour by: say why instead of greyed-out controls
        hide, color_by = 0, "rgb"
        shown_label = registry.get(recon.method).label if recon.method in names else recon.method
        st.caption(f"{shown_label} gives no per-point confidence, so there is no confidence filter; the points are "
                   + ("in their predicted colours." if recon.colors is not None else "coloured by height."))
    shown = figures.without_least_confident(recon, hide)
    fig, caption = figures.reconstruction_figure(shown, color_by=color_by, image_size=scene.image_size)
    st.plotly_chart(fig, width="stretch", key=f"{family}.cloud")
    st.caption(caption + (" — red: predicted cameras, numbered by scene view" if recon.has_cameras else ""))
    if recon.mesh_vertices is not None and recon.mesh_faces is not None and len(recon.mesh_faces):
        fig, caption = figures.mesh_figure(recon.mesh_vertices, recon.mesh_faces, recon.mesh_colors)
        st.plotly_chart(fig, width="stretch", key=f"{family}.mesh")
        st.caption(caption)
    losses = (recon.extra or {}).get("loss_history")
    if losses:
        st.plotly_chart(figures.loss_curve_figure(losses), width="stretch", key=f"{family}.loss")
        st.caption(f"Global alignment: {len(losses)} iterations, loss {losses[0]:.4g} → {losses[-1]:.4g}.")
    if recon.depth_maps is not None:
        st.plotly_chart(figures.depth_figure(list(recon.depth_maps[:8]), [f"view {v}" for v in recon.view_ids[:8]]),
                        width="stretch", key=f"{family}.depth")
        st.caption("Predicted depth maps on one colour scale (2nd–98th percentile of every view's depths, in "
                   "the method's units; blank = no depth).")
    scores = Scores.from_json(record.evaluation) if record.evaluation else None
    if scores is not None and scores.scored:
        st.subheader("Scores against the ground truth")
        score_cards(scores)
        if is_random(recon):
            st.caption("These scores come from random weights and mean nothing about the method.")
    elif scores is not None:
        st.warning(f"Not scored: {scores.error}")
    elif is_random(recon):
        st.info(NOT_SCORED_RANDOM)
    export_buttons(record, scene, family, recon)
