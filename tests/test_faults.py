"""Expected faults, in-process and fast: the stop-signal guard and its safe points, library
logs routed behind --debug, read-only folders refused before any work, a full disk named in
one line, --inputs paths holding commas, deploy with no image.

Read-only folders: ``conftest.read_only`` (chmod, or as root a read-only bind mount).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time

import numpy as np
import pytest
from conftest import read_only, tiny_network

import launch
from configs import smoke
from unipose_jax import checkpoints, deploy, files, library_logs, modes, preemption, run_config
from unipose_jax.run import Run


def _wait_for(predicate, timeout: float = 5.0) -> None:
  deadline = time.time() + timeout
  while not predicate() and time.time() < deadline:
    time.sleep(0.01)


# ----------------------------------------------------------------------------- signals


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_is_a_flag_that_safe_points_turn_into_its_exit_code(signum, code):
  before = signal.getsignal(signum)
  assert preemption.active() is None
  preemption.check("nothing")  # no guard: a safe point does nothing
  with preemption.PreemptionGuard(grace_s=60) as guard:
    assert preemption.active() is guard
    preemption.check("work")  # no signal yet
    os.kill(os.getpid(), signum)
    _wait_for(lambda: guard.should_stop)
    assert guard.should_stop and guard.received == signum and preemption.should_stop()
    with pytest.raises(preemption.Preempted) as info:
      preemption.check("evaluation, after 3 of 9 batches")
    assert info.value.exit_code == code
    assert str(info.value) == (
      f"stopped by {signal.Signals(signum).name}: evaluation, after 3 of 9 batches"
    )
    with pytest.raises(preemption.Preempted), guard.deferring():  # signalled before: raises
      pass
  assert preemption.active() is None and signal.getsignal(signum) is before
  assert preemption.preempted("x").exit_code == 143  # no guard: another process's signal


def test_a_deferring_section_keeps_the_watchdog_off(capsys):
  """Inside ``deferring`` (training's loop) a first signal is left to the loop; the guard's
  watchdog (grace 0.2 s here) would otherwise end the process."""
  with preemption.PreemptionGuard(grace_s=0.2) as guard, guard.deferring():
    os.kill(os.getpid(), signal.SIGTERM)
    _wait_for(lambda: guard.should_stop)
    time.sleep(0.5)  # past the grace period: still alive
    assert guard.should_stop
  assert "stopping at the next stop check, with a checkpoint" in capsys.readouterr().out


def test_temporary_files_are_known_while_they_are_written(tmp_path):
  seen = []

  def write(f):
    seen.extend(preemption._temporary)
    f.write(b"x")

  files.atomic_write(tmp_path / "a.json", write)
  assert len(seen) == 1 and os.path.basename(seen[0]).startswith(".a.json.")
  assert not preemption._temporary and os.listdir(tmp_path) == ["a.json"]


# ----------------------------------------------------------------------------- logs


def _record(pathname: str, level=logging.ERROR, msg="boom") -> logging.LogRecord:
  return logging.LogRecord("absl", level, pathname, 1, msg, None, None)


def test_orbax_logs_are_dropped_and_debug_shows_them():
  orbax_file = os.path.join("site-packages", "orbax", "checkpoint", "checkpoint_manager.py")
  ours = os.path.join("unipose_jax", "checkpoints.py")
  quiet = library_logs.QuietLibraries()
  try:
    library_logs.route(debug=False)
    assert not quiet.filter(_record(orbax_file))
    assert not quiet.filter(_record(orbax_file, logging.WARNING))
    assert quiet.filter(_record(orbax_file, logging.CRITICAL))
    assert quiet.filter(_record(ours, logging.WARNING, "checkpoint 4 is damaged"))
    assert not quiet.filter(_record("x.py", logging.WARNING, "Given directory is read only"))
    library_logs.route(debug=True)
    assert quiet.filter(_record(orbax_file)) and quiet.filter(_record("x.py", msg="read only"))
  finally:
    library_logs.route(debug=False)
  absl = logging.getLogger("absl")
  assert any(isinstance(f, library_logs.QuietLibraries) for f in absl.filters)


# ----------------------------------------------------------------------------- files


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
  target = tmp_path / "out" / "eval_metrics.json"
  files.write_json(target, {"old": 1})

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError) as info:
    files.write_json(target, {"new": 2})
  assert str(info.value) == f"cannot write {target}: No space left on device"
  assert info.value.errno == errno.ENOSPC
  assert target.read_text() == files.json_text({"old": 1})
  assert os.listdir(target.parent) == ["eval_metrics.json"]


def test_check_writable_refuses_a_read_only_folder_for_root_too(tmp_path):
  folder = tmp_path / "ro"
  with read_only(folder) as how:
    with pytest.raises(OSError) as info:
      files.check_writable(folder / "sub", "the output folder")
    assert str(info.value).startswith(f"cannot write to the output folder {folder / 'sub'}: ")
    with pytest.raises(OSError, match="Read-only file system|Permission denied"):
      files.check_writable(folder, "the output folder")
  assert how in ("chmod", "read-only bind mount")
  assert files.check_writable(folder / "sub", "x") == folder / "sub"  # writable again
  (tmp_path / "file").write_text("")
  with pytest.raises(NotADirectoryError, match="it is a file, not a folder"):
    files.check_writable(tmp_path / "file", "the output folder")


@pytest.fixture
def fake_run(tmp_path):
  """A run folder with its config.json and no checkpoint."""
  config = tiny_network(smoke.get_config())
  workdir = tmp_path / "run"
  workdir.mkdir()
  run_config.save(config, str(workdir))
  return workdir


def test_eval_and_predict_check_their_folders_before_any_work(fake_run, tmp_path, monkeypatch):
  """Unwritable: eval's eval/, predict's default output and --output. Each refusal comes
  before the checkpoint is read (without the check: "no checkpoint ... train first")."""
  image = tmp_path / "x.png"
  import cv2

  cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
  run = Run.from_workdir(str(fake_run))
  with read_only(fake_run):
    with pytest.raises(OSError, match=f"cannot write to the evaluation folder {fake_run}/eval: "):
      modes.evaluate_checkpoint(run)
    with pytest.raises(OSError, match=f"prediction output folder {fake_run}/predict: "):
      modes.predict_inputs(run, [str(image)], None)
    with pytest.raises(OSError, match=f"prediction output folder {fake_run}/out: "):
      modes.predict_inputs(run, [str(image)], str(fake_run / "out"))
  with pytest.raises(checkpoints.CheckpointError, match="no checkpoint"):  # writable: on to work
    modes.evaluate_checkpoint(run)


def test_train_refuses_an_unwritable_work_directory_in_one_line(fake_run):
  from unipose_jax import train

  config = run_config.load(str(fake_run))
  with read_only(fake_run):
    with pytest.raises(OSError) as info:
      train.train_and_evaluate(config, str(fake_run))
    assert str(info.value).startswith(f"cannot write to the work directory {fake_run}: ")
    with pytest.raises(checkpoints.CheckpointError) as info:  # the lock itself, too
      checkpoints.WorkdirLock(str(fake_run)).acquire()
    assert str(info.value).startswith(f"cannot create the lock file {fake_run}/.lock: ")
    assert "the work directory must be writable" in str(info.value)


# ----------------------------------------------------------------------------- inputs


def test_inputs_may_repeat_and_hold_commas(tmp_path):
  odd = tmp_path / "a,b.png"
  odd.write_bytes(b"")
  assert launch.split_inputs([str(odd), "x.png,y/ ,", "z.mp4"]) == [
    str(odd),
    "x.png",
    "y/",
    "z.mp4",
  ]
  assert launch.split_inputs([]) == []


def test_deploy_with_no_image_is_a_clear_error():
  with pytest.raises(ValueError, match="deploy.predict needs at least one image; got none"):
    deploy.predict(lambda x: x, [], 32, num_joints=14)
