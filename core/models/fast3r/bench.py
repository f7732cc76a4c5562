"""Fast3R benchmark: time and memory of the full-size network with RANDOM weights on N views.

``bench(["--views", "2", "5"])`` -> one dict per view count: total seconds, network seconds,
peak RSS of the process so far (``ru_maxrss``) and the run's own peak increase. Every Fast3R
option is a flag (``--estimate-cameras false`` skips camera estimation, ``--image-size``,
``--device`` ...); ``--weights`` defaults to random-full, so no checkpoint is needed: the numbers
measure the computation, the geometry is meaningless.
"""
from __future__ import annotations

from ..croco.bench import bench_network, bench_options, bench_parser
from .method import METHOD


def bench(argv: list[str]) -> list[dict]:
    args = bench_parser(METHOD, __doc__).parse_args(argv)
    options = bench_options(METHOD, args)
    return bench_network(METHOD, options, lambda n, rec: {"notes": list(rec.notes)}, args.views)
