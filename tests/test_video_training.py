"""UniPose-LSTM training and evaluation (issue 28): the clip step's loss against the
per-frame MSE, whole-video evaluation against an independent NumPy count over the clip
the scan gives, a single-frame run's network as the trunk, and bad input in one line."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_network

from configs import smoke_video
from unipose_jax import checkpoints, distributed, run, run_config, train_video, transforms
from unipose_jax.evaluate_video import VideoEvaluator
from unipose_jax.models import normalize

K = 13


def _config(**model):
  c = tiny_network(smoke_video.get_config(), input_size=32)
  c.model.wasp_dropout = 0.0
  c.model.decoder_dropout = (0.0, 0.0)
  c.codec.eval_decodings = ("argmax",)
  c.codec.decoding = "argmax"
  for k, v in model.items():
    c.model[k] = v
  return c


def _model(c):
  return run.build_video_model(c, K)


def _variables(model, size=32):
  return train_video.init_variables(model, 0, size)


@pytest.mark.slow
def test_the_clip_step_loss_is_the_sum_of_the_per_frame_mse():
  c = _config()
  model, codec = _model(c), run.build_codec(c)
  tx = optax.sgd(0.0)
  state = train_video.create_video_train_state(model, tx, 0, 32)
  rng = np.random.default_rng(0)
  b, t = 2, 3
  batch = {
    "image": rng.integers(0, 256, (b, t, 32, 32, 3), dtype=np.uint8),
    "keypoints": rng.uniform(2, 30, (b, t, K, 2)).astype(np.float32),
    "weights": np.ones((b, t, K), np.float32),
  }
  new, metrics = train_video.clip_train_step(
    state, batch, model=model, tx=tx, codec=codec, background_weight=1.0
  )
  pred, _ = model.apply(
    state.variables, normalize(batch["image"]), train=True, mutable=["batch_stats"]
  )
  pred = np.asarray(pred, np.float64)
  assert pred.shape == (b, t, 4, 4, K + 1)
  want = 0.0
  for i in range(t):  # each frame: mean over B, h, w, K + 1 of (pred - [bg, joints])^2
    tgt, _ = codec.encode(batch["keypoints"][:, i], batch["weights"][:, i])
    tgt = np.asarray(tgt, np.float64)
    bg = 1.0 - tgt.max(-1, initial=0.0)
    want += np.mean((pred[:, i] - np.concatenate([bg[..., None], tgt], -1)) ** 2)
  np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-5)
  assert int(new.step) == 1
  moved = jax.tree.map(
    lambda a, b: float(jnp.max(jnp.abs(a - b))), new.batch_stats, state.batch_stats
  )
  assert max(jax.tree.leaves(moved)) > 0  # the trunk's running statistics were updated


def _letterboxed(record, size):
  return transforms.transform_eval(record, input_size=size)


def _video_source(rng, lengths, h=40, w=56):
  """In-memory frames of videos ``{video_id: n}``, given in a shuffled order."""
  recs = []
  for vid, n in lengths.items():
    for f in range(1, n + 1):
      kp = rng.uniform(0, [w - 1, h - 1], (K, 2)).astype(np.float32)
      recs.append({
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "keypoints": kp,
        "visible": rng.random(K) > 0.2, "labeled": np.ones(K, bool),
        "box": np.array([*kp.min(0), *kp.max(0)], np.float32),
        "video_id": np.int64(vid), "frame": np.int64(f), "image_id": np.int32(vid * 10000 + f),
      })  # fmt: skip
  order = rng.permutation(len(recs))
  return [recs[i] for i in order]


def _numpy_pck(pred, gt, visible, box, alpha=0.2):
  size = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
  ok = np.linalg.norm(pred - gt, axis=-1) <= alpha * size[:, None]
  return (ok & visible).sum(0), visible.sum(0)


@pytest.mark.slow
@pytest.mark.parametrize("feed", [False, True])
def test_videos_run_whole_with_the_state_carried_and_pck_matches_numpy(feed):
  c = _config(feed_previous_heatmaps=feed)
  model, codec = _model(c), run.build_codec(c)
  v = _variables(model)
  rng = np.random.default_rng(1)
  lengths = {7: 5, 3: 2, 9: 4}  # 3 videos, 2 at once: a second group, padding
  source = _video_source(rng, lengths)
  mesh = distributed.data_mesh(jax.devices()[:1])
  ev = VideoEvaluator(
    model, codec, source, mesh, decodings=("argmax",), batch_size=2, input_size=32,
    keypoint_set=run.resolve_keypoint_set(c),
  )  # fmt: skip
  result = ev.run(v)
  r = result.summary["argmax"]
  assert (r["frames"], r["videos"]) == (11.0, 3.0)
  correct = {"video": np.zeros(K), "single": np.zeros(K)}
  total = np.zeros(K)
  trunk = jax.jit(lambda v, x: model.apply(v, x, False, method=lambda m, x, t: m._trunk_maps(x, t)))
  rows = []
  for vid in sorted(lengths):
    recs = sorted((r for r in source if int(r["video_id"]) == vid), key=lambda r: int(r["frame"]))
    ins = [_letterboxed(r, 32) for r in recs]
    clip = normalize(np.stack([i["image"] for i in ins]))[None]
    heat = model.apply(v, clip)[0]  # the whole video as ONE clip: the scan, state carried
    single = trunk(v, clip[0])
    inv = np.stack([i["inverse_affine"] for i in ins])
    gt = np.stack([r["keypoints"] for r in recs])
    vis = np.stack([r["visible"] for r in recs])
    box = np.stack([r["box"] for r in recs])
    for key, maps in (("video", heat), ("single", single)):
      pts, _ = codec.decode(maps[..., 1:], decoding="argmax")
      pts = np.einsum("bij,bkj->bki", inv[:, :, :2], np.asarray(pts)) + inv[:, None, :, 2]
      ok, n = _numpy_pck(pts, gt, vis, box)
      correct[key] += ok
      if key == "video":
        total += n
        rows.append((vid, pts))
  np.testing.assert_allclose(r["pck@0.2"], correct["video"].sum() / total.sum(), atol=1e-9)
  np.testing.assert_allclose(r["single_frame/pck@0.2"], correct["single"].sum() / total.sum())
  names = run.resolve_keypoint_set(c).joint_names
  for j, name in enumerate(names):
    if total[j]:
      np.testing.assert_allclose(r[f"pck@0.2/{name}"], correct["video"][j] / total[j])
  # The predictions: every frame once, the video model's, image_id = video * 10000 + frame.
  ids = np.concatenate([chunk[0] for chunk in result.predictions["argmax"]])
  assert sorted(ids.tolist()) == sorted(vid * 10000 + f for vid, n in lengths.items()
                                        for f in range(1, n + 1))  # fmt: skip
  got = {int(i): kp for chunk in result.predictions["argmax"] for i, kp in zip(chunk[0], chunk[1])}
  for vid, pts in rows:
    for f, p in enumerate(pts, start=1):
      np.testing.assert_allclose(got[vid * 10000 + f], p, atol=1e-3)


@pytest.mark.slow
def test_a_single_frame_runs_network_becomes_the_trunk():
  c = _config(video_wasp=False)
  image_model = run.build_model(c, K)
  image_v = jax.device_get(
    image_model.init(jax.random.key(5), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  video_v = jax.device_get(_variables(_model(c)))
  out, report = train_video.trunk_from_single_frame(video_v, image_v, "RUN")
  for col in ("params", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, out[col]["trunk"], image_v[col])
  jax.tree.map(np.testing.assert_array_equal, out["params"]["recurrent"],
               video_v["params"]["recurrent"])  # fmt: skip
  assert "0 of its arrays unused" in report
  # The video WASP has no pooling BatchNorm: the image network's is left out, counted.
  video_wasp = jax.device_get(_variables(_model(_config(video_wasp=True))))
  _, report = train_video.trunk_from_single_frame(video_wasp, image_v, "RUN")
  assert "0 of its arrays unused" not in report
  # Another width: refused in one line naming the layer.
  wide = _config(video_wasp=False)
  wide.model.decoder_features = 24
  wide_v = jax.device_get(_variables(_model(wide)))
  with pytest.raises(run_config.ConfigError, match=r"model.init_from=RUN: .*decoder.* is \("):
    train_video.trunk_from_single_frame(wide_v, image_v, "RUN")


def test_a_checkpoint_of_the_other_kind_is_refused_in_one_line():
  c = _config()
  video_v = _variables(_model(c))
  image_v = run.build_model(c, K).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  train_video.check_kind(video_v, video=True, what="x")
  train_video.check_kind(image_v, video=False, what="x")
  with pytest.raises(checkpoints.CheckpointError, match="checkpoint 3 of W holds a single-frame"):
    train_video.check_kind(image_v, video=True, what="checkpoint 3 of W")
  with pytest.raises(checkpoints.CheckpointError, match="holds a UniPose-LSTM network"):
    train_video.check_kind(video_v, video=False, what="checkpoint 3 of W")


class _Images(list):
  """An image dataset's source: records without video_id / frame, and no video metadata."""

  def metadata(self):
    return None


class _FakeRun:
  def __init__(self, t):
    self.config = smoke_video.get_config()
    self.config.data.clip_length = t


def test_bad_sources_are_refused_in_one_line():
  with pytest.raises(run_config.ConfigError, match=r"'lsp' is an image dataset .* 'penn_action'"):
    train_video.clip_index(_FakeRun(3), _Images([{"image": 0}]), "lsp")
  rng = np.random.default_rng(0)
  frames = _video_source(rng, {1: 2, 2: 5})
  with pytest.raises(run_config.ConfigError) as e:
    train_video.clip_index(_FakeRun(3), frames, "penn_action")
  msg = str(e.value)
  assert "\n" not in msg
  assert "data.clip_length=3" in msg and "fewer than clip_length=3" in msg and "1 (2)" in msg
  assert len(train_video.clip_index(_FakeRun(2), frames, "penn_action").runs) == 2


@pytest.mark.slow
def test_data_parallel_on_8_devices_and_bfloat16_match_one_device():
  import json
  import os
  import subprocess
  import sys

  from conftest import REPO_ROOT

  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])
  r = subprocess.run(
    [sys.executable, str(REPO_ROOT / "tests" / "video_parallel_worker.py")],
    env=env, capture_output=True, text=True, timeout=900,
  )  # fmt: skip
  assert r.returncode == 0, r.stdout + r.stderr
  out = json.loads(r.stdout.strip().splitlines()[-1])
  assert out["max_param_change"] > 1e-4  # the step did update the parameters
  for form in ("jit", "pmap"):  # the global batch's update, whatever the devices
    assert out[f"loss_8_{form}"] == pytest.approx(out["loss_1"], rel=1e-5)
    assert out[f"max_param_diff_{form}"] < 1e-5
  assert out["loss_bf16"] == pytest.approx(out["loss_1"], rel=0.05)  # close, not equal


@pytest.mark.slow
def test_the_penn_action_source_reads_its_metadata_without_the_images(tmp_path):
  import penn_standin

  from unipose_jax import datasets

  data = penn_standin.prepare(tmp_path / "manual", tmp_path / "tfds")
  for split in ("train", "test"):
    source = datasets.data_source("penn_action", split, data)
    want = [(int(r["video_id"]), int(r["frame"])) for r in source]
    assert source.metadata() == want
    assert len(want) == sum(
      n for n, t in penn_standin.VIDEOS.values() if (t == 1) == (split == "train")
    )
