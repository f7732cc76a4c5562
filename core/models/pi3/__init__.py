"""π³ and Pi3X (permutation-equivariant visual geometry), implemented for ReconBench.

``from core.models.pi3 import Pi3, Pi3Config``; ``Pi3(Pi3Config(variant="pi3"|"pi3x"))`` carries the
published checkpoints' parameter names (``yyfz233/Pi3``, ``yyfz233/Pi3X``; loader:
:mod:`.checkpoints`). Preprocessing and the confidence filter: :mod:`.processing`; FLOPs:
:mod:`.flops`; the methods ``pi3`` / ``pi3x``: :mod:`.method` (imported separately, it pulls in the
registry); the benchmark: :mod:`.bench`.
"""
from .config import Pi3Config
from .flops import pi3_flops
from .modeling_pi3 import Pi3, Pi3InputError, Pi3Output, normalise_conditions
from .processing import preprocess_images, target_size

__all__ = ["Pi3", "Pi3Config", "Pi3Output", "Pi3InputError", "normalise_conditions", "pi3_flops",
           "preprocess_images", "target_size"]
