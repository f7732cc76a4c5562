"""Home: what ReconBench is, and the current scene (views, ground truth, cameras)."""
import streamlit as st

from core.app import figures
from core.app.widgets import current_scene, require_app_navigation, store
from core.data.fingerprint import ground_truth_fingerprint

require_app_navigation()

st.title("ReconBench")
st.markdown(
    "Given a few photos (or a video) of an object, **which image-to-3D method reconstructs it best, how fast, "
    "and why?** ReconBench prepares a ground truth, runs every method on the same views, aligns each result "
    "to the ground truth (Sim(3) + ICP), scores it (Chamfer, EMD, F-score, camera and depth errors) and shows "
    "everything side by side in 3D. Pick a scene in the sidebar; the **Metrics** page scores any "
    "reconstruction file against it and keeps a leaderboard of every run."
)

scene = current_scene()
if scene is not None:
    h, w = scene.image_size
    registered = int(scene.registered.sum())
    st.subheader(f"Scene “{scene.name}”")
    cols = st.columns(4)
    cols[0].metric("Views", scene.num_views)
    cols[1].metric("Registered", f"{registered}/{scene.num_views}")
    cols[2].metric("Image size", f"{w}×{h}")
    cols[3].metric("Ground-truth points", f"{len(scene.gt_points):,}" if scene.has_ground_truth else "none")
    source = scene.provenance.get("ground_truth") or scene.provenance.get("generator") or "prepared scene"
    st.caption(f"Ground truth: {source}. Cameras: OpenCV, world→camera extrinsics.")

    count = st.slider("Views shown", 4, min(24, scene.num_views), min(8, scene.num_views), step=4)
    picks = scene.uniform_views(count)
    for row in range(0, len(picks), 8):
        cols = st.columns(8)
        for col, i in zip(cols, picks[row:row + 8]):
            col.image(scene.images[i], caption=f"view {i}", width="stretch")

    max_points = st.number_input("Points drawn (cap)", 1_000, 500_000, 40_000, step=10_000)
    fig, caption = figures.scene_figure(scene, max_points=int(max_points))
    st.plotly_chart(fig, width="stretch", key="home-scene")
    st.caption(caption + "; red frustums are the cameras, numbered by view.")

    runs = store().runs(scene.name, ground_truth_fingerprint(scene))  # this ground truth's runs
    st.caption(f"{len(runs)} stored run(s) of this scene in the cache — see the Metrics page.")
