"""Generative methods (3D-LMNet, Point-E, LRM): one or several views to a cloud or a mesh."""
import streamlit as st

from core.app.access import submit_allowed
from core.app import figures
from core.app.widgets import method_workbench, require_app_navigation
from core.errors import UserError

require_app_navigation()

st.title("Generative")
st.markdown("Models that *imagine* the object from one (or a few) images. Their output lives in the model's own "
            "object-centred frame, so the Metrics protocol aligns it globally (rotation search + ICP with scale) "
            "before scoring.")
method_workbench("generative")

st.divider()
st.subheader("3D-LMNet on an uploaded image")
st.caption("The shipped 3D-LMNet checkpoints were trained here on procedural ShapeNet-like shapes (chairs, tables, "
           "lamps, mugs, airplanes rendered on white); an object photographed on a plain background works best.")
with st.container(border=True):
    left, right = st.columns(2)
    upload = left.file_uploader("Image (PNG/JPEG)", type=["png", "jpg", "jpeg"], key="lmnet.upload")
    variant = right.radio("Variant", ["original", "dgcnn"], horizontal=True, key="lmnet.variant")
    go = st.button("Reconstruct", key="lmnet.go", type="primary", disabled=upload is None or not submit_allowed())
if upload is not None and go:
    from core.models.lmnet.method import run_on_image

    try:
        points = run_on_image(upload.getvalue(), variant=variant)
        left, right = st.columns(2)
        left.image(upload.getvalue(), caption=upload.name, width="stretch")
        right.plotly_chart(figures.height_cloud_figure(points, "3D-LMNet", revision="lmnet-upload"), width="stretch",
                           key="lmnet.cloud")
        right.caption(f"{len(points):,} points in the model's object-centred frame (unit box), coloured by height.")
    except UserError as error:
        st.error(f"3D-LMNet cannot use {upload.name}: {error}")

with st.expander("Training curves and test scores of the shipped 3D-LMNet checkpoints"):
    from core.models.lmnet import shipped_evaluation, training_curves

    st.plotly_chart(figures.training_curves_figure({name: training_curves(name) for name in ("original", "dgcnn")}),
                    width="stretch", key="lmnet.curves")
    evaluation = shipped_evaluation()
    st.dataframe([{"model": name, **{k: round(v, 4) for k, v in scores.items()}}
                  for name, scores in evaluation["overall"].items()], hide_index=True, width="stretch")
    protocol = evaluation["protocol"]
    st.caption(f"Held-out procedural test split ({evaluation.get('count', '?')} images): {protocol['points']:,} "
               f"points per cloud, rendered views {protocol['views']}, rigid ICP, F-score at tau = {protocol['tau']}; "
               f"units: {protocol['units']}. Lower Chamfer/EMD is better.")
