"""Keypoints -> Gaussian heatmap targets (pure jax.numpy, jit/vmap friendly).

Heatmaps are channels-last ``(..., h, w, K)`` float32. The target of joint k is

    H[y, x, k] = exp(-((x - cx)^2 + (y - cy)^2) / (2 sigma^2))

over the whole map (not truncated), with ``(cx, cy)`` the joint in heatmap
pixels and ``sigma`` in heatmap pixels. ``"unbiased"`` (DARK) uses the exact
sub-pixel centre; ``"quantized"`` rounds the centre to the nearest heatmap
pixel (halves round up, ``floor(c + 0.5)``), the usual biased target.

A joint gets zero target weight and an all-zero map when its weight is not
``> 0`` (zero, negative or NaN), either coordinate is not finite, or its centre
lies more than ``OFF_MAP_SIGMAS * sigma`` heatmap pixels outside the map's
extent ``[-0.5, w - 0.5] x [-0.5, h - 0.5]`` (then less than
``exp(-4.5) ~ 1.1%`` of the peak would reach the map). Other joints keep their
weight (cast to float32) as target weight. Nothing ever becomes NaN.
"""

from __future__ import annotations

import jax.numpy as jnp

from unipose_jax.codecs.coordinates import Size, input_to_heatmap

#: Encoding names accepted by :func:`encode_heatmaps` and ``HeatmapCodec``.
ENCODINGS: tuple[str, ...] = ("unbiased", "quantized")

#: A centre farther than this many sigmas outside the map's extent is dropped.
OFF_MAP_SIGMAS: float = 3.0


def check_encoding(name: str) -> str:
  """Returns ``name`` if it is one of :data:`ENCODINGS`, else raises ValueError listing them."""
  if name not in ENCODINGS:
    raise ValueError(f"unknown encoding {name!r}; valid encodings: {', '.join(ENCODINGS)}")
  return name


def gaussian_heatmaps(centres, valid, heatmap_size: Size, sigma: float) -> jnp.ndarray:
  """Renders one Gaussian per joint.

  Args:
    centres: ``(..., K, 2)`` ``(x, y)`` centres in heatmap pixels.
    valid: ``(..., K)`` bool; invalid joints get an all-zero map (their centre
      may be NaN or anything else).
    heatmap_size: ``(h, w)``.
    sigma: standard deviation in heatmap pixels.

  Returns:
    ``(..., h, w, K)`` float32 with values in ``[0, 1]``.
  """
  h, w = heatmap_size
  centres = jnp.asarray(centres).astype(jnp.float32)
  valid = jnp.asarray(valid, bool)
  safe = jnp.where(valid[..., None], centres, 0.0)
  inv_two_var = 1.0 / (2.0 * float(sigma) ** 2)
  xs = jnp.arange(w, dtype=jnp.float32)
  ys = jnp.arange(h, dtype=jnp.float32)
  # Separable: (..., w, K) and (..., h, K) profiles, outer product to (..., h, w, K).
  gx = jnp.exp(-((xs[:, None] - safe[..., None, :, 0]) ** 2) * inv_two_var)
  gy = jnp.exp(-((ys[:, None] - safe[..., None, :, 1]) ** 2) * inv_two_var)
  gx = jnp.where(valid[..., None, :], gx, 0.0)
  return gy[..., :, None, :] * gx[..., None, :, :]


def visible_on_map(centres, heatmap_size: Size, sigma: float) -> jnp.ndarray:
  """``(..., K)`` bool: finite centres (heatmap pixels) at most ``OFF_MAP_SIGMAS * sigma``
  outside the map's extent ``[-0.5, w - 0.5] x [-0.5, h - 0.5]``."""
  h, w = heatmap_size
  margin = OFF_MAP_SIGMAS * float(sigma) + 0.5
  x, y = centres[..., 0], centres[..., 1]
  # Comparisons with NaN are False, so non-finite centres fail here too.
  return (x >= -margin) & (x <= w - 1 + margin) & (y >= -margin) & (y <= h - 1 + margin)


def encode_heatmaps(
  keypoints,
  weights,
  *,
  input_size: Size,
  heatmap_size: Size,
  sigma: float,
  encoding: str = "unbiased",
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Keypoints in input pixels -> ``(heatmaps, target_weights)``.

  Args:
    keypoints: ``(..., K, 2)`` ``(x, y)`` in input pixels (any float dtype).
    weights: ``(..., K)`` per-joint weights (e.g. visibility 0/1).
    input_size, heatmap_size: ``(H, W)`` and ``(h, w)``.
    sigma: Gaussian standard deviation in heatmap pixels.
    encoding: one of :data:`ENCODINGS`.

  Returns:
    heatmaps ``(..., h, w, K)`` float32 in ``[0, 1]`` and target weights
    ``(..., K)`` float32 (the weight, or 0 for a dropped joint; see module doc).
  """
  check_encoding(encoding)
  keypoints = jnp.asarray(keypoints)
  weights = jnp.asarray(weights)
  if keypoints.ndim < 2 or keypoints.shape[-1] != 2:
    raise ValueError(f"keypoints must have shape (..., K, 2), got {keypoints.shape}")
  if weights.shape != keypoints.shape[:-1]:
    raise ValueError(
      f"weights must have shape {keypoints.shape[:-1]} (keypoints.shape[:-1]), got {weights.shape}"
    )
  centres = input_to_heatmap(keypoints, input_size, heatmap_size)
  weights = weights.astype(jnp.float32)
  valid = (weights > 0) & visible_on_map(centres, heatmap_size, sigma)
  if encoding == "quantized":
    centres = jnp.floor(centres + 0.5)
  heatmaps = gaussian_heatmaps(centres, valid, heatmap_size, sigma)
  return heatmaps, jnp.where(valid, weights, 0.0)
