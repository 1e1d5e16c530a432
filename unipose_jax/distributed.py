"""Devices, meshes and global batches for data-parallel steps on one or many hosts.

One JAX process runs per host. Every process feeds its own share of the global
batch (``global_batch_size // jax.process_count()`` examples); the arrays built
here are global ``jax.Array``s sharded along the mesh axis ``"data"``, so one
jitted step sees the whole global batch. Model state is replicated.
"""

from __future__ import annotations

import collections
import copy
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

ENV_COORDINATOR = "UNIPOSE_COORDINATOR"
ENV_NUM_PROCESSES = "UNIPOSE_NUM_PROCESSES"
ENV_PROCESS_ID = "UNIPOSE_PROCESS_ID"
ENV_AUTO = "UNIPOSE_DISTRIBUTED_AUTO"


def _cluster_detected() -> str | None:
  """The multi-process launcher that started this process, if JAX reads its settings by
  itself (``jax.distributed.initialize()`` with no arguments) and it runs several tasks."""

  def count(*names):
    for name in names:
      try:
        return int(os.environ[name])
      except (KeyError, ValueError):
        continue
    return 1

  # srun sets SLURM_STEP_*; a batch script's own step (no srun) must not wait for peers.
  if "SLURM_STEP_NODELIST" in os.environ and count("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS") > 1:
    return "SLURM"
  if count("OMPI_COMM_WORLD_SIZE") > 1:
    return "Open MPI"
  if len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "a TPU slice on GKE"
  return None


def _env_true(name: str) -> bool:
  return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "auto")


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  auto: bool = False,
  initialization_timeout: int = 300,
) -> bool:
  """Start JAX's multi-process runtime; call before anything touches a device.

  Settings, first found wins:
  1. the arguments (``launch.py --coordinator_address --num_processes --process_id``);
  2. ``$UNIPOSE_COORDINATOR``, ``$UNIPOSE_NUM_PROCESSES``, ``$UNIPOSE_PROCESS_ID``;
  3. ``auto`` (``launch.py --distributed_auto``, ``$UNIPOSE_DISTRIBUTED_AUTO=1``): JAX finds
     the settings itself (Cloud TPU VMs through their metadata, SLURM, Open MPI, GKE);
  4. a launcher detected from its environment variables: ``srun`` with several tasks,
     ``mpirun`` (Open MPI) with several processes, a TPU slice on GKE
     (``$TPU_WORKER_HOSTNAMES`` with several hosts): as 3.
  Otherwise nothing is done and the run is single-process.
  On CPU, cross-process collectives use gloo. Returns whether the runtime was started.
  """
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
    num_processes = int(os.environ[ENV_NUM_PROCESSES])
  if process_id is None and os.environ.get(ENV_PROCESS_ID):
    process_id = int(os.environ[ENV_PROCESS_ID])
  given = [coordinator_address is not None, num_processes is not None, process_id is not None]
  if any(given) and not all(given):
    raise ValueError(
      "multi-process settings need all three of coordinator address, number of processes "
      f"and process id (flags --coordinator_address/--num_processes/--process_id or "
      f"${ENV_COORDINATOR}/${ENV_NUM_PROCESSES}/${ENV_PROCESS_ID}); got "
      f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
      f"process_id={process_id!r}"
    )
  # Cross-process collectives of the CPU backend (no effect on GPU/TPU devices).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if all(given):
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(
        f"need 0 <= process_id < num_processes, got process_id={process_id}, "
        f"num_processes={num_processes}"
      )
    if num_processes == 1:
      return False
    jax.distributed.initialize(
      coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=initialization_timeout,
    )
    return True
  if auto or _env_true(ENV_AUTO) or _cluster_detected() is not None:
    jax.distributed.initialize(initialization_timeout=initialization_timeout)
    return True
  return False


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the ``"data"`` axis, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def per_process_batch_size(
  global_batch_size: int, mesh: Mesh, process_count: int | None = None
) -> int:
  """The examples one process feeds per step; checks the global batch divides evenly."""
  n_dev = mesh.devices.size
  n_proc = jax.process_count() if process_count is None else process_count
  if global_batch_size % n_dev:
    raise ValueError(
      f"batch_size={global_batch_size} is not divisible by the {n_dev} devices of the mesh; "
      f"use a multiple of {n_dev}"
    )
  return global_batch_size // n_proc


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assemble process-local numpy arrays (leading dim = this process's share) into global arrays."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
  )


class MeshPrefetcher:
  """Global batches of a host iterator, put on the mesh ``size`` batches ahead.

  Returned by :func:`prefetch_to_mesh` (read it for the contract). ``get_state()`` /
  ``set_state()`` pass through to the inner iterator, with the state as of the last batch
  this object returned, so a checkpoint taken between steps resumes exactly.
  """

  def __init__(
    self, iterator: Iterator, mesh: Mesh, size: int = 2, keys: Sequence[str] | None = None
  ):
    if size < 1:
      raise ValueError(f"prefetch size must be >= 1, got {size}")
    self._iterator, self._mesh, self._size = iterator, mesh, size
    self._keys = None if keys is None else tuple(keys)
    self._queue: collections.deque[tuple[dict[str, jax.Array], Any]] = collections.deque()
    self._exhausted = False
    self._state = self._inner_state()

  def _inner_state(self) -> Any:
    get_state = getattr(self._iterator, "get_state", None)
    # A copy: an iterator may hand out (and later mutate) its own state object.
    return copy.deepcopy(get_state()) if get_state is not None else None

  def _select(self, batch: dict[str, Any]) -> dict[str, Any]:
    if self._keys is None:
      return batch
    missing = [k for k in self._keys if k not in batch]
    if missing:
      raise KeyError(
        f"the input batch lacks {missing} (has {sorted(batch)}); prefetch_to_mesh was asked "
        f"for keys {list(self._keys)}"
      )
    return {k: batch[k] for k in self._keys}

  def _fill(self) -> None:
    while not self._exhausted and len(self._queue) < self._size:
      try:
        local = next(self._iterator)
      except StopIteration:
        self._exhausted = True
        break
      # device_put is asynchronous: the transfer overlaps the step running now.
      self._queue.append((global_batch(self._select(local), self._mesh), self._inner_state()))

  def __iter__(self) -> MeshPrefetcher:
    return self

  def __next__(self) -> dict[str, jax.Array]:
    self._fill()
    if not self._queue:
      raise StopIteration
    batch, self._state = self._queue.popleft()
    self._fill()  # keep `size` batches in flight while the caller's step runs
    return batch

  def get_state(self) -> Any:
    """The inner iterator's state after the last batch returned (queued ones excluded)."""
    if self._state is None:
      raise TypeError(f"the inner iterator ({type(self._iterator).__name__}) has no get_state()")
    return copy.deepcopy(self._state)

  def set_state(self, state: Any) -> None:
    """Drop the queued batches and continue the inner iterator from ``state``."""
    self._queue.clear()
    self._exhausted = False
    self._iterator.set_state(state)
    self._state = self._inner_state()


def prefetch_to_mesh(
  iterator: Iterator[dict[str, np.ndarray]],
  mesh: Mesh,
  size: int = 2,
  keys: Sequence[str] | None = None,
) -> MeshPrefetcher:
  """Process-local batches of ``iterator`` as global arrays on ``batch_sharded(mesh)``.

  Each ``next()`` returns the next global batch (dict of ``jax.Array``; only ``keys`` when
  given) assembled by :func:`global_batch`, and then starts the transfer of
  the following batches so that ``size`` of them are on their way while the caller's step
  runs (JAX transfers are asynchronous; no thread is used). After the inner iterator is
  exhausted the queued batches are returned, then ``StopIteration`` on every call.
  ``get_state()`` is the inner iterator's state as of the last batch returned.
  """
  return MeshPrefetcher(iterator, mesh, size=size, keys=keys)


def any_process(flag: bool | Callable[[], bool]) -> bool:
  """Whether ``flag`` (a bool, or a function returning one) is true on any process.

  One process: ``flag`` itself, no device work. Several: every process must call this at
  the same point; one all-gather of one int32 per process.
  """
  value = bool(flag() if callable(flag) else flag)
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # noqa: PLC0415

  return bool(np.any(multihost_utils.process_allgather(np.int32(value))))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Put a pytree of host or device arrays on every device of the mesh.

  With several processes, every process passes the same values (the same seeded
  initialisation, or a restore) and each fills its own devices. Arrays that live on this
  process's devices only go through host memory (XLA's CPU and GPU clients do not copy
  device to device across hosts).
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if isinstance(x, jax.Array) and x.is_fully_addressable:
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
      x = np.asarray(x)
    return jax.device_put(x, sharding)

  return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
  """Fetch a pytree of (possibly multi-process) global arrays as numpy on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return multihost_utils.process_allgather(tree, tiled=True)


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in the order of its local batch
  (the inverse of :func:`global_batch` for one process)."""
  if x.is_fully_addressable:
    return np.asarray(x)
  shards = {}
  for s in x.addressable_shards:
    shards.setdefault(s.index[0].start or 0, s.data)
  return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])


def is_primary() -> bool:
  """Whether this process writes logs, PNGs and result files."""
  return jax.process_index() == 0
