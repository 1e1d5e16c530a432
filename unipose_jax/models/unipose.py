"""UniPose: ResNet backbone + WASP + decoder -> K + 1 (+ 5) heatmaps at stride 8.

Input convention: ``images`` are (B, H, W, 3) floats, RGB, scaled to [0, 1] and
then ImageNet-normalised per channel, ``(x - IMAGENET_MEAN) / IMAGENET_STD``
(the normalisation torchvision's pretrained weights expect). The model does not
normalise; the jitted steps do, on the device, with :func:`normalize` (batches
travel as uint8).

Output: float32 heatmaps (B, h8, w8, C) with ``h8 = ceil(H / 8)`` (46 for 368), at
stride ``HEATMAP_STRIDE`` = 8 (this module owns the stride; how heatmap pixels map to
input pixels is the codec's business, design.md section 5). Channel 0 is the
background map, channels ``1..K`` the joints in ``unipose_jax.skeleton`` order and,
with ``box_head``, channels ``K+1..K+5`` the person box's centre and corners
(``skeleton.BOX_POINT_NAMES``), so ``C = K + 1 (+ 5)`` (:func:`skeleton.num_maps`;
:func:`skeleton.split_maps` splits them). The model never sees keypoints.

Dropout uses the rng stream ``'dropout'``; BatchNorm statistics live in the
``'batch_stats'`` collection (make it mutable when ``train=True``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from unipose_jax import geometry
from unipose_jax.models.decoder import Decoder
from unipose_jax.models.layers import BatchNormSync
from unipose_jax.models.resnet import ResNetTiny, resnet
from unipose_jax.models.wasp import WASP, default_wasp_rates
from unipose_jax.skeleton import num_maps, split_maps  # noqa: F401 (the channel layout)

#: ImageNet channel statistics (RGB) the input images are normalised with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Stride of the output heatmaps w.r.t. the input image.
HEATMAP_STRIDE = 8


def normalize(images: jnp.ndarray, dtype: Any = jnp.float32) -> jnp.ndarray:
  """uint8 RGB ``(..., 3)`` (values 0..255) -> ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``.

  The input convention of :class:`UniPose`; runs inside the jitted steps, on the device.
  """
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32) * 255.0
  inv_std = 1.0 / (jnp.asarray(IMAGENET_STD, jnp.float32) * 255.0)
  return ((jnp.asarray(images, jnp.float32) - mean) * inv_std).astype(dtype)


def heatmap_size(input_size):
  """Heatmap size for an input size, ``ceil(input_size / HEATMAP_STRIDE)`` per axis: a side
  for a side (368 -> 46), ``(h, w)`` for an ``(H, W)`` pair ((256, 192) -> (32, 24))."""
  if np.ndim(input_size) == 0:
    return -(-int(input_size) // HEATMAP_STRIDE)
  height, width = geometry.input_hw(input_size, "input_size")
  return -(-height // HEATMAP_STRIDE), -(-width // HEATMAP_STRIDE)


class UniPose(nn.Module):
  """Single-stage pose network (see the module docstring for input/output conventions).

  Attributes:
    num_joints: K; the output has K + 1 channels (background first).
    box_head: add the 5 maps of the person box after the joint maps (UniPose's
      single-stage box).
    backbone_depth: ResNet depth (18, 34, 50, 101, 152); ignored when ``backbone`` is set.
    backbone: optional backbone constructor, called as
      ``backbone(output_stride=, width=, dtype=, param_dtype=, name="backbone")``
      and returning a module whose ``__call__(x, train)`` gives a dict with
      ``'layer1'`` (stride 4) and ``'layer4'`` (stride ``output_stride``), e.g.
      ``functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block_cls=Bottleneck)``.
    output_stride: backbone output stride, 8 or 16 (32 also works).
    wasp_rates: cascade rates; default (18, 12, 6) scaled by 16 / output_stride.
    backbone_width: backbone base width (64).
    wasp_features, low_level_features, decoder_features: 256, 48, 256.
    wasp_dropout: 0.5; decoder_dropouts: (0.5, 0.1).
    wasp_projection_repeats: see ``WASP`` (2 = the original's shared 1x1 applied twice).
    wasp_pool_batch_norm: see ``WASP`` (False = the original's video WASP, ``waspVideo``).
    input_channels: channels of ``images`` (3, RGB; 4 for UniPose-LSTM's released
      checkpoint, whose first convolution also takes a centre map).
    dtype: compute dtype (e.g. ``jnp.bfloat16``); parameters are ``param_dtype``
      (float32) and the returned heatmaps are always float32.

  Parameters are grouped as ``backbone``, ``wasp``, ``decoder``.
  """

  num_joints: int
  box_head: bool = False
  backbone_depth: int = 101
  backbone: Callable[..., nn.Module] | None = None
  output_stride: int = 16
  wasp_rates: Sequence[int] | None = None
  backbone_width: int = 64
  wasp_features: int = 256
  low_level_features: int = 48
  decoder_features: int = 256
  wasp_dropout: float = 0.5
  decoder_dropouts: Sequence[float] = (0.5, 0.1)
  wasp_projection_repeats: int = 2
  wasp_pool_batch_norm: bool = True
  input_channels: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_sync: BatchNormSync | None = None  # whose statistics BatchNorm trains with

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
    if images.ndim != 4 or images.shape[-1] != self.input_channels:
      raise ValueError(
        f"UniPose expects images of shape (B, H, W, {self.input_channels}), got {images.shape}"
      )
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, bn_sync=self.bn_sync)
    if self.backbone is not None:
      make_backbone = self.backbone
    else:
      make_backbone = functools.partial(resnet, self.backbone_depth)
    feats = make_backbone(
      output_stride=self.output_stride, width=self.backbone_width, name="backbone", **kw
    )(images, train)
    rates = (
      self.wasp_rates if self.wasp_rates is not None else default_wasp_rates(self.output_stride)
    )
    x = WASP(
      rates=tuple(rates),
      features=self.wasp_features,
      dropout_rate=self.wasp_dropout,
      projection_repeats=self.wasp_projection_repeats,
      pool_batch_norm=self.wasp_pool_batch_norm,
      name="wasp",
      **kw,
    )(feats["layer4"], train)
    x = Decoder(
      num_outputs=num_maps(self.num_joints, self.box_head),
      low_level_features=self.low_level_features,
      features=self.decoder_features,
      dropout_rates=tuple(self.decoder_dropouts),
      name="decoder",
      **kw,
    )(x, feats["layer1"], train)
    return x.astype(jnp.float32)


UniPose101 = functools.partial(UniPose, backbone_depth=101)

#: A tiny UniPose for tests: bottleneck backbone with one block per stage, width 8
#: (layer4 has 256 channels), WASP/decoder 16 wide, low-level 8: 151,575 parameters
#: for 14 joints.
UniPoseTiny = functools.partial(
  UniPose,
  backbone=ResNetTiny,
  backbone_width=8,
  wasp_features=16,
  low_level_features=8,
  decoder_features=16,
)
