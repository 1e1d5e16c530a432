"""Deployment without JAX: letterbox, run the exported network, decode heatmaps in NumPy.

Imports NumPy and OpenCV only (``onnxruntime`` lazily, in :func:`onnx_runner`),
so a service that ships the ONNX file of ``unipose_jax.export`` needs neither
JAX nor Flax. The maths is the project's:

* preprocessing is ``geometry.letterbox_affine`` + ``transforms.warp_image``
  (bilinear, mean-colour border): the whole image, aspect ratio kept, centred
  in the ``H_in x W_in`` network input;
* decoding reproduces ``unipose_jax.codecs`` (``"argmax"`` and ``"dark"``)
  step by step in float32, vectorised over images and joints (see
  ``codecs/decoding.py`` for the algorithm), to ~1e-4 px;
* keypoints follow design.md section 5: ``(x, y)``, integer coordinates are
  pixel centres, ``x_input = (x_heatmap + 0.5) * s - 0.5`` with ``s = S / w``,
  and original pixels come back through the inverse of the letterbox affine.

* whether there is a person is decided as ``Predictor`` decides it, by the presence
  settings the export writes into its ``.json`` (:func:`predict_with_settings`,
  :mod:`unipose_jax.presence_numpy`).

::

    run = onnx_runner("unipose.onnx")
    s = json.load(open("unipose.json"))  # the export's settings: K, the joints' names, ...
    keypoints, scores = predict(run, [image], s["input_size"], num_joints=s["num_joints"])
    result = predict_with_settings(run, [image], s)  # the same, and whether there is a person
    result.person_found[0], result.keypoints[0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from unipose_jax import presence_numpy
from unipose_jax.geometry import (
  apply_affine_to_points,
  input_hw,
  invert_affine,
  letterbox_affine,
)
from unipose_jax.skeleton import split_maps
from unipose_jax.transforms import warp_image

#: Decodings implemented here (the codec also has "shift" and "upsample").
DECODINGS: tuple[str, ...] = ("argmax", "dark")

#: Floor before the logarithm, as in ``codecs.decoding.LOG_EPS``.
LOG_EPS: float = 1e-10


# --------------------------------------------------------------------------- preprocessing


def letterbox(image: np.ndarray, input_size) -> tuple[np.ndarray, np.ndarray]:
  """uint8 (H, W, 3) RGB of any size -> (uint8 (H_in, W_in, 3) network input, (2, 3)
  affine); ``input_size`` ``S`` or ``(H_in, W_in)`` (a settings file's ``input_size``).""

  The affine maps original pixels to input pixels (``geometry.letterbox_affine``).
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
  size = input_hw(input_size, "input_size")
  affine = letterbox_affine(image.shape[0], image.shape[1], size)
  return warp_image(image, affine, size), affine


def to_original(keypoints: np.ndarray, affine: np.ndarray) -> np.ndarray:
  """Input-pixel ``(..., K, 2)`` keypoints -> original pixels, through the inverse of the
  original -> input ``(..., 2, 3)`` affine(s); float32."""
  inverse = invert_affine(np.asarray(affine, np.float64))
  return apply_affine_to_points(inverse, np.asarray(keypoints, np.float64)).astype(np.float32)


# --------------------------------------------------------------------------- decoding


def _as_maps(heatmaps) -> tuple[np.ndarray, tuple[int, ...]]:
  """``(..., h, w, K)`` -> sanitised float32 ``(M, h, w, K)`` and the ``(..., K)`` shape."""
  heatmaps = np.asarray(heatmaps, np.float32)
  if heatmaps.ndim < 3:
    raise ValueError(f"heatmaps must have shape (..., h, w, K), got {heatmaps.shape}")
  heatmaps = np.where(np.isfinite(heatmaps), heatmaps, np.float32(0.0))
  *lead, h, w, k = heatmaps.shape
  return heatmaps.reshape(-1, h, w, k), (*lead, k)


def _argmax_2d(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(M, h, w, K)`` -> x, y (int, ``(M, K)``) of the first maximum in row-major order, and
  the maximum."""
  m, h, w, k = maps.shape
  flat = maps.reshape(m, h * w, k)
  idx = np.argmax(flat, axis=1)
  return idx % w, idx // w, np.max(flat, axis=1)


def decode_argmax(heatmaps) -> tuple[np.ndarray, np.ndarray]:
  """Integer maximum: ``(..., h, w, K)`` -> heatmap-pixel ``(..., K, 2)`` and scores ``(..., K)``."""
  maps, shape = _as_maps(heatmaps)
  x, y, peak = _argmax_2d(maps)
  return np.stack([x, y], -1).astype(np.float32).reshape(*shape, 2), peak.reshape(shape)


def _slice(a: np.ndarray, start: int, stop: int, axis: int) -> np.ndarray:
  index = [slice(None)] * a.ndim
  index[axis] = slice(start, stop)
  return a[tuple(index)]


def _extend_axis(maps: np.ndarray, pad: int, curvature: float, axis: int) -> np.ndarray:
  """Gaussian extrapolation of ``pad`` samples on both sides of ``axis`` (log-quadratic
  through the last two samples, capped at the edge value; 0 past an edge <= ``LOG_EPS``)."""
  n = maps.shape[axis]
  shape = [1] * maps.ndim
  shape[axis] = pad
  j = np.arange(1, pad + 1, dtype=np.float32).reshape(shape)

  def tail(edge_index: int, inner_index: int) -> np.ndarray:
    edge = _slice(maps, edge_index, edge_index + 1, axis)
    l0 = np.log(np.maximum(edge, np.float32(LOG_EPS)))
    l1 = np.log(np.maximum(_slice(maps, inner_index, inner_index + 1, axis), np.float32(LOG_EPS)))
    value = np.exp(np.minimum(l0, l0 - j * (l1 - l0) + np.float32(curvature) * j * (j + 1)))
    return np.where(edge > LOG_EPS, value, np.float32(0.0))

  left = np.flip(tail(0, 1), axis=axis)
  return np.concatenate([left, maps, tail(n - 1, n - 2)], axis=axis)


def _blur_valid(maps: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
  """'Valid' 1D convolution along ``axis`` (symmetric kernel), taps summed in order."""
  out_len = maps.shape[axis] - len(kernel) + 1
  total = None
  for i, tap in enumerate(kernel):
    term = tap * _slice(maps, i, i + out_len, axis)
    total = term if total is None else total + term
  return total


def modulate(maps: np.ndarray, *, sigma: float, kernel_size: int, kernel_sigma: float):
  """DARK modulation of float32 ``(M, h, w, K)`` maps -> ``(M, h + 2, w + 2, K)`` (one-pixel
  halo): border extension, separable Gaussian blur, rescaled to the original maximum."""
  pad = kernel_size // 2 + 1
  curvature = -1.0 / (2.0 * float(sigma) ** 2)
  offsets = np.arange(kernel_size, dtype=np.float64) - kernel_size // 2
  kernel = np.exp(-(offsets**2) / (2.0 * float(kernel_sigma) ** 2))
  kernel = (kernel / kernel.sum()).astype(np.float32)
  ext = _extend_axis(_extend_axis(maps, pad, curvature, axis=2), pad, curvature, axis=1)
  blurred = _blur_valid(_blur_valid(ext, kernel, axis=2), kernel, axis=1)
  raw_max = np.max(maps, axis=(1, 2))
  new_max = np.max(blurred[:, 1:-1, 1:-1], axis=(1, 2))
  ok = (raw_max > 0) & (new_max > 0)
  scale = np.where(ok, raw_max / np.where(ok, new_max, np.float32(1.0)), np.float32(1.0))
  return blurred * scale[:, None, None, :]


def decode_dark(
  heatmaps, *, sigma: float, kernel_size: int | None = None, kernel_sigma: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """DARK: modulation, log, one Newton step at the modulated map's integer maximum.

  Same steps as ``codecs.decoding.decode_dark``: the offset ``-H^-1 g`` (central
  differences of the log-map) is used only where ``H`` is negative definite, then
  clipped to ``[-0.5, 0.5]`` per axis; a constant map gives pixel (0, 0).
  ``sigma`` is the training Gaussian's std (heatmap pixels); ``kernel_sigma``
  defaults to it and ``kernel_size`` to ``2 * ceil(3 * kernel_sigma) + 1``.

  ``(..., h, w, K)`` -> heatmap-pixel ``(..., K, 2)`` float32 and scores ``(..., K)`` (raw maximum).
  """
  kernel_sigma = float(sigma if kernel_sigma is None else kernel_sigma)
  if kernel_size is None:
    kernel_size = 2 * math.ceil(3.0 * kernel_sigma) + 1
  if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
    raise ValueError(f"dark kernel size must be a positive odd int, got {kernel_size}")
  maps, shape = _as_maps(heatmaps)
  m, h, w, k = maps.shape
  if h < 2 or w < 2:
    raise ValueError(f"DARK needs heatmaps of at least 2x2, got {h}x{w}")
  blurred = modulate(maps, sigma=sigma, kernel_size=int(kernel_size), kernel_sigma=kernel_sigma)
  logs = np.log(np.maximum(blurred, np.float32(LOG_EPS)))
  mx, my, _ = _argmax_2d(blurred[:, 1:-1, 1:-1])
  dx = np.array([-1, 0, 1, -1, 0, 1, -1, 0, 1])[None, :, None]
  dy = np.array([-1, -1, -1, 0, 0, 0, 1, 1, 1])[None, :, None]
  index = (my[:, None] + 1 + dy) * (w + 2) + mx[:, None] + 1 + dx  # (M, 9, K) in the halo map
  v = np.take_along_axis(logs.reshape(m, (h + 2) * (w + 2), k), index, axis=1)

  def at(ddx, ddy):
    return v[:, 3 * (ddy + 1) + ddx + 1]

  gx = np.float32(0.5) * (at(1, 0) - at(-1, 0))
  gy = np.float32(0.5) * (at(0, 1) - at(0, -1))
  hxx = at(1, 0) - np.float32(2.0) * at(0, 0) + at(-1, 0)
  hyy = at(0, 1) - np.float32(2.0) * at(0, 0) + at(0, -1)
  hxy = np.float32(0.25) * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
  with np.errstate(invalid="ignore", over="ignore"):
    det = hxx * hyy - hxy * hxy
    ok = (hxx < 0) & (det > 0) & np.isfinite(det)
    safe_det = np.where(ok, det, np.float32(1.0))
    ox = np.where(ok, -(hyy * gx - hxy * gy) / safe_det, np.float32(0.0))
    oy = np.where(ok, -(hxx * gy - hxy * gx) / safe_det, np.float32(0.0))
  ox, oy = np.clip(ox, -0.5, 0.5), np.clip(oy, -0.5, 0.5)
  xy = np.stack([mx.astype(np.float32) + ox, my.astype(np.float32) + oy], -1)
  peak = np.max(maps, axis=(1, 2))
  constant = peak <= np.min(maps, axis=(1, 2))
  xy = np.where(constant[..., None], np.float32(0.0), xy)
  return xy.reshape(*shape, 2), peak.reshape(shape)


def heatmap_to_input(xy, input_size: tuple[int, int], heatmap_size: tuple[int, int]) -> np.ndarray:
  """``(..., 2)`` heatmap pixels -> input pixels: ``(x + 0.5) * s_x - 0.5``, ``s_x = W / w``
  (likewise y); sizes are ``(height, width)``. float32."""
  (big_h, big_w), (h, w) = input_size, heatmap_size
  stride = np.array([big_w / w, big_h / h], np.float32)
  return (np.asarray(xy, np.float32) + np.float32(0.5)) * stride - np.float32(0.5)


def decode_heatmaps(
  heatmaps,
  input_size,
  *,
  decoding: str = "dark",
  sigma: float = 3.0,
  dark_kernel: int | None = None,
  dark_sigma: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """``(..., h, w, K)`` heatmaps -> INPUT-pixel ``(..., K, 2)`` keypoints and ``(..., K)`` scores.

  ``input_size`` is ``S`` or ``(H, W)`` of the network input; ``decoding`` one of
  :data:`DECODINGS`. The arguments mean what ``HeatmapCodec``'s do, and the result
  equals ``HeatmapCodec(input_size, heatmap_size, sigma, dark_kernel=..., dark_sigma=...)
  .decode(heatmaps, decoding)`` to ~1e-4 px.
  """
  if decoding not in DECODINGS:
    raise ValueError(f"unknown decoding {decoding!r}; valid decodings: {', '.join(DECODINGS)}")
  heatmaps = np.asarray(heatmaps)
  if heatmaps.ndim < 3:
    raise ValueError(f"heatmaps must have shape (..., h, w, K), got {heatmaps.shape}")
  size = input_hw(input_size, "input_size")
  if decoding == "argmax":
    xy, scores = decode_argmax(heatmaps)
  else:
    xy, scores = decode_dark(
      heatmaps, sigma=sigma, kernel_size=dark_kernel, kernel_sigma=dark_sigma
    )
  return heatmap_to_input(xy, size, heatmaps.shape[-3:-1]), scores


# --------------------------------------------------------------------------- end to end


def onnx_runner(path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
  """A function uint8 (N, H_in, W_in, 3) -> float32 heatmaps (N, h, w, C) running the ONNX file
  with onnxruntime on the CPU (all optimisations, ``threads`` intra-op threads, default
  all cores). The session is its ``.session`` attribute."""
  import os

  from unipose_jax import extras

  ort = extras.require("onnxruntime", "onnx")

  options = ort.SessionOptions()
  options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  options.intra_op_num_threads = int(threads or os.cpu_count() or 1)
  session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
  name = session.get_inputs()[0].name

  def run(images: np.ndarray) -> np.ndarray:
    return session.run(None, {name: np.ascontiguousarray(images, np.uint8)})[0]

  run.session = session
  return run


def predict(
  run: Callable[[np.ndarray], np.ndarray],
  images: Sequence[np.ndarray],
  input_size,
  *,
  num_joints: int,
  decoding: str = "dark",
  sigma: float = 3.0,
  dark_kernel: int | None = None,
  dark_sigma: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Keypoints of uint8 RGB images of any sizes, in their original pixels.

  ``run`` maps a uint8 (N, H_in, W_in, 3) batch (``input_size``: ``S`` or ``(H_in, W_in)``) to (N, h, w, C) heatmaps (e.g.
  :func:`onnx_runner`), laid out as ``skeleton.split_maps`` reads them, with
  ``num_joints`` joint maps (the export settings' ``num_joints``; their names are its
  ``joint_names``). Returns ``(keypoints (N, C - 1, 2), scores (N, C - 1))`` float32 for
  heatmap channels ``1..C-1`` (the K joints in the keypoint set's order, then the 5 box
  points of a box head); the background channel 0 is dropped. The decoding arguments are
  those of an export's settings file (``dark_kernel`` and ``dark_sigma`` resolved). An
  empty ``images`` is a ``ValueError`` (the number of channels, hence the result's shape,
  needs one image).
  """
  heatmaps, affines = _heatmaps(run, images, input_size, num_joints)
  return _decode(heatmaps, affines, input_size, decoding, sigma, dark_kernel, dark_sigma)


def _heatmaps(run, images, input_size: int, num_joints: int) -> tuple[np.ndarray, np.ndarray]:
  """``(heatmaps (N, h, w, C - 1) without the background, affines (N, 2, 3))``."""
  images = list(images)
  if not images:
    raise ValueError("deploy.predict needs at least one image; got none")
  inputs, affines = zip(*(letterbox(image, input_size) for image in images))
  _, joints, box = split_maps(np.asarray(run(np.stack(inputs))), num_joints=num_joints)
  heatmaps = joints if box is None else np.concatenate([joints, box], axis=-1)
  return heatmaps, np.stack(affines)


def _decode(heatmaps, affines, input_size, decoding, sigma, dark_kernel, dark_sigma):
  keypoints, scores = decode_heatmaps(
    heatmaps,
    input_size,
    decoding=decoding,
    sigma=sigma,
    dark_kernel=dark_kernel,
    dark_sigma=dark_sigma,
  )
  return to_original(keypoints, affines), scores


class Result(NamedTuple):
  """:func:`predict_with_settings`'s answer for ``N`` images: ``keypoints (N, C - 1, 2)``
  original pixels and ``scores (N, C - 1)`` as :func:`predict` gives them; ``presence``
  ``(N,)`` float32, the presence score (None for an uncalibrated run); ``person_found``
  ``(N,)`` bool, ``Predictor``'s first-pass verdict."""

  keypoints: np.ndarray
  scores: np.ndarray
  presence: np.ndarray | None
  person_found: np.ndarray


def predict_with_settings(
  run: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray], settings: Mapping[str, Any]
) -> Result:
  """:func:`predict` with the decoding settings of an export's ``.json`` (``settings``, as
  ``json.load`` reads it), and whether each image holds a person, decided from the same
  heatmaps by the settings' presence score and threshold (``presence_numpy.decide``)."""
  s = settings
  num_joints = s["num_joints"]
  heatmaps, affines = _heatmaps(run, images, s["input_size"], num_joints)
  presence, found = presence_numpy.decide(heatmaps, s, num_joints=num_joints, sigma=s["sigma"])
  keypoints, scores = _decode(heatmaps, affines, s["input_size"], s["decoding"], s["sigma"],
                              s["dark_kernel"], s["dark_sigma"])  # fmt: skip
  return Result(keypoints, scores, presence, found)
