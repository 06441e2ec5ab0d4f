"""Triton kernels and their launch wrappers, one module per kernel family."""
