"""Training: parallel forms agree, resume is exact, the smoke run learns, files are written,
the learning rate is logged. Everything that trains is marked slow."""

from __future__ import annotations

import csv
import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import SMALL, TRAINED_RUN_STEPS, tiny_network

from configs import smoke
from unipose_jax import checkpoints, datasets, distributed, evaluate, train
from unipose_jax.run import Run


@pytest.fixture(scope="module")
def data_dir(small_data_dir):
  return small_data_dir


def small_config(data_dir, **top):
  c = tiny_network(smoke.get_config())
  c.data.data_dir = data_dir
  c.data.train_sources = (SMALL,)
  c.data.eval_source = SMALL
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_train_steps = 6
  c.checkpoint_every = 3
  c.log_every = 2
  c.eval_every = 0
  c.num_example_images = 1
  for k, v in top.items():
    c[k] = v
  return c


def _params_of_checkpoint(workdir, step):
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  restored = ckpt.restore(step=step)
  ckpt.close()
  assert restored.step == step
  return jax.tree.map(np.asarray, restored.state["params"])


def _random_batch(n, size, seed=0):
  rng = np.random.default_rng(seed)
  return {
    "image": np.clip(rng.normal(128, 58, size=(n, size, size, 3)), 0, 255).astype(np.uint8),
    "keypoints": rng.uniform(2, size - 3, size=(n, 14, 2)).astype(np.float32),
    "weights": (rng.uniform(size=(n, 14)) > 0.1).astype(np.float32),
  }


@pytest.mark.slow
def test_jit_pmap_and_single_device_give_the_same_update(data_dir):
  assert jax.device_count() == 8
  batch = _random_batch(16, 32)
  results = {}
  for name, parallelism, devices in [
    ("single", "jit", jax.devices()[:1]),
    ("jit8", "jit", jax.devices()),
    ("pmap8", "pmap", jax.devices()),
  ]:
    cfg = small_config(data_dir, parallelism=parallelism)
    # SGD: the update is linear in the gradient, so float rounding stays float rounding
    # (Adam divides near-zero gradients by their own magnitude and amplifies it).
    cfg.optimizer.name, cfg.optimizer.schedule, cfg.optimizer.learning_rate = (
      "sgd",
      "constant",
      0.01,
    )
    mesh = distributed.data_mesh(devices)
    model, _, tx, _, trainer = train.build_trainer(cfg, mesh)
    init = train.create_train_state(model, tx, cfg.seed, cfg.data.input_size)
    state = trainer.place(distributed.replicate(init, mesh))
    for _ in range(2):
      state, metrics = trainer.step(state, batch)
    state = jax.device_get(trainer.canonical(state))
    results[name] = (state, float(metrics.compute()["loss"]))
  ref_state, ref_loss = results["single"]
  assert int(ref_state.step) == 2
  # The update moved the parameters: the comparison below is not between two initialisations.
  moved = max(
    float(np.max(np.abs(a - b)))
    for a, b in zip(jax.tree.leaves(ref_state.params), jax.tree.leaves(jax.device_get(init.params)))
  )
  assert moved > 1e-3
  for name in ("jit8", "pmap8"):
    state, loss = results[name]
    assert loss == pytest.approx(ref_loss, rel=1e-5), name
    for tree in ("params", "batch_stats"):
      ref_leaves = jax.tree.leaves(getattr(ref_state, tree))
      leaves = jax.tree.leaves(getattr(state, tree))
      scale = max(float(np.max(np.abs(r))) for r in ref_leaves)
      worst = max(float(np.max(np.abs(a - r))) for a, r in zip(leaves, ref_leaves))
      assert worst <= 2e-6 * scale, f"{name} {tree}: max |diff| {worst:.3g} (scale {scale:.3g})"


@pytest.mark.slow
def test_resume_is_bit_exact_and_restores_on_fewer_devices(data_dir, tmp_path):
  cfg = small_config(data_dir)
  straight, resumed, fewer = (str(tmp_path / n) for n in ("straight", "resumed", "fewer"))
  train.train_and_evaluate(cfg, straight)
  first = train.train_and_evaluate(cfg, resumed, stop_after=3)
  assert first == {}  # stopped early: no final evaluation
  ckpt = checkpoints.Checkpointer(os.path.join(resumed, "checkpoints"), read_only=True)
  assert ckpt.all_steps() == [3]
  ckpt.close()
  shutil.copytree(resumed, fewer)
  train.train_and_evaluate(cfg, resumed)
  a, b = _params_of_checkpoint(straight, 6), _params_of_checkpoint(resumed, 6)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # The same checkpoint continues on 2 devices instead of 8 (same global batch).
  train.train_and_evaluate(cfg, fewer, devices=jax.devices()[:2])
  c = _params_of_checkpoint(fewer, 6)
  worst = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))
  assert worst < 1e-5
  # Logged progress survives the restart: steps 2, 4, 6 (the first run logged 2 before stopping).
  steps = [
    json.loads(line)["step"]
    for line in open(os.path.join(resumed, "metrics.jsonl"))
    if "loss" in line
  ]
  assert steps == [2, 4, 6]


@pytest.mark.slow
def test_smoke_training_learns_and_writes_results(data_dir, tmp_path):
  cfg = small_config(data_dir)
  cfg.data.input_size = 64
  cfg.batch_size = 16
  cfg.num_train_steps = 150
  cfg.checkpoint_every = 150
  cfg.log_every = 25
  cfg.num_example_images = 2
  workdir = str(tmp_path / "smoke")

  mesh = distributed.data_mesh()
  model, codec, tx, _, _ = train.build_trainer(cfg, mesh)
  untrained = train.create_train_state(model, tx, cfg.seed, cfg.data.input_size)
  before = (
    evaluate.Evaluator.from_run(Run(cfg), mesh, model)
    .run(distributed.replicate(untrained.variables, mesh), examples=False)
    .summary
  )

  summary = train.train_and_evaluate(cfg, workdir)
  losses = [
    json.loads(line)["loss"]
    for line in open(os.path.join(workdir, "metrics.jsonl"))
    if '"loss"' in line
  ]
  assert losses[-1] < 0.5 * losses[0], losses
  pck_before, pck_after = before["dark"]["pck@0.2"], summary["dark"]["pck@0.2"]
  print(f"synthetic/small PCK@0.2: untrained {pck_before:.3f}, after 150 steps {pck_after:.3f}")
  # Measured: untrained 0.004, trained 0.07 (a tiny net, 150 steps, 8x8 heatmaps).
  assert pck_after > max(0.04, 5 * pck_before), (pck_before, pck_after)

  out = os.path.join(workdir, "eval", "step_150")
  metrics = json.load(open(os.path.join(workdir, "eval_metrics.json")))
  assert metrics == json.load(open(os.path.join(out, "eval_metrics.json")))
  assert set(metrics) == {"argmax", "shift", "upsample", "dark"}
  for decoder in metrics.values():
    assert {"pck@0.2", "pck@0.1", "pck@0.05", "auc@0.2", "pckh@0.5", "pck@0.2/head_top"} <= set(
      decoder
    )
  rows = list(csv.DictReader(open(os.path.join(out, "predictions.csv"))))
  assert len(rows) == 4 * 32 * 14
  assert sorted({int(r["image_id"]) for r in rows}) == sorted(
    int(datasets.data_source(SMALL, "test", data_dir)[i]["image_id"]) for i in range(32)
  )
  for name in ("pck_curve.png", "example_0.png", "example_1.png", "heatmaps_0.png"):
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
  # The CSV re-scores to the JSON: an independent PCK@0.2 from the predictions and annotations.
  source = datasets.data_source(SMALL, "test", data_dir)
  gt = {int(source[i]["image_id"]): source[i]["keypoints"] for i in range(len(source))}
  hits = total = 0
  for r in rows:
    if r["decoder"] != "dark":
      continue
    g = gt[int(r["image_id"])]
    torso = np.hypot(*(g[9] - g[2]))
    d = np.hypot(float(r["x"]) - g[int(r["joint"]), 0], float(r["y"]) - g[int(r["joint"]), 1])
    hits += d <= 0.2 * torso
    total += 1
  assert hits / total == pytest.approx(metrics["dark"]["pck@0.2"], abs=1e-6)


def _numpy_box_maps(keypoints, weights, size, heat, sigma):
  """The 5 box targets by hand: extent of the weighted joints, Gaussians in heatmap pixels."""
  b = keypoints.shape[0]
  maps = np.zeros((b, heat, heat, 5))
  w = np.zeros((b, 5))
  stride = size / heat
  ys, xs = np.mgrid[0:heat, 0:heat]
  for i in range(b):
    pts = keypoints[i][weights[i] > 0]
    if len(pts) < 2:
      continue
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    for j, (x, y) in enumerate([centre, (x0, y0), (x1, y0), (x0, y1), (x1, y1)]):
      mx, my = (x + 0.5) / stride - 0.5, (y + 0.5) / stride - 0.5
      maps[i, :, :, j] = np.exp(-((xs - mx) ** 2 + (ys - my) ** 2) / (2 * sigma**2))
      w[i, j] = 1.0
  return maps, w


@pytest.mark.slow
def test_box_head_loss_adds_the_box_maps_mse(data_dir):
  from unipose_jax.models import normalize

  cfg = small_config(data_dir)
  cfg.model.box_head = True
  mesh = distributed.data_mesh(jax.devices()[:1])
  model, codec, tx, _, _ = train.build_trainer(cfg, mesh)
  state = train.create_train_state(model, tx, cfg.seed, cfg.data.input_size)
  batch = _random_batch(4, 32, seed=3)
  batch["weights"][1, 2:] = 0  # two joints only: still a box
  batch["weights"][2, 1:] = 0  # one joint: no box

  @jax.jit  # one compilation: the box weight is traced
  def loss_of(state, batch, w):
    out = train.train_step(state, batch, model=model, tx=tx, codec=codec,
                           background_weight=cfg.loss.background_weight, box_weight=w)  # fmt: skip
    return out[1]["loss"]

  losses = {w: float(loss_of(state, batch, w)) for w in (0.0, 2.0)}
  heatmaps, _ = model.apply(
    state.variables, normalize(batch["image"], model.dtype), train=True,
    rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"],
  )  # fmt: skip
  assert heatmaps.shape == (4, 4, 4, 15 + 5)
  target, weight = _numpy_box_maps(batch["keypoints"], batch["weights"], 32, 4, cfg.codec.sigma)
  assert weight[:, 0].tolist() == [1, 1, 0, 1]
  pred = np.asarray(heatmaps[..., 15:], np.float64)
  expected = np.sum(weight[:, None, None] * (pred - target) ** 2) / pred.size
  assert losses[2.0] - losses[0.0] == pytest.approx(2.0 * expected, rel=1e-4)


@pytest.mark.slow
def test_box_head_run_reports_box_metrics(trained_run):
  summary = json.load(open(trained_run / "eval_metrics.json"))  # the shared run has a box head
  for dec in ("argmax", "dark"):
    assert {"box_iou", "box_iou>=0.5", "box_centre_error", "num_boxes"} <= set(summary[dec])
    assert summary[dec]["num_boxes"] == 32 and 0 <= summary[dec]["box_iou"] <= 1
  out = trained_run / "eval" / f"step_{TRAINED_RUN_STEPS}"
  assert json.load(open(out / "eval_metrics.json")) == summary
  # boxes.csv re-scores to the JSON: IoU against the annotated joints' extent, by hand.
  data_dir = json.load(open(trained_run / "config.json"))["data"]["data_dir"]
  source = datasets.data_source(SMALL, "test", data_dir)
  gt = {int(source[i]["image_id"]): source[i]["keypoints"] for i in range(len(source))}
  rows = list(csv.DictReader(open(out / "boxes.csv")))
  assert len(rows) == 4 * 32
  ious = []
  for r in rows:
    if r["decoder"] != "dark":
      continue
    (gx0, gy0), (gx1, gy1) = gt[int(r["image_id"])].min(0), gt[int(r["image_id"])].max(0)
    x0, y0, x1, y1 = (float(r[k]) for k in ("x0", "y0", "x1", "y1"))
    inter = max(0, min(x1, gx1) - max(x0, gx0)) * max(0, min(y1, gy1) - max(y0, gy0))
    union = (x1 - x0) * (y1 - y0) + (gx1 - gx0) * (gy1 - gy0) - inter
    ious.append(inter / union if union > 0 else 0.0)
  assert np.mean(ious) == pytest.approx(summary["dark"]["box_iou"], abs=1e-4)


def _tensorboard_scalars(folder) -> dict[str, dict[int, float]]:
  """``{tag: {step: value}}`` of the scalar events in a TensorBoard folder, read by hand:
  TFRecord framing (length u64, its crc u32, data, crc u32) around ``Event`` protos."""
  import struct

  from tensorboardX.proto import event_pb2

  out: dict[str, dict[int, float]] = {}
  for path in sorted(folder.rglob("events.out.tfevents.*")):
    data, i = path.read_bytes(), 0
    while i < len(data):
      (length,) = struct.unpack("<Q", data[i : i + 8])
      event = event_pb2.Event.FromString(data[i + 12 : i + 12 + length])
      i += 12 + length + 4
      for v in event.summary.value:
        out.setdefault(v.tag, {})[event.step] = v.simple_value
  return out


@pytest.mark.slow
def test_learning_rate_is_logged_with_the_loss(trained_run):
  # The smoke schedule: linear warm-up from 0 to its rate over its warm-up steps (then
  # cosine). The row of step s holds the rate of its own update, the schedule at s - 1.
  opt = smoke.get_config().optimizer
  assert opt.warmup_steps >= TRAINED_RUN_STEPS  # the shared run's steps are all warm-up
  expected = {
    s: opt.learning_rate * (s - 1) / opt.warmup_steps for s in range(1, TRAINED_RUN_STEPS + 1)
  }
  rows = [json.loads(line) for line in open(trained_run / "metrics.jsonl")]
  logged = {r["step"]: r["learning_rate"] for r in rows if "loss" in r}
  assert logged.keys() == expected.keys()
  for step, lr in expected.items():
    assert logged[step] == pytest.approx(lr, rel=1e-6, abs=1e-12), step
  events = _tensorboard_scalars(trained_run / "tensorboard")
  assert events["learning_rate"].keys() == expected.keys()
  for step, lr in expected.items():
    assert events["learning_rate"][step] == pytest.approx(lr, rel=1e-6, abs=1e-12), step
  assert events["loss"].keys() == expected.keys()


def test_make_optimizer_schedules():
  cfg = small_config("unused").optimizer
  cfg.schedule, cfg.learning_rate, cfg.decay_every, cfg.decay_factor = "step", 1e-3, 10, 0.5
  _, lr = train.make_optimizer(cfg, 100)
  # Steps: x 0.5 at every multiple of 10 updates (the original's x 0.333 every 13275).
  assert [float(lr(s)) for s in (0, 9, 10, 19, 25)] == pytest.approx(
    [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4]
  )
  # Listed steps (DARK's epochs 170 and 200 of 210): x 0.1 from each of them on, not between.
  cfg.decay_factor, cfg.decay_steps = 0.1, (17, 20)
  _, lr = train.make_optimizer(cfg, 21)
  assert [float(lr(s)) for s in (0, 10, 16, 17, 19, 20, 21)] == pytest.approx(
    [1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5]
  )
  cfg.decay_steps = ()
  cfg.schedule, cfg.warmup_steps = "cosine", 4
  _, lr = train.make_optimizer(cfg, 104)
  assert [float(lr(s)) for s in (0, 2, 4)] == pytest.approx([0.0, 5e-4, 1e-3])
  assert float(lr(104)) == pytest.approx(1e-5)  # cosine down to 1 % of the peak


#: What ``configs/smoke.py``'s "about a minute" stands for: the whole command's CPU time
#: (user + system, the dataset's first build included) on this project's 2-core machine,
#: where one minute of wall clock gives the process about 1.6 CPU-minutes. CPU time,
#: not wall clock, so that other work on the machine does not fail the test.
SMOKE_CPU_BUDGET_S = 90.0


@pytest.mark.slow
def test_the_smoke_config_trains_in_about_a_minute_and_learns(tmp_path):
  """README's promise for configs/smoke.py, run as a user runs it (one CPU device, a data
  folder that holds nothing yet): it builds the synthetic set, trains, evaluates and
  calibrates person presence within the CPU budget of about a minute, and learns."""
  import resource
  import subprocess
  import sys
  import time

  from conftest import REPO_ROOT

  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t0 = time.perf_counter()
  r = subprocess.run(
    [sys.executable, str(REPO_ROOT / "launch.py"), "--mode=train", "--config=configs/smoke.py",
     f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={tmp_path / 'tfds'}"],
    cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
  )  # fmt: skip
  wall = time.perf_counter() - t0
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  assert r.returncode == 0, r.stdout + r.stderr
  print(f"configs/smoke.py: {cpu:.1f} s CPU, {wall:.1f} s wall clock")
  assert cpu <= SMOKE_CPU_BUDGET_S, f"{cpu:.1f} s of CPU (wall {wall:.1f} s): over a minute"
  summary = json.loads((tmp_path / "run" / "eval_metrics.json").read_text())
  assert summary["dark"]["pck@0.2"] >= 0.1, summary["dark"]  # it learned the figures
  calibration = json.loads((tmp_path / "run" / "presence" / "calibration.json").read_text())
  assert calibration["heldout"]["auc"] >= 0.9, calibration["heldout"]
