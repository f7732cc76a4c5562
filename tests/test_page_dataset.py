"""AppTest: the Dataset page driven by a user — a 20-frame video end to end, and bad uploads."""
import json

import numpy as np
from streamlit.testing.v1 import AppTest

from core.data.scene import Scene
from tests.conftest import ROOT, SAMPLE
from tests.test_dataset import _jpeg, write_video

APP = str(ROOT / "app.py")


def _dataset_page(timeout=900):
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    at.switch_page("pages/dataset.py")
    at.run()
    assert not at.exception
    return at


def test_a_video_goes_through_the_page_end_to_end(isolated_cache, sample_scene, tmp_path):
    video = write_video(tmp_path / "orbit.mp4", sample_scene.images[:20])
    at = _dataset_page()
    at.radio(key="dataset.source").set_value("Upload a video").run()
    at.text_input(key="dataset.name").set_value("orbit-video")
    at.number_input(key="dataset.frames").set_value(20)
    at.number_input(key="dataset.options.max_features").set_value(1024)
    at.number_input(key="dataset.options.mvs_max_size").set_value(128)
    at.file_uploader(key="dataset.video").set_value(("orbit.mp4", video.read_bytes(), "video/mp4"))
    at.run()
    assert not at.exception and not at.error
    assert len(at.get("imgs")) + len(at.get("image")) >= 1  # the preview strip
    stored = list((isolated_cache / "uploads").glob("*/orbit.mp4"))
    assert len(stored) == 1  # stored before any work
    at.button(key="dataset.prepare").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Registered views"] == "20/20"
    assert float(metrics["Mean reprojection error"].split()[0]) < 1.0
    folder = isolated_cache / "scenes" / "orbit-video"
    scene = Scene.load(folder)
    assert scene.num_views == 20 and scene.registered.all() and scene.has_ground_truth
    assert scene.image_names[0] == "frame_000000.png" and scene.image_names[-1] == "frame_000019.png"
    assert json.loads((folder / "scene.json").read_text())["provenance"]["frame_indices"] == list(range(20))
    assert len(at.get("plotly_chart")) == 1
    assert any(e.label == "COLMAP log" for e in at.expander)
    # the picker lists it
    from core.app.widgets import available_scenes

    assert "orbit-video" in available_scenes()
    # adjust the crop and store it
    before = len(scene.gt_points)
    at.slider(key="dataset.scalez").set_value(0.5).run()
    at.button(key="dataset.apply_crop").click().run()
    assert not at.exception and not at.error
    assert len(Scene.load(folder).gt_points) < before


def test_bad_uploads_show_a_message_and_are_kept(isolated_cache, tmp_path):
    at = _dataset_page(timeout=120)
    at.radio(key="dataset.source").set_value("Upload a video").run()
    at.file_uploader(key="dataset.video").set_value(("empty.mp4", b"\x00" * 2048, "video/mp4"))
    at.run()
    assert not at.exception
    assert any("empty.mp4" in e.value and "decodable" in e.value for e in at.error)
    assert (next((isolated_cache / "uploads").glob("*/empty.mp4"))).stat().st_size == 2048

    at = _dataset_page(timeout=120)
    at.radio(key="dataset.source").set_value("Upload images").run()
    files = [(f"view_{v:03d}.jpg", (SAMPLE / "images" / f"view_{v:03d}.jpg").read_bytes(), "image/jpeg")
             for v in range(3)]
    files.append(("other.jpg", _jpeg(np.full((100, 80, 3), 90, np.uint8)), "image/jpeg"))
    at.file_uploader(key="dataset.images").set_value(files)
    at.run()
    at.button(key="dataset.prepare").click().run()
    assert not at.exception
    assert any("different sizes" in e.value for e in at.error)
    assert any("kept" in i.value for i in at.info)
    assert len(list((isolated_cache / "uploads").glob("*/other.jpg"))) == 1
    assert not (isolated_cache / "scenes").exists() or not any((isolated_cache / "scenes").glob("*/scene.json"))
