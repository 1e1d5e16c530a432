"""Damaged prepared datasets: which file a failed read came from, and a check of every file.

A prepared split is a set of ArrayRecord shards (``<data_dir>/<name>/<version>/
<name>-<split>.array_record-0000i-of-0000n``) whose record counts ``dataset_info.json``
lists. A truncated, bit-flipped or emptied shard makes Riegeli raise a ``RuntimeError``
("Corrupted Riegeli/records file: chunk data hash mismatch ...", "ArrayRecord file should
be at least 64KB big") that names neither the file nor the dataset: :func:`damaged`
turns it into a :class:`DatasetError` that names both and the command that rebuilds it,
and :func:`check` reads every record of every shard (raw bytes, no decoding) so that
``--mode=prepare`` can find a damaged dataset and rebuild it.
"""

from __future__ import annotations

import bisect
import itertools
import os

from unipose_jax.datasets.archives import DatasetError


def shard_paths(builder, split: str) -> list[str]:
  """Paths of the ArrayRecord files of ``split``, in record order."""
  return [os.fspath(p) for p in builder.info.splits[split].filepaths]


def shard_of(builder, split: str, index: int) -> str:
  """The path of the shard that holds record ``index`` (0-based) of ``split``."""
  lengths = builder.info.splits[split].shard_lengths
  ends = list(itertools.accumulate(lengths))
  shard = min(bisect.bisect_right(ends, index), len(ends) - 1)
  return shard_paths(builder, split)[shard]


def damaged(name: str, path: str, error: BaseException, command: str | None) -> DatasetError:
  """The one-line error for a shard that could not be read (``command`` rebuilds it)."""
  reason = str(error).splitlines()[0] if str(error) else type(error).__name__
  fix = f"; re-run `{command}` to rebuild it" if command else ""
  return DatasetError(
    f"prepared dataset {name!r} is damaged: {path} cannot be read ({reason[:200]}){fix}"
  )


def check(builder, name: str, command: str | None = None) -> list[DatasetError]:
  """Reads every record of every split's shards; one error per unreadable or short file.

  A file whose record count differs from ``dataset_info.json``'s is damaged too (a shard
  cut at a chunk boundary can still open). Raw records are read, nothing is decoded:
  ~0.2 s for LSP (11 MB) on a 2-core machine.
  """
  from array_record.python import array_record_module  # noqa: PLC0415

  problems = []
  for split, info in sorted(builder.info.splits.items()):
    for path, expected in zip(shard_paths(builder, split), info.shard_lengths):
      try:
        if not os.path.isfile(path):
          raise FileNotFoundError("missing")
        reader = array_record_module.ArrayRecordReader(path)
        try:
          count = reader.num_records()
          if count != expected:
            raise RuntimeError(f"{count} records, dataset_info.json says {expected}")
          for start in range(0, count, 256):
            reader.read(list(range(start, min(count, start + 256))))
        finally:
          reader.close()
      except (RuntimeError, OSError, ValueError) as e:
        problems.append(damaged(name, path, e, command))
  return problems
