"""OpenLRM v1.1 (single image -> triplane NeRF -> renders and a marching-cubes mesh).

Exports the model (:class:`LRM`, :class:`LRMConfig`, :func:`preset`, :func:`tiny_config`), the
canonical cameras, the authors' preprocessing, orbit rendering and mesh helpers. Importing the
package registers the published checkpoints with :mod:`core.models.weights`.
"""
from . import checkpoints  # noqa: F401  (registers openlrm-mix-{small,base,large}-1.1)
from .cameras import orbit_cameras, source_camera
from .config import LRMConfig, preset, tiny_config
from .inference import infer_planes, render_orbit
from .mesh import Mesh, export_mesh, extract_mesh, sample_surface
from .modeling_lrm import LRM
from .preprocess import crop_object, preprocess_image

__all__ = ["LRM", "LRMConfig", "preset", "tiny_config", "orbit_cameras", "source_camera",
           "infer_planes", "render_orbit", "Mesh", "extract_mesh", "export_mesh", "sample_surface",
           "crop_object", "preprocess_image"]
