"""View-count scaling: time, memory and quality of multi-view models against the number of views, with
fitted complexity models and an overlay of several models measured back to back."""
import streamlit as st

from core.app.access import submit_allowed
from core.app import figures
from core.app.widgets import (StreamlitProgress, current_scene, option_widgets, require_app_navigation, store,
                              weights_defaults, weights_notice)
from core.errors import UserError
from core.app import jobs as app_jobs
from core.jobs.client import scaling_spec
from core.models import registry
from core.studies import cost, scaling

require_app_navigation()

st.title("View-count scaling")
st.markdown(
    "How do a multi-view model's time, memory and quality grow with the number of input views? Views are spaced "
    "evenly around the orbit (further subsets start at a seeded random offset); every run is cached, so a stopped "
    "study keeps what is done. Several models run back to back at each view count, so the machine's load affects "
    "them alike, and their curves are overlaid. Time and memory are fitted with the seed study's "
    "**a·n·log n + b**, the architecture-aware **a·n + b·n² + c** (frame attention and heads grow linearly, "
    "global attention quadratically in the tokens), and **a·FLOPs(n) + b** from the analytic FLOP count where "
    "the model has one.")
scene = current_scene()
if scene is None:
    st.stop()
names = scaling.multi_view_methods()
labels = {name: registry.get(name).label for name in names}
chosen = st.multiselect("Models", names, default=[n for n in ("vggt",) if n in names] or names[:1],
                        format_func=labels.get, key="scaling.methods",
                        help="every registered discriminative model that takes more than one view; several are "
                             "measured back to back, interleaved per view count")
with st.container(border=True):
    left, right = st.columns(2)
    with left:
        counts = st.multiselect("View counts", list(range(1, min(scene.num_views, 42) + 1)),
                                default=[c for c in scaling.DEFAULT_VIEW_COUNTS if c <= scene.num_views],
                                key="scaling.counts")
        repeats = st.number_input("Subsets per view count", 1, 10, 1, key="scaling.repeats")
        seed = st.number_input("Seed", 0, 10_000, 0, key="scaling.seed")
    options = {}
    with right:
        for name in chosen:
            with st.expander(f"{labels[name]} options", expanded=len(chosen) == 1):
                method = registry.get(name)
                options[name] = option_widgets(method.options_type, f"scaling.{name}.options",
                                               defaults=weights_defaults(method))
    ready = True
    for name, chosen_options in options.items():
        method = registry.get(name)
        availability = method.availability(chosen_options)
        ready = ready and availability.ok
        weights_notice(method, chosen_options, availability)
    confirmed = True
    if ready and chosen and counts:
        estimates = scaling.study_estimates(scene, options, sorted(counts), store())
        known = [seconds for seconds in estimates.values() if seconds is not None]
        if known:
            total = sum(known) * int(repeats)
            partial = " (models without an estimate not counted)" if len(known) < len(estimates) else ""
            st.caption(f"Estimated study time: **about {cost.format_seconds(total)}** for "
                       f"{len(estimates) * int(repeats)} run(s){partial}; random weights are timed only, never "
                       "scored.")
            if total > cost.confirm_seconds():
                confirmed = st.checkbox(f"Run anyway: about {cost.format_seconds(total)}", key="scaling.confirm")
    submitted = st.button("Run study", type="primary", key="scaling.run",
                          disabled=not ready or not submit_allowed())
if not chosen:
    st.info("Choose at least one model.")
if submitted and not confirmed:
    st.warning("Tick “Run anyway” to start this long study.")

results_box = st.container()
NUMBER = st.column_config.NumberColumn
SUMMARY_COLUMNS = {
    "model": st.column_config.TextColumn("Model"),
    "views": NUMBER("Views", format="%d"), "subsets": NUMBER("Subsets", format="%d"),
    "seconds": NUMBER("Time (s)", format="%.2f", help="mean over the subsets"),
    "seconds_std": NUMBER("± time (s)", format="%.2f", help="population standard deviation over the subsets"),
    "peak_memory_mb": NUMBER("Peak memory (MB)", format="%.0f"),
    "chamfer": NUMBER("Chamfer", format="%.4f", help="normalised units; lower is better"),
    "chamfer_std": NUMBER("± Chamfer", format="%.4f"),
    "emd": NUMBER("EMD", format="%.4f", help="normalised units; lower is better"),
    "emd_std": NUMBER("± EMD", format="%.4f"),
    "fscore@0.01": NUMBER("F-score @ 0.01", format="%.3f", help="higher is better"),
    "fscore@0.01_std": NUMBER("± F-score", format="%.3f"),
}


def show(results: dict, used: dict) -> None:
    curves = {name: scaling.curves(result, scaling.flops_model(name, used[name], scene))
              for name, result in results.items()}
    rows = [{"model": labels.get(name, name), **row} for name, result in results.items()
            for row in scaling.summary_table(result)]
    if not rows:
        return
    with results_box:
        st.subheader("Results")
        if any(result.stopped for result in results.values()):
            st.info("The study was stopped; the points below are the finished ones (cached).")
        st.plotly_chart(figures.scaling_overlay_figure(curves, labels), width="stretch", key="scaling.overlay")
        st.caption("Markers: measured runs; dashed: each model's best fit by BIC (when the view counts decide one).")
        st.dataframe(rows, hide_index=True, width="stretch", column_config=SUMMARY_COLUMNS)
        tabs = st.tabs([labels.get(name, name) for name in results])
        for tab, (name, result) in zip(tabs, results.items()):
            with tab:
                flops = scaling.flops_model(name, used[name], scene)
                for quantity, label in scaling.QUANTITIES.items():
                    curve = curves[name][quantity]
                    if not curve.views:
                        continue
                    st.plotly_chart(figures.scaling_fit_figure(curve.views, curve.values, curve.fits, flops, label),
                                    width="stretch", key=f"scaling.{name}.{quantity}")
                    if curve.fits:
                        verdict = (f"Best by BIC for {label.lower()}: {curve.best.formula}." if curve.best else
                                   "Best by BIC: undecided (each model needs more view counts than parameters).")
                        st.dataframe(figures.fit_table(curve.fits), hide_index=True, width="stretch")
                        st.caption(verdict + " With few points or noisy timings the models can be "
                                   "indistinguishable; compare the residuals.")
                    else:
                        st.caption("Fits need at least two (n log n) or three (quadratic) distinct view counts.")
                if result.quality_available:
                    st.plotly_chart(figures.scaling_quality_figure(scaling.summary_table(result)), width="stretch",
                                    key=f"scaling.{name}.quality")
                else:
                    st.warning(f"Quality unavailable for {labels.get(name, name)}: {result.quality_note}. Only time "
                               "and memory are shown; scores of random weights would be meaningless.")


if submitted and confirmed and ready and chosen and counts and not app_jobs.inline():
    # One job on Ray runs the whole study (its runs back to back); follow() shows it, also after a reload.
    try:
        app_jobs.submit(scaling_spec(scene, scene.path, options, sorted(counts), int(repeats), int(seed), store()),
                        "scaling.job")
    except UserError as error:
        st.error(f"The study cannot run: {error}")
elif submitted and confirmed and ready and chosen and counts:
    bar = StreamlitProgress("Scaling study")
    try:
        results = scaling.run_studies(scene, options, sorted(counts), int(repeats), bar.progress, store(),
                                      seed=int(seed))
        bar.clear()
        st.session_state["scaling.result"] = (results, options)
    except UserError as error:
        bar.clear()
        st.error(f"The study cannot run: {error}")
if not app_jobs.inline():
    finished = app_jobs.follow("scaling.job")
    if finished is not None and app_jobs.show_outcome(finished, "Scaling study"):
        done = finished["result"]
        used = {name: registry.get(name).parse_options(values) for name, values in done["methods"].items()}
        st.session_state["scaling.result"] = (scaling.results_from_json(done["results"]), used)
if "scaling.result" in st.session_state:
    show(*st.session_state["scaling.result"])
