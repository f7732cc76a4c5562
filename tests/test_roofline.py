"""``python -m core bench roofline`` at ``--size small`` (tiny configurations) on one method
(DUSt3R: two stages), and the README table built from its rows."""
from __future__ import annotations

import json

import pytest

from core.bench import run
from core.errors import UserError
from core.models.dust3r.config import DUSt3RConfig
from core.models.dust3r.flops import dust3r_flops
from core.studies import roofline


@pytest.fixture(scope="module")
def rows_and_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("roofline") / "rows.jsonl"
    rows = run("roofline", ["--size", "small", "--methods", "dust3r", "--matmul-size", "128",
                            "--out", str(out)])
    return rows, out


def test_rows_hold_the_analytic_flops_the_rate_and_the_load(rows_and_file):
    rows, _ = rows_and_file
    assert [(r["method"], r["stage"]) for r in rows] == [
        ("matmul", "fp32 GEMM 128x128"), ("dust3r", "encoder"), ("dust3r", "decoder+heads")]
    matmul = rows[0]["gflops_per_s"]
    tiny = DUSt3RConfig.tiny()
    expected = {"encoder": dust3r_flops(1, 0, 48, 64, tiny)["total"],
                "decoder+heads": dust3r_flops(0, 2, 48, 64, tiny)["total"]}
    for row in rows[1:]:
        assert row["flops"] == expected[row["stage"]] == row["flops_by_part"]["total"]
        assert row["seconds"] > 0 and row["peak_rss_bytes"] > 0 and row["runs"] >= 1
        assert row["gflops_per_s"] == pytest.approx(row["flops"] / row["seconds"] / 1e9)
        assert row["ratio_to_matmul"] == pytest.approx(row["gflops_per_s"] / matmul)
        # the benchmark's own threads are in the load average; only the rest counts as other work
        assert row["loaded"] == (max(row["load_before"], row["load_after"]) - row["threads"]
                                 > roofline.LOADED_PER_CORE * row["cpus"])
        if row["ratio_to_matmul"] < roofline.EXPLAIN_BELOW:
            ops = row["top_non_gemm_ops"]
            assert 0 < len(ops) <= 5 and not {o["op"] for o in ops} & roofline.GEMM_OPS
            assert [o["share"] for o in ops] == sorted((o["share"] for o in ops), reverse=True)
            # shares are of one total: GEMMs plus the listed others cannot exceed it
            assert 0 <= row["gemm_share"] and row["gemm_share"] + sum(o["share"] for o in ops) <= 1.005


def test_out_file_round_trips_and_the_readme_table_has_one_line_per_stage(rows_and_file, capsys):
    rows, out = rows_and_file
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["method"], r["stage"], r["seconds"]) for r in written] == \
        [(r["method"], r["stage"], r["seconds"]) for r in rows]
    assert all(r["command"].startswith("python -m core bench roofline --size small") for r in written)
    table = roofline.readme_table(written)
    body = [line for line in table.splitlines() if line.startswith("| dust3r")]
    assert len(body) == 2
    assert f"{rows[0]['gflops_per_s']:.0f} GFLOP/s" in table
    encoder = next(line for line in body if "| encoder |" in line).split("|")
    assert encoder[4].strip() == f"{rows[1]['seconds']:.2f}"
    assert run("readme-table", [str(out)]) == [] and capsys.readouterr().out.strip() == table


def test_bad_input_is_refused_with_one_message(tmp_path, capsys):
    from core.__main__ import main

    with pytest.raises(UserError, match="no matmul row"):
        roofline.readme_table([{"method": "dust3r"}])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["bench", "readme-table", str(empty)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no matmul row")
    with pytest.raises(SystemExit):
        run("roofline", ["--methods", "no-such-method"])
