"""``launch.py --mode=compile``: compile a config for a named target, report as JSON and a table.

:func:`compile_report` compiles the training step (each parallel form the target allows)
and the evaluation step for the target's compile-only devices, finds the largest
per-device training batch that fits (bisection, each probe a compilation), and returns the
report (a JSON-able dict). :func:`format_table` is its console form.
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from unipose_jax import run_config
from unipose_jax.aot import programs, targets, topology

MAX_PER_DEVICE_BATCH = 4096


class BatchSizeError(ValueError):
  """A global batch that does not divide over the target's devices."""


def _is_oom(e: BaseException) -> bool:
  text = f"{type(e).__name__}: {e}"
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def check_batches(config, target: targets.Target) -> None:
  n = target.num_chips
  for key in ("batch_size", "eval_batch_size"):
    value = config[key]
    if value % n:
      raise BatchSizeError(
        f"{key}={value} does not divide over the {n} devices of {target.name}: use a "
        f"multiple of {n} (e.g. --config.{key}={max(1, value // n) * n}) or --per_device_batch"
      )


class _Session:
  """One target's devices and mesh, and the config being compiled."""

  def __init__(self, config, target: targets.Target, log: Callable[[str], None]):
    self.config, self.target, self.log = config, target, log
    self.devices = topology.devices(target)
    self.hosts = topology.process_count(self.devices)
    self.mesh = Mesh(np.asarray(self.devices), ("data",))
    self.n = target.num_chips

  def train(self, parallelism: str, per_device_batch: int, flops: float | None = None):
    """The report entry of the training step at a per-device batch (``error`` on failure)."""
    cfg = programs.with_batch(self.config, parallelism, per_device_batch * self.n)
    self.log(f"compiling the training step ({parallelism}, {per_device_batch}/device) ...")
    try:
      compiled, secs = programs.compile_timed(programs.lower_train(cfg, self.mesh))
    except Exception as e:  # noqa: BLE001
      if not _is_oom(e):
        raise
      return _no_fit("train", parallelism, per_device_batch, self.n, e)
    if flops is None:
      flops = programs.reference_flops(cfg, "train", per_device_batch)
    return programs.analyse(
      compiled, secs, target=self.target, step="train", parallelism=parallelism, config=cfg,
      per_device_batch=per_device_batch, flops=flops,
    )  # fmt: skip

  def eval(self):
    per_device = self.config.eval_batch_size // self.n
    self.log(f"compiling the evaluation step (jit, {per_device}/device) ...")
    try:
      lowered = programs.lower_eval(self.config, self.mesh)
    except run_config.ConfigError as e:  # the evaluator refuses the run's keypoint set
      self.log(f"  evaluation step skipped: {e}")
      return {"step": "eval", "parallelism": "jit", "per_device_batch": per_device,
              "skipped": f"the evaluation step does not build: {e}"}  # fmt: skip
    try:
      compiled, secs = programs.compile_timed(lowered)
    except Exception as e:  # noqa: BLE001
      if not _is_oom(e):
        raise
      return _no_fit("eval", "jit", per_device, self.n, e)
    flops = programs.reference_flops(self.config, "eval", per_device)
    return programs.analyse(
      compiled, secs, target=self.target, step="eval", parallelism="jit", config=self.config,
      per_device_batch=per_device, flops=flops,
    )  # fmt: skip


def _no_fit(step, parallelism, per_device_batch, n, error) -> dict[str, Any]:
  first = str(error).strip().splitlines()[0][:300]
  return {
    "step": step, "parallelism": parallelism, "per_device_batch": per_device_batch,
    "global_batch": per_device_batch * n, "memory": {"fits": False}, "error": first,
  }  # fmt: skip


def _used(entry) -> int | None:
  m = entry["memory"]
  return max(m["total"], m["peak"]) if "total" in m else None


def largest_batch(session: _Session, first: dict, max_compiles: int) -> dict[str, Any]:
  """The largest per-device training batch (jit) that fits, by bisection.

  Each probe compiles the training step; a probe's guess is the linear interpolation of
  the memory measured so far (clipped into the open interval), every other probe the
  midpoint, so the interval at least halves every two probes.
  """
  usable = first["memory"].get("usable") or int(
    session.target.chip.hbm_bytes * session.target.chip.usable_fraction
  )
  trials: dict[int, tuple[bool, int | None]] = {
    first["per_device_batch"]: (first["memory"]["fits"], _used(first))
  }
  step = 0
  while step < max_compiles:
    fit = [b for b, (ok, _) in trials.items() if ok]
    bad = [b for b, (ok, _) in trials.items() if not ok]
    lo, hi = max(fit, default=0), min(bad, default=None)
    if hi is not None and hi - lo <= 1:
      break
    if lo >= MAX_PER_DEVICE_BATCH:
      break
    guess = _interpolate(trials, usable)
    if hi is None:
      nxt = max(lo * 2, 1) if guess is None else max(guess, lo + 1)
      nxt = min(nxt, MAX_PER_DEVICE_BATCH)
    elif step % 2 and guess is not None:
      nxt = min(max(guess, lo + 1), hi - 1)
    else:
      nxt = (lo + hi) // 2
    entry = session.train("jit", nxt, flops=0.0)
    trials[nxt] = (entry["memory"]["fits"], _used(entry))
    step += 1
  fit = [b for b, (ok, _) in trials.items() if ok]
  bad = [b for b, (ok, _) in trials.items() if not ok]
  lo, hi = max(fit, default=0), min(bad, default=None)
  return {
    "per_device": lo,
    "global": lo * session.n,
    "exact": hi is not None and hi - lo <= 1,
    "usable_bytes": usable,
    "trials": [{"per_device": b, "fits": ok, "bytes": u} for b, (ok, u) in sorted(trials.items())],
  }


def _interpolate(trials, usable: int) -> int | None:
  """The batch where memory reaches ``usable``, on the line through the two measurements
  nearest below it (None with fewer than two)."""
  pts = sorted((b, u) for b, (_, u) in trials.items() if u is not None)
  if len(pts) < 2:
    return None
  (b1, u1), (b2, u2) = pts[-2], pts[-1]
  if u2 <= u1:
    return None
  return int(b1 + (usable - u1) * (b2 - b1) / (u2 - u1))


def findings(config, entries: list[dict]) -> list[str]:
  """What a user should know before renting the target."""
  out = []
  for e in entries:
    tag = f"{e['step']} ({e['parallelism']})"
    if "skipped" in e:
      continue
    if not e["memory"]["fits"]:
      out.append(f"{tag}: does NOT fit at {e['per_device_batch']} per device")
    reduced = e.get("collectives", {}).get("all-reduce", {}).get("by_dtype", {})
    if reduced.get("bf16", 0) > 1e6:
      out.append(
        f"{tag}: {reduced['bf16'] / 1e6:.1f} MB per step are all-reduced in bfloat16 (XLA "
        "reduces the gradients before their cast back to float32): sums over many devices "
        "lose precision"
      )
    low = e.get("convolutions", {}).get("by_dtype", {}).get("bf16", 0)
    if low and config.model.dtype == "float32":
      out.append(
        f"{tag}: {low} convolution(s) take bfloat16 inputs in a float32 config (the "
        "platform's default matmul precision; jax_default_matmul_precision=highest avoids it)"
      )
    f32 = e.get("convolutions", {}).get("float32", [])
    if f32 and config.model.dtype != "float32":
      out.append(
        f"{tag}: {len(f32)} float32 convolution(s) in a {config.model.dtype} config, e.g. {f32[0]}"
      )
  return out


def compile_report(
  config, target_name: str, *, config_name: str = "", forms=("jit", "pmap"),
  batch_search: bool = True, max_compiles: int = 6, log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
  """Compile ``config`` for ``target_name``; the report (see the module docstring)."""
  target = targets.parse(target_name)
  check_batches(config, target)
  session = _Session(config, target, log)
  per_device = config.batch_size // target.num_chips
  entries = []
  for form in forms:
    if form == "pmap" and session.hosts > 1:
      entries.append({
        "step": "train", "parallelism": "pmap", "per_device_batch": per_device,
        "skipped": f"pmap runs on one host; {target.name} has {session.hosts} hosts "
        "(the trainer refuses it: use parallelism='jit')",
      })  # fmt: skip
      continue
    entries.append(session.train(form, per_device))
  entries.append(session.eval())
  first = next((e for e in entries if e["parallelism"] == "jit" and e["step"] == "train"), None)
  largest = largest_batch(session, first, max_compiles) if batch_search and first else None
  chip = target.chip
  return {
    "report": "unipose_jax ahead-of-time compilation (launch.py --mode=compile)",
    "created": datetime.date.today().isoformat(),
    "config": config_name,
    "target": target.name,
    "device": {
      "chip": chip.name,
      "count": target.num_chips,
      "hosts": session.hosts,
      "topology": target.topology,
      "hbm_bytes": chip.hbm_bytes,
      "usable_bytes": int(chip.hbm_bytes * chip.usable_fraction),
      "peak_flops": chip.peak_flops,
      "hbm_bandwidth": chip.hbm_bandwidth,
      "allreduce_bandwidth": chip.allreduce_bandwidth,
      "collective_latency_s": chip.collective_latency_s,
      "sources": list(chip.sources),
    },  # fmt: skip
    "software": {"jax": jax.__version__, "python": platform.python_version()},
    "model": {
      "dtype": config.model.dtype,
      "input_size": config.data.input_size,
      "backbone_depth": config.model.backbone_depth,
      "bn_sync": config.model.bn_sync,
      "box_head": bool(config.model.box_head),
      "flip_test": bool(config.flip_test),
    },  # fmt: skip
    "batch": {
      "global": config.batch_size,
      "per_device": per_device,
      "eval_global": config.eval_batch_size,
    },  # fmt: skip
    "programs": entries,
    "largest_batch": largest,
    "findings": findings(config, entries),
  }
