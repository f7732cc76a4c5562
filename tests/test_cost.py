"""The cost estimate shown before Run (core/studies/cost.py) and the weights defaults it sits with."""
import json

import numpy as np
import pytest

from core.data.scene import Reconstruction, Scene
from core.models import registry
from core.store.cache import RunStore
from core.studies import cost
from tests.conftest import ROOT

RATE = cost.MachineRate(gflops=100.0, cpu="test cpu", threads=1, device="cpu", measured_unix=0.0)


@pytest.fixture(scope="module")
def toy():
    return Scene.load(ROOT / "sample_data" / "toy")


def _store_run(store, scene, method, options, n_views, seconds, peak, extra=None):
    """A stored run of ``method`` with the given measured time and peak (its geometry is irrelevant)."""
    views = scene.uniform_views(n_views)
    recon = Reconstruction(method=method, points=np.zeros((4, 3), np.float32), view_ids=views,
                           options=options, seconds=seconds, peak_memory_bytes=peak, device="cpu",
                           weights_kind=options.get("weights"), extra=extra or {})
    store.save(scene.name, f"{method}{n_views}{seconds}".replace(".", ""), recon)


def test_tiny_vggt_estimate_is_an_independent_flop_count_over_the_assumed_share_of_the_rate(toy, tmp_path):
    from core.models.vggt.config import VGGTConfig
    from core.models.vggt.flops import vggt_flops
    from core.models.vggt.processing import preprocess_images

    # FLOPs counted here from the tiny configuration at the network's input size (the picture
    # after VGGT's own preprocessing), camera + depth heads (the default depth branch).
    tensor, _ = preprocess_images([toy.images[v] for v in toy.uniform_views(3)], "crop")
    h, w = tensor.shape[-2:]
    flops = vggt_flops(3, h, w, VGGTConfig.tiny(), heads=("camera", "depth"))["total"]
    found = cost.estimate("vggt", {"weights": "random-tiny"}, 3, toy, RunStore(tmp_path), device="cpu", rate=RATE)
    assert found.flops == pytest.approx(flops, rel=1e-12)
    assert found.efficiency == cost.DEFAULT_EFFICIENCY
    assert found.seconds == pytest.approx(flops / (cost.DEFAULT_EFFICIENCY * RATE.gflops * 1e9), rel=1e-12)
    assert found.peak_bytes is None and found.text().endswith("memory unknown")


def test_full_vggt_uses_the_benchmark_efficiency_and_memory_line(toy, tmp_path):
    found = cost.estimate("vggt", {"weights": "random-full"}, 8, toy, RunStore(tmp_path), device="cpu", rate=RATE)
    assert found.seconds == pytest.approx(found.flops / (cost.REFERENCE_EFFICIENCY["vggt"] * 100e9), rel=1e-12)
    base, per_view = cost.REFERENCE_MEMORY["vggt"]
    assert found.peak_bytes == pytest.approx(base + 8 * per_view)


def test_stored_runs_calibrate_overhead_and_efficiency_through_two_points(toy, tmp_path):
    store = RunStore(tmp_path)
    method = registry.get("vggt")
    options = method.parse_options({"weights": "random-tiny"})
    h, w = toy.images[0].shape[:2]
    f2, f6 = method.flops(options, 2, h, w), method.flops(options, 6, h, w)
    # seconds = 0.3 + FLOPs / 4 GFLOP/s, peak = 100 MB + 10 MB per view
    for n, f in ((2, f2), (6, f6)):
        _store_run(store, toy, "vggt", {"weights": "random-tiny"}, n, 0.3 + f / 4e9, 100e6 + 10e6 * n)
    _store_run(store, toy, "vggt", {"weights": "random-full"}, 2, 999.0, 9e9)   # another model: ignored
    found = cost.estimate("vggt", {"weights": "random-tiny"}, 4, toy, store, device="cpu", rate=RATE)
    f4 = method.flops(options, 4, h, w)
    assert found.seconds == pytest.approx(0.3 + f4 / 4e9, rel=1e-6)
    assert found.efficiency == pytest.approx(4e9 / (RATE.gflops * 1e9), rel=1e-6)
    assert found.peak_bytes == pytest.approx(100e6 + 40e6, rel=1e-6)


def test_a_method_without_flop_model_is_fitted_against_views(toy, tmp_path):
    store = RunStore(tmp_path)
    for n, seconds in ((4, 10.0), (8, 18.0)):
        _store_run(store, toy, "colmap", {}, n, seconds, 1e8)
    found = cost.estimate("colmap", {}, 12, toy, store, device="cpu", rate=RATE)
    assert found.flops is None and found.seconds == pytest.approx(26.0)
    assert cost.estimate("colmap", {}, 12, toy, RunStore(tmp_path / "empty"), rate=RATE).seconds is None


def test_dust3r_alignment_work_and_its_price_from_a_stored_run(toy, tmp_path):
    method = registry.get("dust3r")
    options = method.parse_options({"weights": "random-tiny", "ga_iterations": 100})
    h, w = toy.images[0].shape[:2]
    net_h, net_w = method.network_hw(options, h, w)
    assert method.alignment_work(options, 2, h, w) == (0.0, 0.0)
    assert method.alignment_work(options, 4, h, w) == (100.0, 100.0 * 6 * net_h * net_w)   # 6 edges of 4 views
    store = RunStore(tmp_path)
    per_iteration, per_unit = cost.ALIGNMENT_DEFAULTS
    default_3 = per_iteration * 100 + per_unit * 100 * 3 * net_h * net_w
    _store_run(store, toy, "dust3r", {"weights": "random-tiny", "ga_iterations": 100}, 3, 5.0, 1e8,
               {"network_seconds": 1.0, "alignment_seconds": 2.0 * default_3})
    found = cost.estimate("dust3r", options, 4, toy, store, device="cpu", rate=RATE)
    default_4 = per_iteration * 100 + per_unit * 100 * 6 * net_h * net_w
    assert found.parts["alignment"] == pytest.approx(2.0 * default_4, rel=1e-9)


def test_machine_rate_is_measured_once_and_kept_on_disk(tmp_path, monkeypatch):
    monkeypatch.delenv(cost.RATE_ENV, raising=False)
    monkeypatch.setattr(cost, "_rates", {})
    calls = []

    def fake(size, device="cpu"):
        calls.append(size)
        return 123.0

    first = cost.machine_rate(root=tmp_path, measure=fake)
    monkeypatch.setattr(cost, "_rates", {})                      # a new process
    second = cost.machine_rate(root=tmp_path, measure=fake)
    assert first.gflops == second.gflops == 123.0 and calls == [cost.MATMUL_SIZE]
    kept = json.loads((tmp_path / cost.RATE_FILE).read_text())
    assert [entry["gflops"] for entry in kept.values()] == [123.0] and first.cpu in next(iter(kept))
    cost.machine_rate(root=tmp_path, measure=lambda size, device="cpu": 50.0, refresh=True)
    assert cost.machine_rate(root=tmp_path).gflops == 50.0


def test_confirmation_threshold_comes_from_the_environment(monkeypatch):
    long = cost.Estimate("vggt", 8, 90.0, 1e9)
    monkeypatch.delenv(cost.CONFIRM_ENV, raising=False)
    assert cost.needs_confirmation(long)                              # default 60 s
    monkeypatch.setenv(cost.CONFIRM_ENV, "120")
    assert not cost.needs_confirmation(long)
    assert not cost.needs_confirmation(cost.Estimate("colmap", 3, None, None))
    assert long.text() == "about 90 s, 1.0 GB"


def test_default_weights_are_the_best_available_choice(monkeypatch, tmp_path):
    monkeypatch.setenv("RECONBENCH_WEIGHTS", str(tmp_path))           # an empty weights folder
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert registry.default_weights(registry.get("vggt")) == "random-tiny"   # fresh install
    assert registry.default_weights(registry.get("lmnet")) == "shipped"      # shipped in the repository
    assert registry.default_weights(registry.get("colmap")) is None          # no weights at all


def test_several_missing_checkpoints_make_one_message_with_one_command():
    a = registry.Availability(False, "a missing.", "python -m core weights fetch a", ("a.bin",))
    b = registry.Availability(False, "b missing.", "python -m core weights fetch b", ("b.bin",))
    merged = registry.all_available(registry.Availability(True), a, b)
    assert not merged.ok and merged.details == ("a.bin", "b.bin")
    assert merged.fix_command == "python -m core weights fetch a b"


def test_scaling_eta_starts_from_the_cost_model_then_follows_measured_times():
    from core.studies import scaling

    jobs = [(3, 0, "vggt"), (5, 0, "vggt"), (5, 0, "fast3r")]
    prior = {("vggt", 3): 2.0, ("vggt", 5): 3.0, ("fast3r", 5): 7.0}
    assert scaling._remaining({"vggt": [], "fast3r": []}, jobs, {}, prior) == pytest.approx(12.0)
    assert scaling._remaining({"vggt": [], "fast3r": []}, jobs, {}, None) is None
    # after a measured point, time proportional to views from it (4 s at 2 views -> 2 s per view)
    left = scaling._remaining({"vggt": [(2, 4.0)], "fast3r": []}, jobs, {}, prior)
    assert left == pytest.approx(2.0 * (3 + 5) + 7.0)


def test_stored_alignments_of_other_iteration_counts_give_both_alignment_rates(toy, tmp_path):
    method = registry.get("dust3r")
    h, w = toy.images[0].shape[:2]
    store = RunStore(tmp_path)
    per_iteration, per_unit = 0.02, 3e-8          # the truth the stored runs were made with
    for n, iterations in ((3, 100), (4, 50), (8, 200)):
        options = {"weights": "random-tiny", "ga_iterations": iterations}
        its, units = method.alignment_work(method.parse_options(options), n, h, w)
        _store_run(store, toy, "dust3r", options, n, 9.0, 1e8,
                   {"network_seconds": 1.0, "alignment_seconds": per_iteration * its + per_unit * units})
    options = method.parse_options({"weights": "random-tiny", "ga_iterations": 200})
    its, units = method.alignment_work(options, 6, h, w)
    found = cost.estimate("dust3r", options, 6, toy, store, device="cpu", rate=RATE)
    assert found.parts["alignment"] == pytest.approx(per_iteration * its + per_unit * units, rel=1e-6)


def test_dust3r_alignment_rates_are_fitted_only_from_runs_that_span_the_work(toy, tmp_path):
    """Two close runs (3 and 4 views) scale the default rates by their median ratio; three runs
    spanning >= ALIGNMENT_FIT_SPREAD in units give both rates from the runs themselves."""
    method = registry.get("dust3r")
    h, w = toy.images[0].shape[:2]
    options = method.parse_options({"weights": "random-tiny", "ga_iterations": 100})
    net_h, net_w = method.network_hw(options, h, w)
    per_iteration, per_unit = cost.ALIGNMENT_DEFAULTS

    def priced(n, a, b):
        iterations, units = method.alignment_work(options, n, h, w)
        return a * iterations + b * units

    close = RunStore(tmp_path / "close")
    for n, factor in ((3, 1.0), (4, 1.6)):     # jitter that a two-rate fit would blow up at 20 views
        _store_run(close, toy, "dust3r", {"weights": "random-tiny", "ga_iterations": 100}, n, 9.0, 1e8,
                   {"network_seconds": 1.0, "alignment_seconds": factor * priced(n, per_iteration, per_unit)})
    found = cost.estimate("dust3r", options, 20, toy, close, device="cpu", rate=RATE)
    assert found.parts["alignment"] == pytest.approx(1.3 * priced(20, per_iteration, per_unit), rel=1e-9)

    spread = RunStore(tmp_path / "spread")
    true_rates = (0.002, 3e-7)
    for n in (3, 5, 8):                         # 3, 10 and 28 edges
        _store_run(spread, toy, "dust3r", {"weights": "random-tiny", "ga_iterations": 100}, n, 9.0, 1e8,
                   {"network_seconds": 1.0, "alignment_seconds": priced(n, *true_rates)})
    assert method.alignment_work(options, 8, h, w)[1] / method.alignment_work(options, 3, h, w)[1] \
        >= cost.ALIGNMENT_FIT_SPREAD
    found = cost.estimate("dust3r", options, 20, toy, spread, device="cpu", rate=RATE)
    assert found.parts["alignment"] == pytest.approx(priced(20, *true_rates), rel=1e-6)
