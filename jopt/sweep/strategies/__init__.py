"""The searches of `jopt.sweep`: each one a strategy on the one loop.

Implementation only: every public name is exported by `jopt.sweep`.
"""
