"""``HeatmapCodec``: the one object that knows stride and heatmap size."""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax.numpy as jnp

from unipose_jax.codecs import coordinates
from unipose_jax.codecs import decoding as dec
from unipose_jax.codecs import encoding as enc


@dataclasses.dataclass(frozen=True)
class HeatmapCodec:
  """Keypoints (input pixels) <-> Gaussian heatmaps, DARK and baselines.

  Frozen and hashable: pass it as a static argument or close over it in
  ``jit``. All methods are pure jax.numpy and accept any leading batch shape.

  Attributes:
    input_size: ``(H, W)`` of the network input, e.g. ``(368, 368)``.
    heatmap_size: ``(h, w)`` of the heatmaps, e.g. ``(46, 46)`` (stride
      ``W / w`` in x and ``H / h`` in y; they may differ).
    sigma: Gaussian std of the targets, in heatmap pixels.
    encoding: default encoding, one of ``ENCODINGS`` ("unbiased", "quantized").
    decoding: default decoding, one of ``DECODINGS``
      ("argmax", "shift", "upsample", "dark").
    dark_kernel: odd size of DARK's modulation kernel; ``None`` means
      ``2 * ceil(3 * dark_sigma) + 1`` (19 for sigma 3).
    dark_sigma: std of DARK's modulation kernel in heatmap pixels; ``None``
      means ``sigma`` (the paper matches the training Gaussian).
  """

  input_size: tuple[int, int] = (368, 368)
  heatmap_size: tuple[int, int] = (46, 46)
  sigma: float = 3.0
  encoding: str = "unbiased"
  decoding: str = "dark"
  dark_kernel: int | None = None
  dark_sigma: float | None = None

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
    set_("input_size", coordinates.check_size(self.input_size, "input_size"))
    set_("heatmap_size", coordinates.check_size(self.heatmap_size, "heatmap_size", minimum=2))
    if any(small > big for small, big in zip(self.heatmap_size, self.input_size)):
      raise ValueError(
        f"heatmap_size {self.heatmap_size} must not exceed input_size {self.input_size}"
      )
    set_("sigma", _positive_float(self.sigma, "sigma"))
    enc.check_encoding(self.encoding)
    dec.check_decoding(self.decoding)
    if self.dark_sigma is not None:
      set_("dark_sigma", _positive_float(self.dark_sigma, "dark_sigma"))
    if self.dark_kernel is not None:
      k = self.dark_kernel
      if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise ValueError(f"dark_kernel must be a positive odd int or None, got {k!r}")
      set_("dark_kernel", int(k))

  # ----------------------------------------------------------------- geometry

  @property
  def stride(self) -> tuple[float, float]:
    """``(s_x, s_y) = (W / w, H / h)``, in keypoint order."""
    return coordinates.strides(self.input_size, self.heatmap_size)

  @property
  def dark_kernel_sigma(self) -> float:
    """The modulation kernel's std actually used (``dark_sigma`` or ``sigma``)."""
    return self.sigma if self.dark_sigma is None else self.dark_sigma

  @property
  def dark_kernel_size(self) -> int:
    """The modulation kernel size actually used."""
    if self.dark_kernel is not None:
      return self.dark_kernel
    return dec.default_dark_kernel(self.dark_kernel_sigma)

  def input_to_heatmap(self, xy) -> jnp.ndarray:
    """``(..., 2)`` input pixels -> heatmap pixels: ``(x + 0.5) / s - 0.5``."""
    return coordinates.input_to_heatmap(xy, self.input_size, self.heatmap_size)

  def heatmap_to_input(self, xy) -> jnp.ndarray:
    """``(..., 2)`` heatmap pixels -> input pixels: ``(x + 0.5) * s - 0.5``."""
    return coordinates.heatmap_to_input(xy, self.input_size, self.heatmap_size)

  # ----------------------------------------------------------------- coding

  def encode(self, keypoints, weights, encoding: str | None = None):
    """``(..., K, 2)`` input-pixel keypoints and ``(..., K)`` weights ->
    ``(heatmaps (..., h, w, K) float32, target_weights (..., K) float32)``.

    ``encoding`` overrides the instance's default for this call. Joints with
    weight <= 0, non-finite coordinates, or centres more than 3 sigma outside
    the map get zero target weight and an all-zero map.
    """
    return enc.encode_heatmaps(
      keypoints,
      weights,
      input_size=self.input_size,
      heatmap_size=self.heatmap_size,
      sigma=self.sigma,
      encoding=self.encoding if encoding is None else encoding,
    )

  def decode(self, heatmaps, decoding: str | None = None):
    """``(..., h, w, K)`` heatmaps -> ``(keypoints (..., K, 2), scores (..., K))``, float32.

    Keypoints are ``(x, y)`` in input pixels; scores are each map's maximum.
    ``decoding`` overrides the instance's default for this call.
    """
    self._check_heatmaps(heatmaps)
    return dec.decode_heatmaps(
      heatmaps,
      input_size=self.input_size,
      decoding=self.decoding if decoding is None else decoding,
      sigma=self.sigma,
      dark_kernel=self.dark_kernel_size,
      dark_sigma=self.dark_kernel_sigma,
    )

  def _check_heatmaps(self, heatmaps) -> None:
    shape = jnp.shape(heatmaps)
    if len(shape) < 3 or tuple(shape[-3:-1]) != self.heatmap_size:
      raise ValueError(
        f"heatmaps must have shape (..., {self.heatmap_size[0]}, {self.heatmap_size[1]}, K) "
        f"for heatmap_size={self.heatmap_size}, got {tuple(shape)}"
      )


def _positive_float(value, name: str) -> float:
  if (
    isinstance(value, bool)
    or not isinstance(value, numbers.Real)
    or not (math.isfinite(value) and value > 0)
  ):
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
  return float(value)
