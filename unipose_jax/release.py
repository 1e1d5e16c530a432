"""A release folder: what inference needs of a trained run, and nothing else.

``launch.py --mode=export --format=release --workdir=RUN --output=DIR`` writes::

    DIR/config.json                         the run's config (network, codec, the person-
                                            presence calibration in its ``predict`` section)
    DIR/params-<hash>-<i>-of-<n>.msgpack    the variables {"params", "batch_stats"}
                                            (flax.serialization msgpack), split into parts
                                            of at most PART_BYTES (16,000,000 bytes)
    DIR/release.json                        the manifest: checkpoint step, parameter dtype,
                                            each part's size and SHA-256

at most :data:`MAX_FILES` files (8) in all. eval, predict, export and
``Predictor.from_workdir`` take such a folder as ``--workdir`` (``Run.load_variables``
reads it instead of an orbax checkpoint).

Parameters may be stored in bfloat16 (``dtype="bfloat16"``: half the bytes); they are read
back as float32, so the network computes as the run's does, with its weights rounded to
bfloat16. BatchNorm statistics stay float32.

Writes are atomic file by file, in an order that keeps the folder whole at every moment:
the parts first (their names carry the hash of the variables, so they never overwrite the
parts an existing manifest names), then ``config.json``, then ``release.json``, then the
parts no manifest names any more are removed. A crash leaves the previous release (or no
manifest), never a manifest naming missing or different parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import numpy as np

from unipose_jax import files

MANIFEST = "release.json"
FORMAT = "unipose_jax.release/1"
#: Largest part, bytes (below the device machine's 16 MiB per file returned).
PART_BYTES = 16_000_000
#: Files in a release folder at most (config.json, release.json and the parts).
MAX_FILES = 8
DTYPES = ("float32", "bfloat16")
_PART = re.compile(r"^params-[0-9a-f]{12}-\d+-of-\d+\.msgpack$")


class ReleaseError(Exception):
  """A release that cannot be written or read; the message names the folder or file."""


def is_release(folder: str) -> bool:
  """Whether ``folder`` holds a release manifest (``release.json``)."""
  return os.path.isfile(os.path.join(folder, MANIFEST))


def _host(tree):
  import jax  # noqa: PLC0415

  return jax.tree.map(np.asarray, tree)


def _cast_params(params, dtype: str):
  import jax  # noqa: PLC0415
  import ml_dtypes  # noqa: PLC0415

  bf16 = np.dtype(ml_dtypes.bfloat16)
  target = bf16 if dtype == "bfloat16" else np.dtype(np.float32)
  floating = lambda a: a.dtype.kind == "f" or a.dtype == bf16  # noqa: E731
  return jax.tree.map(lambda a: a.astype(target) if floating(a) else a, params)


def serialize(variables, dtype: str = "float32") -> bytes:
  """``{"params", "batch_stats"}`` as msgpack bytes, the params' floating arrays in
  ``dtype`` (``"float32"`` or ``"bfloat16"``), the batch statistics in float32."""
  from flax import serialization  # noqa: PLC0415

  if dtype not in DTYPES:
    raise ReleaseError(f"release dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
  host = _host({"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
  state = {
    "params": _cast_params(host["params"], dtype),
    "batch_stats": _cast_params(host["batch_stats"], "float32"),
  }
  return serialization.msgpack_serialize(state)


def plan_parts(size: int) -> int:
  """How many parts of at most :data:`PART_BYTES` hold ``size`` bytes (at least 1)."""
  return max(1, -(-size // PART_BYTES))


def write_release(
  output: str, config, variables, step: int, *, dtype: str = "float32", source: str = ""
) -> dict[str, Any]:
  """Writes the release folder ``output`` (see the module doc) and returns its manifest.

  Args:
    output: the folder (created; if it exists it must be empty or hold a release, which is
      replaced).
    config: the run's ``ml_collections.ConfigDict`` (written as ``config.json``).
    variables: ``{"params", "batch_stats"}`` (jax or numpy arrays) of checkpoint ``step``.
    dtype: ``"float32"`` or ``"bfloat16"`` for the params.
    source: the run folder it came from (recorded in the manifest).

  Raises :class:`ReleaseError` (one line naming ``output``) when the folder holds other
  files, or the parameters would need more than :data:`MAX_FILES` files; ``OSError``
  named by ``files`` when a write fails.
  """
  from unipose_jax import run_config  # noqa: PLC0415

  if os.path.exists(output) and not os.path.isdir(output):
    raise ReleaseError(f"release output {output} is a file; give a folder")
  if os.path.isdir(output) and os.listdir(output) and not is_release(output):
    raise ReleaseError(
      f"release output {output} exists and is not a release folder (it holds "
      f"{', '.join(sorted(os.listdir(output))[:3])}...); give a new or empty folder"
    )
  payload = serialize(variables, dtype)
  n = plan_parts(len(payload))
  if n + 2 > MAX_FILES:
    hint = "" if dtype == "bfloat16" else "; try --release_dtype=bfloat16"
    raise ReleaseError(
      f"release {output}: the variables take {len(payload) / 1e6:.1f} MB, {n} parts of "
      f"{PART_BYTES / 1e6:.0f} MB, more than the {MAX_FILES - 2} a release holds{hint}"
    )
  digest = hashlib.sha256(payload).hexdigest()
  files.check_writable(output, "the release folder")
  parts = []
  for i in range(n):
    chunk = payload[i * PART_BYTES : (i + 1) * PART_BYTES]
    name = f"params-{digest[:12]}-{i + 1}-of-{n}.msgpack"
    files.atomic_write(os.path.join(output, name), chunk)
    parts.append({"file": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
  run_config.save(config, output)
  manifest = {
    "format": FORMAT,
    "checkpoint_step": int(step),
    "params_dtype": dtype,
    "source": source,
    "bytes": len(payload),
    "sha256": digest,
    "parts": parts,
  }
  files.write_json(os.path.join(output, MANIFEST), manifest)
  keep = {p["file"] for p in parts}
  for name in os.listdir(output):  # parts of the release this one replaced
    if _PART.match(name) and name not in keep:
      os.unlink(os.path.join(output, name))
  return manifest


def read_manifest(folder: str) -> dict[str, Any]:
  """The manifest of release ``folder``, checked for its keys; :class:`ReleaseError`
  naming the file otherwise."""
  path = os.path.join(folder, MANIFEST)
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise ReleaseError(f"{path}: not a readable release manifest ({e})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
    raise ReleaseError(f"{path}: not a release manifest (format {got!r}, expected {FORMAT!r})")
  missing = [k for k in ("checkpoint_step", "params_dtype", "parts", "sha256") if k not in manifest]
  if missing:
    raise ReleaseError(f"{path}: release manifest lacks {', '.join(missing)}")
  if manifest["params_dtype"] not in DTYPES:
    raise ReleaseError(f"{path}: params_dtype {manifest['params_dtype']!r} is not one of {DTYPES}")
  return manifest


def load_release(folder: str) -> tuple[dict[str, Any], int]:
  """Variables ``{"params", "batch_stats"}`` (numpy, float32) of release ``folder`` and the
  checkpoint step they came from. Every part is checked against the manifest's size and
  SHA-256 first: :class:`ReleaseError` naming the missing, short or damaged part."""
  from flax import serialization  # noqa: PLC0415

  manifest = read_manifest(folder)
  chunks = []
  for part in manifest["parts"]:
    path = os.path.join(folder, part["file"])
    try:
      with open(path, "rb") as f:
        chunk = f.read()
    except OSError as e:
      raise ReleaseError(f"release part {path} cannot be read ({e.strerror or e})") from None
    if len(chunk) != part["bytes"] or hashlib.sha256(chunk).hexdigest() != part["sha256"]:
      raise ReleaseError(
        f"release part {path} is damaged ({len(chunk)} bytes, {part['bytes']} expected, or "
        "another SHA-256 than release.json's): copy the release folder again"
      )
    chunks.append(chunk)
  payload = b"".join(chunks)
  if hashlib.sha256(payload).hexdigest() != manifest["sha256"]:
    raise ReleaseError(f"{folder}: the parts do not join into the variables release.json names")
  try:
    state = serialization.msgpack_restore(payload)
  except Exception as e:  # noqa: BLE001 (msgpack raises several kinds)
    raise ReleaseError(f"{folder}: the parameters cannot be decoded ({e})") from None
  variables = {
    "params": _cast_params(state["params"], "float32"),
    "batch_stats": state.get("batch_stats", {}),
  }
  return variables, int(manifest["checkpoint_step"])
