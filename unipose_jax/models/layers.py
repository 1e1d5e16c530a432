"""Small building blocks shared by the backbone, WASP and decoder.

Everything here is channels-last (NHWC) and reproduces PyTorch semantics exactly,
so that weights trained in PyTorch/torchvision give the same outputs here:

* convolutions pad symmetrically by ``dilation * (k - 1) // 2`` on each side
  (never Flax's ``"SAME"``, which pads asymmetrically for strided convs on even
  sizes);
* max-pooling pads with ``-inf`` (PyTorch's ``MaxPool2d(padding=1)``);
* bilinear resizing uses ``align_corners=True`` sampling (``jax.image.resize``
  samples at half-pixel centres, which is a different function).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

#: He/Kaiming normal with fan-out, as torchvision initialises ResNet convs.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

#: PyTorch BatchNorm2d defaults: torch momentum 0.1 == Flax momentum 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def torch_padding(kernel_size: int, dilation: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
  """Symmetric padding ``((p, p), (p, p))`` with ``p = dilation * (kernel_size - 1) // 2``."""
  p = dilation * (kernel_size - 1) // 2
  return ((p, p), (p, p))


def conv(
  features: int,
  kernel_size: int,
  *,
  stride: int = 1,
  dilation: int = 1,
  use_bias: bool = False,
  dtype: Any = jnp.float32,
  param_dtype: Any = jnp.float32,
  name: str | None = None,
) -> nn.Conv:
  """A square ``nn.Conv`` with PyTorch-style explicit symmetric padding.

  Kernel shape is HWIO ``(k, k, in, features)``; bias-free unless ``use_bias``.
  """
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    strides=(stride, stride),
    kernel_dilation=(dilation, dilation),
    padding=torch_padding(kernel_size, dilation),
    use_bias=use_bias,
    kernel_init=conv_kernel_init,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
  )


def batch_norm(
  train: bool,
  *,
  dtype: Any = jnp.float32,
  param_dtype: Any = jnp.float32,
  name: str | None = None,
  axis_name: str | None = None,
) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults: batch statistics when ``train``, running averages otherwise.

  Note: PyTorch updates ``running_var`` with the unbiased batch variance, Flax
  with the biased one; inference with imported statistics is identical.
  ``axis_name`` (under ``pmap``) averages the batch statistics over that axis, so
  every device normalises with the statistics of the global batch.
  """
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
    axis_name=axis_name,
  )


def max_pool_3x3_s2(x: jnp.ndarray) -> jnp.ndarray:
  """``nn.MaxPool2d(3, stride=2, padding=1)``: (B, H, W, C) -> (B, (H-1)//2+1, (W-1)//2+1, C).

  Padding cells hold ``-inf`` so they never win the maximum.
  """
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


@functools.lru_cache(maxsize=256)
def _align_corners_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source indices ``i0, i1`` and weight ``frac`` of ``i1`` for each output position.

  Output position ``o`` samples source coordinate ``o * (in - 1) / (out - 1)``
  (``0`` when ``out == 1``), so the first and last samples sit exactly on the
  first and last input pixels.
  """
  if out_size == 1 or in_size == 1:
    src = np.zeros(out_size, np.float64)
  else:
    src = np.arange(out_size, dtype=np.float64) * ((in_size - 1) / (out_size - 1))
  i0 = np.clip(np.floor(src).astype(np.int32), 0, in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  frac = (src - i0).astype(np.float32)
  return i0, i1, frac


def _lerp_axis(x: jnp.ndarray, axis: int, out_size: int) -> jnp.ndarray:
  in_size = x.shape[axis]
  if in_size == out_size:
    return x
  i0, i1, frac = _align_corners_taps(in_size, out_size)
  a = jnp.take(x, jnp.asarray(i0), axis=axis)
  b = jnp.take(x, jnp.asarray(i1), axis=axis)
  shape = [1] * x.ndim
  shape[axis] = out_size
  w = jnp.asarray(frac).reshape(shape).astype(x.dtype)
  return a + (b - a) * w


def resize_bilinear_align_corners(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """Bilinear resize of (B, H, W, C) to (B, size[0], size[1], C), ``align_corners=True``.

  Same function as ``torch.nn.functional.interpolate(x, size, mode="bilinear",
  align_corners=True)``: output pixel ``(i, j)`` samples the input at
  ``(i * (H - 1) / (h - 1), j * (W - 1) / (w - 1))``. Separable (rows, then
  columns), computed in ``x.dtype``; shapes must be static. A 1x1 input is
  broadcast.
  """
  if x.ndim != 4:
    raise ValueError(f"resize_bilinear_align_corners expects (B, H, W, C), got shape {x.shape}")
  out_h, out_w = (int(s) for s in size)
  if out_h < 1 or out_w < 1:
    raise ValueError(f"resize_bilinear_align_corners: output size must be positive, got {size}")
  x = _lerp_axis(x, 1, out_h)
  return _lerp_axis(x, 2, out_w)
