"""The command line: config overrides, SIGTERM during training, eval and predict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from unipose_jax import checkpoints, datasets

SMALL = "synthetic/small"


def launch(*args, timeout=300, **popen):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONUNBUFFERED="1")
  cmd = [sys.executable, str(REPO_ROOT / "launch.py"), *args]
  if popen:
    return subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, text=True, **popen)
  return subprocess.run(
    cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
  )


def small_flags(data_dir, workdir, steps):
  return [
    "--config=configs/smoke.py",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    f"--config.data.train_sources=('{SMALL}',)",
    f"--config.data.eval_source={SMALL}",
    "--config.data.input_size=32",
    "--config.batch_size=4",
    "--config.eval_batch_size=8",
    f"--config.num_train_steps={steps}",
    "--config.log_every=1",
    "--config.checkpoint_every=1000",
  ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds")
  datasets.prepare([SMALL], manual_dir=None, data_dir=str(d), log=lambda *a, **k: None)
  return str(d)


def test_unknown_config_key_is_an_error(tmp_path):
  r = launch(
    "--mode=train",
    "--config=configs/smoke.py",
    f"--workdir={tmp_path}",
    "--config.model.no_such_key=3",
  )
  assert r.returncode != 0
  assert "no_such_key" in r.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_mode_is_required():
  r = launch("--config=configs/smoke.py")
  assert r.returncode != 0 and "mode" in r.stderr


def test_sigterm_saves_and_exits_cleanly_then_eval_and_predict(data_dir, tmp_path):
  workdir = tmp_path / "run"
  proc = launch(
    "--mode=train",
    *small_flags(data_dir, workdir, 100000),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )
  deadline = time.time() + 240
  metrics = workdir / "metrics.jsonl"
  while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
    assert proc.poll() is None, proc.stdout.read()
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  assert "stopped at step" in out and "a stop signal" in out, out
  steps = checkpoints.available_steps(str(workdir / "checkpoints"))
  assert len(steps) == 1 and steps[0] >= 3, (steps, out)

  r = launch("--mode=eval", *small_flags(data_dir, workdir, 100000))
  assert r.returncode == 0, r.stderr
  result = json.loads(
    (workdir / "eval" / f"checkpoint_{steps[0]}" / "eval_metrics.json").read_text()
  )
  assert set(result) == {"argmax", "shift", "upsample", "dark"}
  assert 0.0 <= result["dark"]["pck@0.2"] <= 1.0

  rng = np.random.default_rng(0)
  good = [tmp_path / "a.png", tmp_path / "b.jpg"]
  Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(good[0])
  Image.fromarray(rng.integers(0, 255, (90, 40, 3), dtype=np.uint8)).save(good[1])
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  r = launch("--mode=predict", *small_flags(data_dir, workdir, 100000), f"--images={good[0]},{bad}")
  assert r.returncode != 0 and "broken.jpg" in r.stderr and "not a readable image" in r.stderr
  out_dir = tmp_path / "pred"
  r = launch(
    "--mode=predict",
    *small_flags(data_dir, workdir, 100000),
    f"--images={good[0]},{good[1]}",
    f"--output={out_dir}",
  )
  assert r.returncode == 0, r.stderr
  keypoints = json.loads((out_dir / "keypoints.json").read_text())
  assert list(keypoints) == [str(good[0]), str(good[1])]
  for path, (w, h) in zip(good, [(70, 50), (40, 90)]):
    joints = keypoints[str(path)]
    assert len(joints) == 14 and "head_top" in joints
    xy = np.array([v[:2] for v in joints.values()])
    # Original-image pixels: inside the letterbox square mapped back around the image.
    centre, half = np.array([(w - 1) / 2, (h - 1) / 2]), max(w, h) / 2
    assert np.all(np.abs(xy - centre) <= half + 1e-3), xy
    assert (out_dir / f"{path.stem}_pose.png").read_bytes()[:4] == b"\x89PNG"
