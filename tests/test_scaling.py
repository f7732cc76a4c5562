import numpy as np
import pytest

from core.studies import scaling
from core.store.cache import RunStore
from core.progress import Progress


def test_fits_recover_known_coefficients_and_pick_the_generating_model():
    n = np.array([1, 3, 5, 8, 10, 15, 20])
    quadratic = 2.0 * n + 0.5 * n**2 + 3.0
    fits = {f.name: f for f in scaling.fit_models(list(n), list(quadratic))}
    np.testing.assert_allclose(list(fits["quadratic"].coefficients.values()), [2.0, 0.5, 3.0], atol=1e-9)
    assert scaling.best_fit(list(fits.values())).name == "quadratic"
    nlogn = 6.71 * n * np.log(n) + 7.91 + np.random.default_rng(0).normal(scale=0.01, size=len(n))
    fits = scaling.fit_models(list(n), list(nlogn))
    assert scaling.best_fit(fits).name == "nlogn"
    assert fits[0].coefficients["a"] == pytest.approx(6.71, rel=1e-3)
    flops = lambda v: 1e9 * (3 * v + v * v)  # noqa: E731
    fits = {f.name: f for f in scaling.fit_models(list(n), [1e-9 * flops(v) * 0.5 + 1 for v in n], flops)}
    assert fits["flops"].rmse < 1e-9 and fits["flops"].coefficients["a"] == pytest.approx(0.5e-9)


def test_seed_study_numbers_are_fitted_as_the_seed_reported():
    n = [1, 3, 5, 8, 10, 15, 20]
    seconds = [23.8, 30.0, 54.8, 114, 152, 282, 415]
    fit = next(f for f in scaling.fit_models(n, seconds) if f.name == "nlogn")
    assert fit.coefficients["a"] == pytest.approx(6.71, abs=0.01) and fit.coefficients["b"] == pytest.approx(7.91, abs=0.01)


def test_study_views_are_uniform_seeded_and_distinct():
    assert scaling.study_views(42, 6, 0) == [0, 7, 14, 21, 28, 35]
    again = scaling.study_views(42, 6, 2, seed=5)
    assert again == scaling.study_views(42, 6, 2, seed=5) and len(set(again)) == 6
    gaps = np.diff(again + [again[0] + 42])
    assert gaps.max() - gaps.min() <= 1
    assert scaling.study_views(42, 6, 1, seed=5) != scaling.study_views(42, 6, 2, seed=5)
    with pytest.raises(ValueError, match="outside"):
        scaling.study_views(5, 6, 0)


def test_remaining_time_estimate_uses_the_fit():
    q = lambda n: 2.0 * n + 0.5 * n * n + 1.0  # noqa: E731
    done = [(n, q(n)) for n in (1, 2, 3, 4)]
    assert scaling.estimate_remaining(done, [5, 6]) == pytest.approx(q(5) + q(6), rel=1e-6)
    assert scaling.estimate_remaining([(2, 4.0)], [3]) == pytest.approx(6.0)


def test_study_runs_timing_only_on_random_weights_and_reuses_the_cache(sample_scene, tmp_path):
    from core.models.vggt.method import VGGTOptions

    store = RunStore(tmp_path)
    options = VGGTOptions(weights="random-tiny")
    seen = []
    result = scaling.run_study(sample_scene, "vggt", [1, 2], 1, options, Progress(), store, on_point=seen.append)
    assert [p.views for p in result.points] == [1, 2] and seen == result.points
    assert not result.quality_available and "random weights" in result.quality_note
    assert all(p.scores is None and p.seconds > 0 for p in result.points)
    # random-weight runs are stored unscored: the study asked not to score what it discards
    assert all(r.evaluation is None and r.meta["weights_kind"] == "random-tiny" for r in store.runs("toy"))
    rows = scaling.summary_table(result)
    assert [r["views"] for r in rows] == [1, 2] and "chamfer" not in rows[0]
    again = scaling.run_study(sample_scene, "vggt", [1, 2], 1, options, Progress(), store)
    assert all(p.cached for p in again.points)


def test_stopping_keeps_the_finished_points(sample_scene, tmp_path):
    from core.models.vggt.method import VGGTOptions

    store = RunStore(tmp_path)
    progress = Progress()
    result = scaling.run_study(sample_scene, "vggt", [1, 2, 3], 1, VGGTOptions(weights="random-tiny"), progress,
                               store, on_point=lambda point: progress.request_stop())
    assert result.stopped and [p.views for p in result.points] == [1]
    assert len(store.runs("toy")) == 1  # the finished run is cached, nothing half-written


def test_exact_interpolation_is_not_taken_as_evidence():
    fits = scaling.fit_models([1, 2, 4], [6.8, 4.1, 13.9])
    quadratic = next(f for f in fits if f.name == "quadratic")
    assert quadratic.rmse < 1e-9 and quadratic.bic == float("inf")
    assert scaling.best_fit(fits).name == "nlogn"
    assert scaling.best_fit([quadratic]) is None


def test_cli_prints_points_fits_and_summary(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT, SAMPLE

    out = subprocess.run([sys.executable, "-m", "core", "--cache", str(tmp_path), "scaling", "--scene", str(SAMPLE),
                          "--views", "1", "2", "--option", "weights=random-tiny"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["views"] for line in lines if line["kind"] == "point"] == [1, 2]
    assert {line["model"] for line in lines if line["kind"] == "fit"} >= {"a·n·log n + b"}
    assert lines[-1]["kind"] == "summary" and lines[-1]["quality_available"] is False
    refused = subprocess.run([sys.executable, "-m", "core", "scaling", "--scene", str(SAMPLE), "--views", "1"],
                             cwd=ROOT, capture_output=True, text=True, timeout=600,
                             env={**__import__("os").environ, "RECONBENCH_WEIGHTS": str(tmp_path / "none")})
    assert refused.returncode == 2 and "weights fetch vggt" in refused.stderr
