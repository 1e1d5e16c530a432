"""Reading a dataset's own files (JSON, MATLAB, JPEG) with one-line errors naming the file.

Shared by the MPII, COCO and Penn Action builders; no TFDS here. Every problem becomes a
:class:`~unipose_jax.datasets.archives.DatasetError` whose message starts with the path.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.io

from unipose_jax.datasets.archives import DatasetError, validated_jpeg


def require_file(path: pathlib.Path) -> pathlib.Path:
  if not path.is_file():
    raise DatasetError(f"{path}: file is missing")
  return path


def load_json(path: pathlib.Path) -> Any:
  """The parsed JSON of ``path`` (missing, unreadable or malformed: DatasetError)."""
  require_file(path)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DatasetError(f"{path}: not a readable JSON file ({type(e).__name__}: {e})") from None


def load_mat(path: pathlib.Path, variables: Sequence[str]) -> dict[str, np.ndarray]:
  """The ``variables`` of the MATLAB file ``path`` (each must be present)."""
  require_file(path)
  try:
    mat = scipy.io.loadmat(os.fspath(path))
  except Exception as e:  # scipy raises ValueError, MatReadError, TypeError, OSError, ...
    raise DatasetError(
      f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e})"
    ) from None
  missing = [v for v in variables if v not in mat]
  if missing:
    found = sorted(k for k in mat if not k.startswith("__"))
    raise DatasetError(f"{path}: has no variable {missing[0]!r} (variables found: {found})")
  return mat


def numeric(value, where: str, shape: tuple[int | None, ...]) -> np.ndarray:
  """``value`` as a finite-or-not float64 array of ``shape`` (None = any size)."""
  try:
    array = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    raise DatasetError(
      f"{where}: expected numbers of shape {_shape(shape)}, got {value!r:.80}"
    ) from None
  if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
    raise DatasetError(f"{where}: has shape {array.shape}, expected {_shape(shape)}")
  return array


def _shape(shape: tuple[int | None, ...]) -> str:
  return (
    "("
    + ", ".join("N" if s is None else str(s) for s in shape)
    + ("," if len(shape) == 1 else "")
    + ")"
  )


def field(record: Mapping[str, Any], key: str, where: str) -> Any:
  """``record[key]``, or a DatasetError naming ``where`` and the missing key."""
  if not isinstance(record, Mapping):
    raise DatasetError(f"{where}: expected an object, got {type(record).__name__}")
  if key not in record:
    raise DatasetError(f"{where}: has no field {key!r} (fields: {sorted(record)[:12]})")
  return record[key]


def int32(value, where: str) -> np.int32:
  """An id as int32 (the stored ``image_id``); out of range: DatasetError."""
  try:
    number = int(value)
  except (TypeError, ValueError):
    raise DatasetError(f"{where}: expected an integer id, got {value!r}") from None
  if not -(2**31) <= number < 2**31:
    raise DatasetError(f"{where}: id {number} does not fit the stored int32 image_id")
  return np.int32(number)


def read_image(
  path: pathlib.Path, size: tuple[int, int] | None = None
) -> tuple[bytes, tuple[int, int]]:
  """The JPEG bytes and ``(H, W)`` of the image file ``path``, fully decoded once to check
  it; ``size`` = the ``(H, W)`` its annotation says (a mismatch is a DatasetError)."""
  if not path.is_file():
    raise DatasetError(f"{path}: image file is missing")
  try:
    data = path.read_bytes()
  except OSError as e:
    raise DatasetError(f"{path}: cannot be read ({e})") from None
  jpeg, shape = validated_jpeg(data, os.fspath(path))
  if size is not None and tuple(shape) != tuple(int(s) for s in size):
    raise DatasetError(
      f"{path}: image is {shape[1]}x{shape[0]} (WxH) but its annotation says "
      f"{int(size[1])}x{int(size[0])}"
    )
  return jpeg, shape
