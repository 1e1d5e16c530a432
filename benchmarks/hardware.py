"""What a benchmark ran on, and the accelerators' peak FLOP/s, shared by every benchmark."""

from __future__ import annotations

import os
import platform

#: Dense peak FLOP/s by device-kind substring and dtype (vendor data sheets);
#: "tf32" is float32 on tensor cores, XLA:GPU's default precision for float32 matmuls.
PEAK_FLOPS: dict[str, dict[str, float]] = {
  "H100": {"bfloat16": 989e12, "float16": 989e12, "tf32": 494e12, "float32": 67e12},
  "H200": {"bfloat16": 989e12, "float16": 989e12, "tf32": 494e12, "float32": 67e12},
  "A100": {"bfloat16": 312e12, "float16": 312e12, "tf32": 156e12, "float32": 19.5e12},
  "TPU v4": {"bfloat16": 275e12},
  "TPU v5": {"bfloat16": 197e12},
}


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe_device(accelerator: bool = True) -> str:
  """E.g. ``"cpu: AMD EPYC 7B13, 2 cores, 8 jax devices"`` or ``"gpu: NVIDIA H100 x1 (host ...)"``.

  With ``accelerator=False`` (host-only benchmarks such as the input pipeline) JAX is not consulted.
  """
  cpu = f"{cpu_model()}, {os.cpu_count()} cores"
  if not accelerator:
    return f"cpu: {cpu}"
  import jax  # pylint: disable=g-import-not-at-top

  dev = jax.devices()[0]
  if dev.platform == "cpu":
    return f"cpu: {cpu}, {jax.device_count()} jax devices"
  return f"{dev.platform}: {dev.device_kind} x{jax.device_count()} (host {cpu})"


def peak_flops(dtype: str) -> dict[str, float] | None:
  """Peak FLOP/s of ONE device for ``dtype``: ``{"bfloat16": ...}``, or for float32 both
  ``{"tf32": ..., "float32": ...}`` where known; None for an unknown device (the CPU)."""
  import jax  # pylint: disable=g-import-not-at-top

  kind = jax.devices()[0].device_kind
  for key, table in PEAK_FLOPS.items():
    if key in kind:
      names = ("tf32", "float32") if dtype == "float32" else (dtype,)
      return {n: table[n] for n in names if n in table} or None
  return None


def is_oom(e: BaseException) -> bool:
  """Whether an exception is XLA running out of device memory."""
  text = f"{type(e).__name__}: {e}"
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def flops_of(lowered) -> float | None:
  """FLOPs of a lowered (not yet compiled) XLA computation, or None where unknown.

  The cost analysis of the lowered program is the same on every backend. A *compiled*
  program's analysis on the GPU leaves out the convolutions XLA hands to cuDNN (custom
  calls carry no cost): on an H200 it gave 125 GFLOP for a ResNet-101 training step of
  64 images at 368 px whose lowered analysis is 11 300 GFLOP (2026-12-04), which made the
  MFU of that session's train_bench lines 90 times too small.
  """
  try:
    cost = lowered.cost_analysis()
  except Exception:  # noqa: BLE001 - not every backend implements it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def parse_args(parser, argv, tiny: dict):
  """``parser.parse_args(argv)`` with a ``--tiny`` flag: the benchmark's tiny mode, a run of
  seconds with a tiny network and few repeats (``tiny`` gives its settings; flags given
  explicitly still win). The test suite runs every benchmark this way
  (tests/test_benchmarks.py); its numbers measure nothing."""
  parser.add_argument("--tiny", action="store_true", help=f"tiny mode for the tests: {tiny}")
  args = parser.parse_args(argv)
  if args.tiny:
    parser.set_defaults(**tiny)
    args = parser.parse_args(argv)
  return args
