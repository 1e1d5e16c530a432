"""UniPose's heatmap decoder: fuse the WASP output with stride-4 low-level features.

Graph (widths are the defaults)::

    low (B, H/4, W/4, C_low) ──1x1 conv 48 + BN + ReLU──3x3/2 max-pool (pad 1)──> l (B, h8, w8, 48)
    x   (B, h, w, 256)       ──bilinear, align_corners=True, to (h8, w8)──────> u (B, h8, w8, 256)
    concat(u, l) (304) ──3x3 conv 256 + BN + ReLU + dropout 0.5
                       ──3x3 conv 256 + BN + ReLU + dropout 0.1
                       ──1x1 conv K+1 (with bias)──> (B, h8, w8, K + 1)

The concatenation order (upsampled WASP output first, low-level second) is the
original's. The stride-8 size ``h8`` is the max-pooled low-level map's size,
``(H/4 - 1) // 2 + 1`` (46 for a 368 input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from unipose_jax.models.layers import (
  BatchNormSync,
  batch_norm,
  conv,
  max_pool_3x3_s2,
  resize_bilinear_align_corners,
)


class Decoder(nn.Module):
  """Low-level fusion decoder producing ``num_outputs`` maps at stride 8.

  Attributes:
    num_outputs: output channels, ``K + 1`` (background first, by convention of the caller).
    low_level_features: width of the reduced low-level map (48).
    features: width of the two 3x3 convs (256).
    dropout_rates: dropout after the first and the second 3x3 conv (0.5, 0.1).

  ``__call__(x, low_level, train)``: ``x`` (B, h, w, C), ``low_level`` (B, H4, W4, C_low)
  -> (B, (H4 - 1) // 2 + 1, (W4 - 1) // 2 + 1, num_outputs), in ``dtype``.
  Parameter names: ``low_conv/bn``, ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``head``.
  """

  num_outputs: int
  low_level_features: int = 48
  features: int = 256
  dropout_rates: Sequence[float] = (0.5, 0.1)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_sync: BatchNormSync | None = None  # whose statistics BatchNorm trains with

  @nn.compact
  def __call__(self, x: jnp.ndarray, low_level: jnp.ndarray, train: bool) -> jnp.ndarray:
    if len(self.dropout_rates) != 2:
      raise ValueError(f"Decoder.dropout_rates needs 2 rates, got {tuple(self.dropout_rates)}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    low = conv(self.low_level_features, 1, name="low_conv", **kw)(low_level)
    low = nn.relu(batch_norm(train, name="low_bn", sync=self.bn_sync, **kw)(low))
    low = max_pool_3x3_s2(low)
    x = resize_bilinear_align_corners(jnp.asarray(x, self.dtype), low.shape[1:3])
    y = jnp.concatenate([x, low], axis=-1)
    for i, rate in enumerate(self.dropout_rates, start=1):
      y = conv(self.features, 3, name=f"conv{i}", **kw)(y)
      y = nn.relu(batch_norm(train, name=f"bn{i}", sync=self.bn_sync, **kw)(y))
      y = nn.Dropout(rate, deterministic=not train)(y)
    return conv(self.num_outputs, 1, use_bias=True, name="head", **kw)(y)
