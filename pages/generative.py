"""Generative methods (3D-LMNet, Point-E, LRM): one or several views to a cloud or a mesh."""
import streamlit as st

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
upload = st.file_uploader("Image (PNG/JPEG)", type=["png", "jpg", "jpeg"], key="lmnet.upload")
variant = st.radio("Variant", ["original", "dgcnn"], horizontal=True, key="lmnet.variant")
if upload is not None and st.button("Reconstruct", key="lmnet.go"):
    from core.app import figures as viz
    from core.models.lmnet import run_on_image

    try:
        points = run_on_image(upload.getvalue(), variant=variant)
        left, right = st.columns(2)
        left.image(upload.getvalue(), caption=upload.name, width="stretch")
        trace, shown, total = viz.cloud_trace(points, values=points[:, 1], name="3D-LMNet", size=2.5)
        right.plotly_chart(viz.figure_3d([trace], revision="lmnet-upload"), width="stretch", key="lmnet.cloud")
        right.caption(f"{total:,} points in the model's object-centred frame (unit box), coloured by height.")
    except UserError as error:
        st.error(f"3D-LMNet cannot use {upload.name}: {error}")

with st.expander("Training curves and test scores of the shipped 3D-LMNet checkpoints"):
    import plotly.graph_objects as go

    from core.models.lmnet import shipped_evaluation, training_curves

    figure = go.Figure()
    for name in ("original", "dgcnn"):
        curves = training_curves(name)
        for stage in ("ae", "latent"):
            steps = [s for s, g in zip(curves["step"], curves["stage"]) if g == stage]
            losses = [v for v, g in zip(curves["loss"], curves["stage"]) if g == stage]
            if steps:
                figure.add_trace(go.Scatter(x=steps, y=losses, mode="lines", name=f"{name} · {stage}"))
    figure.update_layout(height=300, xaxis_title="step", yaxis_title="training loss", yaxis_type="log",
                         margin={"t": 20})
    st.plotly_chart(figure, width="stretch", key="lmnet.curves")
    evaluation = shipped_evaluation()
    st.dataframe([{"model": name, **{k: round(v, 4) for k, v in scores.items()}}
                  for name, scores in evaluation["overall"].items()], hide_index=True, width="stretch")
    protocol = evaluation["protocol"]
    st.caption(f"Held-out procedural test split ({evaluation.get('count', '?')} images): {protocol['points']:,} "
               f"points per cloud, rendered views {protocol['views']}, rigid ICP, F-score at tau = {protocol['tau']}; "
               f"units: {protocol['units']}. Lower Chamfer/EMD is better.")
