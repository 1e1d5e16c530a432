"""Scalar logging without TensorFlow: TensorBoard event files (tensorboardX) and metrics.jsonl.

Only the primary process (index 0) writes; the other processes get a writer that
does nothing, so callers never branch on the process index.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import jax


class MetricWriter:
  """Writes ``{name: float}`` dicts at a step to ``<workdir>/metrics.jsonl`` and TensorBoard events.

  Each line of metrics.jsonl is ``{"step": int, "time": unix seconds, name: value, ...}``.
  """

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    self._jsonl = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    for name, value in clean.items():
      self._tb.add_scalar(name, value, global_step=step)
    self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
    self._jsonl.flush()

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()
      self.enabled = False


class Progress:
  """Console progress for long loops: step, rate in images/s and ETA.

  ``update(step, extra)`` returns the line it printed (or None between reports).
  """

  def __init__(
    self,
    total_steps: int,
    images_per_step: int,
    first_step: int = 0,
    every: int = 50,
    print_fn=print,
  ):
    self.total = total_steps
    self.images_per_step = images_per_step
    self.every = max(1, every)
    self._print = print_fn
    self._t0 = time.perf_counter()
    self._s0 = first_step

  def rate(self, step: int) -> float:
    """Images per second since the last report (or since the start)."""
    dt = time.perf_counter() - self._t0
    return (step - self._s0) * self.images_per_step / dt if dt > 0 else 0.0

  def update(self, step: int, extra: Mapping[str, float] | None = None, force: bool = False):
    if not force and step % self.every:
      return None
    ips = self.rate(step)
    remaining = (self.total - step) * self.images_per_step / ips if ips > 0 else float("nan")
    fields = " ".join(f"{k}={v:.4g}" for k, v in (extra or {}).items())
    line = f"step {step}/{self.total} {fields} {ips:.1f} img/s ETA {format_seconds(remaining)}"
    if jax.process_index() == 0:
      self._print(line, flush=True)
    self._t0, self._s0 = time.perf_counter(), step
    return line


def format_seconds(seconds: float) -> str:
  """``3725.0 -> '1:02:05'``; ``nan -> '?'``."""
  if seconds != seconds or seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
