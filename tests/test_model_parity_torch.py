"""Parity of the Flax UniPose with an independent PyTorch twin (eval mode, float32).

The twin is written here from the original UniPose / torchvision structure (module
names are torchvision's, so its backbone state dict goes through
``load_torchvision_resnet``); WASP and decoder weights are copied by an explicit
name map. Weights AND BatchNorm running statistics are random.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
  "torch", reason="the PyTorch parity tests need torch (pip install unipose_jax[torch])"
)
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from unipose_jax.models import BasicBlock, Bottleneck, ResNet, UniPose, load_torchvision_resnet  # noqa: E402

torch.set_num_threads(1)


# --------------------------------------------------------------------------- the PyTorch twin


class TBasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(
      inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False
    )
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class TBottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(
      planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False
    )
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class TResNet(nn.Module):
  """DeepLab-style dilated ResNet (as UniPose's backbone), torchvision key names."""

  def __init__(self, block, layers, width, output_stride):
    super().__init__()
    if output_stride == 16:
      strides, dilations = [1, 2, 2, 1], [1, 1, 1, 2]
    elif output_stride == 8:
      strides, dilations = [1, 2, 1, 1], [1, 1, 2, 4]
    else:
      raise ValueError(output_stride)
    self.inplanes = width
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.layer1 = self._make_layer(block, width, [dilations[0]] * layers[0], strides[0])
    self.layer2 = self._make_layer(block, width * 2, [dilations[1]] * layers[1], strides[1])
    self.layer3 = self._make_layer(block, width * 4, [dilations[2]] * layers[2], strides[2])
    multi_grid = [1, 2, 4][: layers[3]]  # the MG unit
    self.layer4 = self._make_layer(
      block, width * 8, [dilations[3] * g for g in multi_grid], strides[3]
    )

  def _make_layer(self, block, planes, block_dilations, stride):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
        nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
        nn.BatchNorm2d(planes * block.expansion),
      )
    layers = [block(self.inplanes, planes, stride, block_dilations[0], downsample)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, 1, d) for d in block_dilations[1:]]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    low = self.layer1(x)
    x = self.layer4(self.layer3(self.layer2(low)))
    return x, low


class TAtrous(nn.Module):
  def __init__(self, inplanes, planes, kernel_size, padding, dilation):
    super().__init__()
    self.atrous_conv = nn.Conv2d(inplanes, planes, kernel_size, 1, padding, dilation, bias=False)
    self.bn = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()

  def forward(self, x):
    return self.relu(self.bn(self.atrous_conv(x)))


class TWASP(nn.Module):
  """The original UniPose WASP: 1x1 first, then the atrous cascade; shared conv2 applied twice."""

  def __init__(self, inplanes, planes, rates):
    super().__init__()
    self.aspp1 = TAtrous(inplanes, planes, 1, 0, 1)
    self.aspp2 = TAtrous(planes, planes, 3, rates[0], rates[0])
    self.aspp3 = TAtrous(planes, planes, 3, rates[1], rates[1])
    self.aspp4 = TAtrous(planes, planes, 3, rates[2], rates[2])
    self.global_avg_pool = nn.Sequential(
      nn.AdaptiveAvgPool2d((1, 1)),
      nn.Conv2d(inplanes, planes, 1, bias=False),
      nn.BatchNorm2d(planes),
      nn.ReLU(),
    )
    self.conv1 = nn.Conv2d(5 * planes, planes, 1, bias=False)
    self.conv2 = nn.Conv2d(planes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.dropout = nn.Dropout(0.5)

  def forward(self, x):
    x1 = self.aspp1(x)
    x2 = self.aspp2(x1)
    x3 = self.aspp3(x2)
    x4 = self.aspp4(x3)
    x1, x2, x3, x4 = (self.conv2(self.conv2(t)) for t in (x1, x2, x3, x4))
    x5 = self.global_avg_pool(x)
    x5 = F.interpolate(x5, size=x4.shape[2:], mode="bilinear", align_corners=True)
    x = torch.cat((x1, x2, x3, x4, x5), dim=1)
    return self.dropout(self.relu(self.bn1(self.conv1(x))))


class TDecoder(nn.Module):
  def __init__(self, low_inplanes, wasp_planes, low_planes, planes, num_outputs):
    super().__init__()
    self.conv1 = nn.Conv2d(low_inplanes, low_planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(low_planes)
    self.relu = nn.ReLU()
    self.last_conv = nn.Sequential(
      nn.Conv2d(wasp_planes + low_planes, planes, 3, 1, 1, bias=False),
      nn.BatchNorm2d(planes),
      nn.ReLU(),
      nn.Dropout(0.5),
      nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
      nn.BatchNorm2d(planes),
      nn.ReLU(),
      nn.Dropout(0.1),
      nn.Conv2d(planes, num_outputs, 1, 1),
    )
    self.maxpool = nn.MaxPool2d(3, 2, 1)

  def forward(self, x, low):
    low = self.maxpool(self.relu(self.bn1(self.conv1(low))))
    x = F.interpolate(x, size=low.shape[2:], mode="bilinear", align_corners=True)
    return self.last_conv(torch.cat((x, low), dim=1))


class TUniPose(nn.Module):
  def __init__(
    self, block, layers, width, output_stride, wasp_planes, low_planes, dec_planes, num_joints
  ):
    super().__init__()
    rates = [r * 16 // output_stride for r in (18, 12, 6)]
    self.backbone = TResNet(block, layers, width, output_stride)
    self.wasp = TWASP(width * 8 * block.expansion, wasp_planes, rates)
    self.decoder = TDecoder(
      width * block.expansion, wasp_planes, low_planes, dec_planes, num_joints + 1
    )

  def forward(self, x):
    x, low = self.backbone(x)
    return self.decoder(self.wasp(x), low)


def _randomise(model: nn.Module, seed: int) -> None:
  """Random conv weights (torch default init) and random BN affine parameters AND running stats."""
  gen = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
      with torch.no_grad():
        m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    elif isinstance(m, nn.Conv2d):
      with torch.no_grad():
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
  model.eval()


# --------------------------------------------------------------------------- weight transfer

#: torch module prefix -> (Flax scope, Flax module) for everything outside the backbone.
_HEAD_MAP = {
  "wasp.aspp1.atrous_conv": ("wasp", "branch0_conv"),
  "wasp.aspp1.bn": ("wasp", "branch0_bn"),
  "wasp.aspp2.atrous_conv": ("wasp", "branch1_conv"),
  "wasp.aspp2.bn": ("wasp", "branch1_bn"),
  "wasp.aspp3.atrous_conv": ("wasp", "branch2_conv"),
  "wasp.aspp3.bn": ("wasp", "branch2_bn"),
  "wasp.aspp4.atrous_conv": ("wasp", "branch3_conv"),
  "wasp.aspp4.bn": ("wasp", "branch3_bn"),
  "wasp.conv2": ("wasp", "branch_proj"),
  "wasp.global_avg_pool.1": ("wasp", "pool_conv"),
  "wasp.global_avg_pool.2": ("wasp", "pool_bn"),
  "wasp.conv1": ("wasp", "project_conv"),
  "wasp.bn1": ("wasp", "project_bn"),
  "decoder.conv1": ("decoder", "low_conv"),
  "decoder.bn1": ("decoder", "low_bn"),
  "decoder.last_conv.0": ("decoder", "conv1"),
  "decoder.last_conv.1": ("decoder", "bn1"),
  "decoder.last_conv.4": ("decoder", "conv2"),
  "decoder.last_conv.5": ("decoder", "bn2"),
  "decoder.last_conv.8": ("decoder", "head"),
}
_LEAF = {
  "weight4": ("params", "kernel"),
  "weight1": ("params", "scale"),
  "bias": ("params", "bias"),
  "running_mean": ("batch_stats", "mean"),
  "running_var": ("batch_stats", "var"),
}


def _to_flax(twin: nn.Module, abstract_variables) -> dict:
  """Flax variables from the twin: backbone via ``load_torchvision_resnet``, the rest by ``_HEAD_MAP``."""
  sd = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
  backbone_sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
  variables = load_torchvision_resnet(backbone_sd, abstract_variables)
  filled = set()
  for key, value in sd.items():
    if key.startswith("backbone.") or key.endswith("num_batches_tracked"):
      continue
    prefix, leaf = key.rsplit(".", 1)
    scope, module = _HEAD_MAP[prefix]
    if leaf == "weight":
      leaf += "4" if value.ndim == 4 else "1"
    collection, name = _LEAF[leaf]
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    target = variables[collection][scope][module]
    assert target[name].shape == value.shape, key
    target[name] = jnp.asarray(value)
    filled.add((collection, scope, module, name))
  # Every non-backbone Flax leaf came from the twin.
  for collection in ("params", "batch_stats"):
    for scope in ("wasp", "decoder"):
      for module, leaves in variables[collection][scope].items():
        for name in leaves:
          assert (collection, scope, module, name) in filled, (collection, scope, module, name)
  return variables


def _parity(block_t, block_f, layers, width, output_stride, heads, hw, seed, batch=2):
  wasp_planes, low_planes, dec_planes = heads
  twin = TUniPose(
    block_t, layers, width, output_stride, wasp_planes, low_planes, dec_planes, num_joints=14
  )
  _randomise(twin, seed)
  model = UniPose(
    num_joints=14,
    backbone=functools.partial(ResNet, stage_sizes=layers, block_cls=block_f),
    output_stride=output_stride,
    backbone_width=width,
    wasp_features=wasp_planes,
    low_level_features=low_planes,
    decoder_features=dec_planes,
  )
  x = np.random.default_rng(seed).normal(size=(batch, *hw, 3)).astype(np.float32)
  abstract = jax.eval_shape(
    lambda x: model.init(jax.random.key(0), x, train=False), jax.ShapeDtypeStruct(x.shape, x.dtype)
  )
  variables = _to_flax(twin, abstract)
  leaves = jax.tree.leaves(variables)
  assert all(isinstance(leaf, jax.Array) for leaf in leaves), "some Flax variable was not filled"
  n_flax = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
  n_torch = sum(p.numel() for p in twin.parameters())
  assert n_flax == n_torch
  with torch.no_grad():
    ref = twin(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  out = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(x)))
  assert out.shape == ref.shape == (batch, -(-hw[0] // 8), -(-hw[1] // 8), 15)
  rel = float(np.abs(out - ref).max() / np.abs(ref).max())
  print(
    f"parity {block_f.__name__} layers={layers} width={width} OS{output_stride} input={hw}: "
    f"max|diff|/max|ref| = {rel:.2e}, params = {n_flax:,}"
  )
  assert rel < 1e-4, rel
  return rel, n_flax


SMALL_HEADS = (16, 8, 16)


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("hw", [(64, 64), (97, 75)])
def test_parity_small_bottleneck(output_stride, hw):
  _parity(
    TBottleneck,
    Bottleneck,
    (2, 1, 2, 3),
    8,
    output_stride,
    SMALL_HEADS,
    hw,
    seed=output_stride + hw[1],
  )


def test_parity_small_basic_block():
  _parity(TBasicBlock, BasicBlock, (2, 1, 1, 2), 8, 16, SMALL_HEADS, (81, 66), seed=3)


@pytest.mark.slow
def test_parity_resnet101_full_width():
  rel, n = _parity(
    TBottleneck, Bottleneck, (3, 4, 23, 3), 64, 16, (256, 48, 256), (97, 89), seed=0, batch=1
  )
  assert n == 47_021_999  # torch twin's own count agrees with the hand formula of test_models.py


def test_resize_matches_torch_interpolate():
  from unipose_jax.models import resize_bilinear_align_corners

  x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
  for size in [(9, 13), (23, 46), (3, 4), (1, 1), (5, 7)]:
    ref = F.interpolate(
      torch.from_numpy(x.transpose(0, 3, 1, 2)), size=size, mode="bilinear", align_corners=True
    )
    out = np.asarray(resize_bilinear_align_corners(jnp.asarray(x), size))
    # torch computes the source coordinate in float32 (we use float64): ~1e-6 differences.
    np.testing.assert_allclose(out, ref.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-5)


def test_import_from_pth_file(tmp_path):
  twin = TResNet(TBasicBlock, (1, 1, 1, 1), 4, 16)
  _randomise(twin, 1)
  path = tmp_path / "resnet.pth"
  sd = twin.state_dict()
  sd["fc.weight"] = torch.zeros(10, 32)
  sd["fc.bias"] = torch.zeros(10)
  torch.save(sd, path)
  model = ResNet(stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock, width=4, output_stride=16)
  abstract = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 33, 33, 3)), train=False)
  )
  variables = load_torchvision_resnet(str(path), abstract, scope=None)
  x = np.random.default_rng(0).normal(size=(1, 33, 33, 3)).astype(np.float32)
  with torch.no_grad():
    ref_layer4, ref_layer1 = (
      t.numpy().transpose(0, 2, 3, 1) for t in twin(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    )
  feats = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(x))
  np.testing.assert_allclose(
    np.asarray(feats["layer1"]), ref_layer1, rtol=1e-4, atol=1e-5 * np.abs(ref_layer1).max()
  )
  np.testing.assert_allclose(
    np.asarray(feats["layer4"]), ref_layer4, rtol=1e-4, atol=1e-5 * np.abs(ref_layer4).max()
  )
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    load_torchvision_resnet(str(tmp_path / "nope.pth"), abstract, scope=None)
