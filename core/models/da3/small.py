"""Registry entry ``da3-small``: Depth Anything 3 Small (see :mod:`.method`)."""
from .method import SMALL as METHOD  # noqa: F401
