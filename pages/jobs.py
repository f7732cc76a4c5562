"""Jobs: queued, running and finished computations with owner, progress, ETA and cancel."""
import streamlit as st

from core.app.access import current_user
from core.app.jobs import jobs_table
from core.errors import UserError
from core.hosted.roles import allowed
from core.jobs import client
from core.jobs.manager import ACTIVE

st.title("Jobs")
st.caption("Every computation runs as a job on Ray; it keeps running when you leave or reload the page.")
user = current_user()
see_all = allowed(user, "delete")     # admins (and the local user) see every job
mine = None if see_all else (user.id if user is not None else "anonymous")


@st.fragment(run_every=2.0)
def table() -> None:
    try:
        jobs = client.list_jobs(owner=mine)
    except UserError as error:
        st.error(str(error))
        return
    counts = {state: sum(j["state"] == state for j in jobs) for state in ("queued", "running", "done", "failed",
                                                                          "cancelled")}
    st.caption(" · ".join(f"{n} {state}" for state, n in counts.items()))
    if not jobs:
        st.info("No jobs yet: runs started on the method pages, the Dataset page or the CLI appear here.")
        return
    st.dataframe(jobs_table(jobs), hide_index=True, width="stretch",
                 column_config={"progress (%)": st.column_config.ProgressColumn(min_value=0, max_value=100)})
    active = [j for j in jobs if j["state"] in ACTIVE and (see_all or j["owner"] == mine)]
    if active:
        labels = {j["id"]: f"{j['label']} · {j['state']} · {j['owner']}" for j in active}
        left, right = st.columns([4, 1])
        choice = left.selectbox("Job to cancel", list(labels), format_func=labels.get, key="jobs.cancel.choice")
        if right.button("Cancel job", key="jobs.cancel"):
            client.cancel(choice)
            st.toast("Cancel requested: the job stops before it stores anything.")


table()
