"""The video path from the command line (issue 28), one chain on stand-in Penn Action
(tiny label files in the release's format, tests/penn_standin.py): prepare, train
configs/smoke_video.py on 2 fake devices, stop and resume, compared with an uninterrupted
run (the same losses: the clip iterator's state and the train state resume exactly), then
``--mode=eval`` (every test video whole: the video model beside its single-frame path) and
``--mode=predict`` of a short video."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import launch
from penn_standin import write_release


def _flags(data_dir, workdir, steps):
  return [
    "--config=configs/smoke_video.py", f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}", "--config.data.input_size=32",
    "--config.model.backbone_width=8", "--config.model.wasp_features=16",
    "--config.model.low_level_features=8", "--config.model.decoder_features=16",
    "--config.codec.sigma=1.5", "--config.codec.eval_decodings=('argmax',)",
    "--config.codec.decoding=argmax", f"--config.num_train_steps={steps}",
    "--config.log_every=1", "--config.checkpoint_every=1000", "--config.eval_every=0",
    "--config.calibrate_presence=False", "--config.data.clip_length=2",
  ]  # fmt: skip


def _losses(workdir):
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
def test_prepare_train_resume_exactly_and_evaluate(tmp_path):
  manual, data = tmp_path / "manual", tmp_path / "tfds"
  write_release(manual, {1: (6, 1), 2: (8, 1), 3: (7, 1), 4: (6, 1), 5: (5, -1), 6: (4, -1)})
  p = launch("--mode=prepare", f"--manual_dir={manual}", f"--data_dir={data}",
             "--datasets=penn_action", timeout=600)  # fmt: skip
  assert p.returncode == 0, p.stdout + p.stderr
  resumed, straight = tmp_path / "resumed", tmp_path / "straight"
  p = launch("--mode=train", *_flags(data, resumed, 4), "--stop_after=2", timeout=900)
  assert p.returncode == 0, p.stdout + p.stderr
  assert "stopped at step 2" in p.stdout
  p = launch("--mode=train", *_flags(data, resumed, 4), timeout=900)
  assert p.returncode == 0, p.stdout + p.stderr
  assert "resumed from" in p.stdout
  p = launch("--mode=train", *_flags(data, straight, 4), timeout=900)
  assert p.returncode == 0, p.stdout + p.stderr
  a, b = _losses(resumed), _losses(straight)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  for step in (3, 4):  # after the resume: the same batches and state
    assert abs(a[step] - b[step]) <= 1e-5 * abs(b[step]), (step, a, b)
  final = json.loads((resumed / "eval_metrics.json").read_text())["argmax"]
  assert final["videos"] == 2.0 and final["frames"] == 9.0
  assert "single_frame/pck@0.2" in final and "pck@0.2/left_wrist" in final
  p = launch("--mode=eval", f"--workdir={resumed}", timeout=900)
  assert p.returncode == 0, p.stdout + p.stderr
  assert "UniPose-LSTM" in p.stdout and "single frame" in p.stdout
  got = json.loads((resumed / "eval" / "checkpoint_4" / "eval_metrics.json").read_text())
  assert got["argmax"]["pck@0.2"] == final["pck@0.2"]
  # Predict a short video: the state carried, one JSON line per frame, the overlay video.
  clip = tmp_path / "clip.mp4"
  writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
  for i in range(6):
    image = np.full((48, 64, 3), 40, np.uint8)
    cv2.circle(image, (20 + 4 * i, 24), 8, (200, 180, 160), -1)
    writer.write(image)
  writer.release()
  out = tmp_path / "pred"
  p = launch("--mode=predict", f"--workdir={resumed}", f"--inputs={clip}", f"--output={out}",
             timeout=900)  # fmt: skip
  assert p.returncode == 0, p.stdout + p.stderr
  assert "UniPose-LSTM checkpoint 4" in p.stdout and "6 frames in" in p.stdout
  lines = [json.loads(x) for x in (out / "clip_pose.jsonl").read_text().splitlines()]
  assert [x["frame"] for x in lines] == list(range(6))
  assert all(len(x["keypoints"]) == 13 for x in lines)
  assert (out / "clip_pose.mp4").stat().st_size > 0
  # An image dataset for a video config: one line, exit 2.
  p = launch("--mode=train", *_flags(data, tmp_path / "bad", 4),
             "--config.data.train_sources=('synthetic/small',)", timeout=600)  # fmt: skip
  assert p.returncode == 2, p.stdout + p.stderr
  assert "image dataset" in p.stderr or "keypoint set" in p.stderr, p.stderr
