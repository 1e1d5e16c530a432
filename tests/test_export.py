"""ONNX export (``unipose_jax.export``) and the NumPy deployment helpers (``unipose_jax.deploy``).

Heatmap parity is ``max |onnxruntime - jax| / max |jax|`` (relative to the largest
reference value) < 1e-4, for batch 1 and 3 from one exported file; keypoint
parity is in pixels. BatchNorm statistics are random so that folding them into
the convolutions is exercised.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ort = pytest.importorskip(
  "onnxruntime", reason="the ONNX export tests need onnxruntime (pip install unipose_jax[onnx])"
)
onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install unipose_jax[onnx])")

from unipose_jax import deploy, keypoint_sets  # noqa: E402
from unipose_jax.codecs import HeatmapCodec  # noqa: E402
from unipose_jax.export import export_onnx  # noqa: E402
from unipose_jax.models import BasicBlock, ResNet, UniPose, UniPoseTiny, normalize  # noqa: E402
from unipose_jax.transforms import (  # noqa: E402
  apply_affine_to_points,
  invert_affine,
  letterbox_affine,
  warp_image,
)

LSP_K = keypoint_sets.LSP.num_joints

S = 64


def _random_variables(model, input_hw, seed=0):
  """Random variables, BatchNorm statistics included (no ``model.init``: faster)."""
  abstract = jax.eval_shape(
    lambda x: model.init(jax.random.key(0), x, train=False),
    jax.ShapeDtypeStruct((1, *input_hw, 3), jnp.float32),
  )
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      value = rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
    elif name in ("var", "scale"):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:  # BatchNorm mean and bias, conv bias
      value = rng.normal(0.0, 0.1, leaf.shape)
    return jnp.asarray(value, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _jax_heatmaps(model, variables, images_uint8):
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return np.asarray(apply(variables, normalize(images_uint8)))


def _rel_error(got, ref):
  return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  model = UniPoseTiny(num_joints=LSP_K)
  variables = _random_variables(model, (S, S))
  path = export_onnx(model, variables, tmp_path_factory.mktemp("onnx") / "tiny.onnx", S)
  return model, variables, path


def test_heatmaps_match_jax_dynamic_batch(tiny):
  model, variables, path = tiny
  session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  (inp,), (out,) = session.get_inputs(), session.get_outputs()
  assert (inp.name, inp.type, inp.shape[1:]) == ("images", "tensor(uint8)", [S, S, 3])
  assert isinstance(inp.shape[0], str)  # dynamic batch
  assert (out.name, out.type, out.shape[1:]) == ("heatmaps", "tensor(float)", [8, 8, 15])
  rng = np.random.default_rng(1)
  for batch in (1, 3):
    images = rng.integers(0, 256, (batch, S, S, 3), dtype=np.uint8)
    got = session.run(None, {"images": images})[0]
    ref = _jax_heatmaps(model, variables, images)
    assert got.shape == ref.shape == (batch, 8, 8, 15)
    error = _rel_error(got, ref)
    print(f"batch {batch}: max|onnx - jax| / max|jax| = {error:.2e}")
    assert error < 1e-4


@pytest.mark.slow
def test_numpy_decoding_matches_jax_path_on_non_square_image(tiny):
  model, variables, path = tiny
  image = np.random.default_rng(2).integers(0, 256, (90, 53, 3), dtype=np.uint8)
  codec = HeatmapCodec((S, S), (8, 8), sigma=2.0)
  # JAX path: letterbox -> model -> codec.decode -> inverse affine.
  affine = letterbox_affine(90, 53, S)
  heatmaps = _jax_heatmaps(model, variables, warp_image(image, affine, S)[None])[..., 1:]
  run = deploy.onnx_runner(path)
  for decoding in ("argmax", "dark"):
    kp_in, ref_scores = codec.decode(jnp.asarray(heatmaps), decoding)
    ref = apply_affine_to_points(invert_affine(affine), np.asarray(kp_in, np.float64))
    got, scores = deploy.predict(run, [image], S, num_joints=LSP_K, decoding=decoding, sigma=2.0)
    assert got.shape == (1, 14, 2) and scores.shape == (1, 14)
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_numpy_decoders_match_codec():
  rng = np.random.default_rng(3)
  codec = HeatmapCodec((368, 368), (46, 46), sigma=3.0)
  keypoints = rng.uniform(-10, 378, (32, 15, 2)).astype(np.float32)  # borders and beyond
  heatmaps, _ = codec.encode(keypoints, np.ones((32, 15)))
  heatmaps = np.asarray(heatmaps) * rng.uniform(0.3, 1.2, (32, 1, 1, 15)).astype(np.float32)
  heatmaps += rng.normal(0.0, 0.03, heatmaps.shape).astype(np.float32)
  heatmaps[0, ..., 0] = 0.0  # constant map
  heatmaps[1, ..., 1] = -1.0  # no positive value
  heatmaps[2, 5, 7, 2] = np.nan  # non-finite value
  heatmaps = heatmaps.reshape(4, 8, 46, 46, 15)  # two leading dimensions
  for decoding in ("argmax", "dark"):
    ref, ref_scores = codec.decode(jnp.asarray(heatmaps), decoding)
    got, scores = deploy.decode_heatmaps(heatmaps, 368, decoding=decoding, sigma=3.0)
    assert got.shape == (4, 8, 15, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(ref), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(scores, np.asarray(ref_scores))
  with pytest.raises(ValueError, match="upsample"):
    deploy.decode_heatmaps(heatmaps, 368, decoding="upsample")


@pytest.mark.slow
def test_other_architectures_export(tmp_path):
  """Basic blocks, output stride 8, one projection, non-square input, 2 extra output maps."""
  model = UniPose(
    num_joints=16,
    backbone=functools.partial(ResNet, stage_sizes=(1, 1, 1, 2), block_cls=BasicBlock),
    output_stride=8,
    backbone_width=4,
    wasp_features=8,
    low_level_features=4,
    decoder_features=8,
    wasp_projection_repeats=1,
  )
  variables = _random_variables(model, (45, 38), seed=4)
  # verify=True: onnxruntime vs model.apply on 2 random images, relative error < 1e-4.
  said = []
  path = export_onnx(model, variables, tmp_path / "basic.onnx", (45, 38), verify=True,
                     log=said.append)  # fmt: skip
  (line,) = said  # the check says what it measured
  measured = float(line.split(" by ")[1].split()[0])
  assert line.startswith("onnxruntime check: ") and 0 <= measured <= 1e-4, line
  images = np.zeros((3, 45, 38, 3), np.uint8)
  assert deploy.onnx_runner(path)(images).shape == (3, 6, 5, 17)


def test_bad_output_paths_are_named(tmp_path, tiny):
  model, variables, _ = tiny
  missing = tmp_path / "no_such_folder" / "model.onnx"
  with pytest.raises(FileNotFoundError, match="no_such_folder"):
    export_onnx(model, variables, missing, S)
  with pytest.raises(IsADirectoryError, match=re.escape(str(tmp_path))):
    export_onnx(model, variables, tmp_path, S)
  if os.geteuid() != 0:  # root writes anywhere
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="locked"):
      export_onnx(model, variables, locked / "model.onnx", S)


def test_a_full_disk_leaves_no_onnx_file_and_says_so_in_one_line(tmp_path, tiny, monkeypatch):
  """The file is written under a temporary name and renamed when whole: a write that fails
  half way (no space left) leaves the earlier export at the path, and no temporary file."""
  model, variables, good = tiny
  target = tmp_path / "unipose.onnx"
  target.write_bytes(good.read_bytes())
  save = onnx.save_model

  def half_then_full(proto, path):
    with open(path, "wb") as f:
      f.write(proto.SerializeToString()[:1000])
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(onnx, "save_model", half_then_full)
  with pytest.raises(OSError) as info:
    export_onnx(model, variables, target, S)
  assert str(info.value) == f"cannot write ONNX file {str(target)!r}: No space left on device"
  assert os.listdir(tmp_path) == ["unipose.onnx"] and target.read_bytes() == good.read_bytes()
  monkeypatch.setattr(onnx, "save_model", save)

  # The step before the rename (the settings JSON of --mode=export) failing: the same.
  target.unlink()
  with pytest.raises(OSError, match="settings"):
    export_onnx(model, variables, target, S, before_rename=lambda: (_ for _ in ()).throw(
      OSError(28, "settings: No space left on device")))  # fmt: skip
  assert os.listdir(tmp_path) == []
  seen = []
  export_onnx(model, variables, target, S, before_rename=lambda: seen.append(target.exists()))
  assert seen == [False] and os.listdir(tmp_path) == ["unipose.onnx"]
  assert deploy.onnx_runner(target)(np.zeros((1, S, S, 3), np.uint8)).shape[0] == 1


def test_variables_that_do_not_fit_are_rejected(tmp_path, tiny):
  model, variables, _ = tiny
  extra = jax.tree.map(lambda x: x, variables)
  extra["params"]["decoder"]["unused_conv"] = {"kernel": jnp.zeros((1, 1, 4, 4))}
  with pytest.raises(ValueError, match="unused_conv"):
    export_onnx(model, extra, tmp_path / "x.onnx", S)


@pytest.mark.slow
def test_deploy_imports_no_jax():
  code = "import sys, unipose_jax.deploy; assert 'jax' not in sys.modules, 'jax imported'"
  subprocess.run([sys.executable, "-c", code], check=True)
