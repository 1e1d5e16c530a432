"""Devices, meshes and global batches for data-parallel steps on one or many hosts.

One JAX process runs per host. Every process feeds its own share of the global
batch (``global_batch_size // jax.process_count()`` examples); the arrays built
here are global ``jax.Array``s sharded along the mesh axis ``"data"``, so one
jitted step sees the whole global batch. Model state is replicated.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the ``"data"`` axis, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def per_process_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """The examples one process feeds per step; checks the global batch divides evenly."""
  n_dev = mesh.devices.size
  n_proc = jax.process_count()
  if global_batch_size % n_dev:
    raise ValueError(
        f"batch_size={global_batch_size} is not divisible by the {n_dev} devices of the mesh; "
        f"use a multiple of {n_dev}")
  return global_batch_size // n_proc


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assemble process-local numpy arrays (leading dim = this process's share) into global arrays."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Put a pytree of host or device arrays on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def to_host(tree: Any) -> Any:
  """Fetch a pytree of (possibly multi-process) global arrays as numpy on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


def is_primary() -> bool:
  """Whether this process writes logs, PNGs and result files."""
  return jax.process_index() == 0
