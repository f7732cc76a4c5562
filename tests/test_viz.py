import numpy as np

from core import geometry
from core.app import figures as viz
from core.data.scene import Reconstruction


def test_cloud_is_capped_and_says_how_many_it_shows():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(5000, 3))
    trace, shown, total = viz.cloud_trace(points, (rng.random((5000, 3)) * 255).astype(np.uint8), max_points=1000)
    assert (shown, total) == (1000, 5000) and len(trace.x) == 1000
    fig, caption = viz.reconstruction_figure(Reconstruction(method="m", points=points, confidence=rng.random(5000)),
                                             color_by="confidence", max_points=300)
    assert "showing 300 of 5,000 points" == caption and fig.data[0].marker.colorbar.title.text == "confidence"
    assert fig.layout.scene.aspectmode == "data" and fig.layout.uirevision


def test_rgb_palette_is_exact_on_its_levels():
    levels = np.linspace(0, 255, 8).round().astype(int)
    colors = np.array([[levels[1], levels[6], levels[3]], [255, 0, 255]], dtype=np.uint8)
    index = viz.rgb_to_palette_index(colors).astype(int)
    assert viz.PALETTE[index[0]][1] == f"rgb({levels[1]},{levels[6]},{levels[3]})"
    assert viz.PALETTE[index[1]][1] == "rgb(255,0,255)"


def test_frustums_are_one_line_trace_with_view_labels():
    k = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])
    poses = np.stack([geometry.look_at(np.array([2.0, 0, 0]), np.zeros(3)),
                      geometry.look_at(np.array([0, 2.0, 0]), np.zeros(3))])
    poses_with_gap = np.concatenate([poses, np.full((1, 4, 4), np.nan)])
    lines, labels = viz.frustum_trace(np.stack([k] * 3), poses_with_gap, (48, 64), 0.5, labels=["3", "9", "x"])
    assert sum(v is None for v in lines.x) == 2  # two drawn cameras, the unregistered one skipped
    assert list(labels.text) == ["3", "9"]
    np.testing.assert_allclose([labels.x[0], labels.y[0], labels.z[0]], [2.0, 0, 0], atol=1e-12)


def test_error_overlay_and_depth_grid(sample_scene):
    from core.eval import metrics

    recon = Reconstruction(method="m", points=sample_scene.gt_points[::10] + 0.002)
    evaluation = metrics.evaluate(sample_scene, recon, metrics.EvaluationOptions(alignment="none", icp=False))
    fig, caption = viz.error_overlay_figure(evaluation, max_points=2000)
    assert "distance to the ground truth" in caption and fig.data[1].marker.cmin == 0.0
    grid = viz.depth_figure(list(sample_scene.depths[:3]), ["a", "b", "c"], columns=2)
    assert len(grid.data) == 3 and grid.layout.height == 520
