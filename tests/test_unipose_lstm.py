"""UniPose-LSTM (``unipose_jax.models.unipose_lstm``): centre map, cells, scan, streaming.

References are independent: the LSTM cells and the whole recurrence (cells + head) are
recomputed in NumPy (float64) from the parameters; the pooled centre map is checked
against a brute-force window mean and against ``torch.nn.AvgPool2d``. A tiny trunk
(one bottleneck per stage, width 8) keeps compilation short.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unipose_jax.models import (
  ClipShapeError,
  LSTMState,
  ResNetTiny,
  UniPose,
  UniPoseLSTM,
  centre_map,
  initial_state,
  pooled_centre_map,
)
from unipose_jax.models.unipose_lstm import ConvLSTMCell, FirstFrameCell, RecurrentStage

K = 13  # Penn Action's joints
B, T, H, W = 2, 4, 32, 24  # heatmaps 4 x 3
TINY_TRUNK = functools.partial(
  UniPose,
  backbone=ResNetTiny,
  backbone_width=8,
  wasp_features=16,
  low_level_features=8,
  decoder_features=16,
)


def tiny_lstm(**kw) -> UniPoseLSTM:
  return UniPoseLSTM(num_joints=K, make_trunk=TINY_TRUNK, head_features=8, **kw)


# ---------------------------------------------------------------------------- NumPy reference


def conv_np(x, kernel, bias):
  """'Same' convolution, NHWC x HWIO, odd kernel, float64."""
  kh, kw = kernel.shape[:2]
  ph, pw = kh // 2, kw // 2
  xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  h, w = x.shape[1:3]
  out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
  for dy in range(kh):
    for dx in range(kw):
      out += np.einsum("bhwc,co->bhwo", xp[:, dy : dy + h, dx : dx + w], kernel[dy, dx])
  return out + bias


def sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _p(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def first_cell_np(p, x):
  c = lambda n: conv_np(x, p[n]["kernel"], p[n]["bias"])
  g, i, o = np.tanh(c("conv_g")), sigmoid(c("conv_i")), sigmoid(c("conv_o"))
  cell = np.tanh(g * i)
  return cell, o * cell


def cell_np(p, x, hidden, cell):
  pre = {
    z: conv_np(x, p[f"conv_{z}x"]["kernel"], p[f"conv_{z}x"]["bias"])
    + conv_np(hidden, p[f"conv_{z}h"]["kernel"], p[f"conv_{z}h"]["bias"])
    for z in "giof"
  }
  g = np.tanh(pre["g"])
  i, o, f = (sigmoid(pre[z]) for z in "iof")
  cell = f * cell + i * g
  return cell, o * np.tanh(cell)


def head_np(p, x):
  for n in range(1, 6):
    x = np.maximum(conv_np(x, p[f"conv{n}"]["kernel"], p[f"conv{n}"]["bias"]), 0.0)
  return x


def recurrence_np(p, maps, centre, feed_previous=False):
  """The whole temporal stage, unrolled in NumPy: maps (B, T, h, w, K+1) -> heatmaps."""
  b, t, h, w, _ = maps.shape
  c = np.broadcast_to(centre[None, :, :, None], (b, h, w, 1))
  out, hidden, cell = [], None, None
  heat = np.zeros(maps.shape[:1] + maps.shape[2:])
  for j in range(t):
    x = np.concatenate([maps[:, j], c] + ([heat] if feed_previous else []), -1)
    if j == 0:
      cell, hidden = first_cell_np(p["lstm_0"], x)
    else:
      cell, hidden = cell_np(p["lstm"], x, hidden, cell)
    heat = head_np(p["head"], hidden)
    out.append(heat)
  return np.stack(out, 1)


# ---------------------------------------------------------------------------- centre map


def test_centre_map_is_the_originals_gaussian():
  m = centre_map(368, 368)
  assert m.shape == (368, 368) and m.dtype == np.float32
  assert np.unravel_index(np.argmax(m), m.shape) == (184, 184) and m[184, 184] == 1.0
  assert m[184, 186] == pytest.approx(np.exp(-4 / 18), rel=1e-6)  # x along columns
  assert m[184, 184 + 9] == pytest.approx(np.exp(-81 / 18), rel=1e-6)  # 0.0111 >= 0.0099
  assert m[184, 184 + 10] == 0.0 and m[184 + 10, 184] == 0.0  # exp(-100 / 18) < 0.0099
  r = centre_map(20, 31)  # non-square: centre at (row H//2, column W//2)
  assert np.unravel_index(np.argmax(r), r.shape) == (10, 15)


@pytest.mark.parametrize("size", [(368, 368), (64, 48), (65, 71), (33, 20), (1, 9)])
def test_pooled_centre_map_is_the_9x9_stride_8_pad_1_average(size):
  h, w = size
  pooled = pooled_centre_map(h, w)
  assert pooled.shape == (-(-h // 8), -(-w // 8))
  padded = np.zeros((h + 16, w + 16))
  padded[1 : h + 1, 1 : w + 1] = centre_map(h, w)
  ref = np.array(
    [[padded[8 * i : 8 * i + 9, 8 * j : 8 * j + 9].sum() / 81 for j in range(pooled.shape[1])]
     for i in range(pooled.shape[0])]
  )  # fmt: skip
  np.testing.assert_allclose(pooled, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("size", [(368, 368), (64, 48), (71, 63)])
def test_pooled_centre_map_equals_torch_avgpool_where_sizes_agree(size):
  torch = pytest.importorskip("torch", reason="the AvgPool2d comparison needs torch")
  h, w = size
  ref = torch.nn.AvgPool2d(9, 8, 1)(torch.from_numpy(centre_map(h, w).copy())[None, None])[0, 0]
  assert tuple(ref.shape) == (-(-h // 8), -(-w // 8))  # count_include_pad default; 368 -> 46
  np.testing.assert_allclose(pooled_centre_map(h, w), ref.numpy(), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------- cells


def test_lstm_cells_match_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 4, K + 2)).astype(np.float32)
  h0 = rng.normal(size=(2, 5, 4, K + 2)).astype(np.float32)
  c0 = rng.normal(size=(2, 5, 4, K + 2)).astype(np.float32)
  first = FirstFrameCell(K + 2)
  v0 = first.init(jax.random.key(0), x)
  cell, hidden = first.apply(v0, x)
  ref_cell, ref_hidden = first_cell_np(_p(v0["params"]), x.astype(np.float64))
  np.testing.assert_allclose(cell, ref_cell, atol=2e-6)
  np.testing.assert_allclose(hidden, ref_hidden, atol=2e-6)
  full = ConvLSTMCell(K + 2)
  v1 = full.init(jax.random.key(1), x, h0, c0)
  assert sorted(v1["params"]) == sorted(f"conv_{z}{s}" for z in "giof" for s in "xh")
  cell, hidden = full.apply(v1, x, h0, c0)
  ref_cell, ref_hidden = cell_np(_p(v1["params"]), *(a.astype(np.float64) for a in (x, h0, c0)))
  np.testing.assert_allclose(cell, ref_cell, atol=2e-6)
  np.testing.assert_allclose(hidden, ref_hidden, atol=2e-6)


# ---------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def model_and_vars():
  model = tiny_lstm()
  clips = jax.random.normal(jax.random.key(1), (B, T, H, W, 3))
  variables = model.init(jax.random.key(0), clips, train=False)
  variables = jax.tree.map(lambda a: a, variables)
  # Random biases everywhere and running statistics, so that nothing is trivially zero.
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  leaves = [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
  variables = jax.tree.unflatten(tree, leaves)
  variables["batch_stats"] = jax.tree.map(jnp.abs, variables["batch_stats"])
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  run = jax.jit(lambda v, x, s: model.apply(v, x, s, method=UniPoseLSTM.run))
  step = jax.jit(lambda v, f, s: model.apply(v, f, s, method=UniPoseLSTM.step))
  return model, variables, clips, apply, run, step


def _trunk_maps(variables, clips):
  trunk = TINY_TRUNK(num_joints=K, wasp_pool_batch_norm=False)
  v = {"params": variables["params"]["trunk"], "batch_stats": variables["batch_stats"]["trunk"]}
  frames = clips.reshape((-1,) + clips.shape[2:])
  maps = trunk.apply(v, frames, train=False)
  return np.asarray(maps).reshape(clips.shape[:2] + maps.shape[1:])


@pytest.mark.slow
def test_shapes_parameters_and_the_video_wasp(model_and_vars):
  model, variables, clips, apply, _, _ = model_and_vars
  out = apply(variables, clips)
  assert out.shape == (B, T, 4, 3, K + 1) and out.dtype == jnp.float32
  assert float(out.min()) >= 0.0  # ReLU after the last head conv (the original)
  p = variables["params"]
  assert sorted(p) == ["recurrent", "trunk"] and sorted(p["trunk"]) == [
    "backbone",
    "decoder",
    "wasp",
  ]
  assert "pool_bn" not in p["trunk"]["wasp"] and "pool_conv" in p["trunk"]["wasp"]
  assert p["trunk"]["backbone"]["conv1"]["kernel"].shape == (7, 7, 3, 8)
  assert sorted(p["recurrent"]) == ["head", "lstm", "lstm_0"]
  assert p["recurrent"]["lstm_0"]["conv_g"]["kernel"].shape == (3, 3, K + 2, K + 2)
  head = p["recurrent"]["head"]
  assert [head[f"conv{n}"]["kernel"].shape for n in range(1, 6)] == [
    (11, 11, K + 2, 8), (11, 11, 8, 8), (11, 11, 8, 8), (1, 1, 8, 8), (1, 1, 8, K + 1),
  ]  # fmt: skip


@pytest.mark.slow
def test_scan_equals_the_unrolled_numpy_recurrence(model_and_vars):
  _, variables, clips, apply, _, _ = model_and_vars
  out = np.asarray(apply(variables, clips))
  maps = _trunk_maps(variables, clips)
  ref = recurrence_np(_p(variables["params"]["recurrent"]), maps, pooled_centre_map(H, W))
  assert np.abs(ref).max() > 0.1
  np.testing.assert_allclose(out, ref, atol=1e-5 * np.abs(ref).max())
  # ... and the same stage unrolled in JAX, frame by frame, with the state carried by hand
  # (op by op, not jitted: float32 rounding may differ from the compiled scan's)
  stage = RecurrentStage(K, head_features=8)
  state, frames = initial_state(B, H, W, K), []
  v = {"params": variables["params"]["recurrent"]}
  for j in range(T):
    state, heat = stage.apply(v, state, jnp.asarray(maps[:, j]), pooled_centre_map(H, W))
    frames.append(heat)
  np.testing.assert_allclose(out, np.stack(frames, 1), atol=5e-6 * np.abs(ref).max())


@pytest.mark.slow
def test_streaming_equals_the_clip_exactly(model_and_vars):
  _, variables, clips, apply, run, step = model_and_vars
  out = np.asarray(apply(variables, clips))
  state = initial_state(B, H, W, K)
  frames = []
  for j in range(T):
    heat, state = step(variables, clips[:, j], state)
    frames.append(np.asarray(heat))
  np.testing.assert_array_equal(np.stack(frames, 1), out)
  assert not bool(state.first.any())
  # in chunks (2 + 2 frames), the state carried by run(): the same, exactly
  first, mid = run(variables, clips[:, :2], initial_state(B, H, W, K))
  second, _ = run(variables, clips[:, 2:], mid)
  np.testing.assert_array_equal(np.concatenate([first, second], 1), out)
  # per-example restart: example 1 starts a new video at frame 2, example 0 goes on
  restart = mid._replace(first=jnp.asarray([False, True]))
  heat, _ = run(variables, clips[:, 2:], restart)
  alone = apply(variables, clips[1:, 2:])
  np.testing.assert_array_equal(heat[0], second[0])
  np.testing.assert_allclose(heat[1], alone[0], atol=1e-6)
  assert np.abs(np.asarray(heat[1]) - np.asarray(second[1])).max() > 1e-4


@pytest.mark.slow
def test_the_original_ignores_previous_heatmaps_the_improved_variant_reads_them(model_and_vars):
  _, variables, clips, _, run, _ = model_and_vars
  _, mid = run(variables, clips[:, :2], initial_state(B, H, W, K))
  noisy = mid._replace(heatmaps=mid.heatmaps + 5.0)
  a, _ = run(variables, clips[:, 2:], mid)
  b, _ = run(variables, clips[:, 2:], noisy)
  np.testing.assert_array_equal(a, b)  # the original's quirk: "previous" is never read

  improved = tiny_lstm(feed_previous_heatmaps=True)
  v = improved.init(jax.random.key(0), clips[:, :2], train=False)
  assert v["params"]["recurrent"]["lstm"]["conv_gx"]["kernel"].shape == (3, 3, 2 * K + 3, K + 2)
  assert v["params"]["recurrent"]["lstm"]["conv_gh"]["kernel"].shape == (3, 3, K + 2, K + 2)
  out = improved.apply(v, clips, train=False)
  maps = _trunk_maps(v, clips)
  ref = recurrence_np(_p(v["params"]["recurrent"]), maps, pooled_centre_map(H, W), True)
  np.testing.assert_allclose(out, ref, atol=1e-5 * max(np.abs(ref).max(), 1e-3))
  st = initial_state(B, H, W, K)._replace(first=jnp.zeros((B,), bool))
  run_i = lambda s: improved.apply(v, clips[:, :1], s, method=UniPoseLSTM.run)[0]
  assert np.abs(run_i(st) - run_i(st._replace(heatmaps=st.heatmaps + 5.0))).max() > 0


@pytest.mark.slow
def test_centre_map_input_and_training_mode():
  model = tiny_lstm(input_centre_map=True, video_wasp=False)
  clips = jax.random.normal(jax.random.key(1), (1, 2, 16, 16, 3))
  v = model.init(jax.random.key(0), clips, train=False)
  assert v["params"]["trunk"]["backbone"]["conv1"]["kernel"].shape == (7, 7, 4, 8)
  assert "pool_bn" in v["params"]["trunk"]["wasp"]  # the image WASP

  def loss(params):
    out, upd = model.apply(
      {"params": params, "batch_stats": v["batch_stats"]}, clips, train=True,
      mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)},
    )  # fmt: skip
    return jnp.sum(out[:, -1] ** 2), upd

  grads, upd = jax.grad(loss, has_aux=True)(v["params"])
  assert jax.tree.structure(upd["batch_stats"]) == jax.tree.structure(v["batch_stats"])
  # the last frame's loss reaches the full cell's hidden-state convolutions (through time)
  assert float(jnp.abs(grads["recurrent"]["lstm"]["conv_fh"]["kernel"]).max()) > 0


def test_bad_input_is_one_clear_error():
  model = tiny_lstm()
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1, 16, 16, 3))))
  with pytest.raises(ClipShapeError, match=r"clips of shape \(B, T, H, W, 3\).*\(1, 16, 16, 3\)"):
    jax.eval_shape(lambda: model.apply(v, jnp.zeros((1, 16, 16, 3))))
  with pytest.raises(ClipShapeError, match=r"T >= 1, got \(1, 0, 16, 16, 3\)"):
    jax.eval_shape(lambda: model.apply(v, jnp.zeros((1, 0, 16, 16, 3))))
  with pytest.raises(ClipShapeError, match=r"step expects frames \(B, H, W, 3\)"):
    jax.eval_shape(lambda: model.apply(v, jnp.zeros((1, 2, 16, 16, 3)), method=UniPoseLSTM.step))
  bad = initial_state(1, 32, 32, K)
  with pytest.raises(
    ClipShapeError, match=r"state.hidden has shape \(1, 4, 4, 15\).*\(1, 2, 2, 15\)"
  ):
    jax.eval_shape(lambda: model.apply(v, jnp.zeros((1, 16, 16, 3)), bad, method=UniPoseLSTM.step))
  assert isinstance(bad, LSTMState) and bad.heatmaps.shape == (1, 4, 4, K + 1)
