import numpy as np
import pytest

from core import geometry
from core.app import figures
from core.data.scene import Reconstruction


def test_cloud_is_capped_and_says_how_many_it_shows():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(5000, 3))
    trace, shown, total = figures.cloud_trace(points, (rng.random((5000, 3)) * 255).astype(np.uint8), max_points=1000)
    assert (shown, total) == (1000, 5000) and len(trace.x) == 1000
    fig, caption = figures.reconstruction_figure(Reconstruction(method="m", points=points, confidence=rng.random(5000)),
                                             color_by="confidence", max_points=300)
    assert "showing 300 of 5,000 points" == caption and fig.data[0].marker.colorbar.title.text == "confidence"
    assert fig.layout.scene.aspectmode == "data" and fig.layout.uirevision


def test_rgb_palette_is_exact_on_its_levels():
    levels = np.linspace(0, 255, 8).round().astype(int)
    colors = np.array([[levels[1], levels[6], levels[3]], [255, 0, 255]], dtype=np.uint8)
    index = figures.rgb_to_palette_index(colors).astype(int)
    assert figures.PALETTE[index[0]][1] == f"rgb({levels[1]},{levels[6]},{levels[3]})"
    assert figures.PALETTE[index[1]][1] == "rgb(255,0,255)"


def test_frustums_are_one_line_trace_with_view_labels():
    k = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])
    poses = np.stack([geometry.look_at(np.array([2.0, 0, 0]), np.zeros(3)),
                      geometry.look_at(np.array([0, 2.0, 0]), np.zeros(3))])
    poses_with_gap = np.concatenate([poses, np.full((1, 4, 4), np.nan)])
    lines, labels = figures.frustum_trace(np.stack([k] * 3), poses_with_gap, (48, 64), 0.5, labels=["3", "9", "x"])
    assert sum(v is None for v in lines.x) == 2  # two drawn cameras, the unregistered one skipped
    assert list(labels.text) == ["3", "9"]
    np.testing.assert_allclose([labels.x[0], labels.y[0], labels.z[0]], [2.0, 0, 0], atol=1e-12)


def test_error_overlay_and_depth_grid(sample_scene):
    from core.eval import metrics

    recon = Reconstruction(method="m", points=sample_scene.gt_points[::10] + 0.002)
    evaluation = metrics.evaluate(sample_scene, recon, metrics.EvaluationOptions(alignment="none", icp=False))
    fig, caption = figures.error_overlay_figure(evaluation, max_points=2000)
    assert "distance to the ground truth" in caption and fig.data[1].marker.cmin == 0.0
    grid = figures.depth_figure(list(sample_scene.depths[:3]), ["a", "b", "c"], columns=2)
    assert len(grid.data) == 3 and grid.layout.height == 520
    # one colour scale for every map, spanning the 2nd-98th percentile of all valid depths, with its bar
    valid = np.concatenate([d[d > 0] for d in sample_scene.depths[:3]])
    assert all(t.coloraxis == "coloraxis" for t in grid.data)
    assert grid.layout.coloraxis.cmin == pytest.approx(np.percentile(valid, 2), rel=1e-6)
    assert grid.layout.coloraxis.cmax == pytest.approx(np.percentile(valid, 98), rel=1e-6)
    assert grid.layout.coloraxis.colorbar.title.text.startswith("depth")


def test_colour_bars_keep_clear_of_the_toolbar_and_camera_errors_read_as_percentages():
    from core.eval.scores import CameraErrors

    trace, _, _ = figures.cloud_trace(np.zeros((5, 3)), values=np.arange(5.0), colorbar_title="confidence")
    bar = trace.marker.colorbar
    assert bar.title.side == "right" and bar.yanchor == "bottom" and bar.y + bar.len < 0.9   # toolbar band free
    cameras = CameraErrors(pairs=210, rre_deg=0.04, rte_deg=0.31, auc30=1.0, rra={15.0: 1.0, 5.0: 0.95},
                           rta={15.0: 1.0})
    shown = {row["measure"]: row["value"] for row in figures.camera_error_rows(cameras)}
    assert shown["AUC@30"] == "100 %" and shown["RRA@15°"] == "100 %" and shown["RRA@5°"] == "95 %"
    assert shown["pairs"] == "210" and shown["mean rotation error (RRE)"] == "0.0°"


def test_crop_figure_splits_the_cloud_at_the_box_and_counts_it():
    from core.data.prepare.crop import CropBox

    rng = np.random.default_rng(1)
    cloud = rng.uniform(-1, 1, size=(3000, 3))
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    box = CropBox(centre=np.array([0.1, 0.0, -0.1]), rotation=rotation, half_extents=np.array([0.5, 0.4, 0.3]))
    scene = type("Cams", (), {"intrinsics": np.eye(3)[None], "image_size": (48, 64),
                              "cam_from_world": geometry.look_at(np.array([3.0, 0, 0]), np.zeros(3))[None]})()
    fig, caption = figures.crop_figure(cloud, None, box, scene, revision="r")
    local = (cloud - box.centre) @ rotation  # independent inside test in the box's frame
    inside = int(np.all(np.abs(local) <= box.half_extents, axis=1).sum())
    assert caption.startswith(f"{inside:,} of 3,000 dense points inside the box")
    outside_trace, object_trace, box_lines = fig.data[:3]
    assert (len(object_trace.x), len(outside_trace.x)) == (inside, 3000 - inside)
    assert box_lines.name == "crop box" and sum(v is None for v in box_lines.x) == 12  # 12 edges
    corners = {tuple(np.round(c, 9)) for c in box.corners()}
    drawn = {tuple(np.round(p, 9)) for p in zip(box_lines.x, box_lines.y, box_lines.z) if p[0] is not None}
    assert drawn == corners
    _, caption = figures.crop_figure(cloud, None, None, scene, revision="r")
    assert caption.startswith("3,000 of 3,000")


def test_height_cloud_is_coloured_by_y():
    points = np.random.default_rng(2).normal(size=(500, 3))
    fig = figures.height_cloud_figure(points, "m", revision="r")
    np.testing.assert_array_equal(fig.data[0].marker.color, points[:, 1])


def test_scaling_figures_draw_the_fits_and_the_summary_rows():
    from core.studies import scaling

    n, seconds = [1, 2, 3, 4, 6], [1.1, 2.3, 3.2, 4.6, 6.9]
    fits = scaling.fit_models(n, seconds)
    fig = figures.scaling_fit_figure(n, seconds, fits, None, "Time (s)")
    assert len(fig.data) == 1 + len(fits) and list(fig.data[0].y) == seconds
    for trace, fit in zip(fig.data[1:], fits):
        assert list(trace.x) == list(range(1, 7)) and trace.name == fit.formula
    quadratic = next(t for t, f in zip(fig.data[1:], fits) if f.name == "quadratic")
    a, b, c = next(f for f in fits if f.name == "quadratic").coefficients.values()
    assert quadratic.y[4] == pytest.approx(a * 5 + b * 25 + c)  # the curve at n = 5, from the formula
    table = figures.fit_table(fits)
    assert [row["model"] for row in table] == [f.formula for f in fits]
    assert table[0]["residuals"].count(",") == len(n) - 1
    rows = [{"views": 2, "chamfer": 0.2, "chamfer_std": 0.01, "emd": 0.3, "emd_std": 0.02, "fscore@0.01": 0.5,
             "fscore@0.01_std": 0.1}, {"views": 4, "seconds": 3.0}]
    quality = figures.scaling_quality_figure(rows)
    assert [t.name for t in quality.data] == list(scaling.QUALITY_COLUMNS)
    assert list(quality.data[0].x) == [2] and list(quality.data[2].error_y.array) == [0.1]


def test_training_curves_split_by_stage():
    curves = {"a": {"step": [1, 2, 3, 4], "stage": ["ae", "ae", "latent", "latent"], "loss": [4.0, 3.0, 2.0, 1.0]},
              "b": {"step": [1], "stage": ["ae"], "loss": [5.0]}}
    fig = figures.training_curves_figure(curves)
    assert [t.name for t in fig.data] == ["a · ae", "a · latent", "b · ae"]
    assert list(fig.data[1].x) == [3, 4] and list(fig.data[1].y) == [2.0, 1.0] and fig.layout.yaxis.type == "log"


def test_attention_click_target_has_one_marker_per_patch_centre():
    image = np.zeros((28, 42, 3), np.uint8)
    fig = figures.attention_click_figure(image, (2, 3), (5, 9))
    targets, pick = fig.data[1], fig.data[2]
    assert len(targets.x) == 6 and sorted(set(targets.x)) == [7.0, 21.0, 35.0] and sorted(set(targets.y)) == [7.0, 21.0]
    assert (pick.x[0], pick.y[0]) == (5, 9)


def test_attention_overlay_blends_the_heat_map_and_marks_correspondences():
    import cv2

    image = np.full((20, 30, 3), 100, np.uint8)
    maps = np.zeros((2, 2, 3))
    maps[1, 0, 2] = 0.8  # frame 1: the top-right patch gets all the attention
    links = {"predicted": [{"uv": None, "in_bounds": False, "occluded": None},
                           {"uv": (4.0, 15.0), "in_bounds": True, "occluded": False}],
             "ground_truth": None}
    out = figures.attention_overlay(image, maps, 1, links)
    inferno = cv2.cvtColor(cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_INFERNO),
                           cv2.COLOR_BGR2RGB)[0]
    blend = lambda c: (0.45 * 100 + 0.55 * c.astype(np.float64)).astype(np.uint8)  # noqa: E731
    np.testing.assert_array_equal(out[2, 25], blend(inferno[1]))  # hottest patch: top of the map
    np.testing.assert_array_equal(out[2, 2], blend(inferno[0]))
    np.testing.assert_array_equal(out[15, 4], [255, 60, 60])  # the red cross at the predicted pixel
    untouched = figures.attention_overlay(image, maps, 0, links)  # frame 0: no correspondence drawn, no heat
    assert (untouched == blend(inferno[0])).all()
    assert figures.correspondence_status(links, "predicted", 0) == "outside"
    assert figures.correspondence_status(links, "predicted", 1) == "visible"
    assert figures.correspondence_status(links, "ground_truth", 1) == "no depth"
    links["predicted"][1]["occluded"] = True
    assert figures.correspondence_status(links, "predicted", 1) == "occluded"
    links["predicted"][1]["occluded"] = None
    assert figures.correspondence_status(links, "predicted", 1) == "unknown"


def test_without_least_confident_keeps_the_top_points_and_their_attributes():
    from core.data.scene import Reconstruction

    points = np.arange(30, dtype=np.float32).reshape(10, 3)
    confidence = np.arange(10, dtype=np.float32)[::-1].copy()   # point i has confidence 9 - i
    recon = Reconstruction("x", points, colors=np.full((10, 3), 7, np.uint8), confidence=confidence,
                           source_view=np.arange(10) % 2)
    shown = figures.without_least_confident(recon, 30)   # the 30th percentile of 0..9 is 2.7
    np.testing.assert_array_equal(shown.points, points[:7])
    np.testing.assert_array_equal(shown.source_view, (np.arange(10) % 2)[:7])
    assert len(recon.points) == 10 and figures.without_least_confident(recon, 0) is recon


def test_a_cloud_without_colours_is_coloured_by_height_and_framed_on_the_object():
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.5, 0.5, size=(500, 3)).astype(np.float32)
    recon = Reconstruction(method="lmnet", points=points)
    fig, _ = figures.reconstruction_figure(recon)
    marker = fig.data[0].marker
    np.testing.assert_array_equal(np.asarray(marker.color), points[:, 1])    # every point drawn, by height
    assert marker.colorbar.title.text == "height (y)"
    # cameras ten times farther than the object: the view is aimed at the object, zoomed to it
    far = np.vstack([points, [[5, 5, 5], [-5, -5, -5]]])
    fig = figures.figure_3d([figures.cloud_trace(far)[0]], focus=points)
    camera = fig.layout.scene.camera
    eye = np.array([camera.eye.x, camera.eye.y, camera.eye.z]) - [camera.center.x, camera.center.y, camera.center.z]
    assert np.allclose(eye, 1.25 * 1.4 * np.ptp(np.percentile(points, [2, 98], axis=0), axis=0).max() / 10,
                       rtol=1e-6)
    box_centre, longest = np.zeros(3), 10.0        # the drawn box is the two far points' (-5..5)
    centre = np.array([camera.center.x, camera.center.y, camera.center.z])
    np.testing.assert_allclose(centre, (np.median(points, axis=0) - box_centre) / longest, rtol=1e-6)
