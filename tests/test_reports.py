"""The evaluator measures and the reports write (no network: a stub predict function),
the metric writer's rows, the pre-emption guard with a real signal, deploy's decoding
with a stub network. All fast."""

from __future__ import annotations

import csv
import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unipose_jax import (
  deploy,
  distributed,
  evaluate,
  keypoint_sets,
  metric_writers,
  metrics,
  preemption,
  reports,
)
from unipose_jax.metric_writers import MetricWriter
from unipose_jax.preemption import PreemptionGuard

K = keypoint_sets.LSP.num_joints
LSP = keypoint_sets.LSP


def _source(n: int = 5):
  """``n`` records of 40 x 60 images with joints spread over them (ids 100..)."""
  rng = np.random.default_rng(0)
  return [
    {
      "image": rng.integers(0, 256, (40, 60, 3), dtype=np.uint8),
      "keypoints": rng.uniform(2, [57, 37], (K, 2)).astype(np.float32),
      "labeled": np.ones(K, bool),
      "visible": np.ones(K, bool),
      "image_id": np.int32(100 + i),
    }
    for i in range(n)
  ]


def _stub_step(shift: float):
  """An ``eval_step`` stand-in: predicts each annotation moved by ``shift`` px in x."""

  def step(variables, batch):
    truth = np.asarray(batch["keypoints_orig"])
    mask = np.asarray(batch["valid"])[:, None] & np.asarray(batch["labeled"])
    pred = truth + np.float32([shift, 0.0])
    res = {
      "keypoints": pred,
      "scores": np.full(truth.shape[:2], 0.5, np.float32),
      "counts": metrics.keypoint_counts(pred, truth, mask, **evaluate.metric_joints(LSP)),
    }
    out = {"argmax": res, "heatmaps": np.zeros((len(truth), 2, 2, K), np.float32)}
    return jax.tree.map(jnp.asarray, out)  # device arrays, as the jitted step's

  return step


def test_the_evaluator_measures_and_the_reports_write(tmp_path, capsys):
  source = _source()
  mesh = distributed.data_mesh()
  evaluator = evaluate.Evaluator(
    _stub_step(0.0), source, mesh, decodings=("argmax",), batch_size=8, input_size=16,
    keypoint_set=LSP, num_examples=2,
  )  # fmt: skip
  result = evaluator.run(None)
  assert result.summary["argmax"]["pck@0.05"] == 1.0
  assert result.summary["argmax"]["num_joints"] == 5 * K  # the 3 padding images do not count
  ((ids, kps, scores, boxes),) = result.predictions["argmax"]
  assert ids.tolist() == [100, 101, 102, 103, 104] and boxes is None
  np.testing.assert_allclose(kps, [r["keypoints"] for r in source], atol=1e-4)
  assert len(result.examples) == 2 and result.examples[0].image.shape == (40, 60, 3)
  assert not os.listdir(tmp_path)  # measuring wrote nothing

  reports.write_eval(str(tmp_path), result)
  assert json.loads((tmp_path / "eval_metrics.json").read_text()) == result.summary
  rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
  assert (
    len(rows) == 5 * K and rows[K]["image_id"] == "101" and rows[K]["joint_name"] == "right_ankle"
  )
  assert float(rows[K]["x"]) == pytest.approx(float(source[1]["keypoints"][0, 0]), abs=1e-4)
  assert sorted(os.listdir(tmp_path)) == [
    "eval_metrics.json", "example_0.png", "example_1.png", "heatmaps_0.png", "pck_curve.png",
    "predictions.csv", "predictions.json",
  ]  # fmt: skip
  reports.print_summary(result.summary)
  assert capsys.readouterr().out.splitlines()[1].startswith("argmax       1.0000")

  # A torso-sized shift: every joint is wrong at 0.05 (torsos are far over 1 px here).
  off = evaluate.Evaluator(
    _stub_step(100.0),
    source,
    mesh,
    decodings=("argmax",),
    batch_size=8,
    input_size=16,
    keypoint_set=LSP,
  ).run(None, examples=False)
  assert off.summary["argmax"]["pck@0.05"] == 0.0 and off.examples == []
  reports.write_eval(str(tmp_path / "metrics_only"), off, all_files=False)
  assert os.listdir(tmp_path / "metrics_only") == ["eval_metrics.json"]


def test_a_stop_signal_ends_the_evaluation_between_batches_and_writes_nothing(tmp_path):
  asked = []

  def should_stop():
    asked.append(1)
    return len(asked) > 2  # a signal during the second batch

  evaluator = evaluate.Evaluator(
    _stub_step(0.0), _source(20), distributed.data_mesh(), decodings=("argmax",),
    batch_size=8, input_size=16, keypoint_set=LSP,
  )  # fmt: skip
  with pytest.raises(preemption.Preempted) as info:
    evaluator.run(None, should_stop=should_stop)
  assert (
    str(info.value) == "stopped by SIGTERM: evaluation, after 2 of 3 batches; no results written"
  )
  assert len(asked) == 3 and not os.listdir(tmp_path)


def test_eval_metrics_json_is_written_last(tmp_path, monkeypatch):
  """A folder with eval_metrics.json holds every file: a write that fails half way (a full
  disk while drawing the PCK curve) leaves no eval_metrics.json."""
  result = evaluate.Evaluator(
    _stub_step(0.0), _source(), distributed.data_mesh(), decodings=("argmax",), batch_size=8,
    input_size=16, keypoint_set=LSP, num_examples=1,
  ).run(None)  # fmt: skip

  def full(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(reports.charts, "save_pck_curve", full)
  with pytest.raises(OSError):
    reports.write_eval(str(tmp_path), result)
  assert sorted(os.listdir(tmp_path)) == ["predictions.csv", "predictions.json"]


def test_the_console_table_says_which_checkpoint(capsys):
  summary = {"dark": {"pck@0.2": 0.5, "pck@0.1": 0.25, "pck@0.05": 0.1, "auc@0.2": 0.3,
                      "pckh@0.5": 0.6}}  # fmt: skip
  reports.print_summary(summary, title="final evaluation: checkpoint 30 (the last step, 30 of 30)")
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "final evaluation: checkpoint 30 (the last step, 30 of 30):"
  assert lines[2].split() == ["dark", "0.5000", "0.2500", "0.1000", "0.3000", "0.6000"]


def test_metric_writer_rows_and_a_resume(tmp_path):
  writer = MetricWriter(str(tmp_path), enabled=True)
  for step in (1, 2, 3, 4):
    writer.write_scalars(step, {"loss": 1.0 / step, "learning_rate": 1e-3 * step})
  writer.close()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[2]["learning_rate"] == 3e-3
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "lo')  # a row cut short by a kill
  writer = MetricWriter(str(tmp_path), resume_step=2, enabled=True)  # resumed at step 2
  writer.write_scalars(3, {"loss": 0.25})
  writer.close()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 0.5), (3, 0.25)]


def test_metric_writer_one_row_per_step_and_a_resumed_final_evaluation_joins_it(tmp_path):
  """The training scalars, the step's images/s and its evaluation are one row; a writer
  reopened at the last step (a resumed final evaluation) adds to that row."""
  writer = MetricWriter(str(tmp_path), enabled=True)
  writer.write_scalars(1, {"loss": 2.0, "learning_rate": 1e-3})
  writer.write_scalars(1, {"images_per_s": 10.0})
  writer.write_scalars(2, {"loss": 1.0, "learning_rate": 2e-3})
  writer.write_scalars(2, {"images_per_s": 11.0})
  writer.write_scalars(2, {"eval/dark/pck@0.2": 0.25})
  writer.close()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [{k: v for k, v in r.items() if k != "time"} for r in rows] == [
    {"step": 1, "loss": 2.0, "learning_rate": 1e-3, "images_per_s": 10.0},
    {
      "step": 2,
      "loss": 1.0,
      "learning_rate": 2e-3,
      "images_per_s": 11.0,
      "eval/dark/pck@0.2": 0.25,
    },
  ]
  writer = MetricWriter(str(tmp_path), resume_step=2, enabled=True)
  writer.write_scalars(2, {"eval/dark/pck@0.2": 0.5})  # a value rewritten: a shorter row
  writer.write_scalars(3, {"loss": 0.5})
  writer.close()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert rows[1]["eval/dark/pck@0.2"] == 0.5 and rows[1]["images_per_s"] == 11.0
  assert rows[2]["loss"] == 0.5


def test_the_eta_leaves_evaluations_out(monkeypatch):
  """1 s per step, then a 100 s evaluation: the next rate is still 1 step/s."""
  clock = [0.0]
  monkeypatch.setattr(metric_writers.time, "perf_counter", lambda: clock[0])
  progress = metric_writers.ReportProgress(num_train_steps=100, images_per_step=4, every_steps=10)
  progress(0)
  for step in range(1, 21):
    clock[0] += 1.0
    progress(step)
    if step == 10:
      with progress.paused():
        clock[0] += 100.0
  assert progress.last_line.endswith("4.0 img/s ETA 0:01:20"), progress.last_line


def test_the_preemption_guard_turns_sigterm_into_a_flag():
  before = signal.getsignal(signal.SIGTERM)
  with PreemptionGuard() as guard:
    assert not guard.should_stop
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.time() + 5
    while not guard.should_stop and time.time() < deadline:
      time.sleep(0.01)
    assert guard.should_stop and guard.received == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before


def test_deploy_predicts_through_the_channel_layout_and_the_letterbox():
  """A stub network whose heatmaps peak at known input pixels: deploy's keypoints are
  those points taken back through the letterbox, box channels included."""
  size, side = 32, 8  # stride 4
  targets = np.random.default_rng(1).integers(1, side - 1, (K + 5, 2))  # heatmap pixels

  def run(images):
    maps = np.zeros((len(images), side, side, K + 6), np.float32)
    for c, (x, y) in enumerate(targets):
      maps[:, y, x, c + 1] = 1.0
    return maps

  image = np.zeros((16, 32, 3), np.uint8)  # letterbox: scale 1, 8 px bands top and bottom
  keypoints, scores = deploy.predict(run, [image], size, num_joints=K, decoding="argmax")
  assert keypoints.shape == (1, K + 5, 2) and scores.shape == (1, K + 5)
  expected = (targets + 0.5) * 4 - 0.5 - [0, 8]  # heatmap -> input -> original pixels
  np.testing.assert_allclose(keypoints[0], expected, atol=1e-5)
  with pytest.raises(ValueError, match="channels"):
    deploy.predict(lambda images: run(images)[..., :17], [image], size, num_joints=K)
