"""Progress bars for searches: tqdm when it is installed, never a failure.

tqdm is an optional extra (``pip install "jopt[progress]"``): without it a
search still runs, printing nothing. Only process 0 of a cluster shows a
bar.
"""

from __future__ import annotations

from typing import Any

import jax


class _Silent:
  """The bar's interface, doing nothing."""

  def update(self, n: int = 1) -> None:
    del n

  def set_postfix_str(self, text: str, refresh: bool = True) -> None:
    del text, refresh

  def close(self) -> None:
    pass


def bar(enabled: bool, **kwargs: Any) -> Any:
  """A tqdm bar, or a silent stand-in when disabled or tqdm is missing."""
  if not enabled or jax.process_index() != 0:
    return _Silent()
  try:
    from tqdm.auto import tqdm
  except ImportError:
    return _Silent()
  return tqdm(**kwargs)
