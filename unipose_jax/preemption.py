"""Signals: SIGTERM and SIGINT (Ctrl-C) stop every mode within a bound, never half way.

The handler never raises. An exception raised from a signal handler lands at an arbitrary
bytecode: inside a ``__del__`` it is swallowed (the work then runs to its end and exits 0),
and raised as XLA returns a compiled program it ended in a segmentation fault at exit.
Instead:

* The signal sets a flag (:attr:`PreemptionGuard.should_stop`).
* The work acts on it at its safe points: :func:`check` (every evaluation batch, every
  predicted image or video frame, every generated dataset example, between export's
  stages) raises :class:`Preempted`, which unwinds: temporary files are removed and no
  partial output is renamed into place. ``launch.py`` then exits with 128 + the signal:
  **130** for SIGINT, **143** for SIGTERM.
* Training's step loop runs inside :meth:`PreemptionGuard.deferring`: it acts on the flag
  at its stop check (every ``stop_check_every`` steps, agreed by all processes) by saving a
  checkpoint, then raises :class:`Preempted`.
* Outside a deferring section, when no safe point comes within ``grace_s`` (XLA compiling,
  a long library call), a watchdog thread ends the process with the same status
  (``os._exit``: every output is written under a temporary name first, so nothing that
  looks complete is left). A second signal ends the process at once, everywhere.

The watchdog sees a signal at once, even while the main thread is inside a long C++ call,
through ``signal.set_wakeup_fd``. No JAX here: ``launch.py`` installs the guard before
anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from typing import Any

#: Exit status of a run stopped by SIGTERM (128 + 15); SIGINT gives 130 (128 + 2).
EXIT_PREEMPTED = 128 + signal.SIGTERM

#: Seconds a stop signal waits for a safe point before the watchdog ends the process.
GRACE_S = 5.0

_WAKE_EXIT = b"\0"  # written to the wake-up pipe to end the watchdog (no signal is 0)

_active: PreemptionGuard | None = None
_temporary: set[str] = set()  # files being written under temporary names (see temporary())


def exit_code(signum: int) -> int:
  """The exit status of a process stopped by ``signum``: 128 + its number."""
  return 128 + int(signum)


def signal_name(signum: int | None) -> str:
  try:
    return signal.Signals(signum).name
  except (ValueError, TypeError):
    return f"signal {signum}"


class Preempted(Exception):  # noqa: N818 (an outcome, not a failure)
  """Stopped by a signal before the end; whatever was written is complete (a training
  run's checkpoint is saved). ``exit_code``: 130 after SIGINT, 143 after SIGTERM."""

  def __init__(self, message: str, signum: int = signal.SIGTERM):
    super().__init__(message)
    self.signum = int(signum)

  @property
  def exit_code(self) -> int:
    return exit_code(self.signum)


class PreemptionGuard(contextlib.AbstractContextManager):
  """Turns SIGTERM/SIGINT into a flag (see the module doc). Enter in the main thread.

  Args:
    signals: the signals to catch.
    grace_s: None: a flag only, and a second delivery falls through to the previous
      handler. A number: also the watchdog, which ends the process ``grace_s`` after a
      first signal that no safe point acted on (outside :meth:`deferring`), and at once
      on a second one.

  Several processes: reduce the flag with ``distributed.any_process`` before acting.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT), grace_s: float | None = None):
    self.signals, self.grace_s, self.received = tuple(signals), grace_s, None
    self._previous: dict[int, Any] = {}
    self._stop = threading.Event()
    self._deferred = 0
    self._deliveries = 0
    self._outer: PreemptionGuard | None = None
    self._pipe: tuple[int, int] | None = None
    self._previous_wakeup_fd = -1
    self._watchdog: threading.Thread | None = None

  @property
  def should_stop(self) -> bool:
    return self._stop.is_set()

  def check(self, what: str) -> None:
    """Raises :class:`Preempted` ("stopped by SIGINT: <what>") once a signal came."""
    if self._stop.is_set():
      raise self.preempted(what)

  def preempted(self, what: str) -> Preempted:
    """``Preempted("stopped by SIGINT: <what>")`` with the signal received (SIGTERM when
    this process saw none: another process did, e.g. through ``any_process``)."""
    signum = self.received if self.received is not None else signal.SIGTERM
    return Preempted(f"stopped by {signal_name(signum)}: {what}", signum)

  @contextlib.contextmanager
  def deferring(self):
    """A section that acts on the flag itself (training's loop, until its checkpoint is
    committed): a first signal does not start the watchdog's clock. Raises
    :class:`Preempted` on entry when a signal already came."""
    self.check("training")
    self._deferred += 1
    try:
      yield self
    finally:
      self._deferred -= 1

  # ----------------------------------------------------------------------- handlers

  def _handle(self, signum, frame) -> None:
    """The Python-level handler (main thread, between bytecodes): flag only."""
    first = not self._stop.is_set()
    if self._pipe is not None:  # the watchdog counts deliveries and says what happens
      if first:
        self.received = signum
        self._stop.set()
      return None
    if not first and self.received == signum:
      previous = self._previous.get(signum, signal.SIG_DFL)
      if callable(previous):
        return previous(signum, frame)
      if previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
      return None
    self.received = signum
    self._stop.set()
    _log(f"received {signal_name(signum)}; stopping within the next stop check, with a checkpoint")
    return None

  def _watch(self) -> None:
    """The watchdog thread: reads the signal numbers the C-level handler writes to the
    wake-up pipe, at once (the main thread may be inside a long C++ call)."""
    read_fd = self._pipe[0]
    deadline = None
    while True:
      timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
      ready, _, _ = select.select([read_fd], [], [], timeout)
      if not ready:  # the grace period ran out
        if self._deferred:
          deadline = None
          continue
        _exit_now(self.received, f"no safe point within {self.grace_s:g} s")
      for signum in os.read(read_fd, 64):
        if signum == _WAKE_EXIT[0]:
          return
        if signum not in self.signals:
          continue
        self._deliveries += 1
        if self.received is None:
          self.received = signum
        self._stop.set()
        if self._deliveries > 1:
          _exit_now(signum, "a second signal")
        if self._deferred:
          _log(
            f"received {signal_name(signum)}; stopping at the next stop check, with a "
            "checkpoint (send it again to stop at once)"
          )
        else:
          _log(f"received {signal_name(signum)}; stopping (send it again to stop at once)")
          deadline = time.monotonic() + self.grace_s

  # ----------------------------------------------------------------------- context

  def __enter__(self) -> PreemptionGuard:
    global _active
    if threading.current_thread() is not threading.main_thread():
      raise RuntimeError("PreemptionGuard must be entered in the main thread")
    if self.grace_s is not None:
      read_fd, write_fd = os.pipe()
      os.set_blocking(write_fd, False)
      self._pipe = (read_fd, write_fd)
      self._previous_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
      self._watchdog = threading.Thread(target=self._watch, name="preemption-watchdog",
                                        daemon=True)  # fmt: skip
      self._watchdog.start()
    for s in self.signals:
      self._previous[s] = signal.signal(s, self._handle)
    self._outer, _active = _active, self
    return self

  def __exit__(self, *exc_info) -> None:
    global _active
    for s, handler in self._previous.items():
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    self._previous.clear()
    _active = self._outer
    if self._pipe is not None:
      signal.set_wakeup_fd(self._previous_wakeup_fd)
      os.write(self._pipe[1], _WAKE_EXIT)
      self._watchdog.join(timeout=5)
      for fd in self._pipe:
        os.close(fd)
      self._pipe = None


def active() -> PreemptionGuard | None:
  """The innermost entered guard, if any."""
  return _active


def should_stop() -> bool:
  """Whether the active guard (if any) received a stop signal."""
  return _active is not None and _active.should_stop


def check(what: str) -> None:
  """A safe point: raises :class:`Preempted` when the active guard received a signal."""
  if _active is not None:
    _active.check(what)


def preempted(what: str) -> Preempted:
  """:meth:`PreemptionGuard.preempted` of the active guard (SIGTERM's without one)."""
  if _active is not None:
    return _active.preempted(what)
  return Preempted(f"stopped by {signal_name(signal.SIGTERM)}: {what}", signal.SIGTERM)


@contextlib.contextmanager
def temporary(path):
  """Marks ``path`` as a file being written under a temporary name: if the watchdog ends
  the process meanwhile, it removes the file first (``files.atomic_write`` and the ONNX
  export use this)."""
  path = os.fspath(path)
  _temporary.add(path)
  try:
    yield path
  finally:
    _temporary.discard(path)


def _exit_now(signum: int, why: str) -> None:
  """Ends the process from the watchdog thread: the temporary files of writes in progress
  removed, one line, the exit status of ``signum``."""
  for path in list(_temporary):
    with contextlib.suppress(OSError):
      os.unlink(path)
  message = (
    f"stopped by {signal_name(signum)} ({why}); nothing partial is left under a final name\n"
  )
  flusher = threading.Thread(target=_flush, daemon=True)
  flusher.start()
  flusher.join(timeout=0.5)  # the main thread may hold stdout's lock: do not wait on it
  with contextlib.suppress(OSError):
    os.write(2, message.encode())
  os._exit(exit_code(signum))


def _flush() -> None:
  for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(Exception):
      stream.flush()


def _log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
