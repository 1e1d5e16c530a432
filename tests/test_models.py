"""Tests of the UniPose network (shapes, parameter count, train/eval, dtypes, weight import)."""

from __future__ import annotations

import functools
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unipose_jax import keypoint_sets
from unipose_jax.models import (
  WASP,
  BasicBlock,
  Bottleneck,
  ResNet,
  ResNetTiny,
  UniPose,
  UniPose101,
  UniPoseTiny,
  default_wasp_rates,
  heatmap_size,
  load_torchvision_resnet,
  max_pool_3x3_s2,
  resize_bilinear_align_corners,
  resnet,
  stage_strides_and_dilations,
  torch_key,
)

LSP_K = keypoint_sets.LSP.num_joints  # the LSP network of the original


def _abstract_init(model, shape, dtype=jnp.float32):
  x = jax.ShapeDtypeStruct(shape, dtype)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x), x


def _random_variables(model, shape, seed=0):
  """Variables of ``model`` filled from numpy (fast: no XLA compile of an RNG-heavy init).

  Kernels ~ N(0, 2 / fan_in); biases and running means ~ N(0, 0.1^2); BN scales and
  running variances ~ U(0.5, 1.5).
  """
  abstract, _ = _abstract_init(model, shape)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    elif name in ("bias", "mean"):
      value = rng.normal(size=leaf.shape) * 0.1
    else:
      value = rng.uniform(0.5, 1.5, size=leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.fixture(scope="module")
def tiny_unipose():
  """UniPoseTiny and its variables from a real ``model.init`` (rbg keys: compiles ~4x faster than threefry)."""
  model = UniPoseTiny(num_joints=LSP_K)
  init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 32, 32, 3)), train=False))
  return model, init(jax.random.key(1, impl="rbg"))


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


# --------------------------------------------------------------------------- shapes


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [8, 16])
def test_unipose101_output_shape_368(output_stride):
  model = UniPose101(num_joints=LSP_K, output_stride=output_stride)
  variables, x = _abstract_init(model, (2, 368, 368, 3))
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert out.shape == (2, 46, 46, 15)
  assert out.dtype == jnp.float32
  assert heatmap_size(368) == 46


@pytest.mark.parametrize(
  "output_stride, layer3_stride, wasp_rates",
  [(8, 8, (36, 24, 12)), (16, 16, (18, 12, 6)), (32, 16, (9, 6, 3))],
)
@pytest.mark.slow
def test_resnet101_feature_shapes(output_stride, layer3_stride, wasp_rates):
  model = resnet(101, output_stride=output_stride)
  variables, x = _abstract_init(model, (1, 368, 368, 3))
  feats = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert set(feats) == {"stem", "layer1", "layer2", "layer3", "layer4"}
  expected = {
    "stem": (184, 64),
    "layer1": (92, 256),
    "layer2": (46, 512),
    "layer3": (-(-368 // layer3_stride), 1024),
    "layer4": (-(-368 // output_stride), 2048),  # 46, 23, 12
  }
  for name, (side, channels) in expected.items():
    assert feats[name].shape == (1, side, side, channels), name
  assert default_wasp_rates(output_stride) == wasp_rates


def test_odd_input_sizes_follow_ceil_division():
  # Every stride-2 op maps n -> (n - 1) // 2 + 1, i.e. ceil(n / 2), as PyTorch with padding 1/3.
  model = resnet(18, output_stride=32, width=4)
  variables, x = _abstract_init(model, (1, 97, 70, 3))
  feats = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert feats["stem"].shape == (1, 49, 35, 4)
  assert feats["layer1"].shape == (1, 25, 18, 4)
  assert feats["layer2"].shape == (1, 13, 9, 8)
  assert feats["layer3"].shape == (1, 7, 5, 16)
  assert feats["layer4"].shape == (1, 4, 3, 32)
  tiny = UniPoseTiny(num_joints=LSP_K)
  v, x = _abstract_init(tiny, (1, 97, 70, 3))
  out = jax.eval_shape(lambda v, x: tiny.apply(v, x, train=False), v, x)
  assert out.shape == (1, heatmap_size(97), heatmap_size(70), 15) == (1, 13, 9, 15)


def test_stage_plan():
  assert stage_strides_and_dilations(16, (3, 4, 23, 3)) == [
    (1, [1] * 3),
    (2, [1] * 4),
    (2, [1] * 23),
    (1, [2, 4, 8]),
  ]
  assert stage_strides_and_dilations(8, (3, 4, 6, 3)) == [
    (1, [1] * 3),
    (2, [1] * 4),
    (1, [2] * 6),
    (1, [4, 8, 16]),
  ]
  assert stage_strides_and_dilations(32, (2, 2, 2, 2)) == [
    (1, [1, 1]),
    (2, [1, 1]),
    (2, [1, 1]),
    (2, [1, 1]),
  ]
  assert stage_strides_and_dilations(16, (1, 1, 1, 4))[3] == (1, [2, 4, 8, 2])
  with pytest.raises(ValueError, match="output_stride must be one of"):
    stage_strides_and_dilations(4, (1, 1, 1, 1))
  with pytest.raises(ValueError, match="stage_sizes must be 4 positive"):
    stage_strides_and_dilations(16, (1, 1, 1))


def test_dilated_kernels_and_shapes_in_params():
  model = resnet(101, output_stride=16)
  variables, _ = _abstract_init(model, (1, 64, 64, 3))
  p = variables["params"]
  assert p["conv1"]["kernel"].shape == (7, 7, 3, 64)
  assert p["layer1_0"]["downsample_conv"]["kernel"].shape == (1, 1, 64, 256)
  assert p["layer3_22"]["conv2"]["kernel"].shape == (3, 3, 256, 256)
  assert "layer3_23" not in p and "layer4_3" not in p
  assert variables["batch_stats"]["layer4_2"]["bn3"]["var"].shape == (2048,)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match=r"UniPose expects images of shape \(B, H, W, 3\)"):
    _abstract_init(UniPoseTiny(num_joints=LSP_K), (1, 64, 64, 1))
  with pytest.raises(ValueError, match="backbone_depth must be one of"):
    _abstract_init(UniPose(num_joints=LSP_K, backbone_depth=42), (1, 64, 64, 3))


# --------------------------------------------------------------------------- parameter count


def _conv(cin, cout, k):
  return cin * cout * k * k


def _bn(c):
  return 2 * c


def _bottleneck_resnet_params(stages, width=64):
  n = _conv(3, width, 7) + _bn(width)
  cin = width
  for i, blocks in enumerate(stages):
    planes = width * 2**i
    for j in range(blocks):
      n += _conv(cin, planes, 1) + _bn(planes) + _conv(planes, planes, 3) + _bn(planes)
      n += _conv(planes, 4 * planes, 1) + _bn(4 * planes)
      if j == 0:
        n += _conv(cin, 4 * planes, 1) + _bn(4 * planes)
      cin = 4 * planes
  return n


def _wasp_params(cin, f):
  cascade = _conv(cin, f, 1) + _bn(f) + 3 * (_conv(f, f, 3) + _bn(f))
  shared = _conv(f, f, 1)
  pooling = _conv(cin, f, 1) + _bn(f)
  project = _conv(5 * f, f, 1) + _bn(f)
  return cascade + shared + pooling + project


def _decoder_params(c_low, f_in, low, dec, k):
  return (
    _conv(c_low, low, 1)
    + _bn(low)
    + _conv(f_in + low, dec, 3)
    + _bn(dec)
    + _conv(dec, dec, 3)
    + _bn(dec)
    + dec * (k + 1)
    + (k + 1)
  )


def test_unipose101_parameter_count():
  backbone = _bottleneck_resnet_params((3, 4, 23, 3))
  # torchvision resnet101 has 44,549,160 parameters, of which fc holds 2048 * 1000 + 1000.
  assert backbone == 44_549_160 - (2048 * 1000 + 1000) == 42_500_160
  expected = backbone + _wasp_params(2048, 256) + _decoder_params(256, 256, 48, 256, 14)
  variables, _ = _abstract_init(UniPose101(num_joints=LSP_K), (1, 64, 64, 3))
  n = _count(variables["params"])
  print(f"UniPose ResNet-101 parameters: {n:,} (hand formula: {expected:,})")
  assert n == expected == 47_021_999
  assert _count(variables["params"]["backbone"]) == backbone
  # Running statistics: mean and var of every BN (as many as BN scale+bias).
  assert _count(variables["batch_stats"]) == sum(
    int(np.prod(leaf.shape))
    for path, leaf in flax.traverse_util.flatten_dict(variables["params"]).items()
    if path[-1] in ("scale", "bias") and "head" not in path
  )


def test_wasp_shared_projection_is_one_weight():
  x = jax.ShapeDtypeStruct((1, 5, 5, 32), jnp.float32)
  for repeats, has_proj in [(2, True), (1, True), (0, False)]:
    wasp = WASP(features=8, projection_repeats=repeats)
    v = jax.eval_shape(lambda x: wasp.init(jax.random.key(0), x, train=False), x)
    assert ("branch_proj" in v["params"]) == has_proj
    if has_proj:
      assert jax.tree.map(lambda a: a.shape, v["params"]["branch_proj"]) == {"kernel": (1, 1, 8, 8)}
    assert _count(v["params"]) == _wasp_params(32, 8) - (0 if has_proj else 64)


@pytest.mark.slow
def test_wasp_projection_applied_twice_equals_squared_matrix():
  # P(P(b)) with one weight W is b @ W @ W: compare with repeats=2 vs an explicit W @ W.
  wasp = WASP(rates=(2, 1, 1), features=4, dropout_rate=0.0, projection_repeats=2)
  x = jax.random.normal(jax.random.key(1), (1, 6, 6, 8))
  v = _random_variables(wasp, x.shape)
  y2 = jax.jit(lambda v, x: wasp.apply(v, x, train=False))(v, x)
  once = WASP(rates=(2, 1, 1), features=4, dropout_rate=0.0, projection_repeats=1)
  w = v["params"]["branch_proj"]["kernel"]
  v1 = jax.tree.map(lambda a: a, v)
  v1["params"]["branch_proj"]["kernel"] = jnp.einsum("abij,abjk->abik", w, w)
  y1 = jax.jit(lambda v, x: once.apply(v, x, train=False))(v1, x)
  np.testing.assert_allclose(np.asarray(y2), np.asarray(y1), rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(y2).max()) > 0


# --------------------------------------------------------------------------- train / eval / dtype


@pytest.mark.slow
def test_tiny_forward_backward_train(tiny_unipose):
  model, variables = tiny_unipose
  x = jax.random.normal(jax.random.key(0), (2, 48, 40, 3))
  # Documented initial state: BN scale 1, bias 0, running mean 0, var 1.
  assert float(jnp.abs(variables["params"]["backbone"]["bn1"]["scale"] - 1).max()) == 0
  assert float(jnp.abs(variables["batch_stats"]["wasp"]["pool_bn"]["var"] - 1).max()) == 0
  params, stats = variables["params"], variables["batch_stats"]

  def loss_fn(params, rng):
    out, updates = model.apply(
      {"params": params, "batch_stats": stats},
      x,
      train=True,
      rngs={"dropout": rng},
      mutable=["batch_stats"],
    )
    return jnp.mean(out**2), (out, updates["batch_stats"])

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, (out, new_stats)), grads = step(params, jax.random.key(2))
  assert out.shape == (2, 6, 5, 15) and out.dtype == jnp.float32
  assert np.isfinite(float(loss))
  grad_norms = jax.tree.map(lambda g: float(jnp.abs(g).max()), grads)
  assert all(np.isfinite(g) for g in jax.tree.leaves(grad_norms))
  # Every parameter that feeds the output gets a gradient (the head bias and a deep backbone conv included).
  assert grad_norms["decoder"]["head"]["bias"] > 0
  assert grad_norms["backbone"]["conv1"]["kernel"] > 0
  assert grad_norms["wasp"]["branch_proj"]["kernel"] > 0
  # Running statistics moved: mean = 0.9 * 0 + 0.1 * batch mean.
  assert not np.allclose(new_stats["backbone"]["bn1"]["mean"], stats["backbone"]["bn1"]["mean"])
  # Dropout is active in train mode (different rngs -> different outputs) and off in eval mode.
  out_b = step(params, jax.random.key(3))[0][1][0]
  assert float(jnp.abs(out - out_b).max()) > 1e-6
  out_a = step(params, jax.random.key(2))[0][1][0]
  np.testing.assert_array_equal(np.asarray(out), np.asarray(out_a))
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(lambda: model.apply(variables, x, train=True, mutable=["batch_stats"]))


@pytest.mark.slow
def test_batch_norm_uses_batch_statistics_in_train_mode():
  # Train-mode BN normalises with the batch statistics: with scale 1 / bias 0 the
  # stem output (pre-ReLU) has zero mean per channel; eval mode uses running stats.
  model = ResNetTiny(width=4)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3)) * 3 + 1
  v = _random_variables(model, x.shape)
  v["params"]["bn1"] = {"scale": jnp.ones(4), "bias": jnp.zeros(4)}
  v["batch_stats"]["bn1"] = {"mean": jnp.zeros(4), "var": jnp.ones(4)}
  conv_out = jax.lax.conv_general_dilated(
    x,
    v["params"]["conv1"]["kernel"],
    (2, 2),
    ((3, 3), (3, 3)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  mean, var = conv_out.mean(axis=(0, 1, 2)), conv_out.var(axis=(0, 1, 2))
  expected_train = jax.nn.relu((conv_out - mean) / jnp.sqrt(var + 1e-5))
  feats, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
    v, x
  )
  np.testing.assert_allclose(np.asarray(feats["stem"]), np.asarray(expected_train), atol=2e-4)
  np.testing.assert_allclose(
    np.asarray(updates["batch_stats"]["bn1"]["mean"]), 0.1 * np.asarray(mean), rtol=1e-4
  )
  expected_eval = jax.nn.relu(conv_out / jnp.sqrt(1 + 1e-5))  # running mean 0, var 1
  np.testing.assert_allclose(
    np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(v, x)["stem"]),
    np.asarray(expected_eval),
    atol=1e-5,
  )


@pytest.mark.slow
def test_bfloat16_compute_float32_params():
  model = UniPoseTiny(num_joints=LSP_K, dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(0), (1, 40, 40, 3))
  abstract, _ = _abstract_init(model, x.shape)
  assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
  variables = _random_variables(model, x.shape)
  out, inter = jax.jit(
    lambda v, x: model.apply(
      v, x, train=False, capture_intermediates=True, mutable=["intermediates"]
    )
  )(variables, x)
  assert out.dtype == jnp.float32 and out.shape == (1, 5, 5, 15)
  feats = inter["intermediates"]["backbone"]["__call__"][0]
  assert {f.dtype for f in feats.values()} == {jnp.dtype(jnp.bfloat16)}
  assert inter["intermediates"]["wasp"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["intermediates"]["decoder"]["__call__"][0].dtype == jnp.bfloat16
  ref = jax.jit(lambda v, x: UniPoseTiny(num_joints=LSP_K).apply(v, x, train=False))(variables, x)
  rel = float(jnp.abs(out - ref).max() / jnp.abs(ref).max())
  assert 0 < rel < 0.1, rel


# --------------------------------------------------------------------------- layers


def test_resize_align_corners_matches_direct_formula():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
  out_h, out_w = 7, 9
  expected = np.zeros((2, out_h, out_w, 4), np.float32)
  for i in range(out_h):
    for j in range(out_w):
      sy, sx = i * (3 - 1) / (out_h - 1), j * (5 - 1) / (out_w - 1)
      y0, x0 = int(np.floor(sy)), int(np.floor(sx))
      y1, x1 = min(y0 + 1, 2), min(x0 + 1, 4)
      fy, fx = sy - y0, sx - x0
      expected[:, i, j] = (
        (1 - fy) * (1 - fx) * x[:, y0, x0]
        + (1 - fy) * fx * x[:, y0, x1]
        + fy * (1 - fx) * x[:, y1, x0]
        + fy * fx * x[:, y1, x1]
      )
  out = np.asarray(resize_bilinear_align_corners(jnp.asarray(x), (out_h, out_w)))
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  # Corners are copied exactly; jax.image.resize (half-pixel centres) is a different function.
  np.testing.assert_array_equal(out[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]])
  half_pixel = np.asarray(jax.image.resize(jnp.asarray(x), (2, out_h, out_w, 4), "bilinear"))
  assert np.abs(half_pixel - expected).max() > 1e-2
  # A 1x1 map broadcasts; same size is the identity.
  np.testing.assert_array_equal(
    np.asarray(resize_bilinear_align_corners(jnp.asarray(x[:, :1, :1]), (4, 6))),
    np.broadcast_to(x[:, :1, :1], (2, 4, 6, 4)),
  )
  np.testing.assert_array_equal(
    np.asarray(resize_bilinear_align_corners(jnp.asarray(x), (3, 5))), x
  )
  with pytest.raises(ValueError, match=r"expects \(B, H, W, C\)"):
    resize_bilinear_align_corners(jnp.zeros((3, 5, 4)), (6, 6))


def test_max_pool_pads_with_minus_infinity():
  x = -1.0 - jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4, 1)  # all negative
  out = np.asarray(max_pool_3x3_s2(x))[0, :, :, 0]
  xs = np.asarray(x)[0, :, :, 0]
  expected = np.array(
    [[xs[0:2, 0:2].max(), xs[0:2, 1:4].max()], [xs[1:4, 0:2].max(), xs[1:4, 1:4].max()]]
  )
  np.testing.assert_array_equal(out, expected)
  assert max_pool_3x3_s2(jnp.zeros((1, 5, 7, 2))).shape == (1, 3, 4, 2)


# --------------------------------------------------------------------------- torchvision import


def _expected_tiny_torch_keys():
  """torchvision key names of a 1-block-per-stage bottleneck ResNet, written out by hand."""
  keys = {"conv1.weight"} | {f"bn1.{s}" for s in ("weight", "bias", "running_mean", "running_var")}
  for stage in range(1, 5):
    b = f"layer{stage}.0"
    keys |= {f"{b}.conv{i}.weight" for i in (1, 2, 3)} | {f"{b}.downsample.0.weight"}
    for bn in ("bn1", "bn2", "bn3", "downsample.1"):
      keys |= {f"{b}.{bn}.{s}" for s in ("weight", "bias", "running_mean", "running_var")}
  return keys


def _fake_state_dict(variables, seed=0):
  """A torchvision-layout state dict (OIHW convs) with random values for a Flax ResNet."""
  rng = np.random.default_rng(seed)
  sd = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in flax.traverse_util.flatten_dict(variables[collection]).items():
      shape = (
        leaf.shape
        if leaf.ndim != 4
        else (leaf.shape[3], leaf.shape[2], leaf.shape[0], leaf.shape[1])
      )
      sd[torch_key(collection, path)] = rng.normal(size=shape).astype(np.float32)
  return sd


@pytest.fixture(scope="module")
def tiny_resnet_variables():
  model = ResNetTiny(width=4)
  return model, _random_variables(model, (1, 32, 32, 3))


def test_torch_key_names():
  assert torch_key("params", ("conv1", "kernel")) == "conv1.weight"
  assert torch_key("params", ("layer3_12", "bn2", "scale")) == "layer3.12.bn2.weight"
  assert (
    torch_key("params", ("layer1_0", "downsample_conv", "kernel")) == "layer1.0.downsample.0.weight"
  )
  assert (
    torch_key("batch_stats", ("layer1_0", "downsample_bn", "var"))
    == "layer1.0.downsample.1.running_var"
  )
  assert torch_key("batch_stats", ("bn1", "mean")) == "bn1.running_mean"


def test_import_round_trip_bare_resnet(tiny_resnet_variables):
  model, variables = tiny_resnet_variables
  sd = _fake_state_dict(variables)
  assert set(sd) == _expected_tiny_torch_keys()
  sd["fc.weight"] = np.zeros((10, 128), np.float32)
  sd["fc.bias"] = np.zeros((10,), np.float32)
  sd["bn1.num_batches_tracked"] = np.array(7)
  new = load_torchvision_resnet(sd, variables, scope=None)
  w = sd["layer2.0.conv2.weight"]  # (O, I, kh, kw)
  k = np.asarray(new["params"]["layer2_0"]["conv2"]["kernel"])  # (kh, kw, I, O)
  assert k.shape == (3, 3, 8, 8)
  assert k[2, 0, 5, 3] == w[3, 5, 2, 0]
  np.testing.assert_array_equal(np.asarray(new["params"]["bn1"]["scale"]), sd["bn1.weight"])
  np.testing.assert_array_equal(
    np.asarray(new["batch_stats"]["layer4_0"]["downsample_bn"]["var"]),
    sd["layer4.0.downsample.1.running_var"],
  )
  # Every leaf was replaced; the original variables are untouched.
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), variables, new)
  assert all(jax.tree.leaves(changed))
  assert jax.tree.structure(new) == jax.tree.structure(variables)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), new) == jax.tree.map(
    lambda a: (a.shape, a.dtype), variables
  )


def test_import_into_unipose_touches_only_backbone():
  variables = _random_variables(UniPoseTiny(num_joints=LSP_K), (1, 32, 32, 3))
  sd = _fake_state_dict({c: variables[c]["backbone"] for c in ("params", "batch_stats")})
  new = load_torchvision_resnet(sd, variables)
  np.testing.assert_array_equal(
    np.asarray(new["params"]["backbone"]["conv1"]["kernel"]),
    sd["conv1.weight"].transpose(2, 3, 1, 0),
  )
  for part in ("wasp", "decoder"):
    same = jax.tree.map(
      lambda a, b: bool(np.array_equal(a, b)), variables["params"][part], new["params"][part]
    )
    assert all(jax.tree.leaves(same))


def test_import_errors_name_the_key(tiny_resnet_variables):
  _, variables = tiny_resnet_variables
  base = _fake_state_dict(variables)

  sd = dict(base)
  del sd["layer3.0.bn2.running_mean"]
  with pytest.raises(ValueError, match=r"missing keys .*: layer3\.0\.bn2\.running_mean"):
    load_torchvision_resnet(sd, variables, scope=None)

  sd = dict(base, **{"layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)})
  with pytest.raises(ValueError, match=r"unexpected keys .*: layer5\.0\.conv1\.weight"):
    load_torchvision_resnet(sd, variables, scope=None)

  sd = dict(base, **{"layer1.0.conv2.weight": np.zeros((4, 4, 1, 1), np.float32)})
  with pytest.raises(
    ValueError,
    match=r"shape mismatches: layer1\.0\.conv2\.weight: checkpoint \(4, 4, 1, 1\) "
    r"\(OIHW\), as HWIO \(1, 1, 4, 4\), model expects \(3, 3, 4, 4\)",
  ):
    load_torchvision_resnet(sd, variables, scope=None)

  sd = dict(base, **{"bn1.bias": np.zeros((5,), np.float32)})
  with pytest.raises(ValueError, match=r"bn1\.bias: checkpoint \(5,\), model expects \(4,\)"):
    load_torchvision_resnet(sd, variables, scope=None)

  with pytest.raises(ValueError, match="the given state dict"):
    load_torchvision_resnet({}, variables, scope=None)
  with pytest.raises(ValueError, match="no 'backbone' params"):
    load_torchvision_resnet(base, {"params": {"x": {}}})


def test_import_from_path_without_torch(tiny_resnet_variables, monkeypatch, tmp_path):
  _, variables = tiny_resnet_variables
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  with pytest.raises(ImportError, match=r"resnet101\.pth.* needs torch, which is not installed"):
    load_torchvision_resnet(str(tmp_path / "resnet101.pth"), variables)


def test_backbone_constructor_partial():
  model = UniPose(
    num_joints=3,
    backbone=functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock),
    backbone_width=4,
    wasp_features=8,
    low_level_features=4,
    decoder_features=8,
  )
  variables, x = _abstract_init(model, (1, 64, 64, 3))
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert out.shape == (1, 8, 8, 4)
  assert variables["params"]["backbone"]["layer4_0"]["conv2"]["kernel"].shape == (3, 3, 32, 32)
  assert Bottleneck.expansion == 4 and BasicBlock.expansion == 1
