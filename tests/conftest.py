"""A strict test environment, set before JAX is first imported.

* 8 fake CPU devices, so sharding is tested without accelerators;
* strict dtype promotion: a float32 hyperparameter silently promoting a bf16
  update would raise here instead of passing unnoticed;
* rank promotion raises, so a stray broadcast between a [K] sweep axis and a
  parameter is an error, not a silent outer product.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JOPT_PROGRESS", "0")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
