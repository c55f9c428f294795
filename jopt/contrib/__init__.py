"""Learning-rate-free, schedule-free and hypergradient methods.

Implementation only: every public name is exported by `jopt`.
"""
