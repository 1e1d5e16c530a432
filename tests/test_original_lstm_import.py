"""Loading checkpoints of the original PyTorch UniPose-LSTM: ``load_original_unipose_lstm``.

A twin of the original (``tests/torch_twin_lstm.py``, written from the description, the
original's module names) with random weights AND BatchNorm statistics is saved as a
plain state dict, DataParallel-wrapped, and with the released checkpoint's 4-channel
first convolution; each must load and give the twin's heatmaps on every frame of a clip
within 1e-4 relative error (max|diff| / max|ref|, eval mode, float32). A checkpoint of
the other kind (image model <-> LSTM) is refused in one line; differences of form are
said in words naming the layer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
  "torch", reason="the original-checkpoint tests need torch (pip install unipose_jax[torch])"
)

import torch_twin  # noqa: E402
import torch_twin_lstm  # noqa: E402

from unipose_jax.models import (  # noqa: E402
  Bottleneck,
  ResNet,
  UniPose,
  UniPoseLSTM,
  WeightImportError,
  load_original_unipose,
  load_original_unipose_lstm,
  original_lstm_key,
)

torch.set_num_threads(1)

K = 13
LAYERS, WIDTH = (1, 1, 1, 1), 8
TWIN_KW = dict(
  layers=LAYERS, width=WIDTH, wasp_planes=16, low_planes=8, decoder_planes=16, head_planes=8
)
CLIP = (2, 3, 64, 48)  # B, T, H, W: heatmaps 8 x 6
TRUNK = functools.partial(
  UniPose,
  backbone=functools.partial(ResNet, stage_sizes=LAYERS, block_cls=Bottleneck),
  backbone_width=WIDTH,
  wasp_features=16,
  low_level_features=8,
  decoder_features=16,
)


def _twin(seed=0, **kw):
  return torch_twin.randomise_(torch_twin_lstm.UniPoseLSTMTwin(K, **TWIN_KW, **kw), seed)


def _model(**kw):
  return UniPoseLSTM(num_joints=K, make_trunk=TRUNK, head_features=8, **kw)


def _abstract(model):
  b, t, h, w = CLIP
  return jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 1, h, w, 3)), train=False)
  )


@functools.lru_cache(maxsize=4)
def _apply(input_centre_map: bool):
  model = _model(input_centre_map=input_centre_map)
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


def _relative_error(twin, variables, input_centre_map=False) -> float:
  x = np.random.default_rng(1).normal(size=CLIP + (3,)).astype(np.float32)
  with torch.no_grad():
    ref = twin(torch.from_numpy(x.transpose(0, 1, 4, 2, 3))).numpy().transpose(0, 1, 3, 4, 2)
  out = np.asarray(_apply(input_centre_map)(variables, jnp.asarray(x)))
  assert out.shape == ref.shape == CLIP[:2] + (8, 6, K + 1)
  assert (ref > 0).mean() > 0.2, "the twin's heatmaps are mostly zero: a weak comparison"
  per_frame = [float(np.abs(out[:, t] - ref[:, t]).max() / np.abs(ref[:, t]).max())
               for t in range(CLIP[1])]  # fmt: skip
  return max(per_frame)


def _save_plain(twin, path):
  torch.save(twin.state_dict(), path)


def _save_data_parallel(twin, path):
  sd = {f"module.{k}": v for k, v in twin.state_dict().items()}
  torch.save({"state_dict": sd, "epoch": 3}, path)


def test_key_names():
  assert original_lstm_key("params", ("recurrent", "lstm", "conv_fh", "kernel")) == (
    "lstm.conv_fh_lstm.weight"
  )
  assert original_lstm_key("params", ("recurrent", "lstm_0", "conv_g", "bias")) == (
    "lstm_0.conv_g_lstm.bias"
  )
  assert original_lstm_key("params", ("recurrent", "head", "conv5", "kernel")) == "conv5.weight"
  assert original_lstm_key("batch_stats", ("trunk", "wasp", "branch2_bn", "var")) == (
    "wasp.aspp3.bn.running_var"
  )
  with pytest.raises(ValueError, match="no original UniPose-LSTM name"):
    original_lstm_key("params", ("recurrent", "other", "x", "kernel"))


@pytest.mark.slow
@pytest.mark.parametrize(
  "form, input_centre_map",
  [("plain", False), ("{'state_dict'}, 'module.' prefix", False), ("plain", True)],
)
def test_parity_on_every_frame(form, input_centre_map, tmp_path):
  twin = _twin(seed=7, input_centre_map=input_centre_map)
  path = tmp_path / "lstm.pth"
  (_save_plain if form == "plain" else _save_data_parallel)(twin, path)
  abstract = _abstract(_model(input_centre_map=input_centre_map))
  variables, report = load_original_unipose_lstm(str(path), abstract)
  if form != "plain":
    assert "'module.' prefix removed" in report.source
  sd = twin.state_dict()
  assert set(report.loaded) | set(report.unused) == set(sd)
  assert report.head_maps == K + 1
  assert report.num_values == sum(v.size for v in jax.tree.leaves(variables))
  assert "wasp.global_avg_pool.2.weight" not in sd  # the video WASP
  if input_centre_map:
    assert tuple(sd["backbone.conv1.weight"].shape) == (WIDTH, 4, 7, 7)
  rel = _relative_error(twin, variables, input_centre_map)
  print(f"original LSTM import, {form}, 4-channel={input_centre_map}: max rel = {rel:.2e}")
  assert rel < 1e-4, rel


def test_a_checkpoint_of_the_other_kind_is_refused_in_one_line(tmp_path):
  lstm_path, image_path = tmp_path / "lstm.pth", tmp_path / "image.pth"
  _save_plain(torch_twin_lstm.UniPoseLSTMTwin(K, **TWIN_KW), lstm_path)
  image_twin = torch_twin.UniPoseTwin(K, layers=LAYERS, width=WIDTH, wasp_planes=16,
                                      low_planes=8, decoder_planes=16)  # fmt: skip
  torch.save({"state_dict": image_twin.state_dict()}, image_path)
  lstm_vars = _abstract(_model())
  image_vars = jax.eval_shape(
    lambda: TRUNK(num_joints=K).init(jax.random.key(0), jnp.zeros((1, 64, 48, 3)), train=False)
  )
  with pytest.raises(WeightImportError) as e:
    load_original_unipose_lstm(str(image_path), lstm_vars)
  msg = str(e.value)
  assert "\n" not in msg and "image.pth" in msg and "original UniPose (image model)" in msg
  assert "load_original_unipose into a UniPose" in msg
  with pytest.raises(WeightImportError) as e:
    load_original_unipose(str(lstm_path), image_vars)
  msg = str(e.value)
  assert "\n" not in msg and "lstm.pth" in msg and "UniPose-LSTM checkpoint" in msg
  assert "load_original_unipose_lstm" in msg
  # variables of the other kind
  with pytest.raises(WeightImportError, match=r"not a UniPoseLSTM's.*use load_original_unipose$"):
    load_original_unipose_lstm(str(lstm_path), image_vars)
  with pytest.raises(WeightImportError, match=r"not a UniPose's.*use load_original_unipose_lstm$"):
    load_original_unipose(str(image_path), lstm_vars)


@pytest.mark.parametrize(
  "twin_kw, model_kw, words",
  [
    (dict(input_centre_map=True), {}, r"backbone\.conv1\.weight\) takes 4 input channels "
     r"\(RGB \+ the centre map.*input_centre_map=True"),
    ({}, dict(input_centre_map=True), r"backbone\.conv1\.weight\) takes 3 input channels.*"
     r"build it with input_centre_map=False"),
    ({}, dict(feed_previous_heatmaps=True), r"lstm_0\.conv_g_lstm\.weight\) takes 15 channels "
     r"in the checkpoint, 29 in this model.*feed_previous_heatmaps=False"),
    ({}, dict(video_wasp=False), r"no BatchNorm in its image-pooling branch.*video_wasp=True"),
  ],
)  # fmt: skip
def test_differences_of_form_are_said_in_words(twin_kw, model_kw, words):
  twin = torch_twin_lstm.UniPoseLSTMTwin(K, **TWIN_KW, **twin_kw)
  with pytest.raises(WeightImportError, match=words) as e:
    load_original_unipose_lstm(twin.state_dict(), _abstract(_model(**model_kw)))
  assert "shape mismatches" in str(e.value) or "missing keys" in str(e.value)


def test_head_of_other_joints_and_image_wasp_checkpoint():
  twin = torch_twin_lstm.UniPoseLSTMTwin(12, **TWIN_KW)
  with pytest.raises(WeightImportError, match=r"head \(conv5\) has 13 output maps, this model "
                     r"has 14 \(13 joints \+ background\).*num_joints=12"):  # fmt: skip
    load_original_unipose_lstm(twin.state_dict(), _abstract(_model()))
  sd = torch_twin_lstm.UniPoseLSTMTwin(K, **TWIN_KW).state_dict()
  sd.update({f"wasp.global_avg_pool.2.{n}": torch.ones(16) for n in ("weight", "bias")})
  with pytest.raises(WeightImportError, match=r"global_avg_pool\.2\.\*, the image WASP.*"
                     r"video_wasp=False"):  # fmt: skip
    load_original_unipose_lstm(sd, _abstract(_model()))
