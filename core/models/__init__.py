"""Reconstruction methods: one module or package per method, registered in ``registry``."""
