"""What the libraries print: the project's own one-line messages, not orbax's noise.

A failed checkpoint save used to print about 1,700 lines before the project's one-line
message (orbax's error logs with their tracebacks, one "Event loop is closed" traceback per
tensorstore write still in flight, a "coroutine was never awaited" warning), and each
damaged checkpoint 2-3 orbax lines besides the project's warning. The project reports each
of these faults itself, in one line (``checkpoints.CheckpointError`` and its warnings), so:

* :class:`QuietLibraries` (on the ``absl`` logger, which orbax logs through, from import of
  ``checkpoints``): drops orbax's records below CRITICAL, and two warnings of orbax's that
  every run would print (a save without metrics, a read-only open);
* :func:`quiet_orphaned_io`: a closed asyncio loop drops the callbacks that writes still in
  flight schedule on it, instead of each printing a traceback;
* :func:`route` (``launch.py``): ``--debug`` turns all of it off, and shows orbax's logs.

No JAX and nothing of the project is imported here.
"""

from __future__ import annotations

import logging
import os
import warnings

_ORBAX_FILES = f"{os.sep}orbax{os.sep}"
_EVERY_RUN = ("did not provide metrics", "Given directory is read only")


class QuietLibraries(logging.Filter):
  """Drops orbax's records (below CRITICAL) and its per-run warnings; ``debug`` keeps all."""

  debug = False

  def filter(self, record: logging.LogRecord) -> bool:
    if self.debug:
      return True
    if _ORBAX_FILES in (record.pathname or "") and record.levelno < logging.CRITICAL:
      return False
    msg = record.getMessage()
    return not any(text in msg for text in _EVERY_RUN)


_FILTER = QuietLibraries()


def install() -> None:
  """Puts the filter on the ``absl`` logger and its handlers (idempotent)."""
  for target in (logging.getLogger("absl"), *logging.getLogger("absl").handlers):
    if _FILTER not in target.filters:
      target.addFilter(_FILTER)
  try:
    from absl import logging as absl_logging  # noqa: PLC0415

    handler = absl_logging.get_absl_handler()
    if _FILTER not in handler.filters:
      handler.addFilter(_FILTER)
  except ImportError:  # pragma: no cover - absl comes with the project's dependencies
    pass


def route(debug: bool) -> None:
  """The command line's choice: the project's messages only, or (``debug``) everything."""
  QuietLibraries.debug = bool(debug)
  install()
  if debug:
    logging.getLogger("asyncio").setLevel(logging.NOTSET)


def quiet_orphaned_io() -> None:
  """After a failed read or save, tensorstore operations still in flight complete into
  orbax's event loop, already closed, and each would print a traceback ("Event loop is
  closed", "exception was never retrieved", "coroutine ... was never awaited"). Their
  results are unwanted (the failure is reported once, as a ``CheckpointError``): a closed
  loop drops such callbacks, and asyncio's logger shows only critical messages
  (``--debug``: all). Idempotent."""
  import asyncio  # noqa: PLC0415

  if not QuietLibraries.debug:
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    warnings.filterwarnings(
      "ignore", message="coroutine .* was never awaited", category=RuntimeWarning
    )
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
