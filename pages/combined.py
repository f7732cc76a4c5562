"""Combined pipeline: text-prompted detection -> segmentation -> monocular depth -> back-projection."""
import streamlit as st

from core.app.access import submit_allowed
from core.app import figures
from core.app import jobs as app_jobs
from core.eval.scores import Scores
from core.models.combined import method as combined
from core.models.combined import panels as panel_images
from core.models.combined import scene_masks
from core.errors import UserError
from core.models.combined.pipeline import StageError
from core.runner import run_method
from core.app.widgets import (NOT_SCORED_RANDOM, StreamlitProgress, cost_notice, current_scene, option_widgets,
                              require_app_navigation, score_cards, store, weights_defaults, weights_notice)
from core.options import RANDOM_WEIGHTS

require_app_navigation()

STATE = "combined.result"

st.title("Combined pipeline")
st.caption("Grounding DINO finds the prompted object → Segment Anything cuts it out (box + point) → Depth Anything "
           "predicts relative inverse depth, fitted in scale and shift to depths the scene already knows → the "
           "masked depth is back-projected with the view's intrinsics; several views fuse with the scene's poses.")
scene = current_scene()
if scene is None:
    st.stop()

method = combined.METHOD
with st.container(border=True):
    views = st.multiselect("Views (the first is shown; several are fused into one cloud)",
                           list(range(scene.num_views)), default=[0], key="combined.views")
    options = option_widgets(combined.CombinedOptions, key="combined", defaults=weights_defaults(method),
                             advanced_expander=True, columns=2)
    available = method.availability(options)
    weights_notice(method, options, available)
    confirmed = cost_notice("combined", options, len(views), scene, "combined") if available.ok and views else True
    submitted = st.button("Run", type="primary", key="combined.run", disabled=not (available.ok and submit_allowed()))

if submitted and not confirmed:
    st.warning("Tick “Run anyway” to start this long run.")
elif submitted and views and not app_jobs.inline():
    # A job on Ray like every method run: it outlives this session; follow() below shows it (also after a
    # reload). A stage failure is the job's one-line error; the in-process path below also shows its partial panels.
    try:
        from core.jobs.client import run_spec

        app_jobs.submit(run_spec(scene, scene.path, "combined", views, options, store(), score_random_weights=False),
                        "combined.job")
    except UserError as error:
        st.error(f"The combined pipeline cannot run: {error}")
elif submitted:
    if not views:
        st.error("Choose at least one view.")
    else:
        bar = StreamlitProgress("Combined pipeline")
        try:
            result = run_method(scene, "combined", views, options, progress=bar.progress, store=store(),
                                score_random_weights=False)
            bar.done("cached" if result.cached else "done")
            st.session_state[STATE] = {"scene": scene.name, "recon": result.recon, "key": result.key,
                                       "cached": result.cached, "evaluation": result.evaluation}
        except StageError as error:
            bar.clear()
            st.session_state[STATE] = {"scene": scene.name, "error": error.reason, "stage": error.stage,
                                       "view": error.view, "partial": error.partial}
        except UserError as error:
            bar.clear()
            st.session_state[STATE] = {"scene": scene.name, "error": str(error), "stage": None}

if not app_jobs.inline():
    final = app_jobs.follow("combined.job")
    if final is not None and app_jobs.show_outcome(final, "Combined pipeline"):
        done = final["result"]
        recon, evaluation = store().load_run(scene.name, "combined", done["key"])
        st.session_state[STATE] = {"scene": scene.name, "recon": recon, "key": done["key"],
                                   "cached": done["cached"], "evaluation": evaluation}
state = st.session_state.get(STATE)
if not state or state.get("scene") != scene.name:
    if app_jobs.inline() or not st.session_state.get("combined.job"):   # else the job's progress bar shows
        st.info("Choose the views and options, then press Run. Runs are cached and appear in the Metrics "
                "leaderboard.")
    st.stop()

recon = state.get("recon")
if "error" in state:
    where = f" at the {state['stage']} stage of view {state['view']}" if state.get("stage") else ""
    st.error(f"The pipeline stopped{where}: {state['error']}")
    partial = state.get("partial")
    if partial is None:
        st.stop()
    panels = panel_images.from_result(scene, partial)
else:
    panels = panel_images.from_reconstruction(scene, recon, 0)
    for note in recon.notes:
        st.warning(note)
    st.caption(f"Run {state['key'][:8]} ({'from the cache' if state['cached'] else 'computed now'}): "
               f"{recon.extra['models']['detector']}, {recon.extra['models']['segmenter']}, "
               f"{recon.extra['models']['depth']}; {recon.parameter_count / 1e6:.1f} M parameters on {recon.device}.")

st.subheader(f"View {panels.view}")
cols = st.columns(5)
cols[0].image(panels.image, width="stretch")
cols[0].caption("Image")
if panels.box is not None:
    cols[1].image(panel_images.draw_box(panels.image, panels.box, panels.box_score, panels.point), width="stretch")
    cols[1].caption(f"Detection: box score {panels.box_score:.3f} (best of {panels.boxes_found})"
                    + (f", “{panels.box_label}”" if panels.box_label else ""))
else:
    cols[1].caption("Detection: no box")
if panels.mask is not None:
    cols[2].image(panel_images.overlay_mask(panels.image, panels.mask), width="stretch")
    cols[2].caption(f"Mask: SAM score {panels.mask_score:.3f}, {int(panels.mask.sum()):,} pixels")
else:
    cols[2].caption("Mask: not computed")
if panels.depth is not None:
    unit = "relative units" if panels.depth_mode == "relative" else "scene units"
    cols[3].image(panel_images.colorize_depth(panels.depth), width="stretch")
    cols[3].caption(f"Depth ({unit}; near = warm)")
    cols[4].image(panel_images.colorize_depth(panels.masked_depth), width="stretch")
    cols[4].caption("Masked depth")
else:
    cols[3].caption("Depth: not computed")
    cols[4].caption("Masked depth: not computed")

if panels.reference:
    if panels.depth_mode == "relative":
        st.warning("Relative depth: no reference was used, so depth has arbitrary units and an unknown shift "
                   "(the shape is distorted).")
    elif panels.fit:
        fit = panels.fit
        st.caption(f"Depth reference: {panels.reference}. Fit 1/depth = {fit['scale']:.4g} · disparity + "
                   f"{fit['shift']:.4g} on {fit['samples']:,} pixels ({fit['inliers']:,} inliers); residual: median "
                   f"relative depth error {100 * fit['median_rel_error']:.2f} %, median |Δ inverse depth| "
                   f"{fit['median_abs_residual']:.3g}." + (f" Note: {panels.fit_note}." if panels.fit_note else ""))
if panels.intrinsics_label:
    st.caption(f"Intrinsics: {panels.intrinsics_label}.")
if panels.seconds:
    st.caption("Time per stage: " + ", ".join(f"{k} {v:.2f} s" for k, v in panels.seconds.items())
               + (f" — {panels.num_points:,} points" if panels.num_points is not None else ""))

if recon is None:
    st.stop()

fig, caption = figures.reconstruction_figure(recon, image_size=scene.image_size)
st.plotly_chart(fig, width="stretch", key="combined-cloud")
st.caption(caption + " (first view's camera frame; frustums are the views used).")
evaluation = Scores.from_json(state["evaluation"]) if state.get("evaluation") else None
if evaluation is not None and evaluation.scored:
    score_cards(evaluation)
    st.caption("This run is in the Metrics leaderboard.")
elif evaluation is not None:
    st.warning(f"Not scored: {evaluation.error}")
elif options.weights in RANDOM_WEIGHTS:
    st.info(NOT_SCORED_RANDOM)

st.subheader("Object masks")
in_place = scene_masks.is_app_scene(scene)
target = scene.name if in_place else f"{scene.name}-masks"
st.caption("Store the masks this run made so VGGT and the other methods can filter their clouds by them. "
           + ("They are written into this scene." if in_place else
              f"This scene is bundled and never modified: the masks go into a derived copy “{target}”."))
if st.button("Save masks into the scene" if in_place else f"Store masks in “{target}”", key="combined.save_masks"):
    masks = {p.view: p.mask for p in (panel_images.from_reconstruction(scene, recon, i)
                                      for i in range(len(recon.view_ids)))}
    try:
        with st.spinner(f"Writing scene “{target}”…"):
            saved = scene_masks.save_masks(scene, masks)
        st.success(f"Saved the masks of view(s) {', '.join(map(str, sorted(masks)))} into scene “{saved.name}” "
                   f"({saved.path}).")
    except (UserError, OSError) as error:
        st.error(f"Could not save the masks: {error}")
