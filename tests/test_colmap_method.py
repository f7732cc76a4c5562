"""The ``colmap`` method under the method contract: its options (the SfM core group + dense), the
committed sample run's cache key, and a sparse run through the runner against the exact cameras."""
import json
import typing

import numpy as np
import pytest

from core import options as opts
from core.data import sfm
from core.errors import OptionError, UserError
from core.models.colmap.method import METHOD, ColmapOptions
from tests.conftest import ROOT

STORED = ROOT / "cache" / "runs" / "toy" / "colmap"


def _stored_runs():
    return sorted(p for p in STORED.iterdir() if (p / "meta.json").is_file())


def test_committed_sample_run_keeps_its_cache_key(sample_scene):
    """The run under cache/runs/toy/colmap/ is found again: same option names, defaults and key."""
    from core.runner import key_for

    runs = _stored_runs()
    assert runs, "the sample's COLMAP run is committed"
    for folder in runs:
        meta = json.loads((folder / "meta.json").read_text())
        options = METHOD.parse_options(meta["options"])
        assert opts.as_dict(options) == meta["options"]
        assert key_for(sample_scene, METHOD, meta["view_ids"], options) == folder.name
    # the stored run used the defaults, so the defaults hash to the same dict
    assert opts.as_dict(ColmapOptions()) == json.loads((runs[0] / "meta.json").read_text())["options"]


def test_options_are_the_sfm_core_group_plus_dense():
    specs = {s.name: s for s in opts.specs(ColmapOptions)}
    assert set(specs) == {"camera_model", "shared_camera", "max_features", "seed", "dense", "mvs_max_size"}
    assert issubclass(ColmapOptions, sfm.SfmCoreOptions) and issubclass(sfm.SfmOptions, sfm.SfmCoreOptions)
    core_names = {f for f in typing.get_type_hints(sfm.SfmCoreOptions)}
    assert core_names == {"camera_model", "shared_camera", "max_features", "seed"}
    # one declaration: the method's choices and ranges are the SfM ones
    sfm_specs = {s.name: s for s in opts.specs(sfm.SfmOptions)}
    for name in core_names:
        assert specs[name] == sfm_specs[name]
    assert specs["camera_model"].choices == sfm.CAMERA_MODELS and sfm_specs["matcher"].choices == sfm.MATCHERS


def test_bad_option_values_name_what_is_valid():
    with pytest.raises(OptionError, match="unknown camera_model 'FISH' .choices: SIMPLE_RADIAL, SIMPLE_PINHOLE"):
        METHOD.parse_options({"camera_model": "FISH"})
    with pytest.raises(OptionError, match=r"max_features must be in \[256, 16384\]"):
        METHOD.parse_options({"max_features": 100})
    with pytest.raises(OptionError, match="unknown option.s. matcher"):
        METHOD.parse_options({"matcher": "sequential"})  # an SfM option the method does not expose
    assert METHOD.parse_options({"dense": "false", "mvs_max_size": "128"}) == ColmapOptions(dense=False,
                                                                                             mvs_max_size=128)


def test_no_learned_weights():
    options = ColmapOptions()
    assert METHOD.weights_kind(options) is None and METHOD.checkpoints(options) == ()
    model = METHOD.load(options, "cpu")
    assert model is None and METHOD.parameter_count(model) == 0 and METHOD.cost_bytes(model) == 0
    assert METHOD.availability(options).ok  # pycolmap is a requirement


def test_sparse_run_recovers_the_cameras_of_a_view_subset(sample_scene):
    from core.eval import metrics
    from core.runner import execute

    views = [4, 5, 6, 7, 8, 9]
    recon = execute(METHOD, sample_scene, views, {"max_features": 1024, "dense": False})
    assert recon.method == "colmap" and recon.version == METHOD.version and recon.view_ids == views
    assert recon.weights_kind is None and recon.parameter_count == 0
    assert recon.options == opts.as_dict(ColmapOptions(max_features=1024, dense=False))
    assert recon.cam_from_world.shape == (6, 4, 4) and np.isfinite(recon.cam_from_world).all()
    assert recon.intrinsics.shape == (6, 3, 3) and len(recon.points) > 100
    assert recon.points.dtype == np.float32 and recon.colors.shape == recon.points.shape
    assert recon.notes == ["sparse points only"] and recon.extra["sfm_report"]["registered"] == 6
    errors = metrics.camera_errors(recon.cam_from_world, sample_scene.cam_from_world[views])
    assert errors["rre_deg"] < 0.5 and errors["rte_deg"] < 2.0


def test_too_few_views_is_a_user_error(sample_scene):
    from core.runner import execute

    with pytest.raises(UserError, match="at least 3 view"):
        execute(METHOD, sample_scene, [0, 1], {"dense": False})
