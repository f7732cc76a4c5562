"""Jobs in the app: submit a computation, follow it live, reattach after a reload, cancel it.

A page calls :func:`submit` with a job spec (built by :mod:`core.jobs.client`) and then
:func:`follow` on every run of its script. The job id lives in ``st.session_state[slot]`` and in
the URL (``?job=ID``), so a reload or a new tab of the same URL shows the same job's progress;
the job itself runs on Ray and does not depend on this session at all. :func:`follow` draws
the progress bar in a fragment that refreshes every second, with a Cancel button; when the job
ends it reruns the page once and returns the final record (done / failed / cancelled) so the
page shows the stored result or one error box.

With ``RECONBENCH_EXECUTOR=inline`` (a debugging aid; the page tests) pages compute in the
session instead: :func:`inline` says which.
"""
from __future__ import annotations

import time

import streamlit as st

from core.app.access import current_user
from core.errors import UserError

URL_PARAM = "job"
REFRESH_S = 1.0


def inline() -> bool:
    from core.jobs.client import use_ray

    return not use_ray()


def owner() -> str:
    """The job owner recorded for this session's user (``local`` without sign-in)."""
    user = current_user()
    return user.id if user is not None else "anonymous"


def submit(spec: dict, slot: str, url: bool = True) -> str:
    """Submit ``spec`` (or attach to the job computing its key) for this session; returns the job id.
    ``url=False`` keeps the job out of the URL (a page's second kind of job, tied to what the
    session shows: only the page's main job is found again after a reload).

    Raises :class:`~core.errors.UserError` when the user's queued-job quota is full."""
    from core.hosted.quotas import check_queue
    from core.hosted.roles import load_roles
    from core.jobs import client

    user = current_user()
    if user is not None:
        check_queue(user, load_roles(), len(client.list_jobs(owner=user.id, states=["queued", "running"])))
    spec = {**spec, "owner": owner()}
    job_id, attached = client.submit(spec)
    st.session_state[slot] = job_id
    if url:
        st.query_params[URL_PARAM] = job_id
    if attached:
        st.toast("Already computing: following that job.")
    return job_id


def _eta(job: dict) -> str:
    eta = job.get("eta_seconds")
    return f" · about {eta:,.0f} s left" if eta is not None else ""


def _forget(slot: str, url: bool = True) -> None:
    st.session_state.pop(slot, None)
    if url and URL_PARAM in st.query_params:
        del st.query_params[URL_PARAM]


def follow(slot: str, url: bool = True) -> dict | None:
    """Show this session's job in ``slot`` while it runs; returns its final record once, when it
    has ended (then forgets it), else None. ``url=False``: a job submitted with ``url=False`` (the
    URL's job is not looked at)."""
    final = st.session_state.pop(f"{slot}.final", None)
    if final is not None:
        return final
    job_id = st.session_state.get(slot) or (st.query_params.get(URL_PARAM) if url else None)
    if not job_id:
        return None
    st.session_state[slot] = job_id
    _follow_fragment(slot, job_id, url)
    return None


@st.fragment(run_every=REFRESH_S)
def _follow_fragment(slot: str, job_id: str, url: bool = True) -> None:
    from core.jobs import client
    from core.jobs.manager import ACTIVE

    try:
        job = client.get(job_id)
    except UserError:
        _forget(slot, url)
        return
    if job["state"] not in ACTIVE:
        _forget(slot, url)
        st.session_state[f"{slot}.final"] = job
        st.rerun()
    left, right = st.columns([5, 1])
    with left:
        waited = time.time() - job["created"]
        text = (f"{job['label']}: queued ({waited:,.0f} s)" if job["state"] == "queued"
                else f"{job['label']}: {job['message']}{_eta(job)}")
        st.progress(min(max(job["progress"], 0.0), 1.0), text=text)
    with right:
        if st.button("Cancel", key=f"{slot}.cancel.{job_id}"):
            client.cancel(job_id)


def show_outcome(job: dict, what: str) -> bool:
    """One line for a job that ended: True when it is done (the result is in the store)."""
    if job["state"] == "done":
        cached = (job.get("result") or {}).get("cached")
        st.success(f"{what}: {'cached result' if cached else 'finished'}")
        return True
    if job["state"] == "cancelled":
        st.warning(f"{what}: {job['message']}.")
    else:
        st.error(f"{what} failed: {job['error']}")
    return False


def jobs_table(jobs: list[dict]) -> list[dict]:
    """Rows of the Jobs page: state, what, owner, progress (%), ETA / took (s), created, error, id."""
    rows = []
    for job in jobs:
        took = (job["finished"] - (job["started"] or job["created"])) if job.get("finished") else None
        rows.append({"state": job["state"], "job": job["label"], "owner": job["owner"],
                     "progress (%)": round(100 * job["progress"]), "message": job["message"],
                     "ETA (s)": None if job.get("eta_seconds") is None else round(job["eta_seconds"]),
                     "took (s)": None if took is None else round(took, 1),
                     "created": time.strftime("%H:%M:%S", time.localtime(job["created"])),
                     "error": job.get("error") or "", "id": job["id"]})
    return rows
