"""ResNet backbones (torchvision "v1.5" layout) with dilation for output stride 8/16/32.

Layout, matching torchvision so that its weights load exactly (see
``torch_import.load_torchvision_resnet``):

* stem: 7x7/2 conv (bias-free) + BN + ReLU, then 3x3/2 max-pool (pad 1);
* four stages ``layer1..layer4`` with base widths ``width * (1, 2, 4, 8)``;
  ``BasicBlock`` (two 3x3 convs, expansion 1) for depths 18/34, ``Bottleneck``
  (1x1, 3x3, 1x1, expansion 4) for 50/101/152; the stride of a stage sits on
  its first block's 3x3 conv; a projection shortcut (1x1 conv + BN) wherever
  the shape changes;
* every conv is bias-free and followed by BatchNorm (momentum 0.9 == torch 0.1,
  eps 1e-5); every conv pads symmetrically, ``dilation * (k - 1) // 2``.

Output stride (UniPose / DeepLab-v3 convention):

* ``32``: plain ResNet (strides 1, 2, 2, 2; no dilation);
* ``16``: ``layer4`` stride 1; its blocks use dilations ``2 * multi_grid``
  = 2, 4, 8 (multi-grid);
* ``8``: ``layer3`` stride 1 with dilation 2 in every block; ``layer4``
  stride 1 with dilations ``4 * multi_grid`` = 4, 8, 16.

With more than ``len(multi_grid)`` blocks in ``layer4`` the multi-grid factors
repeat cyclically. A dilated ``BasicBlock`` dilates both of its 3x3 convs.

Parameter names (``conv1``, ``bn1``, ``layer3_5/conv2``, ``layer1_0/downsample_conv``,
...) mirror torchvision's state-dict keys (``conv1``, ``bn1``, ``layer3.5.conv2``,
``layer1.0.downsample.0``, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from unipose_jax.models.layers import BatchNormSync, batch_norm, conv, max_pool_3x3_s2

#: Output strides the backbone supports.
OUTPUT_STRIDES = (8, 16, 32)


class BasicBlock(nn.Module):
  """Two 3x3 convs with a residual connection (ResNet-18/34). Output channels ``features``.

  Input (B, H, W, C) -> (B, ceil(H / stride), ceil(W / stride), features).
  """

  features: int
  stride: int = 1
  dilation: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_sync: BatchNormSync | None = None  # whose statistics BatchNorm trains with

  expansion = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out = self.features * self.expansion
    y = conv(self.features, 3, stride=self.stride, dilation=self.dilation, name="conv1", **kw)(x)
    y = nn.relu(batch_norm(train, name="bn1", sync=self.bn_sync, **kw)(y))
    y = conv(self.features, 3, dilation=self.dilation, name="conv2", **kw)(y)
    y = batch_norm(train, name="bn2", sync=self.bn_sync, **kw)(y)
    if self.stride != 1 or x.shape[-1] != out:
      x = conv(out, 1, stride=self.stride, name="downsample_conv", **kw)(x)
      x = batch_norm(train, name="downsample_bn", sync=self.bn_sync, **kw)(x)
    return nn.relu(y + x)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride, dilation) -> 1x1 convs with a residual (ResNet-50/101/152).

  Input (B, H, W, C) -> (B, ceil(H / stride), ceil(W / stride), 4 * features).
  """

  features: int
  stride: int = 1
  dilation: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_sync: BatchNormSync | None = None  # whose statistics BatchNorm trains with

  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out = self.features * self.expansion
    y = conv(self.features, 1, name="conv1", **kw)(x)
    y = nn.relu(batch_norm(train, name="bn1", sync=self.bn_sync, **kw)(y))
    y = conv(self.features, 3, stride=self.stride, dilation=self.dilation, name="conv2", **kw)(y)
    y = nn.relu(batch_norm(train, name="bn2", sync=self.bn_sync, **kw)(y))
    y = conv(out, 1, name="conv3", **kw)(y)
    y = batch_norm(train, name="bn3", sync=self.bn_sync, **kw)(y)
    if self.stride != 1 or x.shape[-1] != out:
      x = conv(out, 1, stride=self.stride, name="downsample_conv", **kw)(x)
      x = batch_norm(train, name="downsample_bn", sync=self.bn_sync, **kw)(x)
    return nn.relu(y + x)


def stage_strides_and_dilations(
  output_stride: int, stage_sizes: Sequence[int], multi_grid: Sequence[int] = (1, 2, 4)
) -> list[tuple[int, list[int]]]:
  """Per stage ``(stride, [dilation of each block])`` for the given output stride.

  >>> stage_strides_and_dilations(16, (3, 4, 23, 3))[3]
  (1, [2, 4, 8])
  """
  if output_stride not in OUTPUT_STRIDES:
    raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
  if len(stage_sizes) != 4 or any(int(n) < 1 for n in stage_sizes):
    raise ValueError(f"stage_sizes must be 4 positive block counts, got {tuple(stage_sizes)}")
  if not multi_grid:
    raise ValueError("multi_grid must not be empty")
  strides = {32: (1, 2, 2, 2), 16: (1, 2, 2, 1), 8: (1, 2, 1, 1)}[output_stride]
  base = {32: (1, 1, 1, 1), 16: (1, 1, 1, 2), 8: (1, 1, 2, 4)}[output_stride]
  plan = []
  for i, (n, s, d) in enumerate(zip(stage_sizes, strides, base)):
    if i == 3 and output_stride != 32:
      dil = [d * multi_grid[j % len(multi_grid)] for j in range(int(n))]
    else:
      dil = [d] * int(n)
    plan.append((s, dil))
  return plan


class ResNet(nn.Module):
  """ResNet backbone returning named feature maps.

  Attributes:
    stage_sizes: blocks per stage, e.g. ``(3, 4, 23, 3)`` for ResNet-101.
    block_cls: ``BasicBlock`` or ``Bottleneck``.
    width: base channels (64 in the standard nets; e.g. 8 for a tiny test net).
    output_stride: 8, 16 or 32 (see the module docstring).
    multi_grid: dilation factors of the ``layer4`` blocks at output stride 8/16.
    dtype: compute dtype (e.g. ``jnp.bfloat16``); ``param_dtype`` stays float32.

  ``__call__(x, train)`` takes images (B, H, W, 3) and returns a dict:

  ========  ==========================  =======================================
  key       stride (w.r.t. the input)   channels
  ========  ==========================  =======================================
  stem      2 (after conv+BN+ReLU,      ``width``
            before the max-pool)
  layer1    4  (UniPose's low-level)    ``width * e``
  layer2    8                           ``2 * width * e``
  layer3    16, or 8 at OS 8            ``4 * width * e``
  layer4    ``output_stride``           ``8 * width * e``
  ========  ==========================  =======================================

  with ``e`` the block expansion (1 basic, 4 bottleneck). A map at stride ``s``
  of an ``H``-pixel input has ``ceil(H / s)`` rows (every stride-2 op maps
  ``n`` to ``(n - 1) // 2 + 1``).
  """

  stage_sizes: Sequence[int]
  block_cls: type[nn.Module] = Bottleneck
  width: int = 64
  output_stride: int = 16
  multi_grid: Sequence[int] = (1, 2, 4)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_sync: BatchNormSync | None = None  # whose statistics BatchNorm trains with

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> dict[str, jnp.ndarray]:
    if x.ndim != 4:
      raise ValueError(f"ResNet expects images of shape (B, H, W, C), got {x.shape}")
    plan = stage_strides_and_dilations(self.output_stride, self.stage_sizes, self.multi_grid)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    feats: dict[str, jnp.ndarray] = {}
    x = jnp.asarray(x, self.dtype)
    x = conv(self.width, 7, stride=2, name="conv1", **kw)(x)
    x = nn.relu(batch_norm(train, name="bn1", sync=self.bn_sync, **kw)(x))
    feats["stem"] = x
    x = max_pool_3x3_s2(x)
    for i, (stride, dilations) in enumerate(plan):
      for j, dilation in enumerate(dilations):
        x = self.block_cls(
          features=self.width * 2**i,
          stride=stride if j == 0 else 1,
          dilation=dilation,
          name=f"layer{i + 1}_{j}",
          bn_sync=self.bn_sync,
          **kw,
        )(x, train)
      feats[f"layer{i + 1}"] = x
    return feats


#: depth -> (block class, stage sizes), as in torchvision.
RESNET_SPECS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
  18: (BasicBlock, (2, 2, 2, 2)),
  34: (BasicBlock, (3, 4, 6, 3)),
  50: (Bottleneck, (3, 4, 6, 3)),
  101: (Bottleneck, (3, 4, 23, 3)),
  152: (Bottleneck, (3, 8, 36, 3)),
}

#: A tiny bottleneck net for tests: one block per stage (use with a small ``width``).
ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block_cls=Bottleneck)


def resnet(depth: int, **kwargs) -> ResNet:
  """The standard ResNet of ``depth`` (18, 34, 50, 101 or 152; torchvision's stage sizes)."""
  if depth not in RESNET_SPECS:
    raise ValueError(f"backbone_depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
  block_cls, stage_sizes = RESNET_SPECS[depth]
  return ResNet(stage_sizes=stage_sizes, block_cls=block_cls, **kwargs)
