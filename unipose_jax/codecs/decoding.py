"""Heatmaps -> keypoints: integer argmax, quarter-pixel shift, upsample+argmax, DARK.

All decoders take channels-last heatmaps ``(..., h, w, K)`` of any float dtype
(bfloat16 included; computation is float32), any number of leading batch
dimensions (including none), and run under ``jit``/``vmap`` with no Python loop
over images or joints. Non-finite heatmap values are treated as 0, so no
decoder ever returns NaN. Every decoder returns ``(keypoints, scores)``:
keypoints ``(..., K, 2)`` float32 ``(x, y)`` and scores ``(..., K)`` float32,
the maximum of each (sanitised) heatmap.

Heatmap-pixel decoders (:func:`decode_argmax`, :func:`decode_shift`,
:func:`decode_dark`) return heatmap pixels; :func:`decode_upsample` returns
input pixels; :func:`decode_heatmaps` always returns input pixels.

``"argmax"``
    The integer position of the maximum (first one in row-major order on ties).
``"shift"``
    The argmax moved 0.25 px, in each axis separately, towards the higher of
    its two neighbours; no move on a tie or where the maximum lies on the map's
    border in that axis (one neighbour missing).
``"upsample"``
    What the original UniPose did: bilinear upsampling to input resolution,
    then the integer argmax, in input pixels. Sampling follows section 5: input
    pixel ``x_in`` reads the heatmap at ``(x_in + 0.5) / s - 0.5``, clamped to
    ``[0, w - 1]`` (edge values extend outwards), i.e. ``jax.image.resize``
    "linear" with half-pixel centres. The full map is never built: a bilinear
    patch reaches its maximum over a grid of samples at the grid's corners, so
    only the input pixels next to each heatmap node (a 2h x 2w grid) are
    evaluated; the result equals the argmax of the full map, up to ties.
``"dark"``
    DARK (Zhang et al. 2020), see :func:`decode_dark`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from unipose_jax.codecs.coordinates import Size, heatmap_to_input

#: Decoding names accepted by :func:`decode_heatmaps` and ``HeatmapCodec``.
DECODINGS: tuple[str, ...] = ("argmax", "shift", "upsample", "dark")

#: Floor applied before the logarithm in DARK (log(1e-10) ~ -23).
LOG_EPS: float = 1e-10


def check_decoding(name: str) -> str:
  """Returns ``name`` if it is one of :data:`DECODINGS`, else raises ValueError listing them."""
  if name not in DECODINGS:
    raise ValueError(f"unknown decoding {name!r}; valid decodings: {', '.join(DECODINGS)}")
  return name


def default_dark_kernel(dark_sigma: float) -> int:
  """Default modulation kernel size: ``2 * ceil(3 * dark_sigma) + 1`` (19 for sigma 3)."""
  return 2 * math.ceil(3.0 * float(dark_sigma)) + 1


# --------------------------------------------------------------------------- helpers
#
# Internally maps keep the channels-last layout, flattened to (M, h, w, K) with
# M the product of the leading dimensions: no transposes. The blur is written as
# a sum of shifted slices (a separable 1D convolution that XLA fuses into one
# loop), and the argmax as max + min-index, both several times faster on CPU
# than a matmul/conv and a variadic argmax reduction, and as fast on GPU.


def _as_maps(heatmaps) -> tuple[jnp.ndarray, tuple[int, ...]]:
  """``(..., h, w, K)`` -> sanitised float32 ``(M, h, w, K)`` maps and the ``(..., K)`` shape."""
  heatmaps = jnp.asarray(heatmaps)
  if heatmaps.ndim < 3:
    raise ValueError(f"heatmaps must have shape (..., h, w, K), got {heatmaps.shape}")
  heatmaps = heatmaps.astype(jnp.float32)
  heatmaps = jnp.where(jnp.isfinite(heatmaps), heatmaps, 0.0)
  *lead, h, w, k = heatmaps.shape
  return heatmaps.reshape(-1, h, w, k), (*lead, k)


def _argmax_2d(maps: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """``(M, h, w, K)`` -> integer ``x``, ``y`` (int32, ``(M, K)``) of the first maximum
  in row-major order, and the maximum (``(M, K)``)."""
  m, h, w, k = maps.shape
  # The barrier materialises the values once: otherwise XLA may fuse their
  # computation into both reductions below, and two recomputations need not
  # agree to the last bit (FMA contraction), so ``flat == peak`` could fail.
  flat = jax.lax.optimization_barrier(maps.reshape(m, h * w, k))
  peak = jnp.max(flat, axis=1)
  iota = jnp.arange(h * w, dtype=jnp.int32)[None, :, None]
  idx = jnp.min(jnp.where(flat == peak[:, None, :], iota, h * w), axis=1)
  idx = jnp.minimum(idx, h * w - 1)  # unreachable: inputs are finite and read from one buffer
  return idx % w, idx // w, peak


def _gather(maps: jnp.ndarray, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """``maps[m, y[m, j, k], x[m, j, k], k]`` for ``(M, h, w, K)`` maps and ``(M, J, K)`` in-range indices."""
  m, h, w, k = maps.shape
  return jnp.take_along_axis(maps.reshape(m, h * w, k), y * w + x, axis=1)


def _result(xy: jnp.ndarray, scores: jnp.ndarray, shape: tuple[int, ...]):
  """``(M, K, 2)`` and ``(M, K)`` -> ``(..., K, 2)`` and ``(..., K)``."""
  return xy.reshape(*shape, 2), scores.reshape(shape)


# --------------------------------------------------------------------------- argmax / shift


def decode_argmax(heatmaps) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Integer maximum. ``(..., h, w, K)`` -> heatmap-pixel ``(..., K, 2)`` and scores ``(..., K)``."""
  maps, shape = _as_maps(heatmaps)
  x, y, peak = _argmax_2d(maps)
  return _result(jnp.stack([x, y], -1).astype(jnp.float32), peak, shape)


def decode_shift(heatmaps) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Argmax moved 0.25 px towards the higher neighbour per axis (none at the border).

  ``(..., h, w, K)`` -> heatmap-pixel ``(..., K, 2)`` and scores ``(..., K)``.
  """
  maps, shape = _as_maps(heatmaps)
  _, h, w, _ = maps.shape
  x, y, peak = _argmax_2d(maps)
  xs = jnp.stack([jnp.maximum(x - 1, 0), jnp.minimum(x + 1, w - 1), x, x], 1)
  ys = jnp.stack([y, y, jnp.maximum(y - 1, 0), jnp.minimum(y + 1, h - 1)], 1)
  near = _gather(maps, xs, ys)  # (M, 4, K): left, right, up, down
  left, right, up, down = near[:, 0], near[:, 1], near[:, 2], near[:, 3]
  dx = jnp.where((x > 0) & (x < w - 1), 0.25 * jnp.sign(right - left), 0.0)
  dy = jnp.where((y > 0) & (y < h - 1), 0.25 * jnp.sign(down - up), 0.0)
  xy = jnp.stack([x + dx, y + dy], -1).astype(jnp.float32)
  return _result(xy, peak, shape)


# --------------------------------------------------------------------------- upsample


@functools.lru_cache(maxsize=64)
def _upsample_candidates(in_len: int, hm_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Input pixels that can hold the argmax of a bilinear upsampling along one axis.

  A bilinear patch sampled on a grid peaks at the grid's corners, so only the
  last input pixel before each heatmap node ``n`` ("before", sampling
  position in ``[n - 1, n)``) and the first at or after it ("after",
  ``[n, n + 1)``) can hold the maximum. Needs ``in_len >= hm_len`` (every
  interval holds a sample). Before node 0 the samples are clamped to node 0,
  all equal, so the first pixel, 0, stands for them (the argmax's tie-break).

  Returns the ``2 * hm_len`` candidate input indices in increasing order
  (before 0, after 0, before 1, ...), and the weight of node ``n`` in the
  "before" sample (the rest on ``n - 1``) and of node ``n + 1`` in the
  "after" sample (the rest on ``n``), each ``(hm_len,)`` float32.
  """
  pos = (np.arange(in_len) + 0.5) * hm_len / in_len - 0.5  # heatmap coordinate of each input pixel
  nodes = np.arange(hm_len)
  after = np.searchsorted(pos, nodes, side="left")
  before = np.maximum(after - 1, 0)
  before[0] = 0
  w_before = np.clip(pos[before] - (nodes - 1), 0.0, 1.0)
  w_after = np.clip(pos[after] - nodes, 0.0, 1.0)
  candidates = np.stack([before, after], -1).reshape(-1)
  return candidates.astype(np.int32), w_before.astype(np.float32), w_after.astype(np.float32)


def _upsample_axis(
  maps: jnp.ndarray, w_before: np.ndarray, w_after: np.ndarray, axis: int
) -> jnp.ndarray:
  """Bilinear values at the candidate pixels along ``axis`` (edge-clamped): length ``n -> 2 n``."""
  n = maps.shape[axis]
  first = jax.lax.slice_in_dim(maps, 0, 1, axis=axis)
  last = jax.lax.slice_in_dim(maps, n - 1, n, axis=axis)
  prev = jnp.concatenate([first, jax.lax.slice_in_dim(maps, 0, n - 1, axis=axis)], axis=axis)
  nxt = jnp.concatenate([jax.lax.slice_in_dim(maps, 1, n, axis=axis), last], axis=axis)
  shape = [1] * maps.ndim
  shape[axis] = n
  wb, wa = w_before.reshape(shape), w_after.reshape(shape)
  before = (1.0 - wb) * prev + wb * maps
  after = (1.0 - wa) * maps + wa * nxt
  both = jnp.stack([before, after], axis=axis + 1)
  return both.reshape(*maps.shape[:axis], 2 * n, *maps.shape[axis + 1 :])


def decode_upsample(heatmaps, input_size: Size) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Argmax of the bilinear upsampling to ``input_size = (H, W)`` (see module doc).

  ``(..., h, w, K)`` -> INPUT-pixel integer ``(..., K, 2)`` (float32) and scores ``(..., K)``
  (maximum of the original heatmap). Needs ``H >= h`` and ``W >= w``.
  """
  maps, shape = _as_maps(heatmaps)
  _, h, w, _ = maps.shape
  big_h, big_w = int(input_size[0]), int(input_size[1])
  if big_h < h or big_w < w:
    raise ValueError(
      f"upsample decoding needs input_size >= heatmap size, got {input_size} for {h}x{w}"
    )
  cand_x, bx, ax = _upsample_candidates(big_w, w)
  cand_y, by, ay = _upsample_candidates(big_h, h)
  up = _upsample_axis(_upsample_axis(maps, bx, ax, axis=2), by, ay, axis=1)  # (M, 2h, 2w, K)
  ix, iy, _ = _argmax_2d(up)
  xy = jnp.stack([jnp.asarray(cand_x)[ix], jnp.asarray(cand_y)[iy]], -1).astype(jnp.float32)
  return _result(xy, jnp.max(maps, axis=(1, 2)), shape)


# --------------------------------------------------------------------------- DARK


def _extend_axis(maps: jnp.ndarray, pad: int, curvature: float, axis: int) -> jnp.ndarray:
  """Pads ``pad`` samples on both sides of ``axis`` by Gaussian extrapolation.

  In log space each line is continued as the quadratic through its last two
  samples with second-derivative coefficient ``curvature`` (< 0), capped at
  the edge value: with ``L0, L1`` the log of the edge sample and of its
  neighbour, the sample ``j`` steps outside is
  ``exp(min(L0, L0 - j (L1 - L0) + curvature j (j + 1)))``. A Gaussian of the
  expected width whose centre lies inside the map's extent is continued
  exactly; a noisy edge is continued by a decaying tail never above the edge,
  and an edge sample <= ``LOG_EPS`` by zeros.
  """
  n = maps.shape[axis]
  shape = [1] * maps.ndim
  shape[axis] = pad
  j = jnp.arange(1, pad + 1, dtype=jnp.float32).reshape(shape)  # steps outside the map

  def tail(edge_index, inner_index):
    edge = jax.lax.slice_in_dim(maps, edge_index, edge_index + 1, axis=axis)
    inner = jax.lax.slice_in_dim(maps, inner_index, inner_index + 1, axis=axis)
    l0 = jnp.log(jnp.maximum(edge, LOG_EPS))
    l1 = jnp.log(jnp.maximum(inner, LOG_EPS))
    value = jnp.exp(jnp.minimum(l0, l0 - j * (l1 - l0) + curvature * j * (j + 1.0)))
    return jnp.where(edge > LOG_EPS, value, 0.0)

  left = jnp.flip(tail(0, 1), axis=axis)
  right = tail(n - 1, n - 2)
  return jnp.concatenate([left, maps, right], axis=axis)


@functools.lru_cache(maxsize=64)
def _gaussian_kernel(kernel_size: int, kernel_sigma: float) -> tuple[float, ...]:
  """Normalised 1D Gaussian taps (Python floats: they become compile-time constants)."""
  offsets = np.arange(kernel_size, dtype=np.float64) - kernel_size // 2
  kernel = np.exp(-(offsets**2) / (2.0 * kernel_sigma**2))
  return tuple(float(v) for v in kernel / kernel.sum())


def _blur_valid(maps: jnp.ndarray, kernel: tuple[float, ...], axis: int) -> jnp.ndarray:
  """'Valid' 1D convolution along ``axis`` as a sum of shifted slices (symmetric kernel)."""
  out_len = maps.shape[axis] - len(kernel) + 1
  total = None
  for i, tap in enumerate(kernel):  # static loop over taps, fused by XLA into one pass
    term = tap * jax.lax.slice_in_dim(maps, i, i + out_len, axis=axis)
    total = term if total is None else total + term
  return total


def modulate(
  maps: jnp.ndarray, *, sigma: float, kernel_size: int, kernel_sigma: float
) -> jnp.ndarray:
  """DARK distribution modulation of ``(M, h, w, K)`` maps, returning ``(M, h + 2, w + 2, K)``.

  The maps are extended by ``kernel_size // 2 + 1`` on every side
  (:func:`_extend_axis` with the curvature ``-1 / (2 sigma^2)`` of the
  training Gaussian, x first), blurred by a normalised separable Gaussian
  kernel of ``kernel_size`` taps and std ``kernel_sigma``, and rescaled so
  that the interior keeps the original maximum (skipped where either maximum
  is not positive). The one-pixel halo serves the finite differences at the
  border.
  """
  pad = kernel_size // 2 + 1
  curvature = -1.0 / (2.0 * float(sigma) ** 2)
  kernel = _gaussian_kernel(int(kernel_size), float(kernel_sigma))
  ext = _extend_axis(_extend_axis(maps, pad, curvature, axis=2), pad, curvature, axis=1)
  blurred = _blur_valid(_blur_valid(ext, kernel, axis=2), kernel, axis=1)
  raw_max = jnp.max(maps, axis=(1, 2))
  new_max = jnp.max(blurred[:, 1:-1, 1:-1], axis=(1, 2))
  ok = (raw_max > 0) & (new_max > 0)
  scale = jnp.where(ok, raw_max / jnp.where(ok, new_max, 1.0), 1.0)
  return blurred * scale[:, None, None, :]


def decode_dark(
  heatmaps,
  *,
  sigma: float,
  kernel_size: int | None = None,
  kernel_sigma: float | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """DARK decoding: modulation, log, one Newton step at the maximum.

  1. :func:`modulate` (``kernel_sigma`` defaults to ``sigma``, ``kernel_size``
     to :func:`default_dark_kernel`); ``sigma`` is the training Gaussian's std
     in heatmap pixels, used for the border extension.
  2. ``L = log(max(B, LOG_EPS))``.
  3. ``m`` = integer maximum of the modulated map ``B`` (interior only; more
     robust to noise than the raw maximum).
  4. ``g`` and ``H`` from central first/second differences of ``L`` at ``m``
     (mixed term ``(L[+1,+1] - L[+1,-1] - L[-1,+1] + L[-1,-1]) / 4``); the
     halo of ``B`` supplies the neighbours at the border.
  5. Offset ``-H^-1 g`` if ``H`` is negative definite (``H_xx < 0`` and
     ``det H > 0``), else 0 (the integer maximum: flat or saddle-shaped
     maxima); then each component is clipped to ``[-0.5, 0.5]``, so the
     result stays in the pixel of ``m`` and inside the map's extent.
  6. A constant map (all-zero included) has no peak: the result is pixel
     ``(0, 0)``, as for ``"argmax"``.

  Noise-free Gaussians of width ``sigma`` are recovered to ~1e-5 px anywhere
  in the map's extent, borders included: the log of a Gaussian is quadratic,
  its finite differences are exact, and the extension keeps the blur exact.

  Returns heatmap-pixel ``(..., K, 2)`` and scores ``(..., K)`` (raw maximum).
  """
  kernel_sigma = float(sigma if kernel_sigma is None else kernel_sigma)
  kernel_size = default_dark_kernel(kernel_sigma) if kernel_size is None else int(kernel_size)
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(f"dark kernel size must be a positive odd int, got {kernel_size}")
  maps, shape = _as_maps(heatmaps)
  if maps.shape[1] < 2 or maps.shape[2] < 2:
    raise ValueError(f"DARK needs heatmaps of at least 2x2, got {maps.shape[1]}x{maps.shape[2]}")
  blurred = modulate(maps, sigma=sigma, kernel_size=kernel_size, kernel_sigma=kernel_sigma)
  logs = jnp.log(jnp.maximum(blurred, LOG_EPS))
  mx, my, _ = _argmax_2d(blurred[:, 1:-1, 1:-1])
  dx = jnp.asarray([-1, 0, 1, -1, 0, 1, -1, 0, 1], jnp.int32)[None, :, None]
  dy = jnp.asarray([-1, -1, -1, 0, 0, 0, 1, 1, 1], jnp.int32)[None, :, None]
  # +1: halo coordinates of the padded (h + 2, w + 2) map.
  v = _gather(logs, mx[:, None] + 1 + dx, my[:, None] + 1 + dy)  # (M, 9, K)

  def at(ddx, ddy):
    return v[:, 3 * (ddy + 1) + ddx + 1]

  gx = 0.5 * (at(1, 0) - at(-1, 0))
  gy = 0.5 * (at(0, 1) - at(0, -1))
  hxx = at(1, 0) - 2.0 * at(0, 0) + at(-1, 0)
  hyy = at(0, 1) - 2.0 * at(0, 0) + at(0, -1)
  hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
  det = hxx * hyy - hxy * hxy
  ok = (hxx < 0) & (det > 0) & jnp.isfinite(det)
  safe_det = jnp.where(ok, det, 1.0)
  ox = jnp.where(ok, -(hyy * gx - hxy * gy) / safe_det, 0.0)
  oy = jnp.where(ok, -(hxx * gy - hxy * gx) / safe_det, 0.0)
  ox, oy = jnp.clip(ox, -0.5, 0.5), jnp.clip(oy, -0.5, 0.5)
  xy = jnp.stack([mx + ox, my + oy], -1).astype(jnp.float32)
  peak = jnp.max(maps, axis=(1, 2))
  constant = peak <= jnp.min(
    maps, axis=(1, 2)
  )  # no peak at all: same answer as "argmax", pixel (0, 0)
  return _result(jnp.where(constant[..., None], 0.0, xy), peak, shape)


# --------------------------------------------------------------------------- dispatch


def decode_heatmaps(
  heatmaps,
  *,
  input_size: Size,
  decoding: str = "dark",
  sigma: float = 3.0,
  dark_kernel: int | None = None,
  dark_sigma: float | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Decodes ``(..., h, w, K)`` heatmaps to INPUT-pixel ``(..., K, 2)`` keypoints and ``(..., K)`` scores.

  ``decoding`` is one of :data:`DECODINGS`; ``sigma``, ``dark_kernel`` and
  ``dark_sigma`` only matter for ``"dark"`` (see :func:`decode_dark`).
  """
  check_decoding(decoding)
  heatmaps = jnp.asarray(heatmaps)
  if heatmaps.ndim < 3:
    raise ValueError(f"heatmaps must have shape (..., h, w, K), got {heatmaps.shape}")
  heatmap_size = tuple(heatmaps.shape[-3:-1])
  if decoding == "upsample":
    return decode_upsample(heatmaps, input_size)
  if decoding == "argmax":
    xy, scores = decode_argmax(heatmaps)
  elif decoding == "shift":
    xy, scores = decode_shift(heatmaps)
  else:
    xy, scores = decode_dark(
      heatmaps, sigma=sigma, kernel_size=dark_kernel, kernel_sigma=dark_sigma
    )
  return heatmap_to_input(xy, input_size, heatmap_size), scores
