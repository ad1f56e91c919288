"""Triton kernels for the memory reads in `vos.ops`."""
