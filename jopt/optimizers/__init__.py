"""Optimizers: aliases that chain the building blocks under Optax's names.

Implementation only: every public name is exported by `jopt`.
"""
