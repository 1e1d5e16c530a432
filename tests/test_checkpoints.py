"""Tests for unipose_jax.checkpoints: round trips, retention, damaged checkpoints, failed
saves, crash safety and the workdir lock (real processes for the last three)."""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from etils import epath
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from unipose_jax.checkpoints import (
  Checkpointer,
  CheckpointError,
  CheckpointSaveError,
  Restored,
  WorkdirLock,
  WorkdirLockedError,
)
from unipose_jax.run import Run

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")


@struct.dataclass
class TrainState:
  """Like train.TrainState: arrays only, a raw uint32 PRNG key."""

  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: optax.OptState
  rng: jax.Array


def make_state(seed: int = 0) -> TrainState:
  """float32/bfloat16/int32 leaves and an adam state after one update."""
  r = np.random.default_rng(seed)
  params = {
    "conv1": {"kernel": jnp.asarray(r.normal(size=(3, 3, 3, 8)), jnp.float32)},
    "bn1": {"scale": jnp.asarray(r.normal(size=(8,)), jnp.bfloat16)},
    "head": {"kernel": jnp.asarray(r.normal(size=(8, 15)), jnp.float32)},
  }
  batch_stats = {"bn1": {"mean": jnp.asarray(r.normal(size=(8,)), jnp.float32)}}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.5, params)
  _, opt_state = tx.update(grads, tx.init(params), params)
  return TrainState(jnp.int32(17 + seed), params, batch_stats, opt_state, jax.random.PRNGKey(seed))


def assert_bit_equal(a, b) -> None:
  """Same structure; every leaf with the same dtype, shape and bytes."""
  la, ta = jax.tree_util.tree_flatten_with_path(a)
  lb, tb = jax.tree_util.tree_flatten_with_path(b)
  assert ta == tb
  for (path, x), (_, y) in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert (x.dtype, x.shape) == (y.dtype, y.shape), jax.tree_util.keystr(path)
    assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


def small(i: int) -> dict:
  """A state whose largest file is array data (random values do not compress)."""
  w = np.random.default_rng(i).normal(size=(128, 128)).astype(np.float32)
  return {"w": jnp.asarray(w), "step": jnp.int32(i)}


SMALL_TARGET = jax.eval_shape(lambda: small(0))
DATA_STATE = {"next_index": 1234, "workers": [{"pos": 3}, {"pos": 4}], "seed": None}


def save_steps(directory, steps, **kwargs) -> None:
  with Checkpointer(directory, **kwargs) as ckpt:
    for s in steps:
      ckpt.save(s, small(s), {"i": s})


# ----------------------------------------------------------------------------- round trips


@pytest.mark.slow
def test_round_trip_with_and_without_target(tmp_path):
  state = make_state(0)
  metrics = {"dark/pck@0.2": np.float32(0.8125), "loss": 0.25}
  with Checkpointer(tmp_path / "ckpt", best_metric="dark/pck@0.2") as ckpt:
    assert ckpt.latest_step() is None and ckpt.best_step() is None
    ckpt.save(17, state, DATA_STATE, metrics=metrics)
    assert ckpt.latest_step() == 17  # counts while the asynchronous write is in flight
    jax.tree.map(lambda x: x.delete(), state)  # the arrays were copied off the devices
    ckpt.wait()
  state = make_state(0)
  with Checkpointer(tmp_path / "ckpt", read_only=True) as ckpt:
    got = ckpt.restore(target=jax.eval_shape(lambda: make_state(5)))
    raw = ckpt.restore()
  assert isinstance(got, Restored) and isinstance(got.state, TrainState)
  assert_bit_equal(got.state, state)
  assert (got.step, got.data_state) == (17, DATA_STATE)
  assert got.metrics == {"dark/pck@0.2": 0.8125, "loss": 0.25}
  # Without a target: nested dicts (optax's tuple as a list) of host numpy arrays.
  assert set(raw.state) == {"step", "params", "batch_stats", "opt_state", "rng"}
  assert all(type(x) is np.ndarray for x in jax.tree.leaves(raw.state))
  assert raw.state["rng"].dtype == np.uint32 and raw.state["rng"].shape == (2,)
  assert_bit_equal(raw.state["params"], state.params)
  assert_bit_equal(raw.state["opt_state"][1][0]["mu"], state.opt_state[1][0].mu)
  assert raw.data_state == DATA_STATE


def test_restore_onto_a_different_number_of_devices(tmp_path):
  devices = jax.devices()
  assert len(devices) == 8, "conftest.py should provide 8 CPU devices"
  host = {"sharded": np.arange(64, dtype=np.float32).reshape(16, 4), "count": np.int32(9)}
  specs = {"sharded": P("data"), "count": P()}
  mesh8 = Mesh(np.array(devices), ("data",))
  state = jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh8, s)), host, specs)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, state, {"epoch": 1})
  for n in (2, 1):
    mesh = Mesh(np.array(devices[:n]), ("data",))
    target = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, s)),
      host,
      specs,
    )
    with Checkpointer(tmp_path, read_only=True) as ckpt:
      got = ckpt.restore(target)
    assert all(got.state[k].sharding == target[k].sharding for k in host)
    assert_bit_equal(got.state, jax.tree.map(jnp.asarray, host))


# ----------------------------------------------------------------------------- retention


def test_keeps_latest_plus_best(tmp_path):
  pck = {1: 0.1, 2: 0.9, 3: 0.2, 4: 0.3, 5: 0.4, 6: 0.5}
  with Checkpointer(tmp_path, max_to_keep=2, best_metric="pck") as ckpt:
    for step in range(1, 7):
      ckpt.save(step, small(step), {"i": step}, metrics={"pck": pck[step]})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 5, 6]
    assert ckpt.best_step() == 2
    for step in (2, 5, 6):
      got = ckpt.restore(SMALL_TARGET, step=step)
      assert_bit_equal(got.state, small(step))
      assert (got.data_state, got.metrics) == ({"i": step}, {"pck": pck[step]})
    assert ckpt.restore(SMALL_TARGET).step == 6
    assert ckpt.restore(SMALL_TARGET, prefer_best=True).step == 2
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "5", "6"]

  # After a restart the metrics are read back: step 2 stays best and kept; a better
  # step (8) then replaces it; saves without the metric (or NaN) never count as best.
  with Checkpointer(tmp_path, max_to_keep=2, best_metric="pck") as ckpt:
    ckpt.save(7, small(7), None, metrics={"pck": 0.6})
    ckpt.save(8, small(8), None, metrics={"pck": 0.95})
    ckpt.wait()
    assert ckpt.all_steps() == [7, 8]
    ckpt.save(9, small(9), None)
    ckpt.save(10, small(10), None, metrics={"pck": float("nan")})
    ckpt.wait()
    assert ckpt.all_steps() == [8, 9, 10]
    assert ckpt.best_step() == 8
    ckpt.save(11, small(11), None)
    ckpt.save(12, small(12), None)
    ckpt.wait()
    assert ckpt.all_steps() == [8, 11, 12]
    assert ckpt.restore(SMALL_TARGET, step=12).metrics is None


def test_metrics_added_after_the_save_pick_and_keep_the_best(tmp_path):
  """Training saves a step before evaluating it, then adds the metrics: they choose the
  best step and its retention as metrics given to save do; NaN is stored as null and never
  makes a step the best, also after a restart."""
  with Checkpointer(tmp_path, max_to_keep=1, best_metric="pck") as ckpt:
    ckpt.save(1, small(1), None)
    ckpt.add_metrics(1, {"pck": 0.7, "other": 1.0})
    assert ckpt.best_step() == 1
    ckpt.save(2, small(2), None)
    ckpt.add_metrics(2, {"pck": float("nan")})
    ckpt.save(3, small(3), None)  # retention: step 1 kept as the best, 2 dropped
    ckpt.wait()
    assert ckpt.all_steps() == [1, 3] and ckpt.best_step() == 1
    ckpt.add_metrics(3, {"pck": 0.8})
    assert ckpt.best_step() == 3
  assert json.loads((tmp_path / "3" / "metrics" / "metrics").read_text()) == {"pck": 0.8}
  with Checkpointer(tmp_path, max_to_keep=1, best_metric="pck") as ckpt:
    assert ckpt.restore(SMALL_TARGET, prefer_best=True).metrics == {"pck": 0.8}
    ckpt.save(4, small(4), None)
    ckpt.add_metrics(4, {"pck": float("nan")})
    assert ckpt.best_step() == 3
    assert ckpt.restore(SMALL_TARGET, step=4).metrics == {"pck": None}
    ckpt.save(5, small(5), None)
    ckpt.wait()
    assert ckpt.all_steps() == [3, 5]
  with Checkpointer(tmp_path, read_only=True) as ckpt, pytest.raises(CheckpointError):
    ckpt.add_metrics(5, {"pck": 1.0})


def test_without_best_metric_keeps_only_latest(tmp_path):
  with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    for step, v in enumerate([0.1, 0.9, 0.2, 0.3], start=1):
      ckpt.save(step, small(step), None, metrics={"pck": v})
    ckpt.wait()
    assert ckpt.all_steps() == [3, 4]
    assert ckpt.best_step() is None
    assert ckpt.restore(prefer_best=True).step == 4


# ----------------------------------------------------------------------------- errors


def test_missing_step_empty_directory_read_only_and_bad_arguments(tmp_path):
  save_steps(tmp_path / "c", (10, 20))
  with Checkpointer(tmp_path / "c", read_only=True) as ckpt:
    with pytest.raises(CheckpointError, match=r"no checkpoint 15 in .*there are: \[10, 20\]"):
      ckpt.restore(step=15)
    with pytest.raises(CheckpointError, match="read-only"):
      ckpt.save(30, small(30))
  for missing in (tmp_path / "nowhere", tmp_path / "empty"):
    (tmp_path / "empty").mkdir(exist_ok=True)
    with Checkpointer(missing, read_only=True) as ckpt:
      assert ckpt.all_steps() == []
      with pytest.raises(CheckpointError, match=f"no checkpoint in {missing}$"):
        ckpt.restore()
  assert not (tmp_path / "nowhere").exists()
  with pytest.raises(ValueError, match="max_to_keep"):
    Checkpointer(tmp_path, max_to_keep=0)


@pytest.mark.slow
def test_a_target_that_does_not_match_is_an_error_not_damage(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, make_state(0), None)
    target = jax.eval_shape(lambda: make_state(0))
    params = dict(target.params, extra={"kernel": jax.ShapeDtypeStruct((2, 2), jnp.float32)})
    del params["head"]
    with pytest.raises(CheckpointError) as info:
      ckpt.restore(target.replace(params=params))
    msg = str(info.value)
    assert "checkpoint 1 in" in msg and "does not match the model" in msg
    assert "params/extra/kernel: missing in the checkpoint" in msg
    assert "params/head/kernel: not in the target" in msg
    wrong = target.replace(batch_stats={"bn1": {"mean": jax.ShapeDtypeStruct((9,), jnp.float32)}})
    with pytest.raises(CheckpointError, match=r"batch_stats/bn1/mean: saved \(8,\), target \(9,\)"):
      ckpt.restore(wrong)
    assert ckpt.all_steps() == [1]  # nothing was set aside
  assert not (tmp_path / "damaged").exists()


# ----------------------------------------------------------------------------- damage


def _truncate_largest_data_file(step_dir: pathlib.Path) -> None:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
  largest = max(files, key=lambda p: p.stat().st_size)
  assert "/d/" in str(largest), largest  # array data, not metadata
  os.truncate(largest, largest.stat().st_size // 2)


DAMAGE = {
  "truncated data": (_truncate_largest_data_file, "OUT_OF_RANGE"),
  "no _METADATA": (lambda d: (d / "state" / "_METADATA").unlink(), "state/_METADATA is missing"),
  "no manifest": (
    lambda d: (d / "state" / "manifest.ocdbt").unlink(),
    "state/_METADATA is unreadable",
  ),
  "no extra/metadata": (lambda d: (d / "extra" / "metadata").unlink(), "extra/metadata is missing"),
  "no state/": (lambda d: shutil.rmtree(d / "state"), "state/ is missing"),
}


def _warnings(caplog) -> list[str]:
  return [
    r.getMessage()
    for r in caplog.records
    if r.name == "unipose_jax.checkpoints" and r.levelno >= logging.WARNING
  ]


@pytest.mark.parametrize("damage", DAMAGE)
def test_newest_damaged_falls_back_and_sets_it_aside(tmp_path, caplog, damage):
  harm, fault = DAMAGE[damage]
  save_steps(tmp_path, (10, 20))
  harm(tmp_path / "20")
  with caplog.at_level(logging.WARNING), Checkpointer(tmp_path) as ckpt:
    got = ckpt.restore(SMALL_TARGET)
    assert ckpt.all_steps() == [10]
  assert got.step == 10 and got.data_state == {"i": 10}
  assert_bit_equal(got.state, small(10))
  (warning,) = _warnings(caplog)
  assert warning.startswith(f"checkpoint 20 in {tmp_path} is damaged (")
  assert fault in warning and warning.endswith("; falling back to 10")
  (moved,) = (tmp_path / "damaged").iterdir()
  assert moved.name.startswith("20-") and len(moved.name) == len("20-20250101-120000")
  assert not (tmp_path / "20").exists()
  # Set aside: the next restore neither warns again nor retries it.
  caplog.clear()
  with caplog.at_level(logging.WARNING), Checkpointer(tmp_path) as ckpt:
    assert ckpt.restore().step == 10
  assert _warnings(caplog) == []


def test_best_damaged_falls_back_to_newest(tmp_path, caplog):
  with Checkpointer(tmp_path, best_metric="pck") as ckpt:
    for s, v in ((10, 0.9), (20, 0.1), (30, 0.2)):
      ckpt.save(s, small(s), {"i": s}, metrics={"pck": v})
  (tmp_path / "10" / "extra" / "metadata").unlink()
  with caplog.at_level(logging.WARNING), Checkpointer(tmp_path, best_metric="pck") as ckpt:
    assert ckpt.restore(prefer_best=True).step == 30
  (warning,) = _warnings(caplog)
  assert "checkpoint 10" in warning and warning.endswith("falling back to 30")


def test_all_damaged_is_one_error_listing_every_step(tmp_path, caplog):
  save_steps(tmp_path, (10, 20, 30))
  shutil.rmtree(tmp_path / "30" / "state")
  (tmp_path / "20" / "state" / "_METADATA").unlink()
  (tmp_path / "10" / "extra" / "metadata").unlink()
  with caplog.at_level(logging.WARNING), Checkpointer(tmp_path) as ckpt:
    with pytest.raises(CheckpointError) as info:
      ckpt.restore(SMALL_TARGET)
  assert str(info.value) == (
    f"no intact checkpoint in {tmp_path}: 30 (state/ is missing); "
    "20 (state/_METADATA is missing); 10 (extra/metadata is missing)"
  )
  assert len(_warnings(caplog)) == 3
  assert _warnings(caplog)[-1].endswith("no other checkpoint")
  assert len(list((tmp_path / "damaged").iterdir())) == 3


def test_read_only_falls_back_without_moving_and_explicit_damaged_step_fails(tmp_path, caplog):
  save_steps(tmp_path, (10, 20))
  _truncate_largest_data_file(tmp_path / "20")
  with caplog.at_level(logging.WARNING), Checkpointer(tmp_path, read_only=True) as ckpt:
    assert ckpt.restore(SMALL_TARGET).step == 10
    with pytest.raises(CheckpointError, match=f"checkpoint 20 in {tmp_path} is damaged .*OUT_OF"):
      ckpt.restore(SMALL_TARGET, step=20)
  assert len(_warnings(caplog)) == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ["10", "20"]


# ----------------------------------------------------------------------------- other programs

_OLD_EXTRA = {"format_version": 1, "data_state": {"next_index": 20}, "prng_key_impls": {}}


def test_restores_the_layout_written_before_the_rewrite(tmp_path):
  """Before: the same items (state/, extra/, metrics/), extra with two more keys."""
  options = ocp.CheckpointManagerOptions(best_fn=lambda m: m["dark/pck@0.2"], best_mode="max")
  with ocp.CheckpointManager(tmp_path, options=options) as manager:
    args = {"state": ocp.args.StandardSave(small(20)), "extra": ocp.args.JsonSave(_OLD_EXTRA)}
    manager.save(20, args=ocp.args.Composite(**args), metrics={"dark/pck@0.2": 0.25})
  with Checkpointer(tmp_path, best_metric="dark/pck@0.2", read_only=True) as ckpt:
    got = ckpt.restore(prefer_best=True)
  assert (got.step, got.data_state, got.metrics) == (20, {"next_index": 20}, {"dark/pck@0.2": 0.25})
  assert_bit_equal(got.state, jax.tree.map(np.asarray, small(20)))


_RESTORER = textwrap.dedent("""
  import json, sys
  import numpy as np
  from unipose_jax.checkpoints import Checkpointer
  with Checkpointer(sys.argv[1], read_only=True) as ckpt:
    got = ckpt.restore()
  print(json.dumps({"step": got.step, "data": got.data_state,
                    "w": float(np.sum(got.state["w"], dtype=np.float64))}))
""")


@pytest.mark.slow
def test_another_process_restores_what_this_one_saved(tmp_path):
  save_steps(tmp_path, (5,))
  out = subprocess.run(
    [sys.executable, "-c", _RESTORER, str(tmp_path)], env=ENV, capture_output=True, text=True
  )
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got == {"step": 5, "data": {"i": 5}, "w": pytest.approx(float(np.sum(small(5)["w"])))}


def test_full_disk_fails_the_save_not_the_older_checkpoints(tmp_path, monkeypatch):
  # Orbax writes the JSON items and the step metadata through epath.Path.write_text in
  # its background thread (the arrays go through tensorstore, out of Python's reach).
  path_type = type(epath.Path(tmp_path))
  write_text = path_type.write_text

  def full_disk(self, *args, **kwargs):
    if "/30.orbax-checkpoint-tmp" in str(self):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(path_type, "write_text", full_disk)
  with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    ckpt.save(10, small(10), {"i": 10})
    ckpt.save(20, small(20), {"i": 20})
    ckpt.save(30, small(30), {"i": 30})
    with pytest.raises(CheckpointSaveError) as info:
      ckpt.wait()
    msg = str(info.value)
    assert msg.startswith(f"could not save checkpoint {tmp_path / '30'}: [Errno 28] ")
    assert "No space left on device" in msg and len(msg.splitlines()) == 1
    assert ckpt.all_steps() == [10, 20]  # retention did not delete 10 for the failed 30
    assert not [p for p in tmp_path.iterdir() if ".orbax-checkpoint-tmp" in p.name]
    ckpt.check()  # the fault is reported once
    ckpt.save(40, small(40), {"i": 40})  # disk space again for other steps
    ckpt.wait()
    assert ckpt.all_steps() == [20, 40]
  with Checkpointer(tmp_path, read_only=True) as ckpt:
    for step in (20, 40):
      assert_bit_equal(ckpt.restore(SMALL_TARGET, step=step).state, small(step))


def test_check_raises_a_failed_background_save_before_the_next_save(tmp_path, monkeypatch):
  path_type = type(epath.Path(tmp_path))
  write_text = path_type.write_text

  def full_disk(self, *args, **kwargs):
    if "/2.orbax-checkpoint-tmp" in str(self):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(path_type, "write_text", full_disk)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, small(1))
    ckpt.save(2, small(2))
    with pytest.raises(CheckpointSaveError, match="checkpoint .*/2: .*No space left on device"):
      deadline = time.monotonic() + 60
      while time.monotonic() < deadline:
        ckpt.check()  # does not wait: raises once the background save has failed
        time.sleep(0.05)
    assert ckpt.restore().step == 1


_CRASHING_SAVER = textwrap.dedent("""
  import asyncio, pathlib, sys
  import jax.numpy as jnp
  from orbax.checkpoint._src.path import atomicity
  from unipose_jax.checkpoints import Checkpointer

  directory, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
  ckpt = Checkpointer(directory, max_to_keep=3)
  ckpt.save(1, {"w": jnp.full((64, 64), 1.0)}, {"i": 1})
  ckpt.wait()

  async def hang(self, *args, **kwargs):
    marker.write_text("finalizing")  # everything is written; die before the rename
    await asyncio.sleep(3600)

  atomicity.AtomicRenameTemporaryPath.finalize = hang
  ckpt.save(2, {"w": jnp.full((64, 64), 2.0)}, {"i": 2})
  ckpt.wait()
""")


@pytest.mark.slow
def test_crash_during_save_leaves_previous_checkpoint_latest(tmp_path):
  directory, marker = tmp_path / "ckpt", tmp_path / "marker"
  proc = subprocess.Popen(
    [sys.executable, "-c", _CRASHING_SAVER, str(directory), str(marker)],
    env=ENV,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )
  try:
    deadline = time.monotonic() + 60
    while not marker.exists():
      if proc.poll() is not None:
        pytest.fail("saver exited early:\n" + proc.stdout.read().decode()[-3000:])
      assert time.monotonic() < deadline, "saver never reached finalize"
      time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.stdout.close()
  leftovers = [p.name for p in directory.iterdir() if ".orbax-checkpoint-tmp" in p.name]
  assert leftovers and all(name.startswith("2.") for name in leftovers)
  with Checkpointer(directory, max_to_keep=3) as ckpt:
    assert ckpt.all_steps() == [1]
    got = ckpt.restore(target={"w": jnp.zeros((64, 64))})
    np.testing.assert_array_equal(got.state["w"], np.full((64, 64), 1.0, np.float32))
    assert got.data_state == {"i": 1}
    # Opening for writing removed the debris; the step can be saved again.
    assert not [p for p in directory.iterdir() if ".orbax-checkpoint-tmp" in p.name]
    ckpt.save(2, {"w": jnp.full((64, 64), 2.0)}, {"i": 2})
    ckpt.wait()
    assert ckpt.latest_step() == 2


# ----------------------------------------------------------------------------- the lock

_HOLDER = textwrap.dedent("""
  import sys, time
  from unipose_jax.checkpoints import WorkdirLock
  lock = WorkdirLock(sys.argv[1]).acquire()
  print("locked", flush=True)
  if sys.argv[2] == "release":
    lock.release()
    print("released", flush=True)
  time.sleep(3600)
""")


def _hold(workdir, then: str = "hold") -> subprocess.Popen:
  proc = subprocess.Popen(
    [sys.executable, "-c", _HOLDER, str(workdir), then],
    env=ENV,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  line = proc.stdout.readline()
  assert line == "locked\n", proc.stderr.read()[-3000:] if proc.poll() is not None else line
  return proc


@pytest.mark.slow
def test_workdir_lock_between_processes(tmp_path, capsys):
  proc = _hold(tmp_path)
  try:
    with pytest.raises(WorkdirLockedError) as info:
      WorkdirLock(tmp_path).acquire()
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path} is in use by another trainer: host {socket.gethostname()}")
    assert f"pid {proc.pid}, started 20" in msg
    assert msg.endswith("; stop it or use another --workdir")
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
  # The killed holder's lock is free (the kernel dropped it); its note is stale.
  with WorkdirLock(tmp_path) as lock:
    assert f"taking over a stale lock of pid {proc.pid}" in capsys.readouterr().out
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert lock.path == str(tmp_path / ".lock")
  # Released: another process takes it, without a stale note.
  proc = _hold(tmp_path, then="release")
  try:
    assert proc.stdout.readline() == "released\n"
  finally:
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
  assert not (tmp_path / ".lock").exists()  # a clean release leaves no file behind
  lock = WorkdirLock(tmp_path).acquire()
  lock.release()
  assert "stale" not in capsys.readouterr().out
  assert not (tmp_path / ".lock").exists()


def test_lock_of_a_file_removed_by_its_releaser_is_not_kept(tmp_path):
  """A process that opened .lock just before the holder released (and removed) it must not
  believe it holds the lock of the vanished file while a third process locks the new one."""
  first = WorkdirLock(tmp_path).acquire()
  late = WorkdirLock(tmp_path)
  stale_fd = os.open(late.path, os.O_RDWR)  # opened before the release...
  first.release()
  real_open = os.open
  calls = []

  def open_once_stale(path, flags, mode=0o777):
    calls.append(path)
    return stale_fd if len(calls) == 1 else real_open(path, flags, mode)

  try:
    os.open = open_once_stale  # ...and locked after it: acquire must notice and reopen
    late.acquire()
  finally:
    os.open = real_open
  assert len(calls) == 2 and (tmp_path / ".lock").exists()
  with pytest.raises(WorkdirLockedError):  # the file at the path is the one held
    WorkdirLock(tmp_path).acquire()
  late.release()


# ----------------------------------------------------------------------------- load_variables


def test_load_variables(tmp_path):
  from configs import smoke

  run = Run(smoke.get_config(), str(tmp_path / "run"))
  assert run.best_metric == "dark/pck@0.2"
  with pytest.raises(CheckpointError) as info:
    run.load_variables()
  checkpoints_dir = tmp_path / "run" / "checkpoints"
  assert str(info.value) == (
    f"no checkpoint in {checkpoints_dir}: train first "
    f"(unipose-jax --mode=train --workdir={tmp_path / 'run'})"
  )
  with Checkpointer(checkpoints_dir) as ckpt:
    for step in (1, 2):
      ckpt.save(step, make_state(step), None)
  variables, step = run.load_variables()
  assert step == 2 and set(variables) == {"params", "batch_stats"}
  assert_bit_equal(variables["params"], make_state(2).params)
  assert run.load_variables(step=1)[1] == 1
