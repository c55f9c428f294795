"""Schedules: step -> value functions, and batch-size schedules.

Implementation only: every public name is exported by `jopt`.
"""
