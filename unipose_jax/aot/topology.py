"""Compile-only devices of a target, without its hardware.

TPU: ``jax.experimental.topologies.get_topology_desc(platform="tpu", topology_name=...)``
through libtpu (``pip install 'unipose_jax[aot]'``). GPU: the same call with
``platform="cuda"``, the CUDA plugin and a ``GpuTargetConfigProto`` text describing the
device (the project's own files in ``unipose_jax/aot/specs/``, from published figures).

Devices are ordered by id, as ``jax.devices()`` orders them on the real machine, so the
1-D mesh over them is the one ``distributed.data_mesh()`` builds there: a multi-host slice
compiles as one program over every chip of every host.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib import resources

from unipose_jax.aot.targets import Target

INSTALL_COMMAND = "pip install -e '.[aot]'  (jax[tpu] and jax[cuda13] at the project's jax version)"

#: What the compile-only runtime needs: libtpu otherwise warns that it cannot find the TPU
#: type and worker hostnames of the (absent) machine, and refuses a second process on the
#: machine (its lock file guards real chips; compiling touches none).
QUIET_ENV = {
  "TPU_ACCELERATOR_TYPE": "v5litepod-4",
  "TPU_WORKER_HOSTNAMES": "localhost",
  "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
}


class MissingExtraError(RuntimeError):
  """The ``[aot]`` extra (libtpu or the CUDA plugin) is not installed."""


def prepare_environment() -> None:
  """Set before JAX starts: the local platform is the CPU (the target is compiled for, never
  run on) and libtpu's warnings about the absent TPU are off."""
  if "JAX_PLATFORMS" not in os.environ:
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:  # imported already: its flag was read; backends may still wait
      sys.modules["jax"].config.update("jax_platforms", "cpu")
  for key, value in QUIET_ENV.items():
    os.environ.setdefault(key, value)


def _plugin_present(platform: str) -> bool:
  module = "libtpu" if platform == "tpu" else "jax_plugins.xla_cuda13"
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    return False


def spec_text(target: Target) -> str:
  """The GpuTargetConfigProto text of a GPU target's chip."""
  return resources.files("unipose_jax.aot").joinpath("specs", target.chip.spec_file).read_text()


def devices(target: Target) -> list:
  """The target's compile-only devices, sorted by id; raises :class:`MissingExtraError`."""
  prepare_environment()
  if not _plugin_present(target.platform):
    what = "libtpu" if target.platform == "tpu" else "the CUDA plugin (jax-cuda13-plugin)"
    raise MissingExtraError(
      f"--target={target.name} needs {what}, from the [aot] extra: {INSTALL_COMMAND}"
    )
  from jax.experimental import topologies  # noqa: PLC0415

  if target.platform == "tpu":
    desc = topologies.get_topology_desc(
      platform="tpu", topology_name=f"{target.chip.key}:{target.topology}",
      **target.topology_kwargs(),
    )  # fmt: skip
  else:
    desc = topologies.get_topology_desc(
      platform="cuda", topology_name="", target_config=spec_text(target),
      topology=target.topology,
    )  # fmt: skip
  found = sorted(desc.devices, key=lambda d: d.id)
  if len(found) != target.num_chips:
    raise RuntimeError(f"{target.name}: expected {target.num_chips} devices, got {len(found)}")
  return found


def process_count(devs: list) -> int:
  """Hosts (JAX processes) the devices belong to."""
  return len({d.process_index for d in devs})
