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

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
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


@dataclasses.dataclass(frozen=True)
class BatchNormSync:
  """Whose statistics a training-mode BatchNorm normalises with (``model.bn_sync``).

  Under ``pmap`` a device sees its own slice of the batch: ``axis_name`` averages the
  statistics over that axis (every device: all of them), restricted to
  ``axis_index_groups`` when given; ``axis_name=None`` keeps each device's own.
  Under ``jit`` the layer sees the global batch (B, ...): ``batch_groups`` > 1 cuts it
  into that many equal runs of consecutive examples (one run per device, or per group of
  devices, of the batch-sharded mesh), each normalised with its own statistics.

  Running averages (evaluation, checkpoints) always receive ONE set of statistics: the
  mean over groups of each group's mean and (biased) variance, identical on every device.
  """

  axis_name: str | None = None
  axis_index_groups: tuple[tuple[int, ...], ...] | None = None
  batch_groups: int = 1

  @property
  def all_devices(self) -> bool:
    """Whether (under pmap) every device already normalises with the same statistics."""
    return self.axis_name is not None and self.axis_index_groups is None


def batch_norm(
  train: bool,
  *,
  dtype: Any = jnp.float32,
  param_dtype: Any = jnp.float32,
  name: str | None = None,
  sync: BatchNormSync | None = None,
) -> nn.Module:
  """BatchNorm with PyTorch's defaults: batch statistics when ``train``, running averages otherwise.

  Note: PyTorch updates ``running_var`` with the unbiased batch variance, Flax
  with the biased one; inference with imported statistics is identical.
  ``sync`` (:class:`BatchNormSync`) says whose statistics normalise in training; by
  default the statistics of the batch the layer sees.
  """
  sync = sync or BatchNormSync()
  kw = dict(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype, param_dtype=param_dtype)
  if train and sync.batch_groups > 1:
    return GroupBatchNorm(groups=sync.batch_groups, name=name, **kw)
  groups = None if sync.axis_index_groups is None else [list(g) for g in sync.axis_index_groups]
  return nn.BatchNorm(
    use_running_average=not train, axis_name=sync.axis_name, axis_index_groups=groups,
    name=name, **kw,
  )  # fmt: skip


class GroupBatchNorm(nn.Module):
  """Training-mode BatchNorm whose statistics are those of ``groups`` equal runs of the batch.

  (B, ..., C) is viewed as (groups, B / groups, ..., C); each group is normalised with its
  own mean and biased variance (float32, as ``nn.BatchNorm``). The running averages take
  the mean over groups of those statistics. Parameters and batch statistics are named and
  shaped as ``nn.BatchNorm``'s (``scale``, ``bias``; ``mean``, ``var``), so checkpoints,
  weight import and evaluation (plain ``nn.BatchNorm`` on the running averages) do not
  change.
  """

  groups: int
  momentum: float = BN_MOMENTUM
  epsilon: float = BN_EPSILON
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    if x.shape[0] % self.groups:
      raise ValueError(f"a batch of {x.shape[0]} does not split into {self.groups} groups")
    g = x.reshape((self.groups, x.shape[0] // self.groups) + x.shape[1:]).astype(jnp.float32)
    axes = tuple(range(1, g.ndim - 1))
    mean = g.mean(axes)  # (groups, C)
    var = jnp.maximum(0.0, jnp.square(g).mean(axes) - jnp.square(mean))
    if not self.is_initializing():
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1 - m) * mean.mean(0)
      ra_var.value = m * ra_var.value + (1 - m) * var.mean(0)
    shape = (self.groups,) + (1,) * (g.ndim - 2) + (c,)
    mul = jax.lax.rsqrt(var.reshape(shape) + self.epsilon) * scale
    y = (g - mean.reshape(shape)) * mul + bias
    return y.reshape(x.shape).astype(self.dtype)


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
