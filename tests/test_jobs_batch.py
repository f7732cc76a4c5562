"""``python -m core batch`` with the reconbench protocol: 2 scenes x 2 methods x 2 view counts as jobs,
on a local Ray (in process) and on a second local Ray joined by address (a CLI process), each
into its own store."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "toy"

PLAN = """name = "grid"
protocol = "reconbench"
items = ["toy", "toy-b"]
methods = ["vggt", "pi3"]
views = [2, 3]
score = false
[options.vggt]
weights = "random-tiny"
[options.pi3]
weights = "random-tiny"
"""


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    """The plan beside two scenes: the sample and a 14-view subset of it named toy-b."""
    import shutil

    from core.data.scene import Scene

    folder = tmp_path_factory.mktemp("plan")
    shutil.copytree(SAMPLE, folder / "toy")
    scene = Scene.load(SAMPLE)
    dataclasses.replace(scene.subset(list(range(0, scene.num_views, 3))), name="toy-b").save(folder / "toy-b")
    (folder / "grid.toml").write_text(PLAN)
    return folder / "grid.toml"


def check_rows(rows: list[dict], store: Path) -> None:
    assert len(rows) == 8 and not [r for r in rows if "error" in r], rows
    assert {(r["scene"], r["method"], r["views"]) for r in rows} == {
        (s, m, v) for s in ("toy", "toy-b") for m in ("vggt", "pi3") for v in (2, 3)}
    for row in rows:
        assert row["cached"] is False and row["weights"] == "random-tiny" and row["points"] > 0
        assert (store / "runs" / row["scene"] / row["method"] / row["key"] / "meta.json").is_file()


def test_batch_on_local_ray_and_on_a_second_ray_by_address(plan_file, tmp_path):
    from core.jobs import cluster
    from core.studies import benchmarks
    from core.store.cache import RunStore

    first, second, second_store = tmp_path / "a", tmp_path / "b", tmp_path / "b-store"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECONBENCH_CACHE", str(first))
        patch.setenv("RECONBENCH_EXECUTOR", "ray")
        patch.delenv("RECONBENCH_RAY_ADDRESS", raising=False)
        cluster.start_local(first, num_cpus=1)
        address = cluster.start_local(second, num_cpus=1)
        try:
            cluster.connect(first)
            result = benchmarks.run_plan(benchmarks.load_plan(plan_file), RunStore(first))
            check_rows(result.rows, first)
            means = [r for r in result.table if r["scene"] == "mean"]
            assert len(means) == 4 and all(r["seconds"] > 0 and r["chamfer"] is None for r in means)

            env = {**os.environ, "RECONBENCH_RAY_ADDRESS": address, "RECONBENCH_CACHE": str(second_store)}
            done = subprocess.run([sys.executable, "-m", "core", "batch", str(plan_file), "--csv",
                                   str(tmp_path / "grid.csv")], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-2000:]
            lines = [json.loads(line) for line in done.stdout.splitlines()]
            check_rows([l for l in lines if l.pop("kind") == "row"], second_store)
            assert not (second / "runs").exists()          # the second cluster's own root holds no runs
            stored = benchmarks.load_result(second_store, "grid")
            assert len(stored.rows) == 8
            assert benchmarks.read_csv((tmp_path / "grid.csv").read_text())[0]["scene"] in ("toy", "toy-b", "mean")
        finally:
            cluster.stop_local(first)
            cluster.stop_local(second)
