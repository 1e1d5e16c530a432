"""Failure modes seen from the command line, with real processes: bad configs and keys, a
second trainer, pre-emption's exit code and delay, prepare's exit code, damaged and
missing checkpoints, one metrics row per step after a resume, a full disk.

All but the first test start processes or train: marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import cv2
import jax
import numpy as np
import pytest
from conftest import copy_of, launch, small_flags

from configs import smoke
from unipose_jax import run_config, train


@pytest.fixture(scope="module")
def data_dir(small_data_dir):
  return small_data_dir


def _wait_for_rows(proc, metrics, rows: int, timeout: float = 240) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if metrics.exists() and metrics.read_text().count("\n") >= rows:
      return
    assert proc.poll() is None, proc.stdout.read()
    time.sleep(0.2)
  raise AssertionError(f"no {rows} rows in {metrics} after {timeout} s")


def _steps(metrics) -> list[int]:
  return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"loss"' in line]


def test_every_bad_key_in_one_message():
  c = smoke.get_config()
  c.checkpoint_every, c.log_every, c.num_train_steps = 0, 0, 0
  c.codec.decoding = "nope"
  with pytest.raises(run_config.ConfigError) as e:
    run_config.validate(c)
  for key in ("checkpoint_every=0", "log_every=0", "num_train_steps=0", "codec.decoding='nope'"):
    assert key in str(e.value)


@pytest.mark.slow
def test_every_bad_key_on_the_command_line_before_anything_is_built(tmp_path):
  r = launch(
    "--mode=train", "--config=configs/smoke.py", f"--workdir={tmp_path / 'w'}",
    "--config.checkpoint_every=0", "--config.log_every=0",
  )  # fmt: skip
  assert r.returncode == 2, r.stderr
  assert "checkpoint_every=0" in r.stderr and "log_every=0" in r.stderr
  assert "Traceback" not in r.stderr and not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.slow
def test_unknown_key_suggests_the_nearest_and_debug_shows_tracebacks(tmp_path):
  r = launch("--mode=train", "--config=configs/smoke.py", f"--workdir={tmp_path}",
             "--config.optimizer.learnin_rate=1")  # fmt: skip
  assert r.returncode == 2
  assert r.stderr.strip() == (
    "error: unknown config key 'optimizer.learnin_rate'; did you mean 'optimizer.learning_rate'?"
  )
  r = launch("--mode=eval", f"--workdir={tmp_path / 'empty'}", "--config=configs/smoke.py")
  assert r.returncode == 1 and "Traceback" not in r.stderr and "checkpoint" in r.stderr
  r = launch(
    "--mode=eval", f"--workdir={tmp_path / 'empty'}", "--config=configs/smoke.py", "--debug"
  )
  assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.slow
def test_prepare_fails_when_a_requested_dataset_is_missing_and_names_the_given_paths(tmp_path):
  manual, out = tmp_path / "my archives", tmp_path / "my_tfds"
  manual.mkdir()
  r = launch("--mode=prepare", f"--manual_dir={manual}", f"--data_dir={out}", "--datasets=lsp")
  assert r.returncode == 1, r.stdout + r.stderr
  text = r.stdout + r.stderr
  assert f"--manual_dir={manual} --data_dir={out}" in text
  assert "--manual_dir=data " not in text


@pytest.mark.slow
def test_second_trainer_is_refused_and_sigterm_exits_143_within_the_bound(data_dir, tmp_path):
  workdir = tmp_path / "run"
  flags = [*small_flags(data_dir, workdir, 100000), "--config.stop_check_every=2"]
  first = launch("--mode=train", *flags, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  try:
    metrics = workdir / "metrics.jsonl"
    _wait_for_rows(first, metrics, 3)
    second = launch("--mode=train", *flags)
    assert second.returncode == 1, second.stderr
    assert str(first.pid) in second.stderr and socket.gethostname() in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    seen = max(_steps(metrics))
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=120)
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == 143, out
  stopped = int(out.split("stopped at step ")[1].split()[0])
  # The signal is acted on at the next stop check: at most stop_check_every (2) steps
  # after the step it arrived in (plus the one the log row lagged behind).
  assert seen <= stopped <= seen + 2 + 1, (seen, stopped)
  # The lock went with the process: the run resumes.
  r = launch("--mode=train", *flags[:-1], "--config.num_train_steps=" + str(stopped + 1))
  assert r.returncode == 0, r.stderr
  assert _steps(metrics) == sorted(set(_steps(metrics)))


@pytest.mark.slow
def test_metrics_have_one_row_per_step_across_a_kill_and_a_resume(data_dir, tmp_path):
  """README's promise: metrics.jsonl has one row per step (loss, learning rate, images/s
  and, at evaluation steps, the evaluation), also after a SIGKILL and a resume."""
  workdir, metrics = tmp_path / "run", tmp_path / "run" / "metrics.jsonl"
  flags = [*small_flags(data_dir, workdir, 10), "--config.checkpoint_every=2",
           "--config.eval_every=4"]  # fmt: skip
  first = launch("--mode=train", *flags, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  try:
    _wait_for_rows(first, metrics, 5)  # past the evaluation at step 4
    first.kill()  # no safe point: rows past the last checkpoint are left behind
    first.communicate(timeout=60)
  finally:
    if first.poll() is None:
      first.kill()
  r = launch("--mode=train", *flags)
  assert r.returncode == 0, r.stdout + r.stderr
  rows = [json.loads(line) for line in metrics.read_text().splitlines()]
  assert [row["step"] for row in rows] == list(range(1, 11))
  for row in rows:
    assert {"loss", "learning_rate", "images_per_s"} <= set(row), row
    assert any(k.startswith("eval/") for k in row) == (row["step"] in (4, 8, 10)), row


def _truncate_largest_file(folder) -> None:
  files = [p for p in folder.rglob("*") if p.is_file()]
  biggest = max(files, key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])


@pytest.mark.slow
def test_eval_predict_and_resume_fall_back_past_a_damaged_checkpoint(trained_run, tmp_path):
  workdir = copy_of(trained_run, tmp_path / "run")  # checkpoints 2 and 4 (4 is the best)
  _truncate_largest_file(workdir / "checkpoints" / "4" / "state")

  r = launch("--mode=eval", f"--workdir={workdir}")
  assert r.returncode == 0, r.stdout + r.stderr
  said = r.stdout + r.stderr
  assert len(re.findall(r"checkpoint 4 in \S+ is damaged \(", said)) == 1, said
  assert r.stderr.count("\n") == 1, r.stderr  # the project's warning; no orbax lines
  assert "falling back to 2" in said and "Traceback" not in said, said
  assert (workdir / "eval" / "checkpoint_2" / "eval_metrics.json").exists()
  image = tmp_path / "x.png"
  cv2.imwrite(str(image), np.full((40, 60, 3), 90, np.uint8))
  r = launch("--mode=predict", f"--workdir={workdir}", f"--inputs={image}",
             f"--output={tmp_path / 'pred'}")  # fmt: skip
  assert r.returncode == 0 and "is damaged" in r.stdout + r.stderr, r.stdout + r.stderr
  assert (tmp_path / "pred" / "predictions.json").exists()

  # Training resumes from step 2, sets the damaged step aside and finishes again; the
  # metrics rows of steps 3 and 4 written before are replaced, not doubled.
  cfg = run_config.load(str(workdir))
  cfg.num_train_steps = 6
  train.train_and_evaluate(cfg, str(workdir), devices=jax.devices()[:2])  # as trained: 2
  assert [p.name.split("-")[0] for p in (workdir / "checkpoints" / "damaged").iterdir()] == ["4"]
  assert _steps(workdir / "metrics.jsonl") == [1, 2, 3, 4, 5, 6]
  assert os.path.exists(workdir / "config.json")


@pytest.mark.slow
def test_no_intact_checkpoint_is_one_message(trained_run, tmp_path):
  workdir = copy_of(trained_run, tmp_path / "run")
  for step in ("2", "4"):
    shutil.rmtree(workdir / "checkpoints" / step / "state")
  r = launch("--mode=eval", f"--workdir={workdir}")
  assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
  assert "no intact checkpoint" in r.stderr.lower(), r.stderr
  assert "4 (" in r.stderr and "2 (" in r.stderr, r.stderr


@pytest.mark.slow
def test_a_full_disk_stops_training_at_the_failed_save(data_dir, tmp_path, monkeypatch):
  import errno

  from etils import epath
  from test_train import small_config

  from unipose_jax import checkpoints

  path_type = type(epath.Path(tmp_path))
  write_text = path_type.write_text

  def full_disk(self, *args, **kwargs):  # orbax's step metadata, in its background thread
    if "/4.orbax-checkpoint-tmp" in str(self):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(path_type, "write_text", full_disk)
  cfg = small_config(data_dir)
  cfg.num_train_steps, cfg.checkpoint_every, cfg.log_every = 20, 2, 1
  workdir = tmp_path / "run"
  with pytest.raises(checkpoints.CheckpointSaveError) as info:
    train.train_and_evaluate(cfg, str(workdir))
  assert str(info.value).startswith(f"could not save checkpoint {workdir / 'checkpoints' / '4'}: ")
  assert "No space left on device" in str(info.value)
  # Stopped at the next step or save, not after checkpoint_every more steps or at the end.
  assert max(_steps(workdir / "metrics.jsonl")) <= 6
  names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  assert names == ["2"], names
  monkeypatch.undo()
  ckpt = checkpoints.Checkpointer(str(workdir / "checkpoints"), read_only=True)
  assert ckpt.restore().step == 2
  ckpt.close()


@pytest.mark.slow
def test_a_failed_save_prints_one_line_and_debug_shows_the_details(data_dir, tmp_path):
  """A full disk at checkpoint 4 (``full_disk_launch.py``): once ~1,700 lines of orbax logs
  and tracebacks came before the project's message; now only it, and ``--debug`` shows
  the libraries' logs and the traceback."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", FULL_AT_STEP="4")
  runner = os.path.join(os.path.dirname(__file__), "full_disk_launch.py")
  outputs = {}
  for debug in ((), ("--debug",)):
    workdir = tmp_path / f"run{len(debug)}"
    flags = [*small_flags(data_dir, workdir, 20), "--config.checkpoint_every=2", *debug]
    r = subprocess.run([sys.executable, runner, "--mode=train", *flags], env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    outputs[bool(debug)] = r.stderr
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]
  quiet, loud = outputs[False], outputs[True]
  assert quiet.count("\n") == 1, quiet
  assert quiet.startswith(f"error: could not save checkpoint {tmp_path}/run0/checkpoints/4: ")
  assert "No space left on device" in quiet
  assert "Traceback" in loud and "orbax" in loud and loud.count("\n") > 20
