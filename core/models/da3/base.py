"""Registry entry ``da3-base``: Depth Anything 3 Base (see :mod:`.method`)."""
from .method import BASE as METHOD  # noqa: F401
