"""Hosted mode: roles, namespaces (isolation between users), quotas, a preparation that fails
without touching the scene it would replace, and a viewer who cannot submit (core and page)."""
from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.data.prepare.uploads import store_uploads
from core.data.scene import Scene
from core.errors import UserError
from core.hosted import namespaces, quotas
from core.hosted.roles import (AccessDenied, RolesConfig, RolesFileError, User, allowed, namespace_of, parse_roles,
                               require, resolve_user)
from tests.conftest import ROOT

ALICE = User("alice@lab.org", "runner", email="alice@lab.org", signed_in=True)
BOB = User("bob@lab.org", "runner", email="bob@lab.org", signed_in=True)
ADMIN = User("lead@lab.org", "admin", email="lead@lab.org", signed_in=True)
VIEWER = User("guest@lab.org", "viewer", email="guest@lab.org", signed_in=True)

ROLES_TOML = """
profile = "class"
default_role = "viewer"
[users]
"Teacher@School.edu" = "runner"
[groups]
"reconbench-admins" = "admin"
[quotas]
queued_jobs = 2
stored_bytes = 5000
"""


def tiny_scene(name: str, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    return Scene(name=name, images=[rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(2)],
                 image_names=["a.png", "b.png"], intrinsics=np.repeat(np.eye(3)[None], 2, 0),
                 cam_from_world=np.repeat(np.eye(4)[None], 2, 0), gt_points=rng.normal(size=(20, 3)))


def folder_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ roles
def test_roles_file_maps_users_groups_and_the_class_profile():
    config = parse_roles(ROLES_TOML)
    assert resolve_user({}, config) == User("anonymous", "viewer")           # class: visitors browse
    teacher = resolve_user({"is_logged_in": True, "email": "teacher@school.edu"}, config)
    assert teacher.role == "runner" and teacher.signed_in                      # e-mail matched case-insensitively
    admin = resolve_user({"is_logged_in": True, "email": "x@y.org", "groups": ["reconbench-admins"]}, config)
    assert admin.role == "admin"
    assert resolve_user({"is_logged_in": True, "email": "x@y.org"}, config).role == "viewer"
    team = parse_roles('default_role = ""')
    assert resolve_user({}, team) is None                                      # team: sign in first
    assert resolve_user({"is_logged_in": True, "email": "x@y.org"}, team) is None  # unlisted: refused
    assert config.quotas == {"queued_jobs": 2, "stored_bytes": 5000}


@pytest.mark.parametrize("text, message", [
    ('[users]\n"a@b.c" = "owner"', "unknown role 'owner'"),
    ('profile = "school"', "profile must be one of team, class"),
    ("[quotas]\nstored_bytes = -1", "[quotas] values must be non-negative integers"),
    ("profile = ", "not valid TOML"),
])
def test_a_bad_roles_file_is_one_clear_error(text, message):
    with pytest.raises(RolesFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_roles(text)


def test_a_viewer_cannot_submit_upload_or_delete():
    assert allowed(VIEWER, "browse") and not allowed(VIEWER, "submit")
    for action in ("submit", "upload", "delete"):
        with pytest.raises(AccessDenied, match=f"needs the (runner|admin) role; you are signed in as viewer"):
            require(VIEWER, action)
    with pytest.raises(AccessDenied, match="sign in first"):
        require(None, "browse")
    assert allowed(BOB, "submit") and not allowed(BOB, "delete") and allowed(ADMIN, "delete")


def test_namespaces_never_collide():
    ids = ["alice@lab.org", "Alice@lab.org", "alice.lab.org", "элис@lab.org", "艾丽斯@lab.org", ""]
    assert len({namespace_of(i) for i in ids}) == len(ids)
    assert all("/" not in namespace_of(i) and not namespace_of(i).startswith(".") for i in ids)


# ------------------------------------------------------------------------------ isolation
def _prepared(user: User, name: str, seed: int = 0):
    folder = namespaces.scene_dir(user, name)
    tiny_scene(name, seed).save(folder)
    return folder


def test_user_b_cannot_list_read_overwrite_or_delete_user_a_s_scene(isolated_cache):
    a_folder = _prepared(ALICE, "my-object")
    before = folder_bytes(a_folder)
    listed = lambda user: [(r.namespace, r.name) for r in namespaces.visible_scenes(user)]  # noqa: E731

    assert listed(ALICE) == [(ALICE.namespace, "my-object")]
    assert listed(BOB) == []
    with pytest.raises(AccessDenied, match="no scene .*that you can open"):
        namespaces.open_scene(BOB, ALICE.namespace, "my-object")
    with pytest.raises(AccessDenied):
        namespaces.delete_scene(BOB, ALICE.namespace, "my-object")
    b_folder = _prepared(BOB, "my-object", seed=1)  # the same name writes into B's own namespace
    assert b_folder != a_folder and folder_bytes(a_folder) == before
    with pytest.raises(AccessDenied):
        namespaces.share(BOB, "other")               # B cannot share what B does not own

    namespaces.share(ALICE, "my-object")
    assert (ALICE.namespace, "my-object") in listed(BOB)
    assert namespaces.open_scene(BOB, ALICE.namespace, "my-object") == a_folder
    with pytest.raises(AccessDenied, match="needs the admin role"):
        namespaces.delete_scene(BOB, ALICE.namespace, "my-object")  # shared is not deletable by others
    assert folder_bytes(a_folder) == before

    namespaces.delete_scene(ADMIN, ALICE.namespace, "my-object")
    assert not a_folder.exists() and listed(BOB) == [(BOB.namespace, "my-object")]


def test_uploads_are_private_and_stored_under_generated_names(isolated_cache):
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    files = [("../../etc/passwd.png", buffer.getvalue()), ("holiday photo.PNG", buffer.getvalue())]
    batch = store_uploads(files, "images", root=namespaces.upload_root(ALICE), generated_names=True)
    assert batch.names == ["000000.png", "000001.png"]
    assert batch.folder.parent == isolated_cache / "uploads" / ALICE.namespace
    assert batch.original_names == [n for n, _ in files]
    assert namespaces.open_upload(ALICE, ALICE.namespace, batch.folder.name) == batch.folder
    with pytest.raises(AccessDenied):
        namespaces.open_upload(BOB, ALICE.namespace, batch.folder.name)
    with pytest.raises(AccessDenied, match="needs the runner role"):
        namespaces.upload_root(VIEWER)


def test_quotas_refuse_before_anything_is_written(isolated_cache):
    config = parse_roles(ROLES_TOML)
    _prepared(ALICE, "obj")
    used = quotas.stored_bytes(ALICE)
    assert used == sum(len(b) for b in folder_bytes(isolated_cache / "scenes" / ALICE.namespace).values())
    with pytest.raises(quotas.QuotaExceeded, match="storage quota"):
        quotas.check_storage(ALICE, config, 5000 - used + 1)
    quotas.check_storage(ALICE, config, 5000 - used)
    quotas.check_queue(ALICE, config, 1)
    with pytest.raises(quotas.QuotaExceeded, match="2 job\\(s\\) queued or running, the limit is 2"):
        quotas.check_queue(ALICE, config, 2)
    quotas.check_queue(ADMIN, config, 99)                  # admins have no quota
    assert quotas.stored_bytes(BOB) == 0


# ------------------------------------------------------------------------------ preparation
def test_a_failed_preparation_leaves_the_existing_scene_byte_identical(tmp_path):
    from core.data.prepare.pipeline import PrepareOptions, prepare

    out = tmp_path / "scenes" / "my-object"
    tiny_scene("my-object").save(out)
    (out / "prepare.json").write_text("{}")
    before = folder_bytes(out)
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    with pytest.raises(UserError):
        prepare(noise, ["a.png", "b.png", "c.png"], out, options=PrepareOptions(dense=False, num_threads=1))
    assert folder_bytes(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["my-object"]      # no staging left behind


def test_preparing_into_a_folder_that_is_not_a_scene_is_refused(tmp_path):
    from core.data.prepare import DatasetError
    from core.data.prepare.pipeline import prepare

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="exists and is not a scene folder"):
        prepare([np.zeros((8, 8, 3), np.uint8)] * 3, ["a", "b", "c"], tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------ pages
def _hosted_app(monkeypatch, tmp_path, email):
    roles = tmp_path / "roles.toml"
    roles.write_text(f'[users]\n"{BOB.email}" = "runner"\n')
    monkeypatch.setenv("RECONBENCH_MODE", "hosted")
    monkeypatch.setenv("RECONBENCH_ROLES", str(roles))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.user = {"is_logged_in": True, "email": email} if email else {"is_logged_in": False}
    return at


def test_a_signed_in_viewer_sees_the_run_button_disabled(monkeypatch, tmp_path, isolated_cache):
    at = _hosted_app(monkeypatch, tmp_path, VIEWER.email)
    at.run()
    assert [c.value for c in at.sidebar.caption] == [f"Signed in as {VIEWER.email} · viewer"]
    at.switch_page("pages/metrics.py")
    at.run()
    assert not at.exception, at.exception
    assert at.button(key="metrics.evaluate").disabled
    assert any("can browse results but not start computations" in c.value for c in at.caption)


def test_a_runner_may_submit_and_nobody_enters_unsigned(monkeypatch, tmp_path, isolated_cache):
    at = _hosted_app(monkeypatch, tmp_path, BOB.email)
    at.run()
    at.switch_page("pages/metrics.py")
    at.run()
    assert not at.exception, at.exception
    assert not any("can browse results" in c.value for c in at.caption)

    at = _hosted_app(monkeypatch, tmp_path, None)  # team profile, not signed in: the gate only
    at.run()
    assert not at.exception
    assert [i.value for i in at.info] == ["Sign in to open this dashboard."]
    assert at.button(key="access.login") is not None and not at.sidebar.selectbox


def test_the_documented_roles_example_is_a_valid_class_profile():
    config = parse_roles((ROOT / ".streamlit" / "roles.toml.example").read_text())
    assert config.anonymous_viewers and config.users["teacher@school.edu"] == "runner"
    assert resolve_user({"is_logged_in": True, "email": "teacher@school.edu"}, config).role == "runner"
    assert resolve_user({}, config).role == "viewer"


def test_only_an_admin_gets_the_delete_button_and_it_deletes(monkeypatch, tmp_path, isolated_cache):
    from core.data.scene import Reconstruction
    from core.store.cache import RunStore

    store = RunStore(isolated_cache)
    store.save("toy", "d" * 20, Reconstruction(method="imported", points=np.zeros((10, 3), np.float32)))
    (tmp_path / "roles.toml").write_text(f'[users]\n"{ADMIN.email}" = "admin"\n')
    monkeypatch.setenv("RECONBENCH_MODE", "hosted")
    monkeypatch.setenv("RECONBENCH_ROLES", str(tmp_path / "roles.toml"))
    for email, role in ((VIEWER.email, "viewer"), (ADMIN.email, "admin")):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.user = {"is_logged_in": True, "email": email}
        at.run()
        at.switch_page("pages/metrics.py")
        at.run()
        assert not at.exception, at.exception
        buttons = [b for b in at.button if b.key == "metrics.delete"]
        assert len(buttons) == (role == "admin")
    buttons[0].click()
    at.run()
    assert not at.exception and store.runs("toy") == []


def test_an_owner_shares_a_scene_from_the_dataset_page_and_others_then_see_it(monkeypatch, tmp_path,
                                                                             isolated_cache):
    _prepared(BOB, "obj")
    (tmp_path / "roles.toml").write_text('default_role = "runner"\n')
    monkeypatch.setenv("RECONBENCH_MODE", "hosted")
    monkeypatch.setenv("RECONBENCH_ROLES", str(tmp_path / "roles.toml"))

    def session(user):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.user = {"is_logged_in": True, "email": user.email}
        at.run()
        return at

    label = f"{BOB.namespace}/obj"
    assert label not in session(ALICE).sidebar.selectbox(key="scene_picker").options
    at = session(BOB)
    assert label in at.sidebar.selectbox(key="scene_picker").options
    at.switch_page("pages/dataset.py")
    at.run()
    at.toggle(key=f"access.share.{label}").set_value(True)
    at.run()
    assert not at.exception, at.exception
    assert label in session(ALICE).sidebar.selectbox(key="scene_picker").options
