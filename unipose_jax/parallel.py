"""The two data-parallel forms of the training step, and their batch placement.

* ``"jit"``: one ``jax.jit`` over a 1-D device mesh: the global batch (B, ...) is sharded
  along ``"data"``, the state replicated, and XLA inserts the collectives, so BatchNorm
  statistics and gradients are those of the global batch.
* ``"pmap"``: ``jax.pmap`` over the local devices with an explicit cross-device mean of
  the loss and gradients (``axis_name=PMAP_AXIS``); the state stays stacked (n, ...) on
  the devices between steps and is unstacked, device to device, only to save or evaluate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from unipose_jax import distributed
from unipose_jax.metrics import TrainMetrics
from unipose_jax.models.layers import BatchNormSync

PMAP_AXIS = "batch"
TRAIN_KEYS = ("image", "keypoints", "weights")
BN_SYNC_HELP = '"global", "local" or "group:N" (N devices share statistics)'


def bn_group_size(bn_sync: str) -> int | None:
  """Devices per statistics group of ``model.bn_sync``: None for "global", 1 for "local",
  N for "group:N"; raises ValueError for anything else."""
  if bn_sync == "global":
    return None
  if bn_sync == "local":
    return 1
  head, _, size = str(bn_sync).partition(":")
  if head == "group" and size.isdigit() and int(size) >= 1:
    return int(size)
  raise ValueError(f"model.bn_sync={bn_sync!r}: expected {BN_SYNC_HELP}")


def batch_norm_sync(bn_sync: str, parallelism: str, num_devices: int) -> BatchNormSync:
  """The model's :class:`BatchNormSync` for ``model.bn_sync`` in this parallel form.

  * "global": statistics of the global batch (pmap: averaged over every device; jit: XLA
    reduces over the sharded batch, one all-reduce per layer).
  * "local": each device's own examples, as PyTorch's DistributedDataParallel without
    SyncBatchNorm (no collective in the forward pass).
  * "group:N": groups of N consecutive devices share statistics.
  Running statistics are averaged over the groups (:class:`BatchNormSync`).
  """
  size = bn_group_size(bn_sync)
  if size is not None and num_devices % size:
    raise ValueError(
      f"model.bn_sync={bn_sync!r}: groups of {size} do not divide the {num_devices} devices"
    )
  if parallelism == "pmap":
    if size is None:
      return BatchNormSync(axis_name=PMAP_AXIS)
    if size == 1:
      return BatchNormSync()
    groups = tuple(tuple(range(i, i + size)) for i in range(0, num_devices, size))
    return BatchNormSync(axis_name=PMAP_AXIS, axis_index_groups=groups)
  return BatchNormSync(batch_groups=1 if size is None else num_devices // size)


def _with_metrics(step_fn: Callable) -> Callable:
  """The step returning a :class:`TrainMetrics` collection (merged on the device)."""

  def run(state, batch, **kw):
    state, out = step_fn(state, batch, **kw)
    return state, TrainMetrics.single_from_model_output(**out)

  return run


class ParallelTrainer:
  """Runs ``train_step`` over every device in the configured form ("jit" or "pmap").

  ``place(state)`` puts a replicated state where ``step`` wants it; ``step(state,
  batch)`` takes a batch from :meth:`batches`; ``canonical(state)`` is the replicated
  state (for checkpoints and evaluation): the state itself for "jit", device 0's copy
  replicated device to device for "pmap".
  """

  def __init__(self, parallelism: str, mesh: Mesh, step_fn: Callable):
    if parallelism == "pmap" and jax.process_count() > 1:
      raise ValueError(
        f"parallelism='pmap' runs on one process only (this run has {jax.process_count()}); "
        "use the default parallelism='jit', whose mesh spans the devices of every process"
      )
    self.parallelism, self.mesh = parallelism, mesh
    if parallelism == "jit":
      repl = distributed.replicated(mesh)
      self._step = jax.jit(_with_metrics(step_fn), out_shardings=(repl, repl), donate_argnums=0)
    else:
      self._devices = list(mesh.devices.flat)
      self._stacked = NamedSharding(
        Mesh(np.asarray(self._devices), (PMAP_AXIS,)), PartitionSpec(PMAP_AXIS)
      )
      fn = functools.partial(_with_metrics(step_fn), axis_name=PMAP_AXIS)
      self._step = jax.pmap(fn, axis_name=PMAP_AXIS, devices=self._devices, donate_argnums=0)

  def place(self, state):
    if self.parallelism == "jit":
      return state
    n = len(self._devices)

    def stack(x):  # every device's own replica becomes its slice: no host round trip
      shards = {s.device: s.data for s in x.addressable_shards}
      parts = [jnp.expand_dims(shards[d], 0) for d in self._devices]
      return jax.make_array_from_single_device_arrays((n,) + x.shape, self._stacked, parts)

    return jax.tree.map(stack, state)

  def canonical(self, state):
    if self.parallelism == "jit":
      return state
    return jax.device_put(jax.tree.map(lambda x: x[0], state), distributed.replicated(self.mesh))

  def batches(self, iterator, size: int = 2):
    """Batches of ``iterator`` put on the devices ``size`` steps ahead."""
    if self.parallelism == "jit":
      return distributed.prefetch_to_mesh(iterator, self.mesh, size=size, keys=TRAIN_KEYS)
    return distributed.prefetch_to_mesh(
      _Split(iterator, len(self._devices)), Mesh(np.asarray(self._devices), ("data",)),
      size=size, keys=TRAIN_KEYS,
    )  # fmt: skip

  def put(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's host batch (B_local, ...) placed for :meth:`step` now (no prefetch)."""
    if self.parallelism == "jit":
      return distributed.global_batch(local_batch, self.mesh)
    return _split(local_batch, len(self._devices))

  def lower(self, state, batch):
    """The step lowered (not run) for abstract arguments, trees of ``jax.ShapeDtypeStruct``:
    ``state`` one replica, ``batch`` global (B, ...). Ahead-of-time compilation
    (``unipose_jax.aot``) compiles it for devices that are not present."""
    if self.parallelism == "jit":
      repl, data = distributed.replicated(self.mesh), distributed.batch_sharded(self.mesh)
      state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl), state)
      batch = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=data), batch)
    else:
      n = len(self._devices)
      state = jax.tree.map(lambda s: jax.ShapeDtypeStruct((n,) + s.shape, s.dtype), state)
      batch = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((n, s.shape[0] // n) + s.shape[1:], s.dtype), batch
      )
    return self._step.lower(state, batch)

  def step(self, state, batch):
    """One update; ``batch`` from :meth:`batches` (on the devices) or a host batch."""
    if not all(isinstance(v, jax.Array) for v in batch.values()):
      batch = self.put(batch)
    state, metrics = self._step(state, batch)
    if self.parallelism == "pmap":
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return state, metrics


def _split(batch: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
  """(B, ...) -> (n, B / n, ...): one slice per pmap device."""
  return {k: np.reshape(v, (n, -1) + np.shape(v)[1:]) for k, v in batch.items()}


class _Split:
  """A batch iterator whose arrays are split (B, ...) -> (n, B / n, ...) for pmap."""

  def __init__(self, iterator, n: int):
    self.iterator, self.n = iterator, n

  def __iter__(self):
    return self

  def __next__(self):
    return _split(next(self.iterator), self.n)

  def get_state(self):
    return self.iterator.get_state()

  def set_state(self, state):
    self.iterator.set_state(state)


def apply_gradients(state, tx, model, loss, batch_stats, grads, axis_name: str | None):
  """The end of a training step (image or video): under pmap (``axis_name``) the gradients
  and loss are averaged over devices, and so are the running BatchNorm statistics of a
  local/grouped BatchNorm (one set of them); then the optimiser's update. Returns
  ``(new state, {"loss", "grad_norm"})``."""
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    loss = jax.lax.pmean(loss, axis_name)
    if not (model.bn_sync and model.bn_sync.all_devices):  # local/grouped BatchNorm
      batch_stats = jax.lax.pmean(batch_stats, axis_name)  # one set of running statistics
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    batch_stats=batch_stats,
    opt_state=opt_state,
  )
  return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}
