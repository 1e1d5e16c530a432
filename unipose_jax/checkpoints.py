"""Checkpoints: a thin layer over orbax's ``CheckpointManager``, and a workdir lock.

One folder per step, ``<directory>/<step>/``, holds the orbax items ``state/`` (the train
state, ``StandardSave``), ``extra/metadata`` (JSON ``{"data_state": ...}``) and
``metrics/metrics`` (orbax's metrics item); the same layout as before this module was
thinned, so older checkpoints restore. Retention: the newest ``max_to_keep`` steps plus the
best by ``best_metric`` (orbax's ``LatestN`` and ``BestN`` policies). Saves are asynchronous;
a failed one raises :class:`CheckpointSaveError` at the next ``check``/``save``/``wait`` and
leaves the earlier steps. Damaged steps are skipped with one warning each and moved to
``<directory>/damaged/<step>-<time>``. Multi-host: all processes call ``save``/``restore``/
``close`` in the same order; only process 0 moves folders or takes the lock.
This module imports nothing from the rest of ``unipose_jax`` (design.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import logging
import math
import os
import shutil
import socket
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

logger = logging.getLogger(__name__)

STATE, EXTRA = "state", "extra"  # orbax item names (the on-disk folder names)
_TMP = ".orbax-checkpoint-tmp"


class CheckpointError(Exception):
  """An expected checkpoint fault; the message is one line for users."""


class CheckpointSaveError(CheckpointError):
  """A (background) save failed; earlier checkpoints are intact."""


class WorkdirLockedError(CheckpointError):
  """Another live trainer holds the workdir."""


class _QuietOrbax(logging.Filter):
  """Drops orbax's warnings for every save without metrics and every read-only open, and
  the tracebacks of its error logs for OS faults (a full disk): one line each is enough."""

  def filter(self, record: logging.LogRecord) -> bool:
    msg = record.getMessage()
    if record.exc_info and isinstance(record.exc_info[1], OSError):
      record.exc_info, record.exc_text = None, None
    return "did not provide metrics" not in msg and "Given directory is read only" not in msg


logging.getLogger("absl").addFilter(_QuietOrbax())


@dataclasses.dataclass
class Restored:
  """One restored checkpoint: the state (target's type, or nested dicts of numpy
  arrays), the data iterator's JSON state, the metrics saved with it, its step."""

  state: Any
  data_state: dict | None
  metrics: dict | None
  step: int


def _shapes(tree: Any) -> dict[str, tuple]:
  """``{"params/conv/kernel": shape}`` for every array leaf of a pytree or orbax metadata."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
  return {jax.tree_util.keystr(p, simple=True, separator="/"): np.shape(x) for p, x in flat}


def _reason(e: BaseException) -> str:
  """One line for an exception chain: its first OSError's text, else its root cause's."""
  chain = [e]
  while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
    chain.append(nxt)
  cause = next((x for x in chain if isinstance(x, OSError)), chain[-1])
  text = (str(cause).strip().splitlines() or [""])[0].split(" [tensorstore_spec=")[0]
  text = text if isinstance(cause, OSError) else f"{type(cause).__name__}: {text}"
  return text if len(text) <= 300 else text[:297] + "..."


class Checkpointer:
  """Saves and restores ``(state, data_state, metrics)`` per step in ``directory``.

  Args:
    directory: the checkpoint folder (created when writing).
    max_to_keep: how many of the newest steps are kept (``None``: all).
    best_metric: a key of the saved metrics, higher is better; the best step is kept
      besides the newest ones and is restored first with ``prefer_best``.
    read_only: for evaluation: never writes, deletes or moves anything.
  """

  def __init__(self, directory, *, max_to_keep: int | None = 3, best_metric: str | None = None,
               read_only: bool = False):  # fmt: skip
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be None or >= 1, got {max_to_keep}")
    self.directory = epath.Path(os.path.abspath(os.fspath(directory)))
    self.best_metric, self.read_only = best_metric, read_only
    self._pending: int | None = None  # step of the asynchronous save not yet checked
    policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
    if best_metric is not None:
      policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=self._score, reverse=False, n=1, keep_checkpoints_without_metrics=False
      ))  # fmt: skip
    options = ocp.CheckpointManagerOptions(
      best_fn=self._score,  # makes orbax save and reload the metrics item
      best_mode="max",
      save_interval_steps=0 if read_only else 1,
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      enable_async_checkpointing=True,
      cleanup_tmp_directories=not read_only,
      create=not read_only,
      read_only=read_only,
    )
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item, save, restore in ((STATE, ocp.args.StandardSave, ocp.args.StandardRestore),
                                (EXTRA, ocp.args.JsonSave, ocp.args.JsonRestore)):  # fmt: skip
      registry.add(item, save)
      registry.add(item, restore)
    self._open = lambda: ocp.CheckpointManager(
      self.directory, options=options, handler_registry=registry
    )
    try:
      self._manager = self._open()
    except OSError as e:
      raise CheckpointError(f"cannot open checkpoints in {self.directory}: {e}") from None

  def _score(self, metrics: Any) -> float:
    try:
      value = float((metrics or {})[self.best_metric])
    except (KeyError, TypeError, ValueError):
      return -math.inf
    return -math.inf if math.isnan(value) else value

  def all_steps(self) -> list[int]:
    """Steps on disk (and a save in flight), ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def best_step(self) -> int | None:
    """The step with the highest ``metrics[best_metric]``; None when none has it."""
    scored = [(self._score(self._manager.metrics(s)), s) for s in self.all_steps()]
    scored = [x for x in scored if x[0] > -math.inf]
    return max(scored)[1] if scored else None

  def save(self, step: int, state, data_state: dict | None = None,
           metrics: dict | None = None) -> None:  # fmt: skip
    """Starts an asynchronous save of ``state`` (a pytree of arrays), ``data_state`` (JSON)
    and ``metrics`` (``{name: number}``) as ``step``; raises a failure of the previous one."""
    if self.read_only:
      raise CheckpointError(f"{self.directory} is opened read-only; cannot save")
    self.check()
    step = int(step)
    metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
    args = ocp.args.Composite(**{
      STATE: ocp.args.StandardSave(state), EXTRA: ocp.args.JsonSave({"data_state": data_state})
    })  # fmt: skip
    self._pending = step
    try:
      self._manager.save(step, args=args, metrics=metrics, force=True)
    except OSError as e:
      self._failed(e)

  def check(self) -> None:
    """Raises :class:`CheckpointSaveError` if a finished background save failed."""
    if self._pending is not None and not self._manager.is_saving_in_progress():
      self.wait()

  def wait(self) -> None:
    """Waits for the pending asynchronous save, then raises its failure, if any."""
    if self._pending is None:
      return
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - any background fault is a failed save
      self._failed(e)
    self._pending = None

  def _failed(self, e: BaseException):
    """Raises the save failure ``e`` once, after a clean-up: orbax's manager is closed
    (which joins its background thread) and reopened, the partial folder removed."""
    step, self._pending = self._pending, None
    for _ in range(3):  # orbax re-raises the same fault once per layer
      try:
        self._manager.close()
        break
      except Exception:  # noqa: BLE001, S112
        continue
    if jax.process_index() == 0:  # writer threads may outlive the failure: until quiet
      quiet, deadline = time.monotonic(), time.monotonic() + 30
      while time.monotonic() - quiet < 1 and time.monotonic() < deadline:
        for tmp in self.directory.glob(f"*{_TMP}*"):
          shutil.rmtree(tmp, ignore_errors=True)
          quiet = time.monotonic()
        time.sleep(0.1)
    self._manager = self._open()
    path = self.directory / str(step)
    _quiet_orphaned_io()
    raise CheckpointSaveError(f"could not save checkpoint {path}: {_reason(e)}") from e

  def close(self) -> None:
    """Waits for a pending save (raising its failure) and releases orbax's resources."""
    try:
      self.wait()
    finally:
      self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def restore(self, target=None, step: int | None = None, *, prefer_best: bool = False):
    """Restores ``step``, or else the best (``prefer_best``) then the newest intact step.

    ``target``: the state's pytree (arrays or ``jax.ShapeDtypeStruct`` with shardings)
    to restore into; ``None``: nested dicts of host numpy arrays. Raises
    :class:`CheckpointError` when there is no checkpoint, ``step`` is missing or damaged,
    every step is damaged, or the target does not match the saved state.
    """
    self.wait()
    self._manager.reload()
    steps = self.all_steps()
    where = self.directory
    if step is not None:
      if int(step) not in steps:
        raise CheckpointError(f"no checkpoint {step} in {where}; there are: {steps or 'none'}")
      fault, restored = self._try(int(step), target)
      if fault:
        raise CheckpointError(f"checkpoint {step} in {where} is damaged ({fault})")
      return restored
    if not steps:
      raise CheckpointError(f"no checkpoint in {where}")
    order = steps[::-1]
    best = self.best_step() if prefer_best else None
    if best is not None:
      order = [best] + [s for s in order if s != best]
    faults = []
    for i, s in enumerate(order):
      fault, restored = self._try(s, target)
      if not fault:
        return restored
      faults.append(f"{s} ({fault})")
      then = f"falling back to {order[i + 1]}" if i + 1 < len(order) else "no other checkpoint"
      logger.warning("checkpoint %d in %s is damaged (%s); %s", s, where, fault, then)
      self._set_aside(s)
    raise CheckpointError(f"no intact checkpoint in {where}: " + "; ".join(faults))

  def _try(self, step: int, target) -> tuple[str | None, Restored | None]:
    """(fault, None) for a damaged step, (None, Restored) otherwise."""
    root = self.directory / str(step)
    for name in (f"{STATE}/", f"{STATE}/_METADATA", f"{EXTRA}/metadata"):
      if not (root / name.rstrip("/")).exists():
        return f"{name} is missing", None
    try:
      saved = self._manager.item_metadata(step)[STATE]
      saved = getattr(saved, "tree", saved)
    except Exception as e:  # noqa: BLE001
      return f"{STATE}/_METADATA is unreadable: {_reason(e)}", None
    if target is None:
      target = jax.tree_util.tree_map(lambda m: np.empty(m.shape, m.dtype), saved,
                                      is_leaf=lambda x: hasattr(x, "shape"))  # fmt: skip
    else:
      self._check_matches(step, _shapes(saved), _shapes(target))
    args = {STATE: ocp.args.StandardRestore(target), EXTRA: ocp.args.JsonRestore()}
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(**args))
      extra = out[EXTRA]
      metrics = self._manager.metrics(step)
    except Exception as e:  # noqa: BLE001 - any read failure of a checked layout is damage
      _quiet_orphaned_io()
      return _reason(e), None
    data_state = extra.get("data_state") if isinstance(extra, dict) else None
    return None, Restored(out[STATE], data_state, None if metrics is None else dict(metrics), step)

  def _check_matches(self, step: int, saved: dict, wanted: dict) -> None:
    """A target that differs from the saved state is a user error, not damage."""
    faults = [f"{k}: missing in the checkpoint" for k in sorted(set(wanted) - set(saved))]
    faults += [f"{k}: not in the target" for k in sorted(set(saved) - set(wanted))]
    faults += [f"{k}: saved {v}, target {wanted[k]}" for k, v in sorted(saved.items())
               if k in wanted and v != wanted[k]]  # fmt: skip
    if faults:
      more = f" (and {len(faults) - 5} more)" if len(faults) > 5 else ""
      raise CheckpointError(f"checkpoint {step} in {self.directory} does not match the model: "
                            + "; ".join(faults[:5]) + more)  # fmt: skip

  def _set_aside(self, step: int) -> None:
    """Moves a damaged step to ``damaged/<step>-<time>`` (process 0, not read-only)."""
    if self.read_only or jax.process_index() != 0:
      return
    dest = self.directory / "damaged" / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
      dest.parent.mkdir(parents=True, exist_ok=True)
      os.rename(self.directory / str(step), dest)
    except OSError as e:
      logger.warning("could not move damaged checkpoint %d to %s: %s", step, dest, e)
    self._manager.reload()


class WorkdirLock:
  """An exclusive ``fcntl.flock`` on ``<workdir>/.lock`` that says who holds it.

  The file holds JSON ``{"host", "pid", "start"}`` of the holder. The kernel drops the
  lock when its process dies, so the lock of a killed trainer is taken over (with a
  note). Use ``with WorkdirLock(w):`` or ``acquire()`` / ``release()``.
  """

  def __init__(self, workdir):
    self.workdir = os.fspath(workdir)
    self.path = os.path.join(self.workdir, ".lock")
    self._fd: int | None = None

  def acquire(self) -> WorkdirLock:
    os.makedirs(self.workdir, exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        h = _holder(fd)
        os.close(fd)
        raise WorkdirLockedError(
          f"{self.workdir} is in use by another trainer: host {h.get('host', '?')}, "
          f"pid {h.get('pid', '?')}, started {h.get('start', '?')}; "
          "stop it or use another --workdir"
        ) from None
      # A holder that released (and removed the file) between our open and our flock has
      # left us the lock of a file no longer at the path: open the path again.
      try:
        if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
          break
      except FileNotFoundError:
        pass
      os.close(fd)
    if (old := _holder(fd)).get("pid"):  # its process died: the kernel dropped its flock
      print(f"taking over a stale lock of pid {old['pid']} in {self.workdir}", flush=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "start": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    """Removes ``.lock`` (still holding it, so no one can take a file about to vanish),
    then drops the flock. A killed holder leaves the file: the next one takes it over."""
    if self._fd is not None:
      try:
        os.unlink(self.path)
      except OSError:  # a read-only or vanished work directory: an empty file is a free lock
        os.ftruncate(self._fd, 0)
      os.close(self._fd)  # closing drops the flock
      self._fd = None

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()


def _holder(fd: int) -> dict:
  try:
    holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


def _quiet_orphaned_io() -> None:
  """After a failed read or save, tensorstore operations still in flight complete into
  orbax's event loop, already closed, and each would print a traceback ("Event loop is
  closed", "exception was never retrieved"). Their results are unwanted (the failure is
  reported once, as a CheckpointError): from then on, a closed loop drops such callbacks
  and asyncio's logger shows only critical messages."""
  import asyncio  # noqa: PLC0415

  logging.getLogger("asyncio").setLevel(logging.CRITICAL)
  loop_cls = asyncio.BaseEventLoop
  if getattr(loop_cls.call_soon_threadsafe, "_unipose_quiet", False):
    return
  original = loop_cls.call_soon_threadsafe

  def call_soon_threadsafe(self, *args, **kwargs):
    if self.is_closed():
      return None
    return original(self, *args, **kwargs)

  call_soon_threadsafe._unipose_quiet = True
  loop_cls.call_soon_threadsafe = call_soon_threadsafe
