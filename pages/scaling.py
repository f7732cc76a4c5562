"""VGGT scaling: time, memory and quality against the number of views, with fitted complexity models."""
import streamlit as st

from core.app import figures
from core.studies import scaling
from core.models import registry
from core.progress import Stopped
from core.app.widgets import StreamlitProgress, current_scene, option_widgets, require_app_navigation, store
from core.errors import UserError

require_app_navigation()

st.title("VGGT scaling")
st.markdown(
    "How do VGGT's time, memory and quality grow with the number of input views? Views are spaced evenly around "
    "the orbit (further subsets start at a seeded random offset); every run is cached, so a stopped study keeps "
    "what is done. Time and memory are fitted with the seed study's **a·n·log n + b**, the architecture-aware "
    "**a·n + b·n² + c** (frame attention and heads grow linearly, global attention quadratically in the tokens), "
    "and **a·FLOPs(n) + b** from the analytic FLOP count.")
scene = current_scene()
if scene is None:
    st.stop()
method = registry.get("vggt")
with st.form("scaling.form"):
    left, right = st.columns(2)
    with left:
        counts = st.multiselect("View counts", list(range(1, min(scene.num_views, 42) + 1)),
                                default=[c for c in scaling.DEFAULT_VIEW_COUNTS if c <= scene.num_views],
                                key="scaling.counts")
        repeats = st.number_input("Subsets per view count", 1, 10, 1, key="scaling.repeats")
        seed = st.number_input("Seed", 0, 10_000, 0, key="scaling.seed")
    with right:
        options = option_widgets(method.options_type, "scaling.options")
    submitted = st.form_submit_button("Run study", type="primary", key="scaling.run")

availability = method.availability(options)
if not availability.ok:
    st.warning(f"VGGT cannot run with these options: {availability.message()} "
               "Choose weights = random-full (VGGT-1B's real cost) or random-tiny (seconds) for a timing-only "
               "study.")

results_box = st.container()


def show(result: scaling.ScalingResult, flops) -> None:
    rows = scaling.summary_table(result)
    if not rows:
        return
    with results_box:
        st.subheader("Results")
        if result.stopped:
            st.info("The study was stopped; the points below are the finished ones (cached).")
        st.dataframe(rows, hide_index=True, width="stretch")
        n = [p.views for p in result.points]
        for quantity, label, values in (("seconds", "Time (s)", [p.seconds for p in result.points]),
                                        ("memory", "Peak memory (MB)", [p.peak_memory_mb for p in result.points])):
            fits = scaling.fit_models(n, values, flops)
            st.plotly_chart(figures.scaling_fit_figure(n, values, fits, flops, label), width="stretch",
                            key=f"scaling.{quantity}")
            if fits:
                best = scaling.best_fit(fits)
                verdict = (f"Best by BIC for {label.lower()}: {best.formula}." if best is not None else
                           "Best by BIC: undecided (each model needs more view counts than parameters).")
                st.dataframe(figures.fit_table(fits), hide_index=True, width="stretch")
                st.caption(verdict + " With few points or noisy timings the models can be indistinguishable; "
                           "compare the residuals.")
            else:
                st.caption("Fits need at least two (n log n) or three (quadratic) distinct view counts.")
        if result.quality_available:
            st.plotly_chart(figures.scaling_quality_figure(rows), width="stretch", key="scaling.quality")
        else:
            st.warning(f"Quality unavailable: {result.quality_note}. Only time and memory are shown; "
                       "scores of random weights would be meaningless.")


if submitted and availability.ok and counts:
    bar = StreamlitProgress("Scaling study")
    flops = scaling.vggt_flops_model(scene, options)
    try:
        result = scaling.run_study(scene, "vggt", sorted(counts), int(repeats), options, bar.progress, store(),
                                   seed=int(seed), flops=flops)
        st.session_state["scaling.result"] = (result, options)
    except Stopped:
        st.warning("Stopped; finished points are cached and reappear when you run the study again.")
    except UserError as error:
        st.error(f"The study cannot run: {error}")
if "scaling.result" in st.session_state:
    result, used = st.session_state["scaling.result"]
    show(result, scaling.vggt_flops_model(scene, used))
