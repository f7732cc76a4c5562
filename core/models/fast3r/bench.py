"""Fast3R benchmark: time and memory of a full-size network with RANDOM weights on N views.

``bench(["--views", "2", "5"])`` -> one dict per view count: total seconds, network seconds,
peak RSS of the process so far (``ru_maxrss``) and the run's own peak increase. No checkpoint is
needed (none can be downloaded here); the numbers measure the computation, the geometry is
meaningless. Camera estimation (PnP) is included when ``core.models.fast3r.poses`` exists.
"""
from __future__ import annotations

from ..croco.runner import bench_network, bench_parser
from .config import Fast3RConfig
from .method import Fast3ROptions, reconstruct
from .modeling_fast3r import Fast3R


def bench(argv: list[str]) -> list[dict]:
    parser = bench_parser("fast3r", __doc__)
    parser.add_argument("--no-cameras", action="store_true", help="skip camera estimation")
    args = parser.parse_args(argv)
    return bench_network("fast3r", Fast3R, Fast3RConfig(), reconstruct,
                         lambda device: Fast3ROptions(estimate_cameras=not args.no_cameras, device=device),
                         lambda n, rec: {"notes": list(rec.notes)}, args)
