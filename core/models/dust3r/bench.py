"""DUSt3R benchmark: time and memory of the full-size network with RANDOM weights on N views.

``bench(["--views", "2", "5"])`` -> one dict per view count: total seconds, network seconds,
alignment seconds (two-view geometry for 2 views, global alignment above), pairs evaluated,
peak RSS of the process so far (``ru_maxrss``: model + everything run before) and the run's
own peak increase (RSS on CPU, allocator peak on CUDA). Every DUSt3R option is a flag
(``--scene-graph``, ``--ga-iterations``, ``--batch-size``, ``--image-size``, ``--device`` ...);
``--weights`` defaults to random-full, so no checkpoint is needed: the numbers measure the
computation, the geometry is meaningless.
"""
from __future__ import annotations

from ..croco.bench import bench_network, bench_options, bench_parser
from .method import METHOD


def bench(argv: list[str]) -> list[dict]:
    args = bench_parser(METHOD, __doc__).parse_args(argv)
    options = bench_options(METHOD, args)

    def alignment(n: int, rec) -> dict:
        return {"alignment_seconds": round(rec.extra["alignment_seconds"], 2),
                "alignment": "global alignment" if n > 2 else "pair geometry",
                "ga_iterations": options.ga_iterations if n > 2 else 0,
                "scene_graph": options.scene_graph if n > 2 else "pair",
                "pairs_evaluated": rec.extra["pairs_evaluated"]}

    return bench_network(METHOD, options, alignment, args.views)
