"""A roofline ESTIMATE of one step's time on a target, from what the compiler reports.

Per device and step:

* ``flops_s``  = FLOPs / peak FLOP/s of the config's compute dtype (FLOPs from the LOWERED
  program's cost analysis at the per-device batch: a GPU's compiled analysis leaves out the
  convolutions handed to cuDNN, 90x too few for this network);
* ``hbm_s``    = HBM bytes / HBM bandwidth (bytes: what the compiled program's top-level
  kernels read and write, ``hlo.kernel_io_bytes``);
* ``collective_s`` = sum over collectives of (bytes one device sends, ring algorithm) /
  the chip's all-reduce bandwidth, plus an assumed fixed latency per collective.

``step_s = max(flops_s, hbm_s) + collective_s``: compute and memory traffic overlap
perfectly, communication does not overlap at all (BatchNorm's statistics all-reduces sit
on the forward pass's critical path; XLA overlaps part of the gradient all-reduce, so the
collective term leans pessimistic while the first leans optimistic, at peak rates).
Every figure comes from ``targets.CHIPS``; nothing here is measured.
"""

from __future__ import annotations

from unipose_jax.aot.targets import Chip


def peak_flops(chip: Chip, dtype: str) -> float:
  """Peak FLOP/s of one chip for a compute dtype (float16 as bfloat16 where not listed)."""
  return chip.peak_flops.get(dtype) or chip.peak_flops["bfloat16"]


def step_time(
  chip: Chip,
  *,
  dtype: str,
  flops: float,
  hbm_bytes: float,
  collectives: dict[str, dict[str, float]],
  per_device_batch: int,
  num_chips: int,
) -> dict[str, float]:
  """The estimate's terms (seconds) and the images/s it allows per chip and per slice."""
  flops_s = flops / peak_flops(chip, dtype)
  hbm_s = hbm_bytes / chip.hbm_bandwidth
  wire = sum(c["wire_bytes"] for c in collectives.values())
  count = sum(c["count"] for c in collectives.values())
  bandwidth_s = wire / chip.allreduce_bandwidth
  latency_s = count * chip.collective_latency_s
  step_s = max(flops_s, hbm_s) + bandwidth_s + latency_s
  per_chip = per_device_batch / step_s if step_s > 0 else 0.0
  return {
    "flops_s": flops_s,
    "hbm_s": hbm_s,
    "collective_bandwidth_s": bandwidth_s,
    "collective_latency_s": latency_s,
    "step_s": step_s,
    "bound": "compute" if flops_s >= hbm_s else "memory",
    "images_per_s_per_chip": per_chip,
    "images_per_s_per_slice": per_chip * num_chips,
  }
