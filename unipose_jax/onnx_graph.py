"""The UniPose network as an ONNX graph, built from a Flax module and its variables.

No tracing: the graph is written node by node with ``onnx.helper`` from the
module's hyper-parameters (backbone stage plan, WASP rates, projection repeats)
and the variables, in evaluation mode (BatchNorm running statistics, no
dropout). Every Flax variable must be consumed exactly by the graph, so an
architecture this builder does not know fails loudly instead of exporting a
different network. ``tests/test_export.py`` checks the graph against
``model.apply`` with onnxruntime.

Graph (channels-first inside, as ONNX's Conv wants)::

    images uint8 (N, H, W, 3) RGB
      -> Transpose NCHW -> Cast float32 -> x * 1 / (255 std) - mean / std   (ImageNet)
      -> ResNet (Conv with BatchNorm folded in, Relu, MaxPool 3x3/2 pad 1, Add)
      -> WASP (cascade; the shared 1x1 projection applied ``r`` times and the
         final 1x1 projection are folded into one 1x1 Conv on the concatenated
         cascade; the image-pooling branch is a GlobalAveragePool, 1x1 Convs,
         and a broadcast Add)
      -> decoder (Resize linear with ``align_corners``, Concat, Convs, head with bias)
      -> Transpose NHWC -> heatmaps float32 (N, ceil(H / 8), ceil(W / 8), C)

Folds are computed in float64 and stored as float32: ``W' = W * s``,
``b' = beta - mean * s`` with ``s = gamma / sqrt(var + eps)`` for BatchNorm, and
``P^r Wproj_i`` for the WASP projections (linear maps in a row).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from unipose_jax.models import IMAGENET_MEAN, IMAGENET_STD
from unipose_jax.models.layers import BN_EPSILON
from unipose_jax.models.resnet import ResNet, resnet, stage_strides_and_dilations
from unipose_jax.models.unipose import UniPose
from unipose_jax.models.wasp import default_wasp_rates

#: ONNX opset of the exported graph (Resize's ``axes`` attribute needs 18).
OPSET = 18


def _half(n: int) -> int:
  """Spatial size after a stride-2 conv or pool of this project: ``(n - 1) // 2 + 1``."""
  return (n - 1) // 2 + 1


class _Builder:
  """Collects nodes and initializers; hands out variables and records which were used."""

  def __init__(self, variables: Mapping[str, Any]):
    self.variables = variables
    self.nodes: list[onnx.NodeProto] = []
    self.inits: list[onnx.TensorProto] = []
    self.used: set[tuple[str, ...]] = set()
    self._count = 0

  def name(self, hint: str) -> str:
    self._count += 1
    return f"{hint}_{self._count}"

  def var(self, collection: str, *path: str) -> np.ndarray:
    """``variables[collection][path...]`` as float64; marks it used."""
    node = self.variables[collection]
    try:
      for key in path:
        node = node[key]
    except KeyError:
      raise ValueError(f"variables lack {collection}/{'/'.join(path)}") from None
    self.used.add((collection, *path))
    return np.asarray(node, np.float64)

  def has(self, *path: str) -> bool:
    node = self.variables["params"]
    for key in path:
      if key not in node:
        return False
      node = node[key]
    return True

  def const(self, hint: str, value: np.ndarray, dtype=np.float32) -> str:
    name = self.name(hint)
    self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
    return name

  def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
    out = self.name(hint or op_type.lower())
    self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
    return out

  # ----------------------------------------------------------------- layers

  def folded(
    self, scope: tuple[str, ...], conv: str, bn: str | None
  ) -> tuple[np.ndarray, np.ndarray]:
    """Kernel OIHW and bias (O,) of ``conv`` with BatchNorm ``bn`` folded in (float64)."""
    kernel = self.var("params", *scope, conv, "kernel").transpose(3, 2, 0, 1)
    out = kernel.shape[0]
    bias = self.var("params", *scope, conv, "bias") if self.has(*scope, conv, "bias") else None
    bias = np.zeros(out) if bias is None else bias
    if bn is None:
      return kernel, bias
    s = self.var("params", *scope, bn, "scale") / np.sqrt(
      self.var("batch_stats", *scope, bn, "var") + BN_EPSILON
    )
    beta = self.var("params", *scope, bn, "bias")
    mean = self.var("batch_stats", *scope, bn, "mean")
    return kernel * s[:, None, None, None], beta + (bias - mean) * s

  def conv(self, x: str, kernel, bias, *, stride=1, dilation=1, relu=False, hint="conv") -> str:
    """Conv (OIHW kernel, symmetric padding ``dilation * (k - 1) // 2``), optionally Relu."""
    k = kernel.shape[-1]
    p = dilation * (k - 1) // 2
    y = self.op(
      "Conv",
      [x, self.const(f"{hint}_w", kernel), self.const(f"{hint}_b", bias)],
      hint,
      kernel_shape=[k, k],
      strides=[stride, stride],
      dilations=[dilation, dilation],
      pads=[p, p, p, p],
    )
    return self.op("Relu", [y]) if relu else y

  def conv_bn(self, x, scope, conv, bn, *, stride=1, dilation=1, relu=True) -> str:
    kernel, bias = self.folded(scope, conv, bn)
    hint = "_".join((*scope, conv))
    return self.conv(x, kernel, bias, stride=stride, dilation=dilation, relu=relu, hint=hint)

  def max_pool(self, x: str) -> str:
    """``MaxPool2d(3, 2, padding=1)``: ONNX MaxPool ignores padded cells, as -inf padding does."""
    return self.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])


def _backbone(model: UniPose) -> ResNet:
  make = model.backbone or (lambda **kw: resnet(model.backbone_depth, **kw))
  net = make(output_stride=model.output_stride, width=model.backbone_width, name="backbone")
  if not isinstance(net, ResNet):
    raise NotImplementedError(f"ONNX export supports ResNet backbones, got {type(net).__name__}")
  return net


def _resnet(b: _Builder, x: str, net: ResNet, size: tuple[int, int]):
  """Emits the backbone; returns ``(layer1, layer4, layer1 size, layer4 size)``."""
  scope = ("backbone",)
  x = b.conv_bn(x, scope, "conv1", "bn1", stride=2)
  x = b.max_pool(x)
  size = (_half(_half(size[0])), _half(_half(size[1])))
  layer1 = layer1_size = None
  plan = stage_strides_and_dilations(net.output_stride, net.stage_sizes, net.multi_grid)
  bottleneck = net.block_cls.expansion == 4
  for i, (stride, dilations) in enumerate(plan):
    for j, dilation in enumerate(dilations):
      s = stride if j == 0 else 1
      blk = ("backbone", f"layer{i + 1}_{j}")
      if bottleneck:
        y = b.conv_bn(x, blk, "conv1", "bn1")
        y = b.conv_bn(y, blk, "conv2", "bn2", stride=s, dilation=dilation)
        y = b.conv_bn(y, blk, "conv3", "bn3", relu=False)
      else:
        y = b.conv_bn(x, blk, "conv1", "bn1", stride=s, dilation=dilation)
        y = b.conv_bn(y, blk, "conv2", "bn2", dilation=dilation, relu=False)
      if b.has(*blk, "downsample_conv"):
        x = b.conv_bn(x, blk, "downsample_conv", "downsample_bn", stride=s, relu=False)
      x = b.op("Relu", [b.op("Add", [y, x])])
      if s == 2:
        size = (_half(size[0]), _half(size[1]))
    if i == 0:
      layer1, layer1_size = x, size
  return layer1, x, layer1_size, size


def _wasp(b: _Builder, x: str, model: UniPose) -> str:
  """Emits WASP (see the module docstring for the folded projections)."""
  scope = ("wasp",)
  rates = model.wasp_rates or default_wasp_rates(model.output_stride)
  branch = b.conv_bn(x, scope, "branch0_conv", "branch0_bn")
  branches = [branch]
  for i, rate in enumerate(rates, start=1):
    branch = b.conv_bn(branch, scope, f"branch{i}_conv", f"branch{i}_bn", dilation=int(rate))
    branches.append(branch)
  f = model.wasp_features
  proj = np.eye(f)
  if model.wasp_projection_repeats > 0:
    p = b.var("params", "wasp", "branch_proj", "kernel")[0, 0]  # (F_in, F_out): x @ p
    proj = np.linalg.matrix_power(p, model.wasp_projection_repeats)
  w, bias = b.folded(scope, "project_conv", "project_bn")  # (F, 5F, 1, 1)
  w = w[:, :, 0, 0]
  n = len(branches)
  cascade_w = np.concatenate([(proj @ w[:, i * f : (i + 1) * f].T).T for i in range(n)], axis=1)
  pool_w = w[:, n * f :]
  y = b.conv(b.op("Concat", branches, axis=1), cascade_w[:, :, None, None], bias, hint="wasp_proj")
  pooled = b.conv_bn(b.op("GlobalAveragePool", [x]), scope, "pool_conv", "pool_bn")
  pooled = b.conv(pooled, pool_w[:, :, None, None], np.zeros(len(bias)), hint="wasp_pool_proj")
  return b.op("Relu", [b.op("Add", [y, pooled])])


def _decoder(b: _Builder, x: str, low: str, x_size, low_size) -> str:
  scope = ("decoder",)
  low = b.max_pool(b.conv_bn(low, scope, "low_conv", "low_bn"))
  out_size = (_half(low_size[0]), _half(low_size[1]))
  if tuple(x_size) != out_size:
    sizes = b.const("resize_sizes", np.asarray(out_size), np.int64)
    x = b.op(
      "Resize",
      [x, "", "", sizes],
      axes=[2, 3],
      mode="linear",
      coordinate_transformation_mode="align_corners",
    )
  y = b.op("Concat", [x, low], axis=1)
  y = b.conv_bn(y, scope, "conv1", "bn1")
  y = b.conv_bn(y, scope, "conv2", "bn2")
  return b.conv(y, *b.folded(scope, "head", None), hint="decoder_head")


def _unused(variables: Mapping[str, Any], used: set[tuple[str, ...]]) -> list[str]:
  out = []

  def walk(node, path):
    if isinstance(node, Mapping):
      for k, v in node.items():
        walk(v, (*path, k))
    elif path not in used:
      out.append("/".join(path))

  for collection in ("params", "batch_stats"):
    walk(variables.get(collection, {}), (collection,))
  return out


def build_unipose_graph(
  model: UniPose, variables: Mapping[str, Any], input_size: tuple[int, int], *, name="unipose"
) -> onnx.ModelProto:
  """The evaluation-mode network as an ``onnx.ModelProto`` (opset :data:`OPSET`).

  Input ``images``: uint8 (N, H, W, 3) RGB with ``(H, W) = input_size`` and a
  dynamic batch N; output ``heatmaps``: float32 (N, ceil(H / 8), ceil(W / 8), C)
  with C the head's channels (K + 1, background first), the same as
  ``model.apply(variables, normalize(images), train=False)``.

  Raises:
    NotImplementedError: for a backbone that is not a ``ResNet``.
    ValueError: when the variables do not fit the module (missing or unused entries).
  """
  if not isinstance(model, UniPose):
    raise NotImplementedError(f"ONNX export supports UniPose modules, got {type(model).__name__}")
  h, w = input_size
  b = _Builder(variables)
  x = b.op("Transpose", ["images"], perm=[0, 3, 1, 2])
  x = b.op("Cast", [x], to=TensorProto.FLOAT)
  mean, std = np.asarray(IMAGENET_MEAN, np.float64), np.asarray(IMAGENET_STD, np.float64)
  x = b.op("Mul", [x, b.const("norm_scale", (1.0 / (255.0 * std)).reshape(1, 3, 1, 1))])
  x = b.op("Add", [x, b.const("norm_offset", (-mean / std).reshape(1, 3, 1, 1))])
  layer1, layer4, layer1_size, layer4_size = _resnet(b, x, _backbone(model), (h, w))
  y = _decoder(b, _wasp(b, layer4, model), layer1, layer4_size, layer1_size)
  b.nodes.append(
    helper.make_node("Transpose", [y], ["heatmaps"], name="heatmaps", perm=[0, 2, 3, 1])
  )
  unused = _unused(variables, b.used)
  if unused:
    raise ValueError(
      f"{len(unused)} variables are not part of the exported graph (architecture mismatch?): "
      f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}"
    )
  channels = int(np.asarray(variables["params"]["decoder"]["head"]["kernel"]).shape[-1])
  hm = (_half(_half(_half(h))), _half(_half(_half(w))))
  graph = helper.make_graph(
    b.nodes,
    name,
    [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", h, w, 3])],
    [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", *hm, channels])],
    initializer=b.inits,
  )
  proto = helper.make_model(
    graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="unipose_jax"
  )
  proto.ir_version = min(proto.ir_version, 10)  # readable by older runtimes too
  onnx.checker.check_model(proto)
  return onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
