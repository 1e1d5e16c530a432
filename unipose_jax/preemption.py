"""Pre-emption: SIGTERM/SIGINT become a flag the training loop acts on, with a checkpoint.

No JAX here: ``launch.py`` recognises :class:`Preempted` without importing the trainer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any

#: Exit status of a run stopped by a signal after saving its checkpoint (128 + SIGTERM).
EXIT_PREEMPTED = 143


class Preempted(Exception):  # noqa: N818 (an outcome, not a failure)
  """The run stopped before its last step on a signal; its checkpoint is saved."""

  exit_code = EXIT_PREEMPTED


class PreemptionGuard(contextlib.AbstractContextManager):
  """Turns SIGTERM/SIGINT into a flag (``should_stop``) so the loop can save and exit.

  A second delivery of the same signal falls through to the previous handler (a second
  Ctrl-C interrupts at once). Handlers are restored on exit; enter in the main thread.
  Several processes: reduce the flag with ``distributed.any_process`` before acting.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals, self.received = tuple(signals), None
    self._previous: dict[int, Any] = {}
    self._stop = threading.Event()

  @property
  def should_stop(self) -> bool:
    return self._stop.is_set()

  def _handle(self, signum, frame) -> None:
    if self._stop.is_set() and self.received == signum:
      previous = self._previous.get(signum, signal.SIG_DFL)
      if callable(previous):
        return previous(signum, frame)
      if previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
      return None
    self.received = signum
    self._stop.set()
    _log(f"received signal {signum}; stopping within the next stop check, with a checkpoint")
    return None

  def __enter__(self) -> PreemptionGuard:
    if threading.current_thread() is not threading.main_thread():
      raise RuntimeError("PreemptionGuard must be entered in the main thread")
    for s in self.signals:
      self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    self._previous.clear()


def _log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
