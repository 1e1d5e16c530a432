"""UniPose-LSTM: the UniPose trunk per frame, a convolutional LSTM across frames, a head.

The original (bmartacho/UniPose, ``model/uniposeLSTM.py``), per frame ``t`` of a clip::

    frame (B, H, W, 3) ──trunk (ResNet + video WASP + decoder)──> maps (B, h8, w8, K + 1)
    centre map (H, W) ──avg-pool 9x9, stride 8, pad 1──> c (B, h8, w8, 1)
    x_t = concat(maps, c)                                   (K + 2 channels)
    t = 0:  g, i, o = tanh(Wg*x), sigm(Wi*x), sigm(Wo*x)     ("lstm_0": no forget gate,
            cell = tanh(g * i); hidden = o * cell               no previous state)
    t > 0:  g = tanh(Wgx*x + Wgh*h), i, o, f = sigm(W.x*x + W.h*h)   ("lstm")
            cell = f * cell_prev + i * g; hidden = o * tanh(cell)
    heatmaps_t = relu(1x1 -> K+1 (relu(1x1 -> 128 (relu(11x11 -> 128 (x3) (hidden))))))

Every LSTM convolution is 3x3 with bias, K + 2 -> K + 2, separate for the input and the
hidden state of each gate; the head's five convolutions have biases and a ReLU after
each, the last included (so the output heatmaps are >= 0, background channel too).

Shapes and conventions. ``clips`` are (B, T, H, W, 3) floats, each frame normalised as
``unipose.py`` says (ImageNet-normalised RGB; the jitted steps call ``normalize``).
Heatmaps are (B, T, h8, w8, K + 1) float32, ``h8 = ceil(H / 8)``, channel 0 background,
then the K joints; stride 8 (``unipose.HEATMAP_STRIDE``). The model never sees keypoints.

Time. A clip is an ``nn.scan`` over its frames whose carry is an explicit
:class:`LSTMState` (and, in training, the BatchNorm statistics); its body is one frame:
trunk, then the recurrent stage (LSTM + head). :meth:`UniPoseLSTM.step` runs that same
body on one frame with the same parameters, so streaming a video frame by frame gives
exactly what the clip gives (the trunk sees B frames at a time either way; XLA's
convolutions are not bitwise the same for every batch size, which is why the trunk is
not run on all B * T frames at once). :meth:`UniPoseLSTM.run` takes and returns the
state, so a long video can also go through in chunks. Which cell a frame uses is the
state's ``first`` flag per example (True in :func:`initial_state`), so every example of
a batch may start its video at another time. Both cells are evaluated and one is
selected (the LSTM is (K + 2)-channel 3x3 convolutions at stride 8: a few per cent of
the head's cost).

The centre map (:func:`centre_map`): ``exp(-((x - W//2)^2 + (y - H//2)^2) / (2 * 3^2))``
on pixel indices (x along columns), values below 0.0099 set to 0 as the original's
``guassian_kernel`` use does; its centre is pixel 184 of a 368 input. The original's
person is assumed centred in the frame; the map is the same for every frame and clip.
Pooled (:func:`pooled_centre_map`): output cell ``i`` averages input rows
``8 i - 1 .. 8 i + 7`` (zeros outside the image, divisor always 81:
``count_include_pad=True``, PyTorch's default), for ``i < ceil(H / 8)``. That is exactly
PyTorch's ``AvgPool2d(9, 8, 1)`` wherever its output size ``(H + 1) // 8`` equals the
trunk's ``ceil(H / 8)``, i.e. ``H % 8`` is 0 or 7 (368 -> 46); for other sizes PyTorch's
map would not fit the trunk's, and the same rule simply continues to the last cell.

The original's quirks, reproduced (and why):

* The released Penn Action checkpoint's first convolution takes 4 channels: RGB and the
  centre map at input resolution (the published code's line doing that concatenation is
  commented out, and its backbone builds a 3-channel conv, so the published code cannot
  load its own checkpoint). ``input_centre_map=True`` builds that 4-channel trunk: the
  (unnormalised, 0..1) centre map is appended as a 4th input channel of every frame.
  The default (False) is the published code's 3-channel form.
* ``forward(..., previous, ...)`` takes the previous frame's heatmaps and never uses
  them (it copies them into a tensor nothing reads). So the original form carries the
  heatmaps in the state and ignores them too.
* The trunk's WASP is the video WASP (``waspVideo``): no BatchNorm in its image-pooling
  branch (``wasp.py``); ``video_wasp=False`` keeps the image WASP, so that a per-frame
  UniPose run's trunk loads unchanged.
* ReLU after the last head convolution; the first frame's cell ``tanh(g * i)`` (the
  usual first LSTM step would be ``i * g`` with ``hidden = o * tanh(cell)``).

The improved variant (``feed_previous_heatmaps=True``): the LSTM's input also holds the
previous frame's output heatmaps (zeros before the first frame), as the paper's figure
draws it: ``x_t = concat(maps, c, heatmaps_{t-1})``, 2K + 3 channels, hidden still K + 2.

In training the trunk's BatchNorm normalises each frame's B examples with their own
statistics and updates its running averages once per frame, as the original (batch 1,
one forward call per frame) did.

Parameters: ``trunk/{backbone, wasp, decoder}`` (exactly a ``UniPose``'s, built by
``make_trunk``), ``recurrent/lstm_0/{conv_g, conv_i, conv_o}``,
``recurrent/lstm/{conv_gx, conv_gh, conv_ix, conv_ih, conv_ox, conv_oh, conv_fx,
conv_fh}``, ``recurrent/head/{conv1 .. conv5}``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from unipose_jax.models.layers import BatchNormSync, torch_padding
from unipose_jax.models.unipose import HEATMAP_STRIDE, UniPose101, heatmap_size
from unipose_jax.skeleton import num_maps

#: The original's centre-map Gaussian (input pixels) and the cut-off below which it is 0.
CENTRE_SIGMA = 3.0
CENTRE_CUTOFF = 0.0099
#: The original's ``AvgPool2d(kernel_size=9, stride=8, padding=1)`` of the centre map.
CENTRE_POOL = (9, HEATMAP_STRIDE, 1)

#: PyTorch's default Conv2d initialisation (kaiming_uniform with a = sqrt(5)): U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class ClipShapeError(ValueError):
  """Clips or frames of the wrong shape for :class:`UniPoseLSTM` (the message says which)."""


@functools.lru_cache(maxsize=32)
def _centre_map(height: int, width: int, sigma: float) -> np.ndarray:
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  d2 = (x - width // 2) ** 2 + (y - height // 2) ** 2
  m = np.exp(-d2 / 2.0 / sigma / sigma)
  m[m < CENTRE_CUTOFF] = 0.0
  m = m.astype(np.float32)
  m.setflags(write=False)
  return m


def centre_map(height: int, width: int, sigma: float = CENTRE_SIGMA) -> np.ndarray:
  """The original's centre map at input resolution: (height, width) float32 in [0, 1].

  ``exp(-((x - width // 2)^2 + (y - height // 2)^2) / (2 sigma^2))`` at pixel indices
  (x = column, y = row), values below 0.0099 set to 0. Read-only (cached).
  """
  return _centre_map(int(height), int(width), float(sigma))


def _pool_axis(m: np.ndarray, axis: int) -> np.ndarray:
  """Sums of the 9-wide windows starting at ``8 i - 1`` along ``axis``, zeros outside."""
  size = m.shape[axis]
  kernel, stride, pad = CENTRE_POOL
  n = heatmap_size(size)
  after = stride * (n - 1) + kernel - pad - size  # >= 0 for every size
  widths = [(0, 0)] * m.ndim
  widths[axis] = (pad, after)
  p = np.pad(m, widths)
  return sum(
    np.take(p, np.arange(n) * stride + k, axis=axis) for k in range(kernel)
  )  # (..., n, ...)


@functools.lru_cache(maxsize=32)
def _pooled_centre_map(height: int, width: int, sigma: float) -> np.ndarray:
  m = centre_map(height, width, sigma).astype(np.float64)
  kernel = CENTRE_POOL[0]
  out = (_pool_axis(_pool_axis(m, 0), 1) / (kernel * kernel)).astype(np.float32)
  out.setflags(write=False)
  return out


def pooled_centre_map(height: int, width: int, sigma: float = CENTRE_SIGMA) -> np.ndarray:
  """The centre map on the heatmap grid: (ceil(height / 8), ceil(width / 8)) float32.

  Cell ``(i, j)`` is the mean over the 9 x 9 input pixels of rows ``8 i - 1 .. 8 i + 7``
  and columns ``8 j - 1 .. 8 j + 7`` (zeros outside, divisor 81): PyTorch's
  ``AvgPool2d(9, stride=8, padding=1)`` where its size agrees (see the module doc).
  """
  return _pooled_centre_map(int(height), int(width), float(sigma))


class LSTMState(NamedTuple):
  """What the recurrent stage carries from one frame to the next (a pytree).

  Attributes:
    hidden: (B, h8, w8, K + 2) float32, the LSTM's hidden state.
    cell: (B, h8, w8, K + 2) float32, its cell state.
    heatmaps: (B, h8, w8, K + 1) float32, the last frame's output (zeros at the start;
      read only by ``feed_previous_heatmaps=True``).
    first: (B,) bool; True: the next frame starts a video (the first-frame cell runs,
      the state above is not read).
  """

  hidden: jnp.ndarray
  cell: jnp.ndarray
  heatmaps: jnp.ndarray
  first: jnp.ndarray


def initial_state(batch: int, height: int, width: int, num_joints: int) -> LSTMState:
  """The state before the first frame, for (batch, height, width) INPUT frames of K joints."""
  h, w = heatmap_size(height), heatmap_size(width)
  zeros = lambda c: jnp.zeros((int(batch), h, w, c), jnp.float32)
  return LSTMState(
    hidden=zeros(num_joints + 2),
    cell=zeros(num_joints + 2),
    heatmaps=zeros(num_maps(num_joints)),
    first=jnp.ones((int(batch),), bool),
  )


def _conv(features: int, kernel: int, name: str, dtype: Any, param_dtype: Any) -> nn.Conv:
  return nn.Conv(
    features,
    (kernel, kernel),
    padding=torch_padding(kernel),
    use_bias=True,
    kernel_init=torch_default_init,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
  )


class FirstFrameCell(nn.Module):
  """The original's ``LSTM_0``: (B, h, w, C_in) -> (cell, hidden), each (B, h, w, features).

  ``g = tanh(conv_g(x)); i = sigmoid(conv_i(x)); o = sigmoid(conv_o(x));
  cell = tanh(g * i); hidden = o * cell`` (3x3 convolutions with bias).
  """

  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    g = jnp.tanh(_conv(self.features, 3, "conv_g", **kw)(x))
    i = nn.sigmoid(_conv(self.features, 3, "conv_i", **kw)(x))
    o = nn.sigmoid(_conv(self.features, 3, "conv_o", **kw)(x))
    cell = jnp.tanh(g * i)
    return cell, o * cell


class ConvLSTMCell(nn.Module):
  """The original's ``LSTM``: (x, hidden, cell) -> (cell, hidden), each (B, h, w, features).

  Per gate ``z`` in g, i, o, f: ``z = act(conv_zx(x) + conv_zh(hidden))`` (tanh for g,
  sigmoid for the others; 3x3 convolutions with bias, one on the input and one on the
  hidden state); ``cell = f * cell_prev + i * g``; ``hidden = o * tanh(cell)``.
  """

  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, hidden, cell) -> tuple[jnp.ndarray, jnp.ndarray]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def gate(z: str) -> jnp.ndarray:
      return _conv(self.features, 3, f"conv_{z}x", **kw)(x) + _conv(
        self.features, 3, f"conv_{z}h", **kw
      )(hidden)

    g = jnp.tanh(gate("g"))
    o = nn.sigmoid(gate("o"))
    i = nn.sigmoid(gate("i"))
    f = nn.sigmoid(gate("f"))
    cell = f * cell + i * g
    return cell, o * jnp.tanh(cell)


class Head(nn.Module):
  """Three 11x11 convs to ``features``, a 1x1 to ``features``, a 1x1 to ``num_outputs``;
  biases, ReLU after every one (the last included). (B, h, w, C) -> (B, h, w, num_outputs)."""

  num_outputs: int
  features: int = 128
  kernel: int = 11
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for n, (features, kernel) in enumerate(
      [(self.features, self.kernel)] * 3 + [(self.features, 1), (self.num_outputs, 1)], start=1
    ):
      x = nn.relu(_conv(features, kernel, f"conv{n}", **kw)(x))
    return x


class RecurrentStage(nn.Module):
  """One frame of the temporal stage: ``(state, maps, centre) -> (state, heatmaps)``.

  ``maps`` (B, h, w, K + 1) are the trunk's, ``centre`` (h, w) the pooled centre map;
  the returned heatmaps (B, h, w, K + 1) are float32 (see the module doc for the graph).
  The scan body of :class:`UniPoseLSTM` and its streaming step.
  """

  num_joints: int
  feed_previous_heatmaps: bool = False
  head_features: int = 128
  head_kernel: int = 11
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    width = self.num_joints + 2
    self.lstm_0 = FirstFrameCell(width, **kw)
    self.lstm = ConvLSTMCell(width, **kw)
    self.head = Head(num_maps(self.num_joints), self.head_features, self.head_kernel, **kw)

  def __call__(
    self, state: LSTMState, maps: jnp.ndarray, centre: jnp.ndarray
  ) -> tuple[LSTMState, jnp.ndarray]:
    b = maps.shape[0]
    c = jnp.broadcast_to(jnp.asarray(centre, maps.dtype)[None, :, :, None], maps.shape[:3] + (1,))
    parts = [maps, c] + ([state.heatmaps.astype(maps.dtype)] if self.feed_previous_heatmaps else [])
    x = jnp.concatenate(parts, axis=-1).astype(self.dtype)
    cell0, hidden0 = self.lstm_0(x)
    cell1, hidden1 = self.lstm(x, state.hidden.astype(self.dtype), state.cell.astype(self.dtype))
    first = jnp.reshape(state.first, (b, 1, 1, 1))
    cell = jnp.where(first, cell0, cell1).astype(jnp.float32)
    hidden = jnp.where(first, hidden0, hidden1).astype(jnp.float32)
    heatmaps = self.head(hidden.astype(self.dtype)).astype(jnp.float32)
    return LSTMState(hidden, cell, heatmaps, jnp.zeros_like(state.first)), heatmaps


def _frame_body(model: UniPoseLSTM, state, frames, centre, train: bool):
  return model._frame(state, frames, centre, train)


class UniPoseLSTM(nn.Module):
  """UniPose-LSTM (see the module docstring for the graph, the shapes and the quirks).

  Attributes:
    num_joints: K (13 for Penn Action); heatmaps have K + 1 channels, background first.
    make_trunk: the per-frame network, called as ``make_trunk(num_joints=, box_head=False,
      input_channels=, wasp_pool_batch_norm=, dtype=, param_dtype=, bn_sync=)``;
      default ``UniPose101`` (ResNet-101, output stride 16: the original). Tiny trunks
      for tests: ``functools.partial(UniPose, backbone=..., backbone_width=8, ...)``.
    input_centre_map: the released checkpoint's 4-channel first convolution (RGB + the
      centre map at input resolution).
    video_wasp: the original's video WASP, without BatchNorm in the image-pooling branch.
    feed_previous_heatmaps: the improved variant (the LSTM also reads the last heatmaps).
    head_features, head_kernel: 128, 11 (the original).
    dtype: compute dtype (heatmaps and the state are float32 whatever it is).
    bn_sync: whose statistics the trunk's BatchNorm trains with (``layers.BatchNormSync``).

  ``apply(variables, clips, train=False)``: (B, T, H, W, 3) -> (B, T, ceil(H/8),
  ceil(W/8), K + 1). ``method=UniPoseLSTM.run`` also takes and returns the state;
  ``method=UniPoseLSTM.step`` runs one frame (B, H, W, 3).
  """

  num_joints: int
  make_trunk: Callable[..., nn.Module] = UniPose101
  input_centre_map: bool = False
  video_wasp: bool = True
  feed_previous_heatmaps: bool = False
  head_features: int = 128
  head_kernel: int = 11
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_sync: BatchNormSync | None = None

  def setup(self):
    self.trunk = self.make_trunk(
      num_joints=self.num_joints,
      box_head=False,
      input_channels=4 if self.input_centre_map else 3,
      wasp_pool_batch_norm=not self.video_wasp,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      bn_sync=self.bn_sync,
    )
    self.recurrent = RecurrentStage(
      self.num_joints,
      feed_previous_heatmaps=self.feed_previous_heatmaps,
      head_features=self.head_features,
      head_kernel=self.head_kernel,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )

  def _trunk_maps(self, frames: jnp.ndarray, train: bool) -> jnp.ndarray:
    """(N, H, W, 3) frames -> (N, h8, w8, K + 1) trunk maps (float32)."""
    if self.input_centre_map:
      n, h, w, _ = frames.shape
      cm = jnp.asarray(centre_map(h, w), frames.dtype)
      frames = jnp.concatenate([frames, jnp.broadcast_to(cm[None, :, :, None], (n, h, w, 1))], -1)
    return self.trunk(frames, train)

  def _check_state(self, state: LSTMState | None, batch: int, height: int, width: int):
    if state is None:
      return initial_state(batch, height, width, self.num_joints)
    want = initial_state(batch, height, width, self.num_joints)
    for name, have, ref in zip(LSTMState._fields, state, want):
      if tuple(have.shape) != tuple(ref.shape):
        raise ClipShapeError(
          f"UniPoseLSTM state.{name} has shape {tuple(have.shape)}, frames of {batch} x "
          f"{height} x {width} with {self.num_joints} joints need {tuple(ref.shape)}"
        )
    return state

  def run(
    self, clips: jnp.ndarray, state: LSTMState | None = None, train: bool = False
  ) -> tuple[jnp.ndarray, LSTMState]:
    """(B, T, H, W, 3) clips, the state before them (None: the clips start videos) ->
    (heatmaps (B, T, h8, w8, K + 1) float32, the state after the last frame)."""
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.shape[1] < 1:
      raise ClipShapeError(
        f"UniPoseLSTM expects clips of shape (B, T, H, W, 3) with T >= 1, got {clips.shape}"
      )
    b, t, h, w, _ = clips.shape
    state = self._check_state(state, b, h, w)
    centre = jnp.asarray(pooled_centre_map(h, w))
    if self.is_initializing():  # create the variables outside the scan (it carries them)
      self._frame(state, clips[:, 0], centre, train)
    stats_change = self.is_mutable_collection("batch_stats")  # training: carried frame to frame
    scan = nn.scan(
      functools.partial(_frame_body, train=train),
      variable_broadcast="params" if stats_change else ["params", "batch_stats"],
      variable_carry="batch_stats" if stats_change else (),
      split_rngs={"params": False, "dropout": True},
      in_axes=(1, nn.broadcast),
      out_axes=1,
    )
    state, heatmaps = scan(self, state, clips, centre)
    return heatmaps, state

  def __call__(self, clips: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """(B, T, H, W, 3) -> heatmaps (B, T, ceil(H/8), ceil(W/8), K + 1), each clip a video
    start."""
    return self.run(clips, None, train)[0]

  def step(
    self, frames: jnp.ndarray, state: LSTMState | None = None, train: bool = False
  ) -> tuple[jnp.ndarray, LSTMState]:
    """One frame per example: (B, H, W, 3) and the state (None: first frames) ->
    (heatmaps (B, h8, w8, K + 1) float32, the new state). Same parameters and body as
    the scan."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ClipShapeError(f"UniPoseLSTM.step expects frames (B, H, W, 3), got {frames.shape}")
    b, h, w, _ = frames.shape
    state = self._check_state(state, b, h, w)
    state, heatmaps = self._frame(state, frames, jnp.asarray(pooled_centre_map(h, w)), train)
    return heatmaps, state

  def step_with_trunk(
    self, frames: jnp.ndarray, state: LSTMState | None = None, train: bool = False
  ) -> tuple[jnp.ndarray, jnp.ndarray, LSTMState]:
    """:meth:`step` that also returns the trunk's own maps of the frames (B, h8, w8, K + 1)
    float32: the single-frame path of the same network, computed once (video evaluation
    shows both)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ClipShapeError(f"UniPoseLSTM.step expects frames (B, H, W, 3), got {frames.shape}")
    b, h, w, _ = frames.shape
    state = self._check_state(state, b, h, w)
    maps = self._trunk_maps(frames, train)
    state, heatmaps = self.recurrent(state, maps, jnp.asarray(pooled_centre_map(h, w)))
    return heatmaps, maps.astype(jnp.float32), state

  def _frame(self, state: LSTMState, frames: jnp.ndarray, centre: jnp.ndarray, train: bool):
    """The body of the scan and of :meth:`step`: trunk, then the recurrent stage."""
    maps = self._trunk_maps(frames, train)
    if centre.shape != maps.shape[1:3]:  # pragma: no cover - the trunk's grid is ceil(H / 8)
      raise ClipShapeError(f"centre map {centre.shape} does not fit the trunk's {maps.shape}")
    return self.recurrent(state, maps, centre)
