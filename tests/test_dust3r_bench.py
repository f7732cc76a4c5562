"""``python -m core bench dust3r`` (random-tiny): encode-once counts, the reference path's
counts and identical outputs, pairs/s. (The global alignment's iterations/s: test_global_alignment.py;
2 views here keep the aligner, and its seconds of first-use imports, out of this test.)"""
from __future__ import annotations

from core.bench import run


def test_encode_once_against_the_reference_in_one_run():
    rows = run("dust3r", ["--weights", "random-tiny", "--views", "2", "--reference"])
    (row,) = rows
    # 2 views: the pairs (0, 1) and (1, 0); 2 encoder passes against 2 per pair
    assert row["pairs_evaluated"] == 2 and row["encoder_passes"] == 2
    assert row["reference_encoder_passes"] == 4
    # the row's seconds are rounded to 0.01 s, the rates computed before rounding
    seconds, reference = row["network_seconds"], row["reference_network_seconds"]
    assert 2 / (seconds + 0.005) <= row["pairs_per_s"] * (1 + 1e-3) and \
        row["pairs_per_s"] * (1 - 1e-3) <= 2 / max(seconds - 0.005, 1e-9)
    assert (reference - 0.005) / (seconds + 0.005) <= row["network_speedup"] * (1 + 1e-3) and \
        row["network_speedup"] * (1 - 1e-3) <= (reference + 0.005) / max(seconds - 0.005, 1e-9)
    # the encoder output of an image does not depend on its partner: same numbers up to float32
    # rounding of a different batch composition (pointmaps are O(1), confidences >= 1)
    assert row["max_abs_output_difference"] <= 1e-4
    assert row["alignment"] == "pair geometry" and row["ga_iterations"] == 0
