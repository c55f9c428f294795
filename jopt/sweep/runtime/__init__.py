"""The runtime of `jopt.sweep`: executor, compiled programs, the one loop,
checkpoints, caches and live reports.

Implementation only: every public name is exported by `jopt.sweep`.
"""
