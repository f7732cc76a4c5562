"""Compare: chosen runs of the scene side by side, shareable by URL (?runs=…&camera=…&gt=…&random=…)."""
import streamlit as st

from core.app import compare_figures
from core.app.compare_widgets import RANDOM_MARK, depth_error_maps, error_cloud, list_label, set_url, url_value
from core.app.widgets import current_scene, require_app_navigation, store
from core.studies import compare

require_app_navigation()

MAX_3D = 4
POINTS_PER_VIEW = 20_000

st.title("Compare")
scene = current_scene()
if scene is None:
    st.stop()
runs = compare.compared_runs(store(), scene)  # this ground truth's runs (and those of unknown ground truth)
if not runs:
    st.info(f"No stored run for scene “{scene.name}” yet: run a method on its page or import a file on Metrics.")
    st.stop()
by_ref = {r.ref: r for r in runs}
linked = [by_ref[x] for x in compare.parse_refs(url_value("runs")) if x in by_ref]

# ---------------------------------------------------------------- choice of runs
with st.container(border=True):
    left, right = st.columns(2)
    method_labels = {}
    for run in runs:
        method_labels.setdefault(run.method, run.label.split(" · ")[0])
    with left:
        methods = st.multiselect("Methods", list(method_labels), format_func=method_labels.get,
                                 placeholder="all methods", key="compare.methods")
        kinds = sorted({r.weights_kind or "none" for r in runs})
        weights = st.multiselect("Weights", kinds, placeholder="any weights", key="compare.weights",
                                 help="'none': methods without learned weights (COLMAP, imported files)")
    with right:
        counts = sorted({r.views for r in runs})
        views = st.multiselect("Number of views", counts, placeholder="any number", key="compare.views",
                               format_func=lambda n: str(n) if n else "none (imported)")
        if "compare.random" not in st.session_state:
            st.session_state["compare.random"] = url_value("random") == "1" or any(r.random for r in linked)
        include_random = st.toggle("Include random-weight runs", key="compare.random",
                                   help="excluded by default: their geometry and scores are meaningless; marked ⚠")
    candidates = compare.filter_runs(runs, methods or None,
                                     [None if k == "none" else k for k in weights] if weights else None,
                                     views or None, include_random)
    if "compare.runs" not in st.session_state:
        if linked:
            chosen = [r.ref for r in linked]
        else:  # the best-scored run of each method (up to four), else the newest runs
            best: dict[str, compare.ComparedRun] = {}
            for run in sorted((r for r in candidates if r.scored), key=lambda r: r.value("chamfer")):
                best.setdefault(run.method, run)
            chosen = [r.ref for r in list(best.values())[:MAX_3D]] or [r.ref for r in candidates[:MAX_3D]]
        st.session_state["compare.runs"] = chosen
    options = [r.ref for r in candidates]
    st.session_state["compare.runs"] = [x for x in st.session_state["compare.runs"] if x in options]
    refs = st.multiselect("Runs to compare", options, format_func=lambda x: list_label(by_ref[x]),
                          key="compare.runs", help=f"the first {MAX_3D} scored ones are drawn in 3-D")

chosen = [by_ref[x] for x in refs]
left, middle, right = st.columns([2, 1, 1])
preset = url_value("camera", "oblique")
if "compare.camera" not in st.session_state:
    st.session_state["compare.camera"] = preset if preset in compare_figures.CAMERA_PRESETS else "oblique"
camera = left.radio("Camera", compare_figures.CAMERA_PRESETS, key="compare.camera", horizontal=True,
                    help="where every linked view starts; drag any view and the others follow")
if "compare.gt" not in st.session_state:
    st.session_state["compare.gt"] = url_value("gt", "1") != "0"
show_gt = middle.toggle("Ground truth", key="compare.gt", help="draw the ground truth (magenta) in every view")
set_url(runs=compare.refs_text(chosen), camera=camera, gt="1" if show_gt else "0",
        random="1" if include_random else "")
right.caption("The address bar now holds this comparison: share it to show exactly these runs.")

if not chosen:
    st.info("Choose runs above (or widen the filters).")
    st.stop()
unscored = [r for r in chosen if not r.scored]
if unscored:
    st.warning("Not scored, so shown only in the time and memory columns: "
               + "; ".join(f"{list_label(r)} ({r.scores.error if r.scores else r.problem or 'never scored'})"
                           for r in unscored) + ". Score them on the Metrics page.")
if any(r.random for r in chosen):
    st.warning("⚠ marks runs with random weights: their geometry and scores are meaningless.")

# ---------------------------------------------------------------- linked 3-D views
st.subheader("Side by side in 3-D")
if not scene.has_ground_truth:
    st.info("This scene has no ground truth: nothing is aligned or scored, so there is nothing to draw here.")
else:
    drawn = [r for r in chosen if r.scored][:MAX_3D]
    clouds = [(r, error_cloud(scene, r, POINTS_PER_VIEW)) for r in drawn]
    clouds = [(r, c) for r, c in clouds if c is not None and len(c.points)]
    if clouds:
        scale = compare.shared_scale([c.errors for _, c in clouds])
        gt = compare.normalised_ground_truth(scene, 8000) if show_gt else None
        figure = compare_figures.linked_clouds_figure(
            [(compare_figures.panel_title(r.label, r.views_text, RANDOM_MARK if r.random else ""), c)
             for r, c in clouds], gt, scale,
            compare_figures.camera_for(camera, compare.scene_up(scene)))
        st.iframe(compare_figures.linked_html(figure), height=int(figure.layout.height) + 4)
        st.caption(f"{len(clouds)} linked views: one camera drives all (drag, zoom or reset any view). Colour: distance "
                   f"of each aligned point to the ground truth on one scale for all runs (normalised units, 0 to "
                   f"{scale:.3g}, the 95th percentile of all their distances). "
                   + ("Ground truth in magenta (its legend entry hides it in every view). " if show_gt else "")
                   + "Points: " + ", ".join(f"{len(c.points):,} of {c.total:,}" for _, c in clouds) + ".")
    if len([r for r in chosen if r.scored]) > MAX_3D:
        st.caption(f"Only the first {MAX_3D} scored runs are drawn in 3-D; the charts below show all of them.")

# ---------------------------------------------------------------- depth errors
rows = [(compare_figures.panel_title(r.label, mark=RANDOM_MARK if r.random else ""), depth_error_maps(scene, r, 4))
        for r in chosen if r.scored]
rows = [(title, maps) for title, maps in rows if maps]
if rows:
    st.subheader("Depth error per view")
    depth_scale = compare.shared_scale([m for _, maps in rows for _, m in maps])
    st.plotly_chart(compare_figures.depth_error_figure(rows, depth_scale), width="stretch", key="compare.depth")
    st.caption(f"Relative depth error |d − d*| / d* after per-view median scaling, object pixels only (blank: no "
               f"value); one colour scale for all (0 to {depth_scale:.3g}, the 95th percentile); first 4 views of each "
               "run, titled by scene view.")

# ---------------------------------------------------------------- scores and cost
scored = [r for r in chosen if r.scored]
if scored:
    st.subheader("Scores")
    st.plotly_chart(compare_figures.score_bars_figure(scored), width="stretch", key="compare.bars")
    st.caption("Every score the runs have: distances in normalised units (ground truth in the unit sphere), "
               "F-score, pose AUC and δ as fractions. ↓ lower is better, ↑ higher is better.")

    st.subheader("Quality against time and memory")
    quality_keys = [s.key for s in compare.SCORES if any(r.value(s.key) is not None for r in scored)]
    quality = st.selectbox("Quality", quality_keys, format_func=lambda k: compare.SPECS[k].title,
                           key="compare.quality")
    st.plotly_chart(compare_figures.pareto_figure(chosen, quality), width="stretch", key="compare.pareto")
    st.caption("Ringed and joined: the Pareto front, runs that no other run beats on both cost and quality. "
               "Costs on log axes; time excludes model loading. Imported files have no time or memory of a method "
               "and are left out here.")

    series = compare.views_series(candidates, quality)
    if series:
        st.subheader("Quality against the number of views")
        st.plotly_chart(compare_figures.views_figure(series, quality), width="stretch", key="compare.views_plot")
        st.caption("Every method (with the same options and weights) that has scored runs at several view counts "
                   "among the filtered runs: mean over its runs, bars one standard deviation.")
