"""Search spaces: bounds float32 cannot sample are refused; extreme valid
bounds sample finite values inside them.
"""

import jax
import ml_dtypes
import numpy as np
import pytest

from jopt import sweep

BF16 = np.dtype(ml_dtypes.bfloat16)
F8 = np.dtype(ml_dtypes.float8_e4m3fn)  # has NaN but no Inf


# --- sampling bounds in float32 ---------------------------------------------


@pytest.mark.parametrize(
  "make, args, match",
  [
    (sweep.uniform, (-1e39, 1e39), r"low must be.*float32.*3\.4"),
    (sweep.uniform, (0.0, 1e39), r"high must be.*float32"),
    (sweep.uniform, (1.0, 1.0 + 1e-12), r"equal in float32"),
    (sweep.log_uniform, (1e-46, 1e-44), r"low must be.*1\.17.*e-38"),
    (sweep.log_uniform, (1e-3, 1e39), r"high must be.*float32"),
    (sweep.log_uniform, (1.0, 1.0 + 1e-12), r"equal in float32"),
  ],
)
def test_bounds_that_float32_cannot_sample_are_rejected(make, args, match):
  with pytest.raises(ValueError, match=match):
    make(*args)


@pytest.mark.parametrize(
  "dist",
  [
    sweep.uniform(-3.4e38, 3.4e38),
    sweep.uniform(-1e-40, 1e-40),
    sweep.uniform(0.1, 0.1000001),
    sweep.log_uniform(1.2e-38, 3.4e38),
    sweep.log_uniform(1e-30, 1.0000001e-30),
    sweep.log_uniform(0.1, 0.3),
  ],
)
@pytest.mark.parametrize("strategy", ["random", "quasirandom", "grid"])
def test_extreme_valid_bounds_sample_finite_float32_inside_them(dist, strategy):
  num = None if strategy == "grid" else 4096
  values = sweep.sample(
    {"x": dist}, num, jax.random.key(1), strategy, grid_points=64
  )["x"]
  assert values.dtype == np.float32 and np.isfinite(values).all()
  assert np.float32(dist.low) <= values.min()
  assert values.max() <= np.float32(dist.high)
  if dist.log:
    assert (values > 0).all()
