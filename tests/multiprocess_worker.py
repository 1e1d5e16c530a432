"""One process of the multi-process tests (tests/test_multiprocess.py); not a test itself.

  python tests/multiprocess_worker.py two PORT PROCESS_ID DATA_DIR WORKDIR OUT
      one of the two processes of a two-process run (2 CPU devices each): a few steps of
      the tiny config by hand, saving this process's copy of the parameters to
      OUT/params_<id>.npz, then the real loop (``train.train_and_evaluate``) in WORKDIR.
  python tests/multiprocess_worker.py one DATA_DIR WORKDIR OUT
      the one-process reference (4 CPU devices): the same steps on the global batches the
      two processes built together (both shards' iterators, concatenated per step).

Run with XLA_FLAGS=--xla_force_host_platform_device_count=2 (two) or 4 (one).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import jax  # noqa: E402
import numpy as np  # noqa: E402
from test_train import small_config  # noqa: E402  (the suite's tiny settings)

from unipose_jax import distributed, parallel, train  # noqa: E402

STEPS = 3
NUM_PROCESSES = 2


def config(data_dir):
  c = small_config(data_dir)
  # SGD: the update is linear in the gradient, so float rounding stays float rounding.
  # At lr 0.01 this tiny net on the synthetic set is chaotic: one process on 1 device and
  # on 4 devices already differ by 3e-5 after 2 steps and 1e-3 after 3 (reduction order
  # alone); at 1e-3 they agree to 1e-7 for 5 steps.
  c.optimizer.name, c.optimizer.schedule, c.optimizer.learning_rate = "sgd", "constant", 1e-3
  c.num_train_steps = STEPS
  c.checkpoint_every = STEPS
  c.log_every = 1
  c.eval_batch_size = 12  # 32 test images: 3 batches of 6 per process, 2 padded in each
  return c


def flat_params(params):
  return {
    "/".join(str(getattr(k, "key", k)) for k in path): v
    for path, v in jax.tree_util.tree_leaves_with_path(params)
  }


def steps_by_hand(cfg, batches):
  """STEPS training steps of the jit form over every device; ``batches(step)`` -> local batch."""
  mesh = distributed.data_mesh()
  model, _, tx, _, trainer = train.build_trainer(cfg, mesh)
  init = train.create_train_state(model, tx, cfg.seed, cfg.data.input_size)
  steps_by_hand.init_params = jax.device_get(init.params)
  state = trainer.place(distributed.replicate(init, mesh))
  for i in range(STEPS):
    state, metrics = trainer.step(
      state, {k: v for k, v in batches(i).items() if k in parallel.TRAIN_KEYS}
    )
  return state, float(metrics.compute()["loss"])


def this_process_copy(tree):
  """This process's own replica of every leaf (and a check that its devices agree)."""

  def one(x):
    copies = [np.asarray(s.data) for s in x.addressable_shards]
    for c in copies[1:]:
      np.testing.assert_array_equal(c, copies[0])
    return copies[0]

  return jax.tree.map(one, tree)


def main(argv):
  mode = argv[1]
  if mode == "two":
    port, pid, data_dir, workdir, out = argv[2:]
    distributed.initialize(f"127.0.0.1:{port}", NUM_PROCESSES, int(pid))
    assert jax.process_count() == NUM_PROCESSES and jax.local_device_count() == 2
    cfg = config(data_dir)
    it = train.make_train_iterator(cfg, distributed.data_mesh())
    state, loss = steps_by_hand(cfg, lambda _: next(it))
    np.savez(
      os.path.join(out, f"params_{jax.process_index()}.npz"),
      loss=loss,
      **flat_params(this_process_copy(state.params)),
    )
    train.train_and_evaluate(cfg, workdir)  # the real loop: checkpoints, final evaluation
  elif mode == "one":
    data_dir, _, out = argv[2:]
    assert jax.process_count() == 1 and jax.device_count() == 4
    cfg = config(data_dir)
    mesh = distributed.data_mesh()
    its = [
      train.make_train_iterator(cfg, mesh, shard_index=i, shard_count=NUM_PROCESSES)
      for i in range(NUM_PROCESSES)
    ]

    def together(_):
      parts = [next(it) for it in its]
      return {k: np.concatenate([p[k] for p in parts]) for k in parallel.TRAIN_KEYS}

    state, loss = steps_by_hand(cfg, together)
    np.savez(
      os.path.join(out, "params_reference.npz"),
      loss=loss,
      **flat_params(jax.device_get(state.params)),
    )
    np.savez(os.path.join(out, "params_init.npz"), **flat_params(steps_by_hand.init_params))
  else:
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
  if os.environ.get("UNIPOSE_TEST_JAX_CACHE"):
    jax.config.update("jax_compilation_cache_dir", os.environ["UNIPOSE_TEST_JAX_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  main(sys.argv)
