"""Logging without TensorFlow: TensorBoard events + metrics.jsonl, console progress.

* :class:`MetricWriter` has the methods of clu's ``MetricWriter`` interface (write_scalars,
  write_images, write_texts, write_histograms, write_hparams, flush, close) on tensorboardX
  event files and ``<workdir>/metrics.jsonl``. (clu's own ``metric_writers`` and
  ``periodic_actions`` import TensorFlow when imported, which this project never installs;
  ``clu.metrics`` does not.) metrics.jsonl holds one row per step: the scalars written at
  the step of the last row (the step's images/s, its evaluation) join that row, rewritten
  in place with one write. Opened with ``resume_step``, it
  first drops every row of a later step (rows written after the checkpoint the run resumes
  from, which the run will write again) and has TensorBoard purge those steps, so each
  step appears once: the run's true history.
* :class:`ReportProgress`: a periodic progress hook in the manner of clu's, printing step,
  images/s and ETA.

Only the primary process (index 0) writes; elsewhere the writer does nothing.
"""

import contextlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import jax

from unipose_jax import files


def _truncate_jsonl(path: str, last_step: int) -> int:
  """Drop rows of ``metrics.jsonl`` with ``step > last_step`` (atomically); returns how many."""
  if not os.path.exists(path):
    return 0
  keep, dropped = [], 0
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:  # a line cut short by a kill
        dropped += 1
        continue
      if int(row.get("step", -1)) > last_step:
        dropped += 1
      else:
        keep.append(line if line.endswith("\n") else line + "\n")
  if dropped:
    files.atomic_write(path, "".join(keep).encode("utf-8"))
  return dropped


class MetricWriter:
  """Scalars to ``<workdir>/metrics.jsonl`` and TensorBoard events under ``<workdir>/tensorboard``.

  Each line of metrics.jsonl is ``{"step": int, "time": unix seconds, name: value, ...}``,
  one line per step (``time``: when its first scalars came). ``resume_step``: the step the
  run restarts from; rows of later steps are removed.
  """

  def __init__(self, workdir: str, resume_step: int | None = None, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = self._jsonl = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    purge = None
    if resume_step is not None:
      _truncate_jsonl(path, resume_step)
      purge = resume_step + 1
    from tensorboardX import SummaryWriter  # noqa: PLC0415

    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)
    self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    self._end = os.lseek(self._fd, 0, os.SEEK_END)
    self._last, self._last_at = self._last_row(path), None  # the last row, its offset
    if self._last is not None:
      self._last_at = self._end - len(self._line(self._last))

  @staticmethod
  def _line(row: Mapping[str, Any]) -> bytes:
    return (json.dumps(row) + "\n").encode("utf-8")

  def _last_row(self, path: str) -> dict | None:
    """The file's last row when it ends with a whole line written as this writer writes
    them (a resumed run's final evaluation joins it), else None."""
    if self._end == 0:
      return None
    with open(path, "rb") as f:
      f.seek(max(0, self._end - 65536))
      tail = f.read()
    if not tail.endswith(b"\n"):
      return None
    try:
      row = json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    except ValueError:
      return None
    return (
      row if isinstance(row, dict) and self._line(row) == tail[-len(self._line(row)) :] else None
    )

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """TensorBoard scalars, and the row of ``step``: a new line, or the last line with
    these scalars added when it is the same step's (rewritten by one ``pwrite``, so a
    kill leaves the old line or the new one)."""
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    for name, value in clean.items():
      self._tb.add_scalar(name, value, global_step=step)
    if self._last is not None and self._last.get("step") == int(step):
      row, at = {**self._last, **clean}, self._last_at
    else:
      row, at = {"step": int(step), "time": time.time(), **clean}, self._end
    line = self._line(row)
    os.pwrite(self._fd, line, at)
    if at + len(line) < self._end:  # a shorter row (a value rewritten): cut the rest
      os.ftruncate(self._fd, at + len(line))
    self._last, self._last_at, self._end = row, at, at + len(line)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    if self.enabled:
      for name, image in images.items():
        self._tb.add_images(name, image, global_step=step, dataformats="NHWC")

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    if self.enabled:
      for name, text in texts.items():
        self._tb.add_text(name, text, global_step=step)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self.write_texts(0, {"hparams": json.dumps(dict(hparams), default=str)})

  def write_histograms(self, step, arrays, num_buckets=None) -> None:
    if self.enabled:
      for name, values in arrays.items():
        self._tb.add_histogram(name, values, global_step=step)

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      os.close(self._fd)
      self.enabled = False


class ReportProgress:
  """Prints ``step s/total loss=... N img/s ETA h:mm:ss`` every ``every_steps`` steps (primary
  process) and writes ``images_per_s`` to the writer.

  Call ``progress(step)`` once at the first step (it starts the clock), then every step;
  ``progress.extra`` holds scalars (the loss) shown on the next line. Time spent inside
  ``with progress.paused():`` (the evaluations) is left out of the step rate and the ETA.
  """

  def __init__(self, *, num_train_steps: int, images_per_step: int, every_steps: int, writer=None):
    self.total, self.images_per_step = num_train_steps, images_per_step
    self.every, self.writer = max(1, every_steps), writer
    self.extra: dict[str, float] = {}
    self.last_line: str | None = None
    self._previous: tuple[int, float] | None = None

  def __call__(self, step: int) -> bool:
    now = time.perf_counter()
    if self._previous is None or step == self._previous[0]:
      self._previous = (step, now)
      return False
    if step % self.every and step != self.total:
      return False
    steps_per_s = (step - self._previous[0]) / max(now - self._previous[1], 1e-9)
    images_per_s = steps_per_s * self.images_per_step
    eta = (self.total - step) / steps_per_s if steps_per_s > 0 else float("nan")
    fields = " ".join(f"{k}={v:.4g}" for k, v in self.extra.items())
    self.last_line = (
      f"step {step}/{self.total} {fields} {images_per_s:.1f} img/s ETA {format_seconds(eta)}"
    )
    if jax.process_index() == 0:
      print(f"[{time.strftime('%H:%M:%S')}] {self.last_line}", flush=True)
    if self.writer is not None:
      self.writer.write_scalars(step, {"images_per_s": images_per_s})
    self._previous = (step, now)
    return True

  @contextlib.contextmanager
  def paused(self):
    """Leave the time spent in this block out of the rate (the clock moves past it)."""
    start = time.perf_counter()
    try:
      yield
    finally:
      if self._previous is not None:
        step, since = self._previous
        self._previous = (step, since + time.perf_counter() - start)


def format_seconds(seconds: float) -> str:
  """``3725.0 -> '1:02:05'``; ``nan -> '?'``."""
  if seconds != seconds or seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
