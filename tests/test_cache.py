import numpy as np
import pytest

from core.store import cache
from core.store.cache import RunStore, run_key, safe_name
from core.data.scene import Reconstruction


def _recon(seed=0):
    return Reconstruction(method="demo", points=np.random.default_rng(seed).normal(size=(20, 3)), view_ids=[0, 1])


def test_equal_inputs_share_a_key_and_any_change_makes_a_new_one():
    images = [np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)]
    key = run_key("vggt", "1", {"a": 1, "b": [1, 2]}, [0, 1], images)
    assert key == run_key("vggt", "1", {"b": [1, 2], "a": 1}, [0, 1], [i.copy() for i in images])
    changed_image = [images[0], images[1].copy()]
    changed_image[1][0, 0, 0] = 7
    others = {run_key("vggt", "2", {"a": 1, "b": [1, 2]}, [0, 1], images),
              run_key("vggt", "1", {"a": 2, "b": [1, 2]}, [0, 1], images),
              run_key("vggt", "1", {"a": 1, "b": [1, 2]}, [1, 0], images),
              run_key("dust3r", "1", {"a": 1, "b": [1, 2]}, [0, 1], images),
              run_key("vggt", "1", {"a": 1, "b": [1, 2]}, [0, 1], changed_image)}
    assert key not in others and len(others) == 5


def test_save_load_and_list(tmp_path):
    store = RunStore(tmp_path)
    recon = _recon()
    folder = store.save("toy", "k1", recon, {"chamfer": 0.5})
    assert folder == tmp_path / "runs" / "toy" / "demo" / "k1" and store.has("toy", "demo", "k1")
    np.testing.assert_array_equal(store.load("toy", "demo", "k1").points, recon.points)
    [record] = store.runs("toy")
    assert record.evaluation == {"chamfer": 0.5} and record.meta["view_ids"] == [0, 1]
    store.save_evaluation("toy", "demo", "k1", {"chamfer": 0.25})
    assert store.runs("toy")[0].evaluation == {"chamfer": 0.25}


def test_an_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    real_write = cache.atomic_write_bytes
    calls = []

    def crash_on_meta(path, data):
        calls.append(path.name)
        if path.name == "meta.json":
            raise KeyboardInterrupt("power cut")
        real_write(path, data)

    monkeypatch.setattr("core.data.scene.atomic_write_bytes", crash_on_meta)
    with pytest.raises(KeyboardInterrupt):
        store.save("toy", "k2", _recon())
    assert calls == ["reconstruction.npz", "meta.json"]  # it crashed half-way
    assert not store.has("toy", "demo", "k2")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert store.runs("toy") == []


def test_safe_names():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("my photo (1).JPG") == "my_photo_1_.JPG"
    assert safe_name("...") == "unnamed"
