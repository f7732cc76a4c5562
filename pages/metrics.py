"""Metrics: import a reconstruction made anywhere, score it, and the leaderboard of every run."""
import streamlit as st

from core.eval import metrics
from core.eval.scores import Scores
from core.app.access import admin_delete_button, submit_allowed
from core.app import figures
from core.app.exports import export_buttons
from core.data.importers import SUPPORTED_SUFFIXES
from core.runner import evaluate_run, import_file, leaderboard
from core.app.compare_widgets import leaderboard_table
from core.app.widgets import (StreamlitProgress, current_scene, damaged_runs_notice, option_widgets,
                              parse_view_ids, require_app_navigation, score_cards, show_notes, store)
from core.errors import UserError
from core.app import jobs as app_jobs
from core.jobs.client import evaluate_spec, score_spec

require_app_navigation()

st.title("Metrics")
scene = current_scene()
if scene is None:
    st.stop()
if not scene.has_ground_truth:
    st.warning(f"Scene “{scene.name}” has no ground-truth points yet, so nothing can be scored. "
               "Prepare its ground truth on the Dataset page (object crop of the dense cloud).")
    st.stop()

run_store = store()
st.caption("Protocol: crop to the ground truth's box (+10 %), normalise the ground truth into the unit sphere, "
           "align (Sim(3) on cameras when both sides have them, else a global rotation search), multi-scale ICP "
           "with scale, then score on seeded subsamples.")

st.subheader("Evaluate a reconstruction")
upload = st.file_uploader("Reconstruction file (PLY points or mesh, OBJ/GLB mesh, or a VGGT predictions.npz)",
                          type=[s.lstrip(".") for s in SUPPORTED_SUFFIXES], key="metrics.upload")
with st.expander("Options"):
    views_text = st.text_input("Scene view ids of the frames in predictions.npz (comma-separated, optional)",
                               key="metrics.views")
    left, right = st.columns(2)
    with left:
        evaluation_options = option_widgets(metrics.EvaluationOptions, "metrics.evaluation")
    with right:
        max_points = st.number_input("Points drawn in 3D (cap)", 1_000, 400_000, 40_000, step=10_000)

evaluate_clicked = st.button("Evaluate", type="primary", disabled=not submit_allowed() or upload is None,
                             key="metrics.evaluate")
if evaluate_clicked and not app_jobs.inline():   # scored as a job on Ray; followed below
    try:
        app_jobs.submit(evaluate_spec(scene, scene.path, upload.getvalue(), upload.name,
                                      parse_view_ids(views_text) or None, evaluation_options, run_store),
                        "metrics.job")
    except UserError as error:
        st.error(f"Could not evaluate {upload.name}: {error}")
elif evaluate_clicked:
    bar = None
    try:
        views = parse_view_ids(views_text) or None
        bar = StreamlitProgress("Evaluating")
        result, evaluation = import_file(scene, upload.getvalue(), upload.name, views, store=run_store,
                                         options=evaluation_options, progress=bar.progress)
        bar.done("evaluated")
        st.session_state["metrics.inspect"] = (scene.name, "imported", result.key)
        st.session_state["metrics.last_evaluation"] = (scene.name, result.key, evaluation)
        st.success(f"Scored {upload.name}; stored in the leaderboard as run {result.key}.")
    except UserError as error:  # ReconstructionFileError, EvaluationError, bad view ids
        if bar is not None:
            bar.clear()      # no empty progress bar left above the message
        st.error(f"Could not evaluate {upload.name}: {error}")
if not app_jobs.inline():
    finished = app_jobs.follow("metrics.job")
    if finished is not None and app_jobs.show_outcome(finished, "Scoring"):   # an import or "Score this run"
        st.session_state["metrics.inspect"] = (scene.name, finished["result"]["method"], finished["result"]["key"])

rows = leaderboard(run_store, scene)  # this ground truth's runs (and those of unknown ground truth)
st.subheader(f"Leaderboard — {scene.name}")
damaged_runs_notice(run_store, scene.name)
if not rows:
    st.info("No runs stored for this scene yet: import a file above or run a method on its page.")
    st.stop()
leaderboard_table(rows, "metrics.leaderboard", scene.name)

labels = {(scene.name, r["method"], r["key"]): " · ".join(
    [r["label"]] + ([f"{r['views']} view{'s' if r['views'] != 1 else ''}"] if r["views"] else []) + [r["key"][:8]])
    for r in rows}
keys = list(labels)
if st.session_state.get("metrics.inspect") not in keys:
    st.session_state.pop("metrics.inspect", None)
choice = st.selectbox("Inspect run", keys, format_func=labels.get, key="metrics.inspect")
_, method, key = choice
record = next(r for r in run_store.runs(scene.name) if r.method == method and r.key == key)
recon = record.load()
export_buttons(record, scene, "metrics", recon)
if admin_delete_button("Delete this run", "metrics.delete"):  # hosted mode, admins only
    run_store.delete(scene.name, method, key)
    st.rerun()
stored = Scores.from_json(record.evaluation) if record.evaluation is not None else None
if stored is None or not stored.scored:
    if stored is not None:
        st.warning(f"This run could not be scored: {stored.error}")
    if st.button("Score this run", key="metrics.score", disabled=not submit_allowed()):
        try:
            if app_jobs.inline():
                evaluate_run(scene, run_store, method, key)
            else:        # a job on Ray, followed above like an import's scoring
                app_jobs.submit(score_spec(scene, scene.path, method, key, None, run_store), "metrics.job")
            st.rerun()
        except UserError as error:
            st.error(f"Could not score this run: {error}")
    st.stop()

last = st.session_state.get("metrics.last_evaluation")
if last is not None and last[0] == scene.name and last[1] == key:
    evaluation = last[2]
else:
    evaluation = metrics.overlay_from_scores(scene, recon, record.evaluation)
show_notes(recon.notes, recon.weights_kind)
scores = evaluation.typed
score_cards(scores)
depth = scores.depth      # the camera errors are a table under the score cards
if depth is not None and depth.available:
    st.caption(f"Depth (median-scaled, object pixels): AbsRel {depth.abs_rel:.3g}, δ<1.25 {depth.delta1:.3f} "
               f"over {depth.views} views.")
show_gt = st.toggle("Show the ground truth", value=True, key="metrics.gt",
                    help="the ground truth in magenta under the prediction coloured by its distance to it")
fig, caption = figures.error_overlay_figure(evaluation, max_points=int(max_points), show_ground_truth=show_gt)
st.plotly_chart(fig, width="stretch", key="metrics-overlay")
st.caption(caption)
