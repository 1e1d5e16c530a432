"""Tests for unipose_jax.checkpoints: round trips, retention, resharding, crash safety."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from unipose_jax import checkpoints as ck
from unipose_jax.checkpoints import (
  Checkpointer,
  CheckpointNotFoundError,
  CheckpointStructureError,
  PreemptionGuard,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# Fixtures and helpers.
# --------------------------------------------------------------------------


@struct.dataclass
class TrainState:
  """A flax-style train state, as train.py will hold it."""

  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: optax.OptState
  rng: jax.Array
  apply_fn: object = struct.field(pytree_node=False, default=None)


def make_state(seed: int = 0, typed_key: bool = False) -> TrainState:
  """A small but realistic state: float32/bfloat16/int32 leaves, an adam state."""
  r = np.random.default_rng(seed)
  params = {
    "backbone": {
      "conv1": {"kernel": jnp.asarray(r.normal(size=(3, 3, 3, 8)), jnp.float32)},
      "bn1": {
        "scale": jnp.asarray(r.normal(size=(8,)), jnp.bfloat16),
        "bias": jnp.asarray(r.normal(size=(8,)), jnp.bfloat16),
      },
    },
    "head": {
      "kernel": jnp.asarray(r.normal(size=(16, 15)), jnp.float32),
      "bias": jnp.asarray(r.normal(size=(15,)), jnp.float32),
    },
  }
  batch_stats = {
    "backbone": {
      "bn1": {
        "mean": jnp.asarray(r.normal(size=(8,)), jnp.float32),
        "var": jnp.asarray(r.random(size=(8,)), jnp.float32),
      }
    }
  }
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  opt_state = tx.init(params)
  # One update so mu/nu/count are not trivial.
  grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p) * 0.5, params)
  _, opt_state = tx.update(grads, opt_state, params)
  rng = jax.random.key(seed) if typed_key else jax.random.PRNGKey(seed)
  return TrainState(
    step=jnp.int32(17 + seed),
    params=params,
    batch_stats=batch_stats,
    opt_state=opt_state,
    rng=rng,
    apply_fn=print,
  )


def assert_bit_equal(a, b) -> None:
  """Same tree structure; every leaf with the same dtype, shape and bytes."""
  la, ta = jax.tree_util.tree_flatten_with_path(a)
  lb, tb = jax.tree_util.tree_flatten_with_path(b)
  assert ta == tb
  for (path, x), (_, y) in zip(la, lb):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key), path
      assert str(jax.random.key_impl(x)) == str(jax.random.key_impl(y)), path
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype, (jax.tree_util.keystr(path), x.dtype, y.dtype)
    assert x.shape == y.shape, jax.tree_util.keystr(path)
    assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


DATA_STATE = {
  "next_index": 1234,
  "worker_states": [b"\x00\x01\xffbinary", "text", None, 0.5, True],
  "shape": (3, (4, 5)),
  "__bytes_b64__": "not a tag: other keys present",
  "lonely": {"__tuple__": "a dict that looks like a tag"},
}


# --------------------------------------------------------------------------
# JSON encoding of the data state.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "value",
  [
    DATA_STATE,
    b'{"grain": "state as bytes"}',
    None,
    [(), [], {}, ""],
    {"__dict__": {"a": 1}},
  ],
)
def test_json_state_round_trip(value):
  import json

  encoded = ck.encode_json_state(value)
  decoded = ck.decode_json_state(json.loads(json.dumps(encoded)))
  assert decoded == value
  assert type(decoded) is type(value)


def test_json_state_rejects_unstorable_values_with_path():
  with pytest.raises(TypeError, match=r"data_state\['a'\]\[1\].*set"):
    ck.encode_json_state({"a": [1, {2, 3}]})
  with pytest.raises(TypeError, match="dict keys must be str"):
    ck.encode_json_state({"a": {3: "x"}})


# --------------------------------------------------------------------------
# Round trips.
# --------------------------------------------------------------------------


def test_round_trip_bit_exact_with_target(tmp_path):
  state = make_state(0)
  metrics = {"pck@0.2": np.float32(0.8125), "loss": 0.25}
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(17, state, DATA_STATE, metrics=metrics)
    assert ckpt.latest_step() == 17  # counts while the async write is in flight
    # The arrays were copied off the devices: the caller may free/donate them now.
    jax.tree_util.tree_map(lambda x: x.delete(), state)
    ckpt.wait_until_finished()
    assert ckpt.latest_step() == 17
  state = make_state(0)
  assert ck.is_checkpoint_dir(tmp_path / "ckpt")
  assert ck.available_steps(tmp_path / "ckpt") == [17]

  with Checkpointer(tmp_path / "ckpt", read_only=True) as ckpt:
    target = jax.eval_shape(lambda: make_state(5))
    restored, data_state, got_metrics = ckpt.restore(target_state=target)
  assert isinstance(restored, TrainState)
  assert restored.apply_fn is print  # static fields come from the target
  assert_bit_equal(restored, state)
  assert data_state == DATA_STATE
  assert got_metrics == {"pck@0.2": 0.8125, "loss": 0.25}


def test_round_trip_without_target_gives_saved_tree(tmp_path):
  state = {
    "w": jnp.arange(6, dtype=jnp.int32).reshape(2, 3),
    "b": jnp.asarray([1.5, -2.0], jnp.bfloat16),
    "rng": jax.random.PRNGKey(3),
  }
  with Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(0, state, b"raw-bytes-state")
    restored, data_state, metrics = ckpt.restore()
  assert_bit_equal(restored, state)
  assert data_state == b"raw-bytes-state"
  assert metrics is None
  assert restored["w"].sharding == jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def test_typed_prng_key_round_trip(tmp_path):
  state = make_state(1, typed_key=True)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state, None)
    restored, _, _ = ckpt.restore(target_state=jax.eval_shape(lambda: make_state(1, True)))
    untargeted, _, _ = ckpt.restore()
  assert_bit_equal(restored, state)
  assert jax.dtypes.issubdtype(untargeted["rng"].dtype, jax.dtypes.prng_key)
  # The restored key draws the same numbers as the original.
  np.testing.assert_array_equal(
    jax.random.uniform(restored.rng, (4,)), jax.random.uniform(state.rng, (4,))
  )


def test_restore_onto_a_different_number_of_devices(tmp_path):
  devices = jax.devices()
  assert len(devices) == 8, "conftest.py should provide 8 CPU devices"
  mesh8 = Mesh(np.array(devices), ("data",))
  r = np.random.default_rng(0)
  host = {
    "sharded": r.normal(size=(16, 4)).astype(np.float32),
    "replicated": r.normal(size=(5, 3)).astype(jnp.bfloat16),
    "count": np.int32(9),
  }
  specs = {"sharded": P("data"), "replicated": P(), "count": P()}
  state = jax.tree_util.tree_map(
    lambda x, s: jax.device_put(x, NamedSharding(mesh8, s)), host, specs
  )
  assert len(state["sharded"].sharding.device_set) == 8
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, state, {"epoch": 1})
    ckpt.wait_until_finished()

  for n in (2, 1):
    mesh = Mesh(np.array(devices[:n]), ("data",))
    target = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, s)),
      host,
      specs,
    )
    with Checkpointer(tmp_path, read_only=True) as ckpt:
      restored, data_state, _ = ckpt.restore(target_state=target)
    assert data_state == {"epoch": 1}
    for k in host:
      assert restored[k].sharding == target[k].sharding
      assert len(restored[k].sharding.device_set) == n
    assert_bit_equal(restored, jax.tree_util.tree_map(jnp.asarray, host))

  # A pytree of shardings with the target's structure.
  mesh2 = Mesh(np.array(devices[2:4]), ("data",))
  per_leaf = {k: NamedSharding(mesh2, s) for k, s in specs.items()}
  with Checkpointer(tmp_path, read_only=True) as ckpt:
    restored, _, _ = ckpt.restore(target_state=host, shardings=per_leaf)
  assert all(restored[k].sharding == per_leaf[k] for k in host)
  assert_bit_equal(restored, jax.tree_util.tree_map(jnp.asarray, host))

  # The shardings argument overrides the target's own (here: concrete arrays on 8).
  one = jax.sharding.SingleDeviceSharding(devices[1])
  with Checkpointer(tmp_path, read_only=True) as ckpt:
    restored, _, _ = ckpt.restore(target_state=state, shardings=one)
  assert all(x.sharding == one for x in jax.tree_util.tree_leaves(restored))
  assert_bit_equal(restored, state)


# --------------------------------------------------------------------------
# Retention.
# --------------------------------------------------------------------------


def _small_state(i: int):
  return {"w": jnp.full((4,), i, jnp.float32), "step": jnp.int32(i)}


def test_keeps_latest_plus_best(tmp_path):
  pck = {1: 0.1, 2: 0.9, 3: 0.2, 4: 0.3, 5: 0.4, 6: 0.5}
  with Checkpointer(tmp_path, max_to_keep=2, keep_best=True) as ckpt:
    for step in range(1, 7):
      assert ckpt.save(step, _small_state(step), {"i": step}, metrics={"pck@0.2": pck[step]})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [2, 5, 6]
    assert ckpt.best_step() == 2
    for step in (2, 5, 6):
      restored, data_state, metrics = ckpt.restore(step, _small_state(0))
      assert_bit_equal(restored, _small_state(step))
      assert data_state == {"i": step}
      assert metrics == {"pck@0.2": pck[step]}
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "5", "6"]

  # After a restart the metrics are read back: step 2 stays best and kept;
  # a new better step (8) then replaces it, and saves without metrics never count.
  with Checkpointer(tmp_path, max_to_keep=2, keep_best=True) as ckpt:
    ckpt.save(7, _small_state(7), None, metrics={"pck@0.2": 0.6})
    ckpt.save(8, _small_state(8), None, metrics={"pck@0.2": 0.95})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [7, 8]
    ckpt.save(9, _small_state(9), None)  # no metrics
    ckpt.save(10, _small_state(10), None, metrics={"pck@0.2": float("nan")})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [8, 9, 10]
    assert ckpt.best_step() == 8
    ckpt.save(11, _small_state(11), None)
    ckpt.save(12, _small_state(12), None)
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [8, 11, 12]


def test_keep_best_false_keeps_only_latest(tmp_path):
  with Checkpointer(tmp_path, max_to_keep=2, keep_best=False, async_save=False) as ckpt:
    for step, v in enumerate([0.1, 0.9, 0.2, 0.3], start=1):
      ckpt.save(step, _small_state(step), None, metrics={"pck@0.2": v})
    assert ckpt.all_steps() == [3, 4]


def test_save_interval_force_and_no_overwrite(tmp_path):
  with Checkpointer(tmp_path, save_interval_steps=5) as ckpt:
    assert not ckpt.save(3, _small_state(3), None)
    assert ckpt.save(5, _small_state(5), None)
    assert ckpt.save(7, _small_state(7), None, force=True)
    # An existing step is never overwritten, forced or not.
    assert not ckpt.save(7, _small_state(99), None, force=True)
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [5, 7]
    restored, _, _ = ckpt.restore(7, _small_state(0))
    assert_bit_equal(restored, _small_state(7))


def test_read_only_refuses_to_save(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, _small_state(1), None)
  with Checkpointer(tmp_path, read_only=True) as ckpt:
    with pytest.raises(RuntimeError, match="read-only"):
      ckpt.save(2, _small_state(2), None)
    assert ckpt.all_steps() == [1]
  with pytest.raises(CheckpointNotFoundError, match="does not exist"):
    Checkpointer(tmp_path / "missing", read_only=True)


# --------------------------------------------------------------------------
# Errors.
# --------------------------------------------------------------------------


def test_restore_missing_step_lists_available_steps(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(10, _small_state(1), None)
    ckpt.save(20, _small_state(2), None)
    with pytest.raises(CheckpointNotFoundError, match=r"step 15 .*available steps: \[10, 20\]"):
      ckpt.restore(15, _small_state(0))


def test_restore_from_a_directory_without_checkpoints(tmp_path):
  workdir = tmp_path / "workdir"
  (workdir / "tensorboard").mkdir(parents=True)
  (workdir / "2024").mkdir()  # a numeric name alone does not make a checkpoint
  with Checkpointer(workdir / "checkpoints") as ckpt:
    ckpt.save(1, _small_state(1), None)
  assert not ck.is_checkpoint_dir(workdir)
  assert not ck.is_checkpoint_dir(tmp_path / "nowhere")
  with Checkpointer(workdir, read_only=True) as ckpt:
    assert ckpt.latest_step() is None
    with pytest.raises(
      CheckpointNotFoundError,
      match=r"no finalized checkpoint.*tensorboard.*did you mean.*checkpoints",
    ):
      ckpt.restore()
  with pytest.raises(ValueError, match=r"not checkpoints written by this module: \[2024\]"):
    Checkpointer(workdir)  # writable: retention could delete the foreign entry


def test_structure_mismatch_names_the_keys(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, make_state(0), None)
    target = jax.eval_shape(lambda: make_state(0))
    bad_params = dict(target.params)
    bad_params["extra_layer"] = {"kernel": jax.ShapeDtypeStruct((2, 2), jnp.float32)}
    del bad_params["head"]
    with pytest.raises(CheckpointStructureError) as info:
      ckpt.restore(target_state=target.replace(params=bad_params))
    msg = str(info.value)
    assert "not in the checkpoint: params.extra_layer.kernel" in msg
    assert "params.head.bias, params.head.kernel" in msg
    assert "in the checkpoint but not in the target" in msg

    wrong_shape = target.replace(
      batch_stats={
        "backbone": {
          "bn1": {
            "mean": jax.ShapeDtypeStruct((9,), jnp.float32),
            "var": jax.ShapeDtypeStruct((8,), jnp.float32),
          }
        }
      }
    )
    with pytest.raises(
      CheckpointStructureError,
      match=r"shape mismatch: batch_stats.backbone.bn1.mean \(saved \(8,\), "
      r"target \(9,\)\)",
    ):
      ckpt.restore(target_state=wrong_shape)


def test_invalid_arguments(tmp_path):
  with pytest.raises(ValueError, match="max_to_keep"):
    Checkpointer(tmp_path, max_to_keep=0)
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(TypeError, match=r"metrics\['pck@0.2'\]"):
      ckpt.save(1, _small_state(1), None, metrics={"pck@0.2": "high"})
    with pytest.raises(TypeError, match="set"):
      ckpt.save(1, _small_state(1), {1, 2})
    assert ckpt.all_steps() == []


# --------------------------------------------------------------------------
# Crash safety.
# --------------------------------------------------------------------------

_CRASHING_SAVER = textwrap.dedent("""
    import asyncio, pathlib, sys
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity
    from unipose_jax.checkpoints import Checkpointer

    directory, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    ckpt = Checkpointer(directory, max_to_keep=3)
    ckpt.save(1, {"w": jnp.full((64, 64), 1.0)}, {"i": 1})
    ckpt.wait_until_finished()

    async def hang(self, *args, **kwargs):
        # Everything is written; the process dies before the final rename.
        marker.write_text("finalizing")
        await asyncio.sleep(3600)

    atomicity.AtomicRenameTemporaryPath.finalize = hang
    ckpt.save(2, {"w": jnp.full((64, 64), 2.0)}, {"i": 2})
    ckpt.wait_until_finished()
""")


def test_crash_during_save_leaves_previous_checkpoint_latest(tmp_path):
  directory, marker = tmp_path / "ckpt", tmp_path / "marker"
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(
    [sys.executable, "-c", _CRASHING_SAVER, str(directory), str(marker)],
    env=env,
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
  assert ck.available_steps(directory) == [1]

  with Checkpointer(directory, max_to_keep=3) as ckpt:
    assert ckpt.all_steps() == [1]
    assert ckpt.latest_step() == 1
    restored, data_state, _ = ckpt.restore(target_state={"w": jnp.zeros((64, 64))})
    np.testing.assert_array_equal(restored["w"], np.full((64, 64), 1.0, np.float32))
    assert data_state == {"i": 1}
    # Re-opening for writing removed the debris; the step can be saved again.
    assert not [p for p in directory.iterdir() if ".orbax-checkpoint-tmp" in p.name]
    assert ckpt.save(2, {"w": jnp.full((64, 64), 2.0)}, {"i": 2})
    ckpt.wait_until_finished()
    assert ckpt.latest_step() == 2


# --------------------------------------------------------------------------
# Pre-emption guard.
# --------------------------------------------------------------------------


def test_preemption_guard_turns_sigterm_into_a_flag():
  before_term = signal.getsignal(signal.SIGTERM)
  before_int = signal.getsignal(signal.SIGINT)
  with PreemptionGuard() as guard:
    assert not guard.should_stop
    assert not guard.should_stop_any_process()
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while not guard.should_stop and time.monotonic() < deadline:
      time.sleep(0.01)  # Python runs the handler between bytecodes
    assert guard.should_stop
    assert guard.should_stop_any_process()
    assert guard.received == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before_term
  assert signal.getsignal(signal.SIGINT) is before_int


def test_preemption_guard_second_sigint_interrupts():
  before_int = signal.getsignal(signal.SIGINT)
  with pytest.raises(KeyboardInterrupt):
    with PreemptionGuard() as guard:
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.05)
      assert guard.should_stop and guard.received == signal.SIGINT
      os.kill(os.getpid(), signal.SIGINT)  # default_int_handler raises
      time.sleep(1)
  assert signal.getsignal(signal.SIGINT) is before_int
