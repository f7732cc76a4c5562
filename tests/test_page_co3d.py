"""AppTest: the Dataset page's CO3D tab browses a tiny CO3D root from the server's datasets folder."""
from __future__ import annotations

import numpy as np
from streamlit.testing.v1 import AppTest

from core.data.scene import Scene
from tests.conftest import ROOT
from tests.test_co3d import write_co3d_root

APP = str(ROOT / "app.py")


def _page():
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/dataset.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_co3d_tab_browses_frames_and_imports_a_sequence(isolated_cache, tmp_path, monkeypatch):
    datasets = tmp_path / "datasets"
    truth = write_co3d_root(datasets / "co3d-mini")
    (datasets / "not-co3d").mkdir()  # listed only when it holds category annotations
    monkeypatch.setenv("RECONBENCH_DATASETS", str(datasets))
    at = _page()
    assert [t.label for t in at.tabs] == ["Prepare a scene", "Browse CO3D"]
    assert list(at.selectbox(key="dataset.co3d.root").options) == ["co3d-mini"]
    assert list(at.selectbox(key="dataset.co3d.category").options) == ["teddybear"]
    assert list(at.selectbox(key="dataset.co3d.sequence").options) == ["101_1_1", "102_2_2"]
    at.selectbox(key="dataset.co3d.sequence").set_value("102_2_2").run()
    at.slider(key="dataset.co3d.frame").set_value(3).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    captions = " ".join(c.value for c in at.caption)
    assert "5 frames of 56×40 px" in captions and "frame number 7" in captions  # 4th by frame_number
    n = len(truth["102_2_2"]["points"])
    assert f"showing {n:,} of {n:,} points and 5 cameras" in captions
    assert "RECONBENCH_DATASETS" in captions
    at.button(key="dataset.co3d.import").click().run()
    assert not at.exception and not at.error
    scene = Scene.load(isolated_cache / "scenes" / "co3d-teddybear-102_2_2")
    np.testing.assert_allclose(scene.cam_from_world, truth["102_2_2"]["cam_from_world"], atol=1e-6)
    # a second import refuses to overwrite, in one message
    at.button(key="dataset.co3d.import").click().run()
    assert any("not empty" in e.value for e in at.error)


def test_without_a_co3d_root_the_tab_says_where_to_put_one(isolated_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("RECONBENCH_DATASETS", str(tmp_path / "empty"))
    at = _page()
    assert any("No CO3D root" in i.value for i in at.info)
    assert not at.exception
