"""DUSt3R benchmark: time and memory of a full-size network with RANDOM weights on N views.

``bench(["--views", "2", "5"])`` -> one dict per view count: total seconds, network seconds,
alignment seconds (two-view geometry for 2 views, global alignment above), pairs evaluated,
peak RSS of the process so far (``ru_maxrss``: model + everything run before) and the run's
own peak increase (RSS on CPU, allocator peak on CUDA). No checkpoint is needed (none can be
downloaded here); the numbers measure the computation, the geometry is meaningless.
"""
from __future__ import annotations

from ..croco.runner import bench_network, bench_parser
from .config import DUSt3RConfig
from .method import DUSt3ROptions, reconstruct
from .modeling_dust3r import DUSt3R


def bench(argv: list[str]) -> list[dict]:
    parser = bench_parser("dust3r", __doc__)
    parser.add_argument("--scene-graph", default="complete", choices=("complete", "swin", "oneref"))
    parser.add_argument("--ga-iterations", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args(argv)

    def options(device: str) -> DUSt3ROptions:
        return DUSt3ROptions(scene_graph=args.scene_graph, ga_iterations=args.ga_iterations,
                             batch_size=args.batch_size, device=device)

    def alignment(n: int, rec) -> dict:
        return {"alignment_seconds": round(rec.extra["alignment_seconds"], 2),
                "alignment": "global alignment" if n > 2 else "pair geometry",
                "ga_iterations": args.ga_iterations if n > 2 else 0,
                "scene_graph": args.scene_graph if n > 2 else "pair",
                "pairs_evaluated": rec.extra["pairs_evaluated"]}

    return bench_network("dust3r", DUSt3R, DUSt3RConfig(), reconstruct, options, alignment, args)
