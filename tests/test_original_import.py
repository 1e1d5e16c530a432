"""Loading checkpoints of the original PyTorch UniPose: ``load_original_unipose``.

A twin of the original (``tests/torch_twin.py``, the original's module names) with
random weights AND BatchNorm statistics is saved in the forms checkpoints come in;
each must load and give the twin's outputs (eval mode, float32) within 1e-4
relative error (max|diff| / max|ref|). Every kind of mismatch must be one clear
``ValueError`` that names the keys.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

torch = pytest.importorskip(
  "torch", reason="the original-checkpoint tests need torch (pip install unipose_jax[torch])"
)

import torch_twin  # noqa: E402

from unipose_jax.models import (  # noqa: E402
  Bottleneck,
  ResNet,
  UniPose,
  UniPose101,
  load_original_unipose,
  original_key,
  read_torch_state_dict,
  to_original_input,
)

torch.set_num_threads(1)

LAYERS, WIDTH, HEADS = (1, 1, 2, 3), 8, dict(wasp_planes=16, low_planes=8, decoder_planes=16)
UNUSED_DECODER = (
  "decoder.bn2.bias",
  "decoder.bn2.running_mean",
  "decoder.bn2.running_var",
  "decoder.bn2.weight",
  "decoder.conv2.weight",
)


def _twin(seed: int = 0, **kw) -> torch.nn.Module:
  return torch_twin.randomise_(
    torch_twin.UniPoseTwin(14, layers=LAYERS, width=WIDTH, **HEADS, **kw), seed
  )


@pytest.fixture(scope="module")
def flax_model():
  """The small Flax UniPose matching ``_twin()``, its abstract variables and a jitted apply."""
  model = UniPose(
    num_joints=14,
    backbone=functools.partial(ResNet, stage_sizes=LAYERS, block_cls=Bottleneck),
    backbone_width=WIDTH,
    wasp_features=HEADS["wasp_planes"],
    low_level_features=HEADS["low_planes"],
    decoder_features=HEADS["decoder_planes"],
  )
  abstract = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  )
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return model, abstract, apply


@pytest.fixture(scope="module")
def twin():
  return _twin(seed=7)


def _relative_error(twin, variables, apply) -> float:
  x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    ref = twin(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  out = np.asarray(apply(variables, jnp.asarray(x)))
  assert out.shape == ref.shape == (2, 8, 8, 15)
  return float(np.abs(out - ref).max() / np.abs(ref).max())


def _save_plain(twin, path):
  torch.save(twin.state_dict(), path)


def _save_wrapped_data_parallel(twin, path):
  # The original saves {'state_dict': model.state_dict()}; DataParallel adds 'module.'.
  sd = {f"module.{k}": v for k, v in twin.state_dict().items()}
  torch.save({"state_dict": sd, "epoch": 3, "best_pck": 0.5}, path)


def _save_whole_model(twin, path):
  with torch_twin.pickled_as_original():
    torch.save(twin, path)


def _save_whole_data_parallel_in_wrapper(twin, path):
  with torch_twin.pickled_as_original():
    torch.save({"model": torch.nn.DataParallel(twin), "epoch": 3}, path)


FORMS = {
  "plain state dict": (_save_plain, "x.pth'"),
  "{'state_dict'}, 'module.' prefix": (
    _save_wrapped_data_parallel,
    "state dict under ['state_dict']; 'module.' prefix removed",
  ),
  "whole model": (_save_whole_model, "whole module model.unipose.unipose"),
  "whole DataParallel model in {'model'}": (
    _save_whole_data_parallel_in_wrapper,
    "whole module torch.nn.parallel.data_parallel.DataParallel under ['model']; "
    "'module.' prefix removed",
  ),
}


@pytest.mark.slow
@pytest.mark.parametrize("form", list(FORMS))
def test_loads_every_form_with_parity(form, twin, flax_model, tmp_path):
  if importlib.util.find_spec("model") is not None:
    pytest.skip("a real 'model' package is importable here; the original's classes would resolve")
  save, described = FORMS[form]
  path = tmp_path / "x.pth"
  save(twin, path)
  assert "model" not in sys.modules
  _, abstract, apply = flax_model
  variables, report = load_original_unipose(str(path), abstract)
  assert "model" not in sys.modules, "loading imported (or faked) the original's package"
  assert described in report.source, report.source
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(variables))
  rel = _relative_error(twin, variables, apply)
  print(f"original import, {form}: max|diff|/max|ref| = {rel:.2e}; {report}")
  assert rel < 1e-4, rel
  sd = twin.state_dict()
  assert report.head_maps == 15
  assert set(report.loaded) | set(report.unused) == set(sd)
  assert report.unused == tuple(
    sorted([*UNUSED_DECODER, *(k for k in sd if k.endswith("num_batches_tracked"))])
  )
  assert report.num_values == sum(v.size for v in jax.tree.leaves(variables))


def test_whole_model_walk_equals_state_dict(twin, tmp_path):
  path = tmp_path / "whole.pth"
  _save_whole_model(twin, path)
  state, source = read_torch_state_dict(path)
  assert "classes stubbed, nothing imported: model.modules" in source
  ref = twin.state_dict()
  assert list(state) == list(ref)
  for key, value in ref.items():
    assert torch.equal(state[key], value), key
  live, source = read_torch_state_dict(twin)  # a live module works the same way
  assert source.startswith("the given module (whole module") and list(live) == list(ref)


@pytest.mark.slow
def test_legacy_whole_model_needs_allow_pickle(twin, flax_model, tmp_path):
  if importlib.util.find_spec("model") is not None:
    pytest.skip("a real 'model' package is importable here; the original's classes would resolve")
  path = tmp_path / "legacy.pth"
  with torch_twin.pickled_as_original(), warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torch cannot find the renamed classes' source
    torch.save(twin, path, _use_new_zipfile_serialization=False)
  _, abstract, apply = flax_model
  with pytest.raises(ValueError, match=r"legacy\.pth.*weights_only=True.*allow_pickle=True"):
    load_original_unipose(path, abstract)
  variables, report = load_original_unipose(path, abstract, allow_pickle=True)
  assert "model" not in sys.modules
  assert "full unpickling (allow_pickle=True)" in report.source
  rel = _relative_error(twin, variables, apply)
  print(f"original import, legacy whole model (allow_pickle): max|diff|/max|ref| = {rel:.2e}")
  assert rel < 1e-4, rel


class _RunsCode:
  """Unpickling this runs ``os.system(command)``: a safe loader must refuse it."""

  def __init__(self, command: str):
    self.command = command

  def __reduce__(self):
    import os

    return os.system, (self.command,)


def test_code_in_a_checkpoint_is_never_run(twin, flax_model, tmp_path):
  _, abstract, _ = flax_model
  marker = tmp_path / "ran"
  path = tmp_path / "evil.pth"
  torch.save({"state_dict": twin.state_dict(), "x": _RunsCode(f"touch {marker}")}, path)
  with pytest.raises(ValueError, match=r"evil\.pth.*weights_only=True.*blocked"):
    load_original_unipose(path, abstract)
  assert not marker.exists()


def _numpy_state(twin) -> dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in twin.state_dict().items()}


def _raises(state, abstract, pattern):
  with pytest.raises(ValueError, match=pattern) as info:
    load_original_unipose(state, abstract)
  # One error raised by the loader itself: no chained numpy/flax traceback.
  assert info.value.__cause__ is None and info.value.__context__ is None
  assert info.traceback[-1].path.name == "original_import.py"
  return str(info.value)


def test_missing_unexpected_and_misshapen_keys_are_named(twin, flax_model):
  _, abstract, _ = flax_model
  base = _numpy_state(twin)

  state = dict(base)
  del state["wasp.conv1.weight"], state["backbone.layer3.1.bn2.running_var"]
  message = _raises(
    state,
    abstract,
    r"missing keys \(in the model, not in the checkpoint\): "
    r"backbone\.layer3\.1\.bn2\.running_var, wasp\.conv1\.weight",
  )
  print(message)

  state = dict(base, **{"wasp.aspp5.bn.weight": np.ones(16, np.float32)})
  _raises(state, abstract, r"unexpected keys \(in the checkpoint, not in the model\): wasp\.aspp5")

  state = dict(base, **{"decoder.last_conv.0.weight": np.zeros((16, 20, 3, 3), np.float32)})
  _raises(
    state,
    abstract,
    r"shape mismatches: decoder\.last_conv\.0\.weight: checkpoint \(16, 20, 3, 3\) \(OIHW\), "
    r"as HWIO \(3, 3, 20, 16\), model expects \(3, 3, 24, 16\)",
  )

  state = dict(base, **{"wasp.bn1.running_mean": np.zeros(17, np.float32)})
  _raises(state, abstract, r"wasp\.bn1\.running_mean: checkpoint \(17,\), model expects \(16,\)")


def test_head_with_box_maps_is_refused_in_words(flax_model):
  _, abstract, _ = flax_model
  state = _numpy_state(_twin(seed=2, extra_maps=5))
  message = _raises(
    state,
    abstract,
    r"checkpoint head \(decoder\.last_conv\.8\) has 20 output maps, this model has 15 "
    r"\(14 joints \+ background\); 5 maps more: .*box head",
  )
  print(message)
  assert "last_conv.8.weight: checkpoint" not in message  # said once, in words

  state = _numpy_state(_twin(seed=2, extra_maps=-1))
  _raises(state, abstract, r"has 14 output maps, this model has 15 .*no background map")


def test_unused_keys_are_optional_and_reported(twin, flax_model):
  _, abstract, apply = flax_model
  state = {
    k: v
    for k, v in _numpy_state(twin).items()
    if not k.startswith("decoder.bn2.") and not k.endswith("num_batches_tracked")
  }
  variables, report = load_original_unipose(state, abstract)
  assert report.unused == ("decoder.conv2.weight",)
  assert report.source == "the given state dict"
  assert "unused (never used by the original's forward pass): decoder.conv2.weight" in str(report)
  assert _relative_error(twin, variables, apply) < 1e-4


def test_unreadable_inputs(flax_model, tmp_path, monkeypatch):
  _, abstract, _ = flax_model
  path = tmp_path / "list.pth"
  torch.save([1, 2], path)
  with pytest.raises(ValueError, match=r"list\.pth' holds a list, not a state dict"):
    load_original_unipose(path, abstract)
  torch.save({"epoch": 3, "optimizer": {"lr": 1e-4}}, path)
  with pytest.raises(ValueError, match=r"neither a state dict nor wraps one .*'epoch' \(int\)"):
    load_original_unipose(path, abstract)
  path.write_bytes(b"not a checkpoint")
  with pytest.raises(ValueError, match=r"cannot read .*list\.pth"):
    load_original_unipose(path, abstract)
  with pytest.raises(ValueError, match=r"cannot read .*list\.pth' even by full unpickling"):
    load_original_unipose(path, abstract, allow_pickle=True)
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    load_original_unipose(tmp_path / "nope.pth", abstract)
  with pytest.raises(ValueError, match="variables are not a UniPose's: params lack wasp, decoder"):
    load_original_unipose({}, {"params": {"backbone": {}}})
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  with pytest.raises(ImportError, match=r"list\.pth.* needs torch, which is not installed"):
    load_original_unipose(path, abstract)


@pytest.mark.slow
def test_full_resnet101_key_names():
  """The original LSP model's exact state dict (47,546,799 parameters) fills UniPose101."""
  twin = torch_twin.UniPoseTwin()
  sd = twin.state_dict()
  assert sum(p.numel() for p in twin.parameters()) == torch_twin.ORIGINAL_NUM_PARAMETERS
  abstract = jax.eval_shape(
    lambda: UniPose101(num_joints=14).init(
      jax.random.key(0), jnp.zeros((1, 368, 368, 3)), train=False
    )
  )
  names = {
    original_key(collection, path)
    for collection in ("params", "batch_stats")
    for path in traverse_util.flatten_dict(abstract[collection])
  }
  used = {k for k in sd if not k.startswith(("decoder.conv2.", "decoder.bn2."))}
  used = {k for k in used if not k.endswith("num_batches_tracked")}
  assert names == used
  wasp_decoder = sorted(k for k in sd if k.startswith(("wasp.", "decoder.")))
  print("original WASP/decoder keys:", ", ".join(wasp_decoder))
  variables, report = load_original_unipose(sd, abstract)
  assert report.head_maps == 15 and len(report.loaded) == len(used)
  assert report.num_values == sum(v.size for v in jax.tree.leaves(variables))
  assert original_key("batch_stats", ("wasp", "branch2_bn", "var")) == "wasp.aspp3.bn.running_var"
  assert original_key("params", ("decoder", "head", "bias")) == "decoder.last_conv.8.bias"
  assert original_key("params", ("backbone", "layer4_2", "conv2", "kernel")) == (
    "backbone.layer4.2.conv2.weight"
  )
  with pytest.raises(ValueError, match="no original UniPose name for Flax variable params/x/y"):
    original_key("params", ("x", "y"))


def test_to_original_input():
  rgb = np.random.default_rng(0).integers(0, 256, size=(2, 5, 4, 3)).astype(np.float32)
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  ours = (rgb / 255.0 - mean) / std  # this project's model input
  original = (rgb[..., ::-1] - 128.0) / 256.0  # cv2.imread BGR, Mytransforms.normalize
  out = np.asarray(to_original_input(jnp.asarray(ours, jnp.float32)))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, original, rtol=0, atol=1e-5)


def _chain(depth: int) -> torch.nn.Module:
  root = cur = torch.nn.Module()
  for _ in range(depth):
    child = torch.nn.Module()
    cur._modules["c"] = child
    cur = child
  return root


def test_crafted_module_trees_are_refused_in_words(flax_model, tmp_path):
  """A whole module that contains itself, or is 3000 levels deep, is one message, no recursion."""
  _, abstract, _ = flax_model
  loop = torch.nn.Module()
  loop._modules["again"] = loop
  torch.save(loop, tmp_path / "cyclic.pth")
  with pytest.raises(
    ValueError, match=r"cyclic\.pth.*module tree is cyclic: 'again' contains itself"
  ):
    load_original_unipose(tmp_path / "cyclic.pth", abstract)
  limit = sys.getrecursionlimit()
  sys.setrecursionlimit(100_000)  # pickling 3000 levels recurses; loading must not
  try:
    torch.save(_chain(3000), tmp_path / "deep.pth")
  finally:
    sys.setrecursionlimit(limit)
  with pytest.raises(ValueError, match=r"deep\.pth.*nested deeper than 64 levels"):
    load_original_unipose(tmp_path / "deep.pth", abstract)


def test_declared_sizes_are_checked_before_reading(twin, flax_model, tmp_path):
  """A small file that declares a 256 MiB zip entry is refused before it is inflated."""
  import zipfile

  _, abstract, apply = flax_model
  path = tmp_path / "bomb.pth"
  torch.save(twin.state_dict(), path)
  with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
    with z.open("bomb/data/999", "w", force_zip64=True) as f:
      for _ in range(256):
        f.write(bytes(1 << 20))
  assert path.stat().st_size < 2 << 20
  with pytest.raises(
    ValueError,
    match=r"bomb\.pth' declares an entry 'bomb/data/999' of 256\.0 MiB.*refused before reading",
  ):
    load_original_unipose(path, abstract)
  # The same state without the extra entry loads (the limits leave room for real files).
  torch.save({"state_dict": twin.state_dict(), "optimizer": twin.state_dict()}, path)
  variables, _ = load_original_unipose(path, abstract)
  assert _relative_error(twin, variables, apply) < 1e-4


def test_messages_name_types_with_their_article(flax_model, tmp_path):
  _, abstract, _ = flax_model
  torch.save(3, tmp_path / "int.pth")
  with pytest.raises(ValueError, match=r"int\.pth' holds an int, not a state dict"):
    load_original_unipose(tmp_path / "int.pth", abstract)
