"""Generative methods (3D-LMNet, Point-E, LRM): one or several views to a cloud or a mesh."""
import streamlit as st

from core.ui import method_workbench

st.title("Generative")
st.markdown("Models that *imagine* the object from one (or a few) images. Their output lives in the model's own "
            "object-centred frame, so the Metrics protocol aligns it globally (rotation search + ICP with scale) "
            "before scoring.")
method_workbench("generative")
