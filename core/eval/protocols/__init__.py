"""Benchmark protocols scored as the papers score them, selected by ``python -m core evaluate --protocol``.

- ``co3d-pose`` (:mod:`.co3d_pose`): CO3Dv2 relative camera pose AUC@30 / RRA / RTA, as in VGGT.
- ``dtu`` (``.dtu``): the official DTU MVS accuracy / completeness / overall in millimetres.

``reconbench`` (the default) is ReconBench's own protocol in :mod:`core.eval.metrics`.
"""
