"""The benchmarks' own evaluation protocols, each as its paper or official code scores
(DTU: :mod:`.dtu`; CO3D pose AUC: its own module), beside ReconBench's protocol in
:mod:`core.eval.metrics`."""
