"""The one way this project writes result files: atomically (temp file, fsync, rename).

A reader, or a process killed half way, never sees a half-written file: the bytes go
to a temporary file beside the target, are flushed to disk, and the temporary file is
renamed over the target. A failed write (full disk, say) leaves the old file intact
and no temporary file behind, and its ``OSError`` names the file in one line.
:func:`check_writable` tests a folder before work whose result goes there starts.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any, BinaryIO

from unipose_jax import preemption

PathLike = str | os.PathLike


def atomic_write(path: PathLike, write: Callable[[BinaryIO], Any] | bytes) -> pathlib.Path:
  """Write ``path`` atomically, from ``bytes`` or through ``write(binary_file)``.

  Parent folders are created. Returns the path.
  """
  path = pathlib.Path(path)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  except OSError as e:
    raise named(e, f"cannot write {path}") from None
  try:
    with preemption.temporary(tmp):
      with os.fdopen(fd, "wb") as f:
        if isinstance(write, bytes | bytearray):
          f.write(write)
        else:
          write(f)
        f.flush()
        os.fsync(f.fileno())
      os.chmod(tmp, 0o644)
      os.replace(tmp, path)
  except BaseException as e:
    pathlib.Path(tmp).unlink(missing_ok=True)
    if isinstance(e, OSError) and e.filename is None:  # a full disk: say which file
      raise named(e, f"cannot write {path}") from None
    raise
  return path


def named(error: OSError, what: str) -> OSError:
  """``error`` as the same ``OSError`` type with one line: ``"<what>: <strerror>"`` (its
  ``errno`` kept), e.g. ``"cannot write out/x.json: No space left on device"``."""
  new = type(error)(f"{what}: {error.strerror or error}")
  new.errno = error.errno
  return new


def check_writable(folder: PathLike, what: str) -> pathlib.Path:
  """Creates ``folder`` if needed and checks that a file can be created in it (a real
  test: a read-only mount, permissions and a missing parent all fail it, for root too).
  Raises the ``OSError`` as one line naming ``what`` and the folder. Returns the folder."""
  folder = pathlib.Path(folder)
  try:
    if folder.exists() and not folder.is_dir():
      raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise named(e, f"cannot write to {what} {folder}") from None
  return folder


def _nan_to_none(obj: Any) -> Any:
  if isinstance(obj, dict):
    return {k: _nan_to_none(v) for k, v in obj.items()}
  if isinstance(obj, list | tuple):
    return [_nan_to_none(v) for v in obj]
  if isinstance(obj, float) and obj != obj:
    return None
  return obj


def json_text(obj: Any, indent: int | None = 1) -> str:
  """Standard JSON (NaN, e.g. a joint never counted, becomes null; keys sorted)."""
  return json.dumps(_nan_to_none(obj), indent=indent, sort_keys=True, allow_nan=False)


def write_json(path: PathLike, obj: Any) -> pathlib.Path:
  """Atomically write ``obj`` as indented standard JSON (see :func:`json_text`)."""
  return atomic_write(path, json_text(obj).encode("utf-8"))


def write_csv(path: PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> pathlib.Path:
  """Atomically write a CSV file: one header row, then ``rows``."""
  text = io.StringIO(newline="")
  writer = csv.writer(text)
  writer.writerow(header)
  writer.writerows(rows)
  return atomic_write(path, text.getvalue().encode("utf-8"))
