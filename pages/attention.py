"""Attention viewer: click a pixel, see where it lands in every view (depth, tracking head, ground truth),
the global attention it gives and the gradient attribution of its prediction."""
import typing
from pathlib import Path

import streamlit as st

from core.app import figures as viz
from core.app import jobs as app_jobs
from core.app.access import submit_allowed
from core.app.widgets import StreamlitProgress, checkpoint_choice, current_scene, require_app_navigation, store
from core.errors import UserError
from core.jobs.client import attention_spec, attribution_spec, tracks_spec
from core.models import registry
from core.models.vggt.method import Weights
from core.studies import attention_store, attribution
from core.studies.attention import MAX_TRACK_QUERIES, capture_session, track_summary

require_app_navigation()

st.title("Attention viewer")
st.markdown(
    "Run VGGT once with global-attention capture, then pick a pixel in any view. Its 3-D point (VGGT depth and "
    "cameras; and the scene's ground truth where it has one) is projected into every other view and marked "
    "**occluded** where that view's depth shows something nearer. The heat maps show the global attention the "
    "pixel's patch gives to every patch of every view: one layer (max, mean or one head), or rolled out across a "
    "layer range (max over heads, drop the lowest values, A = (A + I)/2, normalise rows, multiply through).")
scene = current_scene()
if scene is None:
    st.stop()

with st.form("attention.form"):
    c1, c2, c3 = st.columns(3)
    count = c1.slider("Views", 1, min(8, scene.num_views), min(3, scene.num_views), key="attention.count")
    choices = list(typing.get_args(Weights))
    best = registry.default_weights(registry.get("vggt"))      # what can run here (random-tiny on a fresh install)
    weights = c2.selectbox("Weights", choices, index=choices.index(best) if best in choices else 0,
                           key="attention.weights",
                           help="random-tiny: the fixture's tiny configuration with random weights (demo/tests); "
                                "random-full: VGGT-1B's architecture with random weights (real time and memory)")
    half = c3.checkbox("Keep keys in float16 (half the memory)", key="attention.half")
    checkpoint = checkpoint_choice("Checkpoint (found on this machine)", "attention.checkpoint", match="vggt")
    submitted = st.form_submit_button("Run VGGT with attention capture", type="primary", key="attention.run",
                                      disabled=not submit_allowed())

view_ids = scene.uniform_views(count)
session_key = (scene.name, tuple(view_ids), weights, checkpoint, half)
as_job = not app_jobs.inline()
if submitted and as_job:
    # The capture is a job on Ray (no model in this server process); a stored capture is read, not recomputed.
    try:
        spec = attention_spec(scene, view_ids, weights=weights, checkpoint_path=checkpoint, half=half, store=store())
        found = attention_store.find(store().root, spec["key"])
        if found is not None:
            st.session_state["attention.session"] = ((scene.name, found.key), found)
        else:
            app_jobs.submit(spec, "attention.job")
    except UserError as error:
        st.error(f"Cannot run VGGT: {error}")
elif submitted:
    bar = StreamlitProgress("Capturing global attention")
    try:
        st.session_state["attention.session"] = (session_key, capture_session(
            scene, view_ids, weights=weights, checkpoint_path=checkpoint, half_precision_keys=half,
            progress=bar.progress))
        bar.done("captured")
    except UserError as error:
        bar.clear()
        st.error(f"Cannot run VGGT: {error}")

if as_job:
    finished = app_jobs.follow("attention.job")
    if finished is not None and finished["kind"] == "attention" and app_jobs.show_outcome(finished, "Attention capture"):
        done = finished["result"]
        loaded = attention_store.find(Path(finished["store"]), done["key"])
        if loaded is None:
            st.error("The capture's files are no longer in the cache: run the capture again.")
        else:
            st.session_state["attention.session"] = ((done["scene"], loaded.key), loaded)
stored = st.session_state.get("attention.session")
if stored is None or stored[0][0] != scene.name:
    if not (as_job and st.session_state.get("attention.job")):     # a capture job is on its way: its bar shows
        st.info("Choose the views and run the capture.")
    st.stop()
session = stored[1]
if session.random_weights:
    st.warning("random weights: the attention and the predicted correspondences are meaningless (demo of the "
               "viewer only).")
st.caption(f"Views {session.view_ids}; {len(session.layers)} global layers × {session.heads} heads captured in "
           f"{session.seconds:.1f} s, peak memory +{session.peak_memory_bytes / 2**20:,.0f} MB (queries and keys "
           f"{session.capture_bytes / 2**20:,.0f} MB). Network input "
           f"{session.images.shape[2]}×{session.images.shape[1]}, {session.grid[0]}×{session.grid[1]} patches.")

frames = list(range(session.num_frames))
source = st.selectbox("Source view", frames, format_func=lambda f: f"view {session.view_ids[f]}",
                      key="attention.source")
h, w = session.images.shape[1:3]
picked = st.session_state.get("attention.pick")
if st.session_state.pop("attention.pick_pending", False) and picked:
    # A click on the figure below: the boxes take the clicked pixel (set before they are drawn).
    st.session_state["attention.u"], st.session_state["attention.v"] = int(picked[0]), int(picked[1])
cols = st.columns(2)
u = cols[0].number_input("Pixel x (network pixels)", 0, w - 1, int(picked[0]) if picked else w // 2, key="attention.u")
v = cols[1].number_input("Pixel y (network pixels)", 0, h - 1, int(picked[1]) if picked else h // 2, key="attention.v")

event = st.plotly_chart(viz.attention_click_figure(session.images[source], session.grid, (u, v)),
                        on_select="rerun", selection_mode="points", key="attention.click")
selection = getattr(event, "selection", None) or {}
points = selection.get("points", []) if isinstance(selection, dict) else getattr(selection, "points", [])
if points:
    point = points[0]
    new = (int(point["x"]), int(point["y"]))
    if new != picked and new != (u, v):
        st.session_state["attention.pick"] = new
        st.session_state["attention.pick_pending"] = True
        st.rerun()

mode = st.radio("Attention", ["one layer", "rollout"], horizontal=True, key="attention.mode")
if mode == "one layer":
    c1, c2 = st.columns(2)
    layer = c1.select_slider("Global layer", session.layers, value=session.layers[-1], key="attention.layer")
    reduce = c2.selectbox("Heads", ["max", "mean"] + list(range(session.heads)), key="attention.reduce",
                          format_func=lambda r: r if isinstance(r, str) else f"head {r}")
else:
    c1, c2 = st.columns(2)
    first, last = c1.select_slider("Layer range", session.layers, value=(session.layers[0], session.layers[-1]),
                                   key="attention.range")
    discard = c2.slider("Discard the lowest fraction of each row", 0.0, 0.99, 0.9, key="attention.discard")

token = session.token_for_pixel(source, u, v)
try:
    if mode == "one layer":
        maps = session.layer_attention(token, layer, reduce)
    else:
        bar = StreamlitProgress("Rolling out attention")
        maps = session.rollout(token, first, last, discard, progress=bar.progress)
        bar.clear()
except UserError as error:
    st.error(str(error))
    st.stop()
links = session.correspondences(source, u, v, scene)

order = [source] + [f for f in frames if f != source]
grid = st.columns(min(4, len(order)))
for slot, frame in enumerate(order):
    caption = (f"{'source ' if frame == source else ''}view {session.view_ids[frame]} · VGGT: "
               f"{viz.correspondence_status(links, 'predicted', frame)}"
               + (f" · GT: {viz.correspondence_status(links, 'ground_truth', frame)}" if links.get("ground_truth")
                  else ""))
    grid[slot % len(grid)].image(viz.attention_overlay(session.images[frame], maps, frame, links), caption=caption,
                                 width="stretch")
st.caption("Heat = attention of the chosen pixel's patch (brighter = more; one colour scale for all views). "
           "Red cross: VGGT's correspondence; green: ground truth; a tilted cross marks a point hidden in that view.")

st.subheader("Tracks")
st.markdown(f"Add clicked pixels of the source view (up to {MAX_TRACK_QUERIES}) and track them through every view with "
            "VGGT's tracking head (it follows queries of its first frame, so the source view is put first). Per view: "
            "the head's point with its visibility and confidence, the correspondence from VGGT's depth and cameras, "
            "and the ground-truth transfer with its occlusion flag; errors in network pixels against the truth.")
tracked_key = (stored[0], source)
if st.session_state.get("attention.tracked", (None,))[0] != tracked_key:
    st.session_state["attention.tracked"] = (tracked_key, [])
tracked = st.session_state["attention.tracked"][1]
c1, c2, c3 = st.columns(3)
if c1.button(f"Add pixel ({u}, {v})", key="attention.track_add") and (u, v) not in tracked:
    tracked.append((u, v))
if c2.button("Clear the points", key="attention.track_clear"):
    tracked.clear()
    st.session_state.pop("attention.tracks", None)
track_now = c3.button(f"Track {len(tracked)} point(s)", key="attention.track_run", type="primary",
                      disabled=not tracked)
st.caption("Points: " + (", ".join(f"{i}: ({x}, {y})" for i, (x, y) in enumerate(tracked)) or "none yet"))
if track_now and as_job:
    try:
        app_jobs.submit(tracks_spec(session, source, tracked, store()), "attention.track_job", url=False)
    except UserError as error:
        st.error(f"Cannot track: {error}")
elif track_now:
    bar = StreamlitProgress("Tracking")
    try:
        st.session_state["attention.tracks"] = (tracked_key, tuple(tracked),
                                                session.track(source, tracked, progress=bar.progress))
        bar.done("tracked")
    except UserError as error:
        bar.clear()
        st.error(f"Cannot track: {error}")
if as_job:
    done = app_jobs.follow("attention.track_job", url=False)
    # (a job that ends after another capture was loaded tracked that capture: not shown with this one)
    if done is not None and app_jobs.show_outcome(done, "Tracking") and done["result"]["capture"] == session.key:
        tracks = attention_store.tracks_from_json(done["result"]["tracks"])
        st.session_state["attention.tracks"] = ((stored[0], tracks.source),
                                                tuple(tuple(map(int, q)) for q in tracks.queries), tracks)
shown = st.session_state.get("attention.tracks")
if shown is not None and shown[0] == tracked_key:
    tracks = shown[2]
    rows = session.track_table(tracks, scene)
    st.plotly_chart(viz.tracks_figure(session.images, tracks.uv, tracks.visibility,
                                      session.track_truth(tracks, scene), session.view_ids), key="attention.tracks_chart")
    st.caption(f"{len(tracks.queries)} point(s) tracked in {tracks.seconds:.1f} s. Circles: tracking head (hollow: "
               "visibility < 0.5); thin crosses: ground truth, same colour.")
    st.dataframe(track_summary(rows, session.view_ids[source]), key="attention.track_summary")
    st.dataframe(rows, key="attention.track_table")

st.subheader("Gradient attribution")
st.markdown("The gradient of the clicked pixel's prediction with respect to the input images and the patch tokens "
            "of every view: **input × gradient** |Σ_c x_c ∂y/∂x_c| and **Grad-CAM** on a trunk layer (activations × "
            "channel-averaged gradients, ReLU), beside the pixel's attention rollout; ρ is the per-view Spearman rank "
            "correlation of each map with the rollout at the patch grid.")
c1, c2, c3 = st.columns(3)
target = c1.selectbox("Prediction", attribution.TARGETS, key="attention.attr_target",
                      help="point-*: the point head's 3-D point (first camera's frame); depth: the depth head")
attr_layer = c2.select_slider("Grad-CAM layer", session.layers, value=session.layers[-1], key="attention.attr_layer")
checkpointed = c3.checkbox("Activation checkpointing", True, key="attention.attr_checkpoint",
                           help="recompute each trunk block pair in the backward pass: same gradients, far less memory")
try:
    estimate = attribution.session_estimate(session, checkpointed)
except UserError as error:
    st.error(str(error))
    st.stop()
st.caption(f"This attribution needs {estimate.describe()}; "
           f"{attribution.format_bytes(attribution.available_memory_bytes())} is available now.")
attr_key = (stored[0], source, u, v, target, attr_layer, checkpointed)
attr_clicked = st.button("Compute the attribution", key="attention.attr_run", type="primary")
if attr_clicked and as_job:
    try:
        spec = attribution_spec(session, source, (u, v), target, attr_layer, checkpointed, store())
        found = attention_store.read_attribution(store().root / attention_store.attribution_file(session.key, spec["key"]))
        if found is not None:
            st.session_state["attention.attribution"] = (attr_key, found)
        else:
            app_jobs.submit(spec, "attention.attr_job", url=False)
    except UserError as error:
        st.error(f"Cannot attribute: {error}")
elif attr_clicked:
    try:
        with st.spinner("forward and backward pass"):
            st.session_state["attention.attribution"] = (attr_key, attribution.session_attribution(
                session, source, (u, v), target, attr_layer, checkpointed))
    except UserError as error:
        st.error(f"Cannot attribute: {error}")
if as_job:
    done = app_jobs.follow("attention.attr_job", url=False)
    if done is not None and app_jobs.show_outcome(done, "Attribution") and done["result"]["capture"] == session.key:
        made = done["result"]
        found = attention_store.read_attribution(Path(done["store"]) / made["file"])
        if found is None:
            st.error("The attribution's file is no longer in the cache: compute it again.")
        else:
            st.session_state["attention.attribution"] = (
                (stored[0], made["frame"], made["pixel"][0], made["pixel"][1], made["target"], made["layer"],
                 made["checkpointing"]), found)
held = st.session_state.get("attention.attribution")
if held is not None and held[0] == attr_key:
    result = held[1]
    first_layer, last_layer, drop = ((first, last, discard) if mode == "rollout"
                                     else (session.layers[0], session.layers[-1], 0.9))
    comparison = attribution.compare_with_rollout(session, result, first_layer, last_layer, drop)
    st.caption(f"{target} = {result.value:.4g} at ({u}, {v}) of view {session.view_ids[source]}; "
               f"{result.seconds:.1f} s, peak memory +{attribution.format_bytes(result.peak_memory_bytes)}. "
               f"Rollout over layers {first_layer}–{last_layer}, discard {drop:.2f}. One colour scale per map kind.")
    st.dataframe(attribution.correlation_rows(session, comparison["correlations"]), key="attention.attr_rho")
    grad_cam = result.upsampled(result.grad_cam)
    kinds = (("input × gradient", result.input_x_gradient), ("Grad-CAM", grad_cam),
             ("attention rollout", comparison["rollout"]))
    for frame in order:
        columns = st.columns(len(kinds))
        for column, (name, maps) in zip(columns, kinds):
            column.image(viz.heat_overlay(session.images[frame], maps[frame], float(maps.max()),
                                          (u, v) if frame == source else None),
                         caption=f"view {session.view_ids[frame]} · {name}", width="stretch")
