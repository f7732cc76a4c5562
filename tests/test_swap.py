"""A folder replaced by two renames survives a crash between them: the crash state is made on
disk by the real swap code with its second rename interrupted (a ``BaseException``, as a killed
process would stop there), then each cleaner that meets it puts the old folder back (the target
is missing) or removes the aside (the new folder got in): the job manager's clean after a failed
job, the store's start-up clean at any age, and ``write_folders(replace=True)`` of a manager that
stores a worker's result. No Ray is started."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from core.store import swap
from core.store.cache import RunStore


class Killed(BaseException):
    """Stands for the kill: not an OSError, so no ``except OSError`` of the swap runs."""


def make_folder(path: Path, tag: str, marker: str = "scene.json") -> dict[str, bytes]:
    """A complete scene-like folder with two files; returns {relative path: bytes}."""
    files = {marker: f'{{"name": "{tag}"}}'.encode(), "sparse/0/points3D.bin": os.urandom(64)}
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return files


def read_folder(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def crash_between_renames(monkeypatch, staging: Path, final: Path) -> Path:
    """Run :func:`swap.swap_into_place` and stop it at its second rename; returns the aside."""
    real_rename, calls = os.rename, []

    def rename(source, target):
        calls.append((Path(source), Path(target)))
        if len(calls) == 2:
            raise Killed
        real_rename(source, target)

    monkeypatch.setattr(swap.os, "rename", rename)
    with pytest.raises(Killed):
        swap.swap_into_place(staging, final)
    monkeypatch.setattr(swap.os, "rename", real_rename)
    assert calls[0][0] == final and calls[1] == (staging, final)
    return calls[0][1]


@pytest.fixture
def crashed(tmp_path, monkeypatch):
    """scenes/mine was being replaced by a job's staging folder when its worker died."""
    scenes = tmp_path / "scenes"
    final, staging = scenes / "mine", scenes / ".tmp-0123abcd-mine-deadbeef"
    old = make_folder(final, "old")
    make_folder(staging, "new")
    aside = crash_between_renames(monkeypatch, staging, final)
    assert not final.exists() and read_folder(aside) == old and swap.aside_target(aside) == final
    return scenes, final, staging, aside, old


def test_a_failed_job_cleaner_puts_the_old_scene_back(crashed):
    from core.jobs.manager import JobManager

    scenes, final, staging, aside, old = crashed
    JobManager._clean_staging({"kind": "prepare", "key": "0123abcd", "store": str(scenes), "staging_dirs": ["."]})
    assert read_folder(final) == old
    assert sorted(p.name for p in scenes.iterdir()) == ["mine"]        # staging and aside gone


def test_the_startup_clean_restores_at_any_age_and_never_removes_an_aside_by_age(crashed):
    scenes, final, staging, aside, old = crashed
    past = time.time() - 10 * 3600
    os.utime(aside, (past, past))
    os.utime(staging, (past, past))
    removed = RunStore(scenes.parent).clean_staging()
    assert removed == [staging] and read_folder(final) == old and not aside.exists()
    # a young aside (a swap interrupted a second ago) is put back just the same
    young = make_folder(scenes / f"{swap.ASIDE_PREFIX}other-0a1b2c3d", "young")
    assert RunStore(scenes.parent).clean_staging() == []
    assert read_folder(scenes / "other") == young


def test_an_aside_whose_replacement_got_in_is_removed(tmp_path):
    final = tmp_path / "scenes" / "mine"
    new = make_folder(final, "new")
    aside = tmp_path / "scenes" / f"{swap.ASIDE_PREFIX}mine-00ff00ff"
    make_folder(aside, "old")
    assert RunStore(tmp_path).clean_staging(max_age_s=3600) == [aside]
    assert read_folder(final) == new and not aside.exists()


def test_an_aside_beside_a_folder_that_is_not_complete_is_kept(tmp_path):
    scenes = tmp_path / "scenes"
    (scenes / "mine").mkdir(parents=True)
    (scenes / "mine" / "notes.txt").write_text("not a scene")
    aside = scenes / f"{swap.ASIDE_PREFIX}mine-12345678"
    old = make_folder(aside, "old")
    past = time.time() - 10 * 3600
    os.utime(aside, (past, past))
    assert swap.recover_swaps(scenes) == [swap.Recovery(aside, scenes / "mine", "kept")]
    assert RunStore(tmp_path).clean_staging() == []
    assert read_folder(aside) == old and (scenes / "mine" / "notes.txt").read_text() == "not a scene"


def test_other_staging_names_are_not_asides():
    assert swap.aside_target(Path("/s/.tmp-prepare-old-foo-1234abcd")) is None   # a preparation of "old-foo"
    assert swap.aside_target(Path("/s/.tmp-0123abcd-mine-deadbeef")) is None     # a job's staging
    assert swap.aside_target(Path("/s/.tmp-old-my-scene-00000000")) == Path("/s/my-scene")


def test_write_folders_replace_crash_is_recovered(tmp_path, monkeypatch):
    from core.jobs.manager import JobManager, write_folders

    scenes = tmp_path / "scenes"
    old = make_folder(scenes / "mine", "old")
    real_rename, calls = os.rename, []

    def rename(source, target):
        calls.append(Path(target))
        if len(calls) == 2:
            raise Killed
        real_rename(source, target)

    monkeypatch.setattr(swap.os, "rename", rename)
    with pytest.raises(Killed):
        write_folders(scenes, {"mine": {"scene.json": b'{"name": "new"}'}}, replace=True)
    monkeypatch.setattr(swap.os, "rename", real_rename)
    assert not (scenes / "mine").exists() and swap.aside_target(calls[0]) == scenes / "mine"
    JobManager._clean_staging({"kind": "prepare", "key": "0123abcd", "store": str(scenes), "staging_dirs": ["."]})
    assert read_folder(scenes / "mine") == old
    # the next replace goes through and leaves nothing beside the scene
    assert write_folders(scenes, {"mine": {"scene.json": b'{"name": "new"}'}}, replace=True) == ["mine"]
    assert read_folder(scenes / "mine") == {"scene.json": b'{"name": "new"}'}
    assert [p.name for p in scenes.iterdir()] == ["mine"]


def test_a_failed_second_rename_puts_the_old_folder_back(tmp_path):
    final = tmp_path / "mine"
    old = make_folder(final, "old")
    with pytest.raises(FileNotFoundError):
        swap.swap_into_place(tmp_path / "missing-staging", final)
    assert read_folder(final) == old and [p.name for p in tmp_path.iterdir()] == ["mine"]
