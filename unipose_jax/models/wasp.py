"""WASP: Waterfall Atrous Spatial Pooling (UniPose, Artacho & Savakis 2020).

Data flow, with ``F = features`` (256) and rates ``(r1, r2, r3)`` =
``(18, 12, 6)`` at output stride 16 (``(36, 24, 12)`` at output stride 8)::

    x (B, h, w, C) ──1x1 conv F + BN + ReLU──> b0
                   b0 ──3x3 conv, dilation r1 + BN + ReLU──> b1
                   b1 ──3x3 conv, dilation r2 + BN + ReLU──> b2
                   b2 ──3x3 conv, dilation r3 + BN + ReLU──> b3
    each bi ──P──P──> (P: ONE shared 1x1 conv F -> F, no bias, no BN, no ReLU)
    x ──global avg pool──1x1 conv F + BN + ReLU──broadcast to (h, w)──> b4
    concat(P(P(b0)), P(P(b1)), P(P(b2)), P(P(b3)), b4)   (5F = 1280 channels)
      ──1x1 conv F + BN + ReLU + dropout 0.5──> (B, h, w, F)

Cascade order. design.md says "a 1x1 conv to 256, then 3x3 atrous convs at
rates 18, 12, 6 in a cascade (each fed by the previous one)". The original code
lists the rates as ``[24, 18, 12, 6]`` and gives the first one to a 1x1 conv,
where a dilation has no effect; so the first branch is a plain 1x1 conv on the
backbone's output, and the atrous cascade starts from that branch's output with
the largest rate. That is what is implemented: the waterfall is
``1x1 -> r1 -> r2 -> r3`` with decreasing rates, and every stage is kept.

Shared projection (deliberately REPRODUCED from the original). The original
applies one 1x1 conv weight ``conv2`` (256 -> 256, bias-free) twice to each of
the four cascade outputs, with no normalisation or nonlinearity in between.
Two linear maps in a row are one linear map (``W @ W``), so this adds no
expressive power, but it is kept so that the parameter count and the function
match the original (and original checkpoints could be mapped); the PyTorch
twin in ``tests/test_model_parity_torch.py`` does the same. Set
``projection_repeats=0`` to drop it (then ``branch_proj`` has no parameters),
or ``1`` to apply it once.

Video WASP (``pool_batch_norm=False``). The original's UniPose-LSTM builds its trunk with
``model/modules/waspVideo.py``, which is this module with ONE difference: its image-pooling
branch is ``AdaptiveAvgPool2d(1) -> 1x1 conv (no bias) -> ReLU``, without the BatchNorm
(commented out there). Everything else (rates, the shared projection applied twice, the
final 1x1 + BN + ReLU + dropout) is the same. With ``pool_batch_norm=False`` there is no
``pool_bn`` (in the original's state dict: no ``wasp.global_avg_pool.2.*``).

The image-pooling branch is 1x1 spatially; upsampling a 1x1 map bilinearly
with ``align_corners=True`` (the original) is a broadcast, which is what is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from unipose_jax.models.layers import BatchNormSync, batch_norm, conv

#: Atrous rates at output stride 16; they double at output stride 8.
WASP_RATES_OS16: tuple[int, int, int] = (18, 12, 6)


def default_wasp_rates(output_stride: int) -> tuple[int, ...]:
  """UniPose's cascade rates: (18, 12, 6) at output stride 16, (36, 24, 12) at 8, (9, 6, 3) at 32."""
  if output_stride not in (8, 16, 32):
    raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
  return tuple(r * 16 // output_stride for r in WASP_RATES_OS16)


class WASP(nn.Module):
  """Waterfall Atrous Spatial Pooling; see the module docstring for the exact graph.

  Attributes:
    rates: dilation of each 3x3 conv of the cascade, in order (default 18, 12, 6).
    features: width of every branch and of the output (256).
    dropout_rate: dropout after the final 1x1 projection (0.5); rng stream ``'dropout'``.
    projection_repeats: how often the shared 1x1 ``branch_proj`` is applied to
      each cascade output (2 = the original).
    pool_batch_norm: BatchNorm in the image-pooling branch (True, the image model);
      False is the original's video WASP (``waspVideo``), conv + ReLU only.

  ``__call__(x, train)``: (B, h, w, C) -> (B, h, w, features), in ``dtype``.
  Parameter names: ``branch0_conv/bn`` (1x1), ``branch{1,2,3}_conv/bn`` (atrous),
  ``branch_proj``, ``pool_conv/bn`` (no ``pool_bn`` in the video WASP), ``project_conv/bn``.
  """

  rates: Sequence[int] = WASP_RATES_OS16
  features: int = 256
  dropout_rate: float = 0.5
  projection_repeats: int = 2
  pool_batch_norm: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_sync: BatchNormSync | None = None  # whose statistics BatchNorm trains with

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    f = self.features
    b = conv(f, 1, name="branch0_conv", **kw)(x)
    b = nn.relu(batch_norm(train, name="branch0_bn", sync=self.bn_sync, **kw)(b))
    branches = [b]
    for i, rate in enumerate(self.rates, start=1):
      b = conv(f, 3, dilation=int(rate), name=f"branch{i}_conv", **kw)(b)
      b = nn.relu(batch_norm(train, name=f"branch{i}_bn", sync=self.bn_sync, **kw)(b))
      branches.append(b)
    if self.projection_repeats > 0:
      proj = conv(f, 1, name="branch_proj", **kw)  # one weight, shared by all uses
      for _ in range(self.projection_repeats):
        branches = [proj(b) for b in branches]

    pooled = jnp.mean(jnp.asarray(x, jnp.float32), axis=(1, 2), keepdims=True).astype(self.dtype)
    pooled = conv(f, 1, name="pool_conv", **kw)(pooled)
    if self.pool_batch_norm:
      pooled = batch_norm(train, name="pool_bn", sync=self.bn_sync, **kw)(pooled)
    pooled = nn.relu(pooled)
    pooled = jnp.broadcast_to(pooled, branches[0].shape[:3] + (f,))

    y = jnp.concatenate([*branches, pooled], axis=-1)
    y = conv(f, 1, name="project_conv", **kw)(y)
    y = nn.relu(batch_norm(train, name="project_bn", sync=self.bn_sync, **kw)(y))
    return nn.Dropout(self.dropout_rate, deterministic=not train)(y)
