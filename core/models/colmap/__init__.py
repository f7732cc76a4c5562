"""COLMAP (pycolmap) sparse reconstruction + dense stereo as a registry method (family ``sfm``)."""
