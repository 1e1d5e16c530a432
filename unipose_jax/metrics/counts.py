"""Accumulating metrics as sums and counts: exact across batches, devices and hosts.

Integer sums add exactly; float sums held by NumPy (host) arrays are added in float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

Array = Any


def _host_float64(x: Array) -> Array:
  """Host (NumPy) floating arrays are widened to float64 so float sums merge accurately."""
  if isinstance(x, (np.ndarray, np.generic)) and np.issubdtype(x.dtype, np.floating):
    return np.asarray(x, np.float64)
  return x


def merge_counts(
  a: Mapping[str, Array] | None, b: Mapping[str, Array] | None
) -> dict[str, Array] | None:
  """Exact sum of two count dicts with the same keys and shapes.

  ``None`` stands for "nothing accumulated yet": ``merge_counts(None, b)`` is
  ``b``. Works on NumPy (host) and JAX arrays alike, with or without the box sums of
  :func:`box_counts` (both dicts must agree); integer sums are exact, float sums of
  NumPy arrays are made in float64.
  """
  if a is None:
    return None if b is None else dict(b)
  if b is None:
    return dict(a)
  if set(a) != set(b):
    raise ValueError(f"cannot merge counts with keys {sorted(a)} and {sorted(b)}")
  out = {}
  for key in a:
    if np.shape(a[key]) != np.shape(b[key]):
      raise ValueError(f"cannot merge {key!r}: shapes {np.shape(a[key])} and {np.shape(b[key])}")
    out[key] = _host_float64(a[key]) + _host_float64(b[key])
  return out


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den, NaN where den == 0 (nothing was counted)."""
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
