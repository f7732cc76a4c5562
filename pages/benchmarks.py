"""Benchmarks: a plan (data set x methods x view counts) scored with the paper's protocol, in the paper's table."""
import streamlit as st

from core.app.access import submit_allowed
from core.app.widgets import StreamlitProgress, require_app_navigation, store
from core.errors import UserError
from core.studies import benchmarks

require_app_navigation()

st.title("Benchmarks")
st.caption("Public data sets scored exactly as the papers score them: CO3Dv2 camera poses (VGGT's AUC@30 over all "
           "pairs of 10 drawn frames, per-category aggregation) and DTU point clouds (the official accuracy / "
           "completeness / overall in millimetres). Every run goes through the cache, so a plan recomputes only "
           "what is missing. Data sets are read from the server's data-sets folder (RECONBENCH_DATASETS).")

plans = benchmarks.list_plans()
if not plans:
    st.info("No benchmark plan found in the plans folder (benchmarks/*.toml).")
    st.stop()
name = st.selectbox("Plan", list(plans), key="benchmarks.plan")
try:
    plan = benchmarks.load_plan(plans[name])
except UserError as error:
    st.error(f"This plan cannot run: {error}")
    st.stop()
st.caption(f"Protocol **{plan.protocol}** · data set `{plan.root}` · {len(plan.items)} item(s) · methods "
           f"{', '.join(plan.methods)} · views {', '.join(map(str, plan.views))} · seed {plan.seed}"
           + (f" · aggregation {plan.aggregation}" if plan.protocol == "co3d-pose" else ""))

run_store = store()
if st.button("Run the plan", type="primary", key="benchmarks.run", disabled=not submit_allowed()):
    bar = StreamlitProgress(f"Running {plan.name}")
    try:
        result = benchmarks.run_plan(plan, run_store, bar.progress)
        benchmarks.save_result(result, run_store.root)
        bar.done(f"{len(result.rows)} runs scored")
    except UserError as error:
        bar.clear()
        st.error(f"The plan stopped: {error}")

try:
    result = benchmarks.load_result(run_store.root, plan.name)
except UserError as error:
    st.error(str(error))
    st.stop()
if result is None:
    st.info("No stored result for this plan yet: run it here or with `python -m core batch` on a GPU machine.")
    st.stop()

columns = benchmarks.table_columns(plan.protocol)
st.subheader("Table")
st.dataframe(benchmarks.display_table(result.table, plan.protocol), hide_index=True, width="stretch")
st.caption(benchmarks.table_caption(plan.protocol) + f" Computed {result.created} in {result.seconds:.0f} s.")
failed = [r for r in result.rows if "error" in r]
if failed:
    st.warning("Not scored: " + "; ".join(f"{r['item']} · {r['method']} · {r['views']} views: {r['error']}"
                                          for r in failed))
left, right = st.columns(2)
left.download_button("Download CSV", benchmarks.to_csv(result.table, columns), file_name=f"{plan.name}.csv",
                     mime="text/csv", key="benchmarks.csv")
right.download_button("Download LaTeX", benchmarks.to_latex(result.table, columns, caption=plan.name),
                      file_name=f"{plan.name}.tex", mime="text/x-tex", key="benchmarks.latex")

st.subheader("What the papers report")
st.dataframe(benchmarks.paper_rows(plan.protocol), hide_index=True, width="stretch")
st.caption("Reported numbers, not reproduced here; the last column says how each protocol differs from this one.")
