"""Streamlit side of hosted mode: who is signed in, the sign-in gate, and what the pages may offer.

Local mode (the default) has one user with every right and no sign-in. Hosted mode
(``RECONBENCH_MODE=hosted``) signs in with ``st.login`` (the OIDC provider of
``.streamlit/secrets.toml``'s ``[auth]``), maps the identity to a role with the roles file
(:mod:`core.hosted.roles`) and lists each user's scenes from their namespace
(:mod:`core.hosted.namespaces`). The decisions are core's; this module only reads ``st.user``
and draws the gate and the refusals.
"""
from __future__ import annotations

import streamlit as st

from core.hosted import is_hosted
from core.errors import UserError
from core.hosted.roles import LOCAL_USER, User, allowed, load_roles, resolve_user


def current_user() -> User | None:
    """The user of this session: :data:`LOCAL_USER` in local mode; in hosted mode the signed-in
    user's role from the roles file, an anonymous viewer (class profile), or None."""
    if not is_hosted():
        return LOCAL_USER
    try:
        info = st.user.to_dict()
    except Exception:  # no [auth] section and no test user: nobody is signed in
        info = {}
    return resolve_user(info, load_roles())


def sign_in_gate() -> User | None:
    """Called by ``app.py`` before any page: in hosted mode, stop the run with a sign-in button
    when nobody may enter yet, and show who is signed in (with sign-out) in the sidebar."""
    if not is_hosted():
        return LOCAL_USER
    try:
        user = current_user()
    except UserError as error:  # a broken roles file: nobody gets in, the reason is shown
        st.error(f"Sign-in is not available: {error}")
        st.stop()
    if user is None:
        st.title("ReconBench")
        st.info("Sign in to open this dashboard.")
        if st.button("Sign in", type="primary", key="access.login"):
            st.login()
        st.stop()
    with st.sidebar:
        st.caption(f"Signed in as {user.email} · {user.role}" if user.signed_in else "Browsing as a visitor")
        if user.signed_in and st.button("Sign out", key="access.logout"):
            st.logout()
    return user


def may(action: str) -> bool:
    """Whether this session's user may do ``action`` (``submit``, ``upload``, ``delete``...)."""
    return allowed(current_user(), action)


def submit_allowed(note: bool = True) -> bool:
    """For a page's Run button: True when this session may submit; otherwise False and (with
    ``note``) one caption saying why, so that the button can be drawn disabled."""
    if may("submit"):
        return True
    if note:
        user = current_user()
        st.caption(f"Your role ({user.role if user else 'none'}) can browse results but not start "
                   "computations.")
    return False


def shown_path(path) -> str:
    """How a page names a stored folder: the path in local mode; in hosted mode only its name
    (web users never see a server path)."""
    from pathlib import Path

    return str(path) if not is_hosted() else Path(path).name


def upload_destination(total_bytes: int):
    """Where this session's uploads go and whether they get generated names: ``(root or None,
    generated_names)``; None = the local default (``cache/uploads``). Hosted: the user's
    namespace, after the role and storage-quota checks (raise ``UserError``)."""
    if not is_hosted():
        return None, False
    from core.hosted import namespaces, quotas
    from core.hosted.roles import require

    user = current_user()
    require(user, "upload")
    quotas.check_storage(user, load_roles(), total_bytes)
    return namespaces.upload_root(user), True


def scene_destination(name: str):
    """``(folder, scene name)`` for preparing scene ``name``: the local default
    (``cache/scenes/<name>``) or, hosted, ``<user namespace>/<name>`` after the role check, with a
    scene name that carries the namespace (two users' "my-object" never share runs)."""
    if not is_hosted():
        from core.data.prepare.pipeline import default_scene_dir

        return default_scene_dir(name), name
    from core.hosted import namespaces
    from core.hosted.roles import require

    user = current_user()
    require(user, "submit")
    folder = namespaces.scene_dir(user, name)
    return folder, f"{user.namespace}--{folder.name}"


def admin_delete_button(label: str, key: str) -> bool:
    """A delete button drawn only in hosted mode for admins (local mode keeps its pages as they
    were); True when clicked. The caller deletes."""
    if not is_hosted() or not may("delete"):
        return False
    return st.button(label, key=key, type="secondary")


def my_scenes_panel() -> None:
    """Hosted mode: the signed-in user's prepared scenes with a share switch and a delete button
    each (:mod:`core.hosted.namespaces`); admins also see and may delete everyone's. Nothing in
    local mode."""
    if not is_hosted():
        return
    from core.hosted import namespaces

    user = current_user()
    if user is None or not may("upload"):
        return
    scenes = [ref for ref in namespaces.visible_scenes(user)
              if ref.namespace == user.namespace or may("delete")]
    with st.expander(f"Your scenes ({sum(ref.namespace == user.namespace for ref in scenes)})"):
        if not scenes:
            st.caption("No prepared scene yet. Others see a scene of yours only once you share it.")
        for ref in scenes:
            left, middle, right = st.columns([3, 1, 1])
            left.write(ref.label if ref.namespace != user.namespace else ref.name)
            if ref.namespace == user.namespace:
                shared = middle.toggle("shared", value=ref.shared, key=f"access.share.{ref.label}")
                if shared != ref.shared:
                    namespaces.share(user, ref.name, shared)
                    st.rerun()
            if right.button("Delete", key=f"access.delete.{ref.label}"):
                try:
                    namespaces.delete_scene(user, ref.namespace, ref.name)
                    st.rerun()
                except UserError as error:
                    st.error(str(error))
