"""A PyTorch twin of the ORIGINAL UniPose (bmartacho/UniPose), written here for tests.

Module and attribute names are the original's, so ``UniPoseTwin(...).state_dict()``
has exactly the original's keys: ``backbone.*`` (torchvision ResNet names),
``wasp.aspp1..4.{atrous_conv,bn}``, ``wasp.global_avg_pool.{1,2}``, ``wasp.conv1``,
``wasp.conv2``, ``wasp.bn1``, ``decoder.conv1``, ``decoder.bn1``, the unused
``decoder.conv2`` / ``decoder.bn2``, ``decoder.last_conv.{0,1,4,5,8}``.
Widths and depths are configurable so tests stay small; the defaults are the
original's LSP model (ResNet-101, output stride 16, 14 joints -> 15 maps,
47,546,799 parameters). Tensors are NCHW; ``forward`` returns (B, maps, h8, w8).

``randomise_`` draws random weights AND BatchNorm running statistics;
``pickled_as_original`` gives the classes the original's module paths while a
whole model is ``torch.save``d, so that they cannot be imported when it is loaded.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

#: Joints of the original's LSP model; its head has NUM_CLASSES + 1 maps (background first).
NUM_CLASSES = 14
#: Parameters of the original's state dict (the unused decoder conv2/bn2 included).
ORIGINAL_NUM_PARAMETERS = 47_546_799


class BasicBlock(nn.Module):
  """torchvision's two-3x3 block (not in the original; tests the BasicBlock backbones)."""

  expansion = 1

  def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride and dilation here) -> 1x1, expansion 4, as the original's."""

  expansion = 4

  def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
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


class ResNet(nn.Module):
  """The original's dilated backbone; ``forward`` -> (layer4 output, layer1 output).

  Output stride 16: strides (1, 2, 2, 1), dilations (1, 1, 1, 2); 8: (1, 2, 1, 1),
  (1, 1, 2, 4). layer4 is the multi-grid unit: its blocks dilate by the stage
  dilation times (1, 2, 4) (the first ``layers[3]`` of them; the original has 3).
  """

  def __init__(self, block=Bottleneck, layers=(3, 4, 23, 3), width=64, output_stride=16):
    super().__init__()
    if output_stride == 16:
      strides, dilations = (1, 2, 2, 1), (1, 1, 1, 2)
    elif output_stride == 8:
      strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
    else:
      raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    self.inplanes = width
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.layer1 = self._make_layer(block, width, [dilations[0]] * layers[0], strides[0])
    self.layer2 = self._make_layer(block, width * 2, [dilations[1]] * layers[1], strides[1])
    self.layer3 = self._make_layer(block, width * 4, [dilations[2]] * layers[2], strides[2])
    multi_grid = (1, 2, 4)[: layers[3]]
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


class AtrousModule(nn.Module):
  """The original's ``_AtrousModule``: conv (no bias) + BN + ReLU."""

  def __init__(self, inplanes, planes, kernel_size, padding, dilation):
    super().__init__()
    self.atrous_conv = nn.Conv2d(inplanes, planes, kernel_size, 1, padding, dilation, bias=False)
    self.bn = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()

  def forward(self, x):
    return self.relu(self.bn(self.atrous_conv(x)))


class WASP(nn.Module):
  """The original's ``wasp``: a 1x1 then the atrous cascade; the shared ``conv2`` applied twice."""

  def __init__(self, inplanes=2048, planes=256, rates=(18, 12, 6)):
    super().__init__()
    self.aspp1 = AtrousModule(inplanes, planes, 1, 0, 1)
    self.aspp2 = AtrousModule(planes, planes, 3, rates[0], rates[0])
    self.aspp3 = AtrousModule(planes, planes, 3, rates[1], rates[1])
    self.aspp4 = AtrousModule(planes, planes, 3, rates[2], rates[2])
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


class Decoder(nn.Module):
  """The original's ``Decoder``, with its ``conv2``/``bn2`` that ``forward`` never calls."""

  def __init__(
    self,
    num_outputs,
    low_inplanes=256,
    high_inplanes=2048,
    wasp_planes=256,
    low_planes=48,
    planes=256,
  ):
    super().__init__()
    self.conv1 = nn.Conv2d(low_inplanes, low_planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(low_planes)
    self.relu = nn.ReLU()
    self.conv2 = nn.Conv2d(high_inplanes, wasp_planes, 1, bias=False)  # unused
    self.bn2 = nn.BatchNorm2d(wasp_planes)  # unused
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


class UniPoseTwin(nn.Module):
  """The original's ``unipose`` at heatmap stride 8: (B, 3, H, W) -> (B, maps, h8, w8).

  ``maps = num_classes + 1 + extra_maps`` (``extra_maps=5``: the original's box head).
  """

  def __init__(
    self,
    num_classes: int = NUM_CLASSES,
    *,
    block: type[nn.Module] = Bottleneck,
    layers: Sequence[int] = (3, 4, 23, 3),
    width: int = 64,
    output_stride: int = 16,
    wasp_planes: int = 256,
    low_planes: int = 48,
    decoder_planes: int = 256,
    extra_maps: int = 0,
  ):
    super().__init__()
    rates = [r * 16 // output_stride for r in (18, 12, 6)]
    high = width * 8 * block.expansion
    self.pool_center = nn.AvgPool2d(kernel_size=9, stride=8, padding=1)  # no parameters
    self.backbone = ResNet(block, tuple(layers), width, output_stride)
    self.wasp = WASP(high, wasp_planes, rates)
    self.decoder = Decoder(
      num_classes + 1 + extra_maps,
      width * block.expansion,
      high,
      wasp_planes,
      low_planes,
      decoder_planes,
    )

  def forward(self, x):
    x, low = self.backbone(x)
    return self.decoder(self.wasp(x), low)


def randomise_(model: nn.Module, seed: int) -> nn.Module:
  """Random conv weights and biases, BN affine parameters AND running statistics; eval mode."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
        m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
      elif isinstance(m, nn.Conv2d):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
  return model.eval()


#: The original's module path and class name of each twin class.
ORIGINAL_CLASS_PATHS: dict[type, tuple[str, str]] = {
  UniPoseTwin: ("model.unipose", "unipose"),
  WASP: ("model.modules.wasp", "wasp"),
  AtrousModule: ("model.modules.wasp", "_AtrousModule"),
  Decoder: ("model.modules.decoder", "Decoder"),
  ResNet: ("model.modules.backbone.resnet", "ResNet"),
  Bottleneck: ("model.modules.backbone.resnet", "Bottleneck"),
  BasicBlock: ("model.modules.backbone.resnet", "BasicBlock"),
}


@contextlib.contextmanager
def pickled_as_original() -> Iterator[None]:
  """While active, the twin classes pickle as the original's (``model.unipose.unipose``, ...).

  Fake modules of those names are put in ``sys.modules`` for ``pickle`` to find
  the classes by; on exit they are removed and the classes get their names back,
  so a model saved inside cannot have its classes imported when it is loaded.
  """
  saved = {cls: (cls.__module__, cls.__qualname__) for cls in ORIGINAL_CLASS_PATHS}
  added = []
  try:
    for cls, (module, name) in ORIGINAL_CLASS_PATHS.items():
      parts = module.split(".")
      for i in range(1, len(parts) + 1):
        mod_name = ".".join(parts[:i])
        if mod_name not in sys.modules:
          sys.modules[mod_name] = types.ModuleType(mod_name)
          added.append(mod_name)
        elif mod_name not in added:
          raise RuntimeError(f"a real module {mod_name!r} is loaded; cannot fake the original")
      setattr(sys.modules[module], name, cls)
      cls.__module__, cls.__qualname__ = module, name
    yield
  finally:
    for cls, (module, qualname) in saved.items():
      cls.__module__, cls.__qualname__ = module, qualname
    for mod_name in added:
      sys.modules.pop(mod_name, None)
