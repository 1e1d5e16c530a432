"""A PyTorch twin of the ORIGINAL UniPose-LSTM (bmartacho/UniPose ``model/uniposeLSTM.py``).

Written from the description in issue 28 and ``unipose_jax/models/unipose_lstm.py``'s
docstring, for tests; the trunk's pieces are ``torch_twin``'s (the image model's twin).
Module and attribute names are the original's, so ``state_dict()`` has its keys:
``backbone.*``, ``wasp.*`` (the video WASP: ``wasp.global_avg_pool.1`` and no BatchNorm
there), ``decoder.*`` (with the unused ``conv2``/``bn2``), ``lstm_0.conv_{g,i,o}_lstm``,
``lstm.conv_{g,i,o,f}{x,h}_lstm``, ``conv1`` .. ``conv5``. Tensors are NCHW.

``forward(clips)`` takes (B, T, C, H, W) and returns (B, T, K + 1, h8, w8): frame 0
through ``lstm_0``, the others through ``lstm`` with the carried hidden and cell state.
The centre map is made here from its description (NumPy), pooled by
``nn.AvgPool2d(9, 8, 1)``; with ``input_centre_map`` it is also the 4th input channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch_twin
from torch import nn
from torch.nn import functional as F


def centre_map_np(height: int, width: int, sigma: float = 3.0) -> np.ndarray:
  """exp(-((x - W//2)^2 + (y - H//2)^2) / (2 sigma^2)) at pixel indices, < 0.0099 -> 0."""
  ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  m = np.exp(-((xs - width // 2) ** 2 + (ys - height // 2) ** 2) / (2.0 * sigma**2))
  m[m < 0.0099] = 0.0
  return m.astype(np.float32)


class VideoWASP(torch_twin.WASP):
  """The original's ``waspVideo``: the image WASP without BatchNorm in the pooling branch."""

  def __init__(self, inplanes=2048, planes=256, rates=(18, 12, 6)):
    super().__init__(inplanes, planes, rates)
    self.global_avg_pool = nn.Sequential(
      nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(inplanes, planes, 1, bias=False), nn.ReLU()
    )


class LSTM_0(nn.Module):  # noqa: N801 (the original's name)
  def __init__(self, inplanes, planes):
    super().__init__()
    self.conv_g_lstm = nn.Conv2d(inplanes, planes, 3, padding=1)
    self.conv_i_lstm = nn.Conv2d(inplanes, planes, 3, padding=1)
    self.conv_o_lstm = nn.Conv2d(inplanes, planes, 3, padding=1)

  def forward(self, x):
    g = torch.tanh(self.conv_g_lstm(x))
    i = torch.sigmoid(self.conv_i_lstm(x))
    o = torch.sigmoid(self.conv_o_lstm(x))
    cell = torch.tanh(g * i)
    return cell, o * cell


class LSTM(nn.Module):
  def __init__(self, inplanes, planes):
    super().__init__()
    for gate in "giof":
      setattr(self, f"conv_{gate}x_lstm", nn.Conv2d(inplanes, planes, 3, padding=1))
      setattr(self, f"conv_{gate}h_lstm", nn.Conv2d(planes, planes, 3, padding=1))

  def forward(self, x, hide, cell):
    pre = {z: getattr(self, f"conv_{z}x_lstm")(x) + getattr(self, f"conv_{z}h_lstm")(hide)
           for z in "giof"}  # fmt: skip
    g = torch.tanh(pre["g"])
    i, o, f = (torch.sigmoid(pre[z]) for z in "iof")
    cell = f * cell + i * g
    return cell, o * torch.tanh(cell)


class UniPoseLSTMTwin(nn.Module):
  """The original ``unipose`` of ``model/uniposeLSTM.py``, widths configurable."""

  def __init__(
    self,
    num_classes: int = 13,
    *,
    layers: Sequence[int] = (3, 4, 23, 3),
    width: int = 64,
    output_stride: int = 16,
    wasp_planes: int = 256,
    low_planes: int = 48,
    decoder_planes: int = 256,
    head_planes: int = 128,
    head_kernel: int = 11,
    input_centre_map: bool = False,
  ):
    super().__init__()
    block = torch_twin.Bottleneck
    rates = [r * 16 // output_stride for r in (18, 12, 6)]
    high = width * 8 * block.expansion
    self.input_centre_map = input_centre_map
    self.pool_center = nn.AvgPool2d(kernel_size=9, stride=8, padding=1)
    self.backbone = torch_twin.ResNet(block, tuple(layers), width, output_stride)
    if input_centre_map:
      self.backbone.conv1 = nn.Conv2d(4, width, 7, 2, 3, bias=False)
    self.wasp = VideoWASP(high, wasp_planes, rates)
    self.decoder = torch_twin.Decoder(
      num_classes + 1, width * block.expansion, high, wasp_planes, low_planes, decoder_planes
    )
    c = num_classes + 2
    self.lstm_0 = LSTM_0(c, c)
    self.lstm = LSTM(c, c)
    p = head_kernel // 2
    self.conv1 = nn.Conv2d(c, head_planes, head_kernel, padding=p)
    self.conv2 = nn.Conv2d(head_planes, head_planes, head_kernel, padding=p)
    self.conv3 = nn.Conv2d(head_planes, head_planes, head_kernel, padding=p)
    self.conv4 = nn.Conv2d(head_planes, head_planes, 1)
    self.conv5 = nn.Conv2d(head_planes, num_classes + 1, 1)

  def forward(self, clips: torch.Tensor) -> torch.Tensor:
    b, t, _, h, w = clips.shape
    centre = torch.from_numpy(centre_map_np(h, w))[None, None].expand(b, 1, h, w)
    pooled = self.pool_center(centre)
    cell = hide = None
    out = []
    for j in range(t):
      x = clips[:, j]
      if self.input_centre_map:
        x = torch.cat((x, centre), dim=1)
      x, low = self.backbone(x)
      x = self.decoder(self.wasp(x), low)
      z = torch.cat((x, pooled), dim=1)
      cell, hide = self.lstm_0(z) if j == 0 else self.lstm(z, hide, cell)
      y = hide
      for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
        y = F.relu(conv(y))
      out.append(y)
    return torch.stack(out, dim=1)
