"""Attention viewer: click a pixel, see where it lands in every view and the global attention it gives."""
import cv2
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.studies.attention import capture_session
import typing

from core.errors import UserError
from core.models.vggt.method import Weights
from core.app.widgets import StreamlitProgress, current_scene, require_app_navigation

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
    weights = c2.selectbox("Weights", typing.get_args(Weights), key="attention.weights",
                           help="random-tiny: the fixture's tiny configuration with random weights (demo/tests); "
                                "random-full: VGGT-1B's architecture with random weights (real time and memory)")
    half = c3.checkbox("Keep keys in float16 (half the memory)", key="attention.half")
    checkpoint = st.text_input("Checkpoint path (optional)", key="attention.checkpoint")
    submitted = st.form_submit_button("Run VGGT with attention capture", type="primary", key="attention.run")

view_ids = scene.uniform_views(count)
session_key = (scene.name, tuple(view_ids), weights, checkpoint, half)
if submitted:
    bar = StreamlitProgress("Capturing global attention")
    try:
        st.session_state["attention.session"] = (session_key, capture_session(
            scene, view_ids, weights=weights, checkpoint_path=checkpoint, half_precision_keys=half,
            progress=bar.progress))
        bar.done("captured")
    except UserError as error:
        st.error(f"Cannot run VGGT: {error}")

stored = st.session_state.get("attention.session")
if stored is None or stored[0][0] != scene.name:
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
cols = st.columns(2)
u = cols[0].number_input("Pixel x (network pixels)", 0, w - 1, int(picked[0]) if picked else w // 2, key="attention.u")
v = cols[1].number_input("Pixel y (network pixels)", 0, h - 1, int(picked[1]) if picked else h // 2, key="attention.v")

# Click target: one invisible marker per patch centre over the source image.
rows, grid_cols = session.grid
patch = w // grid_cols
centres_y, centres_x = np.mgrid[0:rows, 0:grid_cols] * patch + patch / 2
figure = go.Figure(go.Image(z=session.images[source]))
figure.add_trace(go.Scatter(x=centres_x.ravel(), y=centres_y.ravel(), mode="markers",
                            marker={"size": max(4, patch // 2), "opacity": 0.01}, hoverinfo="x+y", showlegend=False))
figure.add_trace(go.Scatter(x=[u], y=[v], mode="markers", marker={"size": 12, "symbol": "x", "color": "red"},
                            showlegend=False))
figure.update_layout(height=360, margin={"l": 0, "r": 0, "t": 0, "b": 0})
event = st.plotly_chart(figure, on_select="rerun", selection_mode="points", key="attention.click")
selection = getattr(event, "selection", None) or {}
points = selection.get("points", []) if isinstance(selection, dict) else getattr(selection, "points", [])
if points:
    point = points[0]
    new = (int(point["x"]), int(point["y"]))
    if new != picked:
        st.session_state["attention.pick"] = new
        st.session_state.pop("attention.u", None)
        st.session_state.pop("attention.v", None)
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
scale = float(maps.max()) or 1.0


def overlay(frame: int) -> np.ndarray:
    heat = cv2.resize((maps[frame] / scale * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    coloured = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    out = np.ascontiguousarray((0.45 * session.images[frame] + 0.55 * coloured).astype(np.uint8))
    for key, colour in (("predicted", (255, 60, 60)), ("ground_truth", (60, 255, 60))):
        entries = links.get(key)
        if entries and entries[frame]["uv"] is not None:
            x, y = (int(round(c)) for c in entries[frame]["uv"])
            if 0 <= x < w and 0 <= y < h:
                cv2.drawMarker(out, (x, y), colour, cv2.MARKER_CROSS if not entries[frame]["occluded"]
                               else cv2.MARKER_TILTED_CROSS, 18, 2)
    return out


def status(key: str, frame: int) -> str:
    entries = links.get(key)
    if not entries:
        return "no depth"
    entry = entries[frame]
    if entry["uv"] is None or not entry["in_bounds"]:
        return "outside"
    return "occluded" if entry["occluded"] else ("visible" if entry["occluded"] is False else "unknown")


order = [source] + [f for f in frames if f != source]
grid = st.columns(min(4, len(order)))
for slot, frame in enumerate(order):
    caption = (f"{'source ' if frame == source else ''}view {session.view_ids[frame]} · VGGT: {status('predicted', frame)}"
               + (f" · GT: {status('ground_truth', frame)}" if links.get("ground_truth") else ""))
    grid[slot % len(grid)].image(overlay(frame), caption=caption, width="stretch")
st.caption("Heat = attention of the chosen pixel's patch (brighter = more; one colour scale for all views). "
           "Red cross: VGGT's correspondence; green: ground truth; a tilted cross marks a point hidden in that view.")
