"""Every registered method, run through the runner in its cheapest configuration, keeps the
Reconstruction contract: shapes, dtypes, frames, finite values, view ids and provenance.

A method added to the registry is checked here without writing a test: it only needs an entry in
``CHEAPEST`` (the options that make it run in seconds without downloads).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from core import options as option_surface
from core.data.scene import Reconstruction
from core.models import registry
from core.runner import RANDOM_NOTE, execute, resolve_device

pytestmark = pytest.mark.usefixtures("one_thread")

# name -> (views of sample_data/toy, options): the cheapest real configuration of each method.
CHEAPEST: dict[str, tuple[list[int], dict]] = {
    "colmap": ([4, 5, 6, 7, 8, 9], {"max_features": 1024, "dense": False}),
    "combined": ([0, 10], {"weights": "random-tiny", "depth_reference": "scene depth"}),
    "vggt": ([0, 21], {"weights": "random-tiny"}),
    "dust3r": ([0, 14, 28], {"weights": "random-tiny", "image_size": 224, "ga_iterations": 5}),
    "fast3r": ([0, 21], {"weights": "random-tiny", "image_size": 224}),
    "lmnet": ([3], {"weights": "shipped"}),
    "lrm": ([0], {"weights": "random-tiny", "grid_size": 16, "render_resolution": 16, "orbit_views": 1,
                  "num_points": 500}),
    "pointe": ([0], {"weights": "random-tiny", "karras_steps": 2}),
    "shape": ([0], {"weights": "random-tiny", "karras_steps": 2, "grid_size": 16, "render_size": 16,
                    "render_views": 1, "num_points": 500}),
    "pi3": ([0, 10], {"weights": "random-tiny"}),
    "pi3x": ([0, 10], {"weights": "random-tiny", "condition_on": "intrinsics+cameras"}),
    "da3-small": ([0, 10], {"weights": "random-tiny", "process_res": 70}),
    "da3-base": ([0, 10, 20], {"weights": "random-tiny", "process_res": 70,
                               "condition_on_scene_cameras": True}),
}


def test_every_registered_method_has_a_cheapest_configuration():
    assert sorted(CHEAPEST) == sorted(registry.METHOD_MODULES)


@pytest.mark.parametrize("name", sorted(CHEAPEST))
def test_reconstruction_contract(name, sample_scene):
    method = registry.get(name)
    views, values = CHEAPEST[name]
    options = method.parse_options(values)
    recon = execute(method, sample_scene, views, values)

    # identity and provenance, filled by the runner
    assert recon.method == name and recon.version == method.version
    assert recon.view_ids == views
    assert recon.options == option_surface.as_dict(options)
    assert recon.device == (resolve_device(options.device) if hasattr(options, "device") else "cpu")
    assert recon.seconds > 0 and recon.peak_memory_bytes >= 0
    kind = method.weights_kind(options)
    assert recon.weights_kind == kind
    assert (RANDOM_NOTE in recon.notes) == (kind in option_surface.RANDOM_WEIGHTS)
    assert (recon.parameter_count > 0) == (kind is not None)
    assert recon.extra["model_load_seconds"] >= 0

    # points
    n = len(recon.points)
    assert n > 0 and recon.points.dtype == np.float32 and recon.points.shape == (n, 3)
    assert np.isfinite(recon.points).all()
    if recon.colors is not None:
        assert recon.colors.dtype == np.uint8 and recon.colors.shape == (n, 3)
    if recon.confidence is not None:
        assert recon.confidence.dtype == np.float32 and recon.confidence.shape == (n,)
        assert np.isfinite(recon.confidence).all()
    if recon.source_view is not None:
        assert recon.source_view.shape == (n,)
        assert recon.source_view.min() >= -1 and recon.source_view.max() < len(views)

    # cameras: OpenCV cam_from_world, rigid, one per input view; intrinsics in original pixels
    if recon.cam_from_world is not None:
        poses = recon.cam_from_world
        assert poses.shape == (len(views), 4, 4) and poses.dtype == np.float64
        np.testing.assert_allclose(poses[:, 3], np.tile([0, 0, 0, 1.0], (len(views), 1)), atol=1e-9)
        rotations = poses[:, :3, :3]
        # float32 network outputs converted to float64: orthonormal to float32 precision
        np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.tile(np.eye(3), (len(views), 1, 1)),
                                   atol=1e-4)
        np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-4)
    if recon.intrinsics is not None:
        k = recon.intrinsics
        assert k.shape == (len(views), 3, 3)
        assert (k[:, 0, 0] > 0).all() and (k[:, 1, 1] > 0).all()
        np.testing.assert_allclose(k[:, 2], np.tile([0, 0, 1.0], (len(views), 1)))
    if recon.depth_maps is not None:
        assert recon.depth_maps.dtype == np.float32 and recon.depth_maps.shape[0] == len(views)
        assert np.isfinite(recon.depth_maps).all()
    if recon.mesh_faces is not None and len(recon.mesh_faces):
        assert recon.mesh_faces.max() < len(recon.mesh_vertices) and recon.mesh_faces.min() >= 0

    # what is stored reads back the same (meta JSON-ready, arrays typed)
    npz, meta = recon.to_bytes()
    assert json.loads(meta)["weights_kind"] == kind


def test_stored_round_trip_keeps_the_weights_kind(tmp_path, sample_scene):
    method = registry.get("vggt")
    recon = execute(method, sample_scene, [0], {"weights": "random-tiny"})
    loaded = Reconstruction.load(recon.save(tmp_path / "run"))
    assert loaded.weights_kind == "random-tiny" and loaded.view_ids == [0]
    np.testing.assert_array_equal(loaded.points, recon.points)


def test_the_model_cache_key_names_the_file_not_the_text(tmp_path, monkeypatch):
    """Two spellings of one checkpoint path are one model; another file is another model."""
    method = registry.get("vggt")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    spelled = [method.model_key(method.parse_options({"checkpoint_path": text}))
               for text in ("model.pt", "./model.pt", "sub/../model.pt", str(tmp_path / "model.pt"))]
    assert len(set(spelled)) == 1
    assert method.model_key(method.parse_options({"checkpoint_path": "other.pt"})) != spelled[0]
    assert method.model_key(method.parse_options({"weights": "random-tiny"})) != spelled[0]
