"""Discriminative methods (VGGT, DUSt3R, Fast3R): N views to cameras, depth and a point cloud."""
import streamlit as st

from core.app.widgets import method_workbench, require_app_navigation

require_app_navigation()

st.title("Discriminative")
st.markdown("Feed-forward models that regress cameras, depth and point maps from N views. Pick the views "
            "(spaced evenly around the orbit by default), the options, and run; runs are cached and scored "
            "against the scene's ground truth, and appear in the Metrics leaderboard.")
method_workbench("discriminative")
