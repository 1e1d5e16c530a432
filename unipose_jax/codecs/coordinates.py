"""Input pixels <-> heatmap pixels: the one place that knows the stride.

Convention (design notes, section 5): keypoints are ``(x, y)``, x along
columns, and integer coordinates are pixel centres. A map of size ``(h, w)``
covers the same area as an input of size ``(H, W)``, so the strides are
``s_x = W / w`` and ``s_y = H / h`` (they may differ and need not be integers),
and

    x_heatmap = (x_input + 0.5) / s_x - 0.5        (same for y with s_y)
    x_input   = (x_heatmap + 0.5) * s_x - 0.5

The map's extent is ``[-0.5, w - 0.5] x [-0.5, h - 0.5]`` in heatmap pixels,
which is ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` in input pixels.
"""

from __future__ import annotations

import numbers

import jax.numpy as jnp

Size = tuple[int, int]


def check_size(size, name: str, minimum: int = 1) -> Size:
  """Validates a ``(height, width)`` pair of ints >= ``minimum``; returns it as a tuple of ints."""
  try:
    items = tuple(size)
  except TypeError:
    raise ValueError(f"{name} must be a (height, width) pair of ints, got {size!r}") from None
  if len(items) != 2 or not all(
    isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items
  ):
    raise ValueError(f"{name} must be a (height, width) pair of ints, got {size!r}")
  if min(items) < minimum:
    raise ValueError(f"{name} must be at least {minimum} in both axes, got {size!r}")
  return int(items[0]), int(items[1])


def strides(input_size: Size, heatmap_size: Size) -> tuple[float, float]:
  """``(s_x, s_y) = (W / w, H / h)``: input pixels per heatmap pixel, in keypoint order (x, y)."""
  (big_h, big_w), (h, w) = input_size, heatmap_size
  return big_w / w, big_h / h


def input_to_heatmap(xy, input_size: Size, heatmap_size: Size) -> jnp.ndarray:
  """Maps ``(..., 2)`` ``(x, y)`` input pixels to heatmap pixels (float32).

  ``x_hm = (x_in + 0.5) / s_x - 0.5`` with ``s_x = W / w`` (and likewise y).
  NaN stays NaN.
  """
  sx, sy = strides(input_size, heatmap_size)
  xy = jnp.asarray(xy).astype(jnp.float32)
  return (xy + 0.5) / jnp.asarray([sx, sy], jnp.float32) - 0.5


def heatmap_to_input(xy, input_size: Size, heatmap_size: Size) -> jnp.ndarray:
  """Maps ``(..., 2)`` ``(x, y)`` heatmap pixels to input pixels (float32); inverse of
  :func:`input_to_heatmap`: ``x_in = (x_hm + 0.5) * s_x - 0.5``."""
  sx, sy = strides(input_size, heatmap_size)
  xy = jnp.asarray(xy).astype(jnp.float32)
  return (xy + 0.5) * jnp.asarray([sx, sy], jnp.float32) - 0.5
