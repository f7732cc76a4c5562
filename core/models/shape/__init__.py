"""Shap-E (Jun & Nichol 2023) text/image -> implicit 3-D function -> mesh, implemented for ReconBench."""
