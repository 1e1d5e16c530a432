"""Parity of the Flax UniPose with a PyTorch twin of the original (eval mode, float32).

The twin (``tests/torch_twin.py``) is written from the original UniPose / torchvision
structure with the original's module names, so its state dict goes through
``load_original_unipose`` exactly as an original checkpoint would (a bare twin
ResNet's through ``load_torchvision_resnet``). Weights AND BatchNorm running
statistics are random.
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
import torch_twin  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from unipose_jax.models import (  # noqa: E402
  BasicBlock,
  Bottleneck,
  ResNet,
  UniPose,
  load_original_unipose,
  load_torchvision_resnet,
)

torch.set_num_threads(1)

#: Parameters of the original that its forward pass never uses (and the Flax model lacks).
_UNUSED = ("decoder.conv2.", "decoder.bn2.")


def _parity(block_t, block_f, layers, width, output_stride, heads, hw, seed, batch=2):
  wasp_planes, low_planes, dec_planes = heads
  twin = torch_twin.UniPoseTwin(
    14,
    block=block_t,
    layers=layers,
    width=width,
    output_stride=output_stride,
    wasp_planes=wasp_planes,
    low_planes=low_planes,
    decoder_planes=dec_planes,
  )
  torch_twin.randomise_(twin, seed)
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
  variables, report = load_original_unipose(twin.state_dict(), abstract)
  assert report.unused == tuple(
    k for k in sorted(twin.state_dict()) if k.startswith(_UNUSED) or "num_batches" in k
  )
  leaves = jax.tree.leaves(variables)
  assert all(isinstance(leaf, jax.Array) for leaf in leaves), "some Flax variable was not filled"
  n_flax = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
  n_torch = sum(p.numel() for k, p in twin.named_parameters() if not k.startswith(_UNUSED))
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
  return rel, n_flax, twin


SMALL_HEADS = (16, 8, 16)


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("hw", [(64, 64), (97, 75)])
def test_parity_small_bottleneck(output_stride, hw):
  _parity(
    torch_twin.Bottleneck,
    Bottleneck,
    (2, 1, 2, 3),
    8,
    output_stride,
    SMALL_HEADS,
    hw,
    seed=output_stride + hw[1],
  )


@pytest.mark.slow
def test_parity_small_basic_block():
  _parity(torch_twin.BasicBlock, BasicBlock, (2, 1, 1, 2), 8, 16, SMALL_HEADS, (81, 66), seed=3)


@pytest.mark.slow
def test_parity_resnet101_full_width():
  rel, n, twin = _parity(
    torch_twin.Bottleneck,
    Bottleneck,
    (3, 4, 23, 3),
    64,
    16,
    (256, 48, 256),
    (97, 89),
    seed=0,
    batch=1,
  )
  assert n == 47_021_999  # torch twin's own count agrees with the hand formula of test_models.py
  # The original's count (design.md): its decoder's unused conv2/bn2 included.
  assert sum(p.numel() for p in twin.parameters()) == torch_twin.ORIGINAL_NUM_PARAMETERS


@pytest.mark.slow
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
  twin = torch_twin.randomise_(torch_twin.ResNet(torch_twin.BasicBlock, (1, 1, 1, 1), 4, 16), 1)
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
