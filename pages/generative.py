"""Generative methods (3D-LMNet, Point-E, LRM, Shap-E): one or several views (or a text prompt) to a cloud or a mesh."""
import streamlit as st

from core.app.access import submit_allowed
from core.app import figures
from core.app.widgets import (StreamlitProgress, current_scene, method_workbench, require_app_navigation,
                               show_notes, store)
from core.errors import UserError

require_app_navigation()

st.title("Generative")
st.markdown("Models that *imagine* the object from one (or a few) images. Their output lives in the model's own "
            "object-centred frame, so the Metrics protocol aligns it globally (rotation search + ICP with scale) "
            "before scoring.")
method_workbench("generative")

st.divider()
st.subheader("Point-E and Shap-E side by side")
st.caption("The latest stored run of each on this scene (run them above: Point-E from the views, Shap-E from a "
           "prompt or a view). Both come from OpenAI: Point-E diffuses the points themselves, Shap-E the weights "
           "of an implicit function that is then meshed. Each lives in its own object frame.")
_scene = current_scene()
if _scene is not None:
    from core.models import registry
    from core.store.cache import latest_runs
    from core.data.fingerprint import ground_truth_fingerprint

    _latest = latest_runs(store().runs(_scene.name, ground_truth_fingerprint(_scene)), ("pointe", "shape"))
    _columns = st.columns(2)
    for _column, _name in zip(_columns, ("pointe", "shape")):
        _label = registry.get(_name).label
        if _name not in _latest:
            _column.info(f"No stored {_label} run for this scene yet.")
            continue
        _record = _latest[_name]
        _recon = _record.load()
        _column.markdown(f"**{registry.run_label(_name, _record.meta)}**")
        _fig, _caption = figures.reconstruction_figure(_recon, image_size=_scene.image_size)
        _column.plotly_chart(_fig, width="stretch", key=f"generative.side.{_name}")
        _column.caption(f"{_caption} · {_recon.seconds:.1f} s")
        _renders = figures.renders_from_extra(_recon)
        if _renders:
            _column.image(_renders[:4], width=90)

st.divider()
st.subheader("Shap-E on an uploaded picture")
st.caption("Shap-E's image mode on any picture (an object on a plain background works best). Nothing is stored: "
           "there is no ground truth to score against. random-tiny runs in seconds and means nothing.")
with st.container(border=True):
    _left, _right = st.columns(2)
    _upload = _left.file_uploader("Picture (PNG/JPEG)", type=["png", "jpg", "jpeg"], key="shape.upload")
    _weights = _right.radio("Weights", ["pretrained", "random-tiny"], horizontal=True, key="shape.upload.weights")
    _steps = _right.slider("Karras steps (published 64)", 2, 64, 16, key="shape.upload.steps")
    _grid = _right.select_slider("Mesh grid (published 128)", [16, 32, 64, 128], 64, key="shape.upload.grid")
    _go = st.button("Generate", key="shape.upload.go", type="primary",
                    disabled=_upload is None or not submit_allowed())
if _upload is not None and _go:
    from core.models.shape.method import run_on_picture
    from core.progress import Stopped

    _bar = StreamlitProgress("Shap-E on the uploaded picture")
    try:
        _recon = run_on_picture(_upload.getvalue(), {"weights": _weights, "karras_steps": _steps, "grid_size": _grid},
                                _bar.progress, name=_upload.name)
        _bar.done("finished")
        _left, _right = st.columns(2)
        _left.image(_upload.getvalue(), caption=_upload.name, width="stretch")
        if _recon.renders is not None:
            _left.image(list(_recon.renders), width=90)
        if len(_recon.mesh_faces):
            _fig, _caption = figures.mesh_figure(_recon.mesh_vertices, _recon.mesh_faces, _recon.mesh_colors)
            _right.plotly_chart(_fig, width="stretch", key="shape.upload.mesh")
            _right.caption(_caption)
        show_notes(_recon.notes, _recon.weights_kind)
    except Stopped:
        _bar.clear()
        st.warning("Stopped: nothing was stored.")
    except UserError as error:
        _bar.clear()
        st.error(f"Shap-E cannot use {_upload.name}: {error}")

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
