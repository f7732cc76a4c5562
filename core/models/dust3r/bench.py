"""DUSt3R benchmark: time and memory of the full-size network with RANDOM weights on N views.

``bench(["--views", "5", "10"])`` -> one dict per view count: total seconds, network seconds,
pairs evaluated, pairs/s and encoder passes (each distinct view is encoded once), alignment
seconds (two-view geometry for 2 views, global alignment above, with its Adam iterations/s),
peak RSS of the process so far (``ru_maxrss``: model + everything run before) and the run's own
peak increase (RSS on CPU, allocator peak on CUDA). Every DUSt3R option is a flag
(``--scene-graph``, ``--ga-iterations``, ``--batch-size``, ``--image-size``, ``--device`` ...);
``--weights`` defaults to random-full, so no checkpoint is needed: the numbers measure the
computation, the geometry is meaningless.

``--reference`` also times, in the same process on the same model and pictures, the reference
way of running the network (:func:`reference_pairs`: ``DUSt3R.forward`` on each batch of pairs,
encoding both images of every pair: 2 encoder passes per pair) and reports its seconds, pairs/s,
encoder passes, the speed-up of encode-once, and the largest difference between the two ways'
outputs on the first batch (0 up to float rounding).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from core import runner
from core.data.scene import Scene
from core.models.croco.runner import autocast_context, prepare_views

from ..croco.bench import bench_images, bench_network, bench_options, bench_parser
from .inference import predict_pairs
from .method import METHOD


def reference_pairs(model, images: list[torch.Tensor], pairs: list[tuple[int, int]], batch_size: int = 2,
                    autocast=None) -> dict:
    """The reference's pair inference: ``model(img1, img2)`` per batch of ``batch_size`` pairs,
    both images of every pair encoded (2·E encoder passes). Same inputs and output dict as
    :func:`.inference.predict_pairs` (which encodes each distinct image once); benchmark only."""
    import contextlib

    ctx = autocast or contextlib.nullcontext
    out = {"pts3d": [], "conf1": [], "pts3d_in_other_view": [], "conf2": []}
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            with ctx():
                pred1, pred2 = model(torch.stack([images[i] for i, _ in chunk]),
                                     torch.stack([images[j] for _, j in chunk]))
            out["pts3d"].append(pred1.pts3d.float().cpu())
            out["conf1"].append(pred1.conf.float().cpu())
            out["pts3d_in_other_view"].append(pred2.pts3d_in_other_view.float().cpu())
            out["conf2"].append(pred2.conf.float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def bench(argv: list[str]) -> list[dict]:
    parser = bench_parser(METHOD, __doc__)
    parser.add_argument("--reference", action="store_true",
                        help="also time the reference pair inference (both images encoded per pair)")
    args = parser.parse_args(argv)
    options = bench_options(METHOD, args)

    def alignment(n: int, rec) -> dict:
        pairs = rec.extra["pairs_evaluated"]
        fields = {"alignment_seconds": round(rec.extra["alignment_seconds"], 2),
                  "alignment": "global alignment" if n > 2 else "pair geometry",
                  "ga_iterations": options.ga_iterations if n > 2 else 0,
                  "ga_iterations_per_s": round(rec.extra.get("ga_iterations_per_s", 0.0), 2),
                  "scene_graph": options.scene_graph if n > 2 else "pair",
                  "pairs_evaluated": pairs, "encoder_passes": rec.extra["encoder_passes"],
                  "pairs_per_s": round(pairs / rec.extra["network_seconds"], 4)}
        if args.reference:
            fields.update(_reference(n, rec))
        return fields

    def _reference(n: int, rec) -> dict:
        device = runner.resolve_device(options.device)
        model, _ = runner.load_model(METHOD, options, device)
        size = METHOD.input_size(options)
        pictures = bench_images(n, height=size * 3 // 4, width=size)
        scene = Scene(name="bench", images=pictures, image_names=[f"{i}.png" for i in range(n)],
                      intrinsics=np.tile(np.eye(3), (n, 1, 1)), cam_from_world=np.tile(np.eye(4), (n, 1, 1)))
        images, _ = prepare_views(scene, list(range(n)), size)
        images = [img.to(device) for img in images]
        pairs = METHOD.pairs(n, options)
        autocast = lambda: autocast_context(device)  # noqa: E731
        started = time.perf_counter()
        ref = reference_pairs(model, images, pairs, options.batch_size, autocast)
        seconds = time.perf_counter() - started
        first = pairs[:options.batch_size]
        once = predict_pairs(model, images, first, options.batch_size, autocast=autocast)
        diff = max(float((once[k] - ref[k][:len(first)]).abs().max())
                   for k in ("pts3d", "conf1", "pts3d_in_other_view", "conf2"))
        return {"reference_network_seconds": round(seconds, 2), "reference_encoder_passes": 2 * len(pairs),
                "reference_pairs_per_s": round(len(pairs) / seconds, 4),
                "network_speedup": round(seconds / rec.extra["network_seconds"], 3),
                "max_abs_output_difference": diff}

    return bench_network(METHOD, options, alignment, args.views)
