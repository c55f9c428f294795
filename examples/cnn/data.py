"""scikit-learn's handwritten digits, split into train, validation and test.

The 1,797 8x8 images ship with scikit-learn, so nothing is downloaded. The
splits are stratified by class and fixed by a seed, so every run (and every
trial of a sweep) sees the same examples.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


class Splits(NamedTuple):
  """Images ``[n, 8, 8, 1]`` float32 in [0, 1] and int32 labels per split."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def load_splits(
  seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> Splits:
  """Loads digits and splits them (stratified) into train/validation/test.

  Args:
    seed: fixes the split.
    val_fraction: fraction of all images held out for validation (model
      selection).
    test_fraction: fraction of all images held out for the final test.

  Returns:
    The three splits; pixel values are scaled from 0..16 to [0, 1].
  """
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  labels = digits.target.astype(np.int32)
  x_rest, x_test, y_rest, y_test = train_test_split(
    images,
    labels,
    test_size=test_fraction,
    stratify=labels,
    random_state=seed,
  )
  x_train, x_val, y_train, y_val = train_test_split(
    x_rest,
    y_rest,
    test_size=val_fraction / (1.0 - test_fraction),
    stratify=y_rest,
    random_state=seed,
  )
  return Splits(x_train, y_train, x_val, y_val, x_test, y_test)
