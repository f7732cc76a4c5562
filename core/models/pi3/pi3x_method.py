"""Registry entry of ``pi3x`` (the method itself is :class:`.method.Pi3XMethod`)."""
from .method import METHOD_PI3X as METHOD

__all__ = ["METHOD"]
