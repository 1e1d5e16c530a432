"""Plain NumPy reference of the heatmap codec, one image and one joint at a time.

Written for clarity, not speed, and independently of ``unipose_jax.codecs``:
float64, explicit loops over images and joints, the border extension written
pixel by pixel, the blur as a 2D kernel (no separability), the upsampling as a
full map, and the Newton step solved with ``np.linalg.solve`` after an
eigenvalue test. ``tests/test_codecs.py`` checks the JAX codec against it and
``benchmarks/codec_bench.py`` times it as the baseline.

Conventions are the codec's: keypoints ``(..., K, 2)`` as ``(x, y)`` in input
pixels, heatmaps ``(..., h, w, K)``, ``x_hm = (x_in + 0.5) * w / W - 0.5``.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-10


# ----------------------------------------------------------------------------- encoding


def encode_reference(keypoints, weights, input_size, heatmap_size, sigma, encoding="unbiased"):
  """Loop version of ``encode_heatmaps``: returns float64 heatmaps and target weights."""
  keypoints = np.asarray(keypoints, np.float64)
  weights = np.asarray(weights, np.float64)
  big_h, big_w = input_size
  h, w = heatmap_size
  lead = keypoints.shape[:-2]
  k_count = keypoints.shape[-2]
  kps = keypoints.reshape(-1, k_count, 2)
  wts = weights.reshape(-1, k_count)
  heat = np.zeros((kps.shape[0], h, w, k_count))
  target = np.zeros((kps.shape[0], k_count))
  margin = 3.0 * sigma + 0.5
  for i in range(kps.shape[0]):
    for k in range(k_count):
      cx = (kps[i, k, 0] + 0.5) * w / big_w - 0.5
      cy = (kps[i, k, 1] + 0.5) * h / big_h - 0.5
      if not (wts[i, k] > 0 and math.isfinite(cx) and math.isfinite(cy)):
        continue
      if cx < -margin or cx > w - 1 + margin or cy < -margin or cy > h - 1 + margin:
        continue
      if encoding == "quantized":
        cx, cy = math.floor(cx + 0.5), math.floor(cy + 0.5)
      ys, xs = np.mgrid[0:h, 0:w]
      heat[i, :, :, k] = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
      target[i, k] = wts[i, k]
  return heat.reshape(*lead, h, w, k_count), target.reshape(*lead, k_count)


# ----------------------------------------------------------------------------- decoders of one map


def argmax_map(hm):
  """Integer maximum of a (h, w) map as (x, y), first in row-major order."""
  y, x = np.unravel_index(int(np.argmax(hm)), hm.shape)
  return float(x), float(y)


def shift_map(hm):
  """Quarter-pixel shift towards the higher neighbour; none on the border."""
  h, w = hm.shape
  x, y = argmax_map(hm)
  xi, yi = int(x), int(y)
  if 0 < xi < w - 1:
    x += 0.25 * np.sign(hm[yi, xi + 1] - hm[yi, xi - 1])
  if 0 < yi < h - 1:
    y += 0.25 * np.sign(hm[yi + 1, xi] - hm[yi - 1, xi])
  return x, y


def upsample_full(hm, input_size):
  """Full bilinear upsampling to (H, W), half-pixel centres, edges clamped."""
  big_h, big_w = input_size
  h, w = hm.shape
  ty = np.clip((np.arange(big_h) + 0.5) * h / big_h - 0.5, 0, h - 1)
  tx = np.clip((np.arange(big_w) + 0.5) * w / big_w - 0.5, 0, w - 1)
  y0 = np.floor(ty).astype(int)
  x0 = np.floor(tx).astype(int)
  y1 = np.minimum(y0 + 1, h - 1)
  x1 = np.minimum(x0 + 1, w - 1)
  fy = (ty - y0)[:, None]
  fx = (tx - x0)[None, :]
  top = hm[y0][:, x0] * (1 - fx) + hm[y0][:, x1] * fx
  bottom = hm[y1][:, x0] * (1 - fx) + hm[y1][:, x1] * fx
  return top * (1 - fy) + bottom * fy


def upsample_map(hm, input_size):
  """Argmax of the full upsampled map, in input pixels."""
  return argmax_map(upsample_full(hm, input_size))


def extend_map(hm, pad, sigma):
  """Gaussian extrapolation of a (h, w) map by ``pad`` pixels on each side (rows first)."""
  h, w = hm.shape
  c = -1.0 / (2.0 * sigma**2)
  ext = np.zeros((h + 2 * pad, w + 2 * pad))
  ext[pad : pad + h, pad : pad + w] = hm

  def outside(edge, inner, j):
    l0 = math.log(max(edge, EPS))
    l1 = math.log(max(inner, EPS))
    return math.exp(min(l0, l0 - j * (l1 - l0) + c * j * (j + 1)))

  for y in range(pad, pad + h):
    for j in range(1, pad + 1):
      ext[y, pad - j] = outside(ext[y, pad], ext[y, pad + 1], j)
      ext[y, pad + w - 1 + j] = outside(ext[y, pad + w - 1], ext[y, pad + w - 2], j)
  for x in range(w + 2 * pad):
    for j in range(1, pad + 1):
      ext[pad - j, x] = outside(ext[pad, x], ext[pad + 1, x], j)
      ext[pad + h - 1 + j, x] = outside(ext[pad + h - 1, x], ext[pad + h - 2, x], j)
  return ext


def dark_map(hm, sigma, kernel_size, kernel_sigma):
  """DARK on one (h, w) map: extend, blur, rescale, log, Newton step; heatmap pixels."""
  h, w = hm.shape
  r = kernel_size // 2
  pad = r + 1
  ext = extend_map(hm, pad, sigma)
  offs = np.arange(-r, r + 1)
  kernel = np.exp(-(offs[:, None] ** 2 + offs[None, :] ** 2) / (2.0 * kernel_sigma**2))
  kernel /= kernel.sum()
  blurred = np.zeros((h + 2, w + 2))
  for a in range(kernel_size):
    for b in range(kernel_size):
      blurred += kernel[a, b] * ext[a : a + h + 2, b : b + w + 2]
  raw_max, new_max = hm.max(), blurred[1:-1, 1:-1].max()
  if raw_max > 0 and new_max > 0:
    blurred *= raw_max / new_max
  logs = np.log(np.maximum(blurred, EPS))
  x, y = argmax_map(blurred[1:-1, 1:-1])
  i, j = int(y) + 1, int(x) + 1  # halo coordinates
  grad = np.array([(logs[i, j + 1] - logs[i, j - 1]) / 2, (logs[i + 1, j] - logs[i - 1, j]) / 2])
  hxx = logs[i, j + 1] - 2 * logs[i, j] + logs[i, j - 1]
  hyy = logs[i + 1, j] - 2 * logs[i, j] + logs[i - 1, j]
  hxy = (logs[i + 1, j + 1] - logs[i + 1, j - 1] - logs[i - 1, j + 1] + logs[i - 1, j - 1]) / 4
  hess = np.array([[hxx, hxy], [hxy, hyy]])
  if np.all(np.linalg.eigvalsh(hess) < 0):
    offset = -np.linalg.solve(hess, grad)
    offset = np.clip(offset, -0.5, 0.5)
    x, y = x + offset[0], y + offset[1]
  return x, y


# ----------------------------------------------------------------------------- batch decoder


def decode_reference(
  heatmaps, input_size, decoding="dark", sigma=3.0, kernel_size=None, kernel_sigma=None
):
  """Loop decoder: (..., h, w, K) -> input-pixel (..., K, 2) keypoints and (..., K) scores."""
  heatmaps = np.asarray(heatmaps, np.float64)
  heatmaps = np.where(np.isfinite(heatmaps), heatmaps, 0.0)
  kernel_sigma = sigma if kernel_sigma is None else kernel_sigma
  if kernel_size is None:
    kernel_size = 2 * math.ceil(3 * kernel_sigma) + 1
  big_h, big_w = input_size
  *lead, h, w, k_count = heatmaps.shape
  maps = heatmaps.reshape(-1, h, w, k_count)
  out = np.zeros((maps.shape[0], k_count, 2))
  scores = np.zeros((maps.shape[0], k_count))
  for i in range(maps.shape[0]):
    for k in range(k_count):
      hm = maps[i, :, :, k]
      scores[i, k] = hm.max()
      if decoding == "upsample":
        out[i, k] = upsample_map(hm, input_size)
        continue
      if decoding == "argmax":
        x, y = argmax_map(hm)
      elif decoding == "shift":
        x, y = shift_map(hm)
      elif decoding == "dark":
        x, y = dark_map(hm, sigma, kernel_size, kernel_sigma)
      else:
        raise ValueError(decoding)
      out[i, k] = ((x + 0.5) * big_w / w - 0.5, (y + 0.5) * big_h / h - 0.5)
  return out.reshape(*lead, k_count, 2), scores.reshape(*lead, k_count)
