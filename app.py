"""ReconBench: compare image-to-3D reconstruction methods on the same object.

Entry point only: navigation over pages/ and the sidebar scene picker.
"""
import streamlit as st

from core.app.access import sign_in_gate
from core.app.widgets import clean_staging_once, mark_app_ran, scene_picker

st.set_page_config(page_title="ReconBench", page_icon="🧸", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/dataset.py", title="Dataset", icon=":material/photo_camera:"),
    st.Page("pages/combined.py", title="Combined pipeline", icon=":material/extension:"),
    st.Page("pages/discriminative.py", title="Discriminative", icon=":material/view_in_ar:"),
    st.Page("pages/generative.py", title="Generative", icon=":material/auto_awesome:"),
    st.Page("pages/scaling.py", title="View-count scaling", icon=":material/trending_up:"),
    st.Page("pages/attention.py", title="Attention viewer", icon=":material/visibility:"),
    st.Page("pages/metrics.py", title="Metrics", icon=":material/leaderboard:"),
    st.Page("pages/benchmarks.py", title="Benchmarks", icon=":material/table_chart:"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/pending_actions:"),
]

sign_in_gate()  # hosted mode: nobody past this line without a role (local mode: no-op)
navigation = st.navigation(PAGES)
mark_app_ran()
clean_staging_once()
scene_picker()
navigation.run()
