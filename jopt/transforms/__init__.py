"""Gradient transformations: the building blocks (scaling, momentum,
adaptive preconditioners, regularizers, clipping, masking, wrappers,
reduce-on-plateau).

Implementation only: every public name is exported by `jopt`.
"""
