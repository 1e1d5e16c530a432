"""Ctrl-C (SIGINT) and SIGTERM in every mode, with real processes, at several points: before
compilation, during XLA's compilation, in the middle of the work. Each must stop within a
bound with exit status 130 / 143 (never a segmentation fault, never swallowed), and leave
nothing partial under a final name; training keeps its checkpoint on pre-emption.

Where a process is, is read from its output: JAX's compile log (``JAX_LOG_COMPILES``, the
persistent compilation cache off so that XLA really compiles) and the modes' own lines.
For "in the middle" the process is frozen (SIGSTOP) as soon as its first progress line
appears, signalled, and resumed (SIGCONT), so the signal lands inside the loop however
fast the machine is. All start processes: marked slow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, TRAINED_RUN_FLAGS, copy_of, small_flags

from unipose_jax import checkpoints, datasets

pytestmark = pytest.mark.slow

MLIR_DONE = "Finished jaxpr to MLIR module conversion"  # XLA's compilation starts next
BOUND_S = 30.0  # from the signal to the exit, on a loaded 2-core machine


class Launched:
  """``launch.py *args`` in the background; its output (stdout and stderr) read line by line."""

  def __init__(self, *args, log_compiles: bool = False):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONUNBUFFERED="1")  # fmt: skip
    if log_compiles:
      env.update(JAX_LOG_COMPILES="1", JAX_ENABLE_COMPILATION_CACHE="false")
    self.proc = subprocess.Popen(
      [sys.executable, str(REPO_ROOT / "launch.py"), *args], env=env, cwd=REPO_ROOT, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    self.lines: list[str] = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()
    self.sent_at: float | None = None

  def _read(self) -> None:
    for line in self.proc.stdout:
      self.lines.append(line.rstrip("\n"))

  @property
  def output(self) -> str:
    return "\n".join(self.lines)

  def wait_for(self, text: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not any(text in line for line in self.lines):
      if self.proc.poll() is not None or time.time() > deadline:
        self.proc.kill()
        raise AssertionError(f"never printed {text!r}:\n{self.output}")
      time.sleep(0.01)

  def send(self, signum: int, frozen: bool = False) -> None:
    """Sends ``signum``; ``frozen``: stops the process first and resumes it after."""
    if frozen:
      self.proc.send_signal(signal.SIGSTOP)
    self.sent_at = self.sent_at or time.time()
    self.proc.send_signal(signum)
    if frozen:
      self.proc.send_signal(signal.SIGCONT)

  def finish(self) -> tuple[int, float]:
    """``(exit status, seconds from the first signal to the exit)``."""
    try:
      rc = self.proc.wait(timeout=BOUND_S * 4)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      raise AssertionError(f"did not stop:\n{self.output}") from None
    self._reader.join(timeout=10)
    return rc, time.time() - self.sent_at


def _stopped(run: Launched, code: int) -> str:
  rc, seconds = run.finish()
  out = run.output
  assert rc == code, f"exit {rc}:\n{out}"
  assert "Segmentation fault" not in out and "Traceback" not in out, out
  assert seconds < BOUND_S, (seconds, out)
  return out


def _stopped_at_safe_point_or_watchdog(out: str, signame: str, safe_point: str) -> None:
  """The stop came at the safe point ``safe_point`` or, on a slow machine past the 5 s
  grace (still compiling), from the watchdog."""
  assert (
    f"stopped by {signame}: {safe_point}" in out
    or f"stopped by {signame} (no safe point within 5 s)" in out
  ), out


@pytest.fixture
def run_dir(trained_run, tmp_path):
  return copy_of(trained_run, tmp_path / "run")


def _eval_flags(workdir, batch_size: int):
  """The trained run's own flags, with another evaluation batch size (more batches)."""
  data_dir = str(workdir.parents[2] / "trained_run" / "fresh_tfds")
  flags = small_flags(data_dir, workdir, 4) + list(TRAINED_RUN_FLAGS)
  return [f for f in flags if not f.startswith("--config.eval_batch_size")] + [
    f"--config.eval_batch_size={batch_size}"
  ]


# ----------------------------------------------------------------------------- eval


def test_eval_before_compilation(run_dir):
  run = Launched("--mode=eval", f"--workdir={run_dir}")
  run.wait_for("evaluating checkpoint")
  run.send(signal.SIGINT)
  out = _stopped(run, 130)
  _stopped_at_safe_point_or_watchdog(
    out, "SIGINT", "evaluation, after 0 of 4 batches; no results written"
  )
  assert not (run_dir / "eval" / "checkpoint_4").exists()


def test_eval_during_compilation_never_segfaults(run_dir):
  """The main thread is inside XLA's compiler (seconds here): the watchdog ends the process
  after the grace period, with the signal's status. Before this, 3 tries in 5 ended in
  "Fatal Python error: Segmentation fault"."""
  run = Launched("--mode=eval", f"--workdir={run_dir}", log_compiles=True)
  run.wait_for(f"{MLIR_DONE} jit(eval_step)")
  run.send(signal.SIGTERM)
  out = _stopped(run, 143)
  assert "stopped by SIGTERM" in out
  assert not (run_dir / "eval" / "checkpoint_4" / "eval_metrics.json").exists()
  assert not list((run_dir / "eval").rglob("*.tmp"))


def test_eval_in_the_middle_of_its_batches(run_dir):
  run = Launched("--mode=eval", *_eval_flags(run_dir, 2))
  run.wait_for("evaluated batch 1/16")
  run.send(signal.SIGINT, frozen=True)
  out = _stopped(run, 130)
  assert "stopped by SIGINT: evaluation, after " in out and "of 16 batches" in out
  assert not (run_dir / "eval" / "checkpoint_4").exists()


def test_a_second_signal_ends_the_process_at_once(run_dir):
  run = Launched("--mode=eval", f"--workdir={run_dir}", log_compiles=True)
  run.wait_for(f"{MLIR_DONE} jit(eval_step)")
  run.send(signal.SIGINT)
  run.wait_for("received SIGINT; stopping (send it again to stop at once)")
  run.send(signal.SIGINT)
  rc, seconds = run.finish()
  assert rc == 130 and seconds < 3, (rc, seconds, run.output)
  assert "stopped by SIGINT (a second signal)" in run.output


# ----------------------------------------------------------------------------- predict


@pytest.fixture
def images(tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(200):
    cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
  return folder


def _no_complete_output(out_dir) -> None:
  """No predictions.json; every overlay there is a whole PNG; no temporary file."""
  names = os.listdir(out_dir) if out_dir.exists() else []
  assert "predictions.json" not in names
  assert all(n.endswith("_pose.png") for n in names), names
  for name in names:
    assert cv2.imread(str(out_dir / name)).shape == (48, 64, 3)


def test_predict_before_compilation(run_dir, images, tmp_path):
  out_dir = tmp_path / "out"
  run = Launched("--mode=predict", f"--workdir={run_dir}", f"--inputs={images}",
                 f"--output={out_dir}")  # fmt: skip
  time.sleep(0.5)  # importing its libraries
  run.send(signal.SIGTERM)
  out = _stopped(run, 143)
  _stopped_at_safe_point_or_watchdog(
    out, "SIGTERM", "prediction, after 0 images; no predictions.json written"
  )
  _no_complete_output(out_dir)


def test_predict_during_compilation(run_dir, images, tmp_path):
  out_dir = tmp_path / "out"
  run = Launched("--mode=predict", f"--workdir={run_dir}", f"--inputs={images}",
                 f"--output={out_dir}", log_compiles=True)  # fmt: skip
  run.wait_for(f"{MLIR_DONE} jit(decode)")
  run.send(signal.SIGINT)
  out = _stopped(run, 130)
  assert "stopped by SIGINT" in out
  _no_complete_output(out_dir)


def test_predict_in_the_middle_of_500_images_is_not_swallowed(run_dir, images, tmp_path):
  """Seen before: SIGINT swallowed inside orbax's ``_AsyncManager.__del__``, and predict
  went on over all its images and exited 0."""
  out_dir = tmp_path / "out"
  run = Launched("--mode=predict", f"--workdir={run_dir}", f"--inputs={images}",
                 f"--output={out_dir}")  # fmt: skip
  run.wait_for("002.png:")
  run.send(signal.SIGINT, frozen=True)
  out = _stopped(run, 130)
  done = sum(line.startswith(str(images)) for line in out.splitlines())
  assert 3 <= done < 200 and f"prediction, after {done} images" in out, out
  _no_complete_output(out_dir)
  assert len(os.listdir(out_dir)) == done


# ----------------------------------------------------------------------------- export


def test_export_during_its_check_leaves_no_onnx(run_dir, tmp_path):
  target = tmp_path / "unipose.onnx"
  run = Launched("--mode=export", f"--workdir={run_dir}", f"--output={target}",
                 log_compiles=True)  # fmt: skip
  run.wait_for(f"{MLIR_DONE} jit(<lambda>)")
  run.send(signal.SIGINT)
  out = _stopped(run, 130)
  assert "stopped by SIGINT" in out
  assert os.listdir(tmp_path) == ["run"]  # no .onnx, no .json, no temporary file


# ----------------------------------------------------------------------------- calibrate


def test_calibrate_in_its_scoring_stores_nothing(run_dir):
  """A signal while the calibration scores its images (its safe point is every batch, or
  the watchdog while XLA compiles): exit 143, and ``config.json`` and ``presence/`` as
  they were (the trained run's own calibration)."""
  assert (run_dir / "presence" / "calibration.json").exists()  # the shared run calibrated
  config_before = (run_dir / "config.json").read_bytes()
  presence_before = sorted(
    (p.name, p.read_bytes()) for p in (run_dir / "presence").glob("*") if p.is_file()
  )
  run = Launched("--mode=calibrate", f"--workdir={run_dir}", "--config.eval_batch_size=2")
  run.wait_for("calibrating person presence of checkpoint")
  run.send(signal.SIGTERM, frozen=True)
  out = _stopped(run, 143)
  _stopped_at_safe_point_or_watchdog(out, "SIGTERM", "person-presence calibration; nothing stored")
  assert (run_dir / "config.json").read_bytes() == config_before
  presence_after = sorted(
    (p.name, p.read_bytes()) for p in (run_dir / "presence").glob("*") if p.is_file()
  )
  assert presence_after == presence_before
  assert not list(run_dir.rglob("*.tmp")), list(run_dir.rglob("*.tmp"))


# ----------------------------------------------------------------------------- prepare


def test_prepare_in_the_middle_of_a_build_keeps_nothing(tmp_path):
  data_dir = tmp_path / "tfds"
  run = Launched("--mode=prepare", "--datasets=synthetic", f"--data_dir={data_dir}")
  run.wait_for("[synthetic] building into")
  time.sleep(0.5)
  run.send(signal.SIGINT)
  out = _stopped(run, 130)
  assert "stopped by SIGINT" in out
  assert not datasets.is_prepared("synthetic", str(data_dir))
  assert not list(data_dir.rglob("*.array_record*")), list(data_dir.rglob("*"))


# ----------------------------------------------------------------------------- train


def test_train_during_its_first_compilation_saves_and_exits_130(small_data_dir, tmp_path):
  """Training keeps its checkpoint-on-pre-emption: a SIGINT while the step compiles is
  acted on at the first stop check (2 steps here), after a checkpoint."""
  workdir = tmp_path / "run"
  flags = [*small_flags(small_data_dir, workdir, 1000), "--config.stop_check_every=2"]
  run = Launched("--mode=train", *flags, log_compiles=True)
  run.wait_for(f"{MLIR_DONE} jit(run)")  # the jitted training step
  run.send(signal.SIGINT)
  rc, _ = run.finish()
  out = run.output
  assert rc == 130, out
  assert "Segmentation fault" not in out and "Traceback" not in out
  assert "stopped at step 2 by SIGINT; checkpoint saved" in out
  assert "stopped by SIGINT: training at step 2 of 1000; checkpoint 2 saved" in out
  with checkpoints.Checkpointer(workdir / "checkpoints", read_only=True) as ckpt:
    assert ckpt.restore().step == 2
  assert not (workdir / ".lock").exists()
