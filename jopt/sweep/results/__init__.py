"""What searches return and how they are shown: results, plots, TensorBoard.

Implementation only: every public name is exported by `jopt.sweep`.
"""
