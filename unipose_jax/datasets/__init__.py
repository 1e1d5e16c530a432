"""Pose datasets as TFDS ArrayRecord datasets: LSP, LSP-extended and a synthetic set.

Public API::

    from unipose_jax import datasets
    datasets.prepare(["lsp", "synthetic"], manual_dir="data", data_dir="data/tfds")
    source = datasets.data_source("lsp", "test", data_dir="data/tfds")
    len(source)           # 1000
    example = source[0]   # image 1001
    example["image"]      # uint8 (H, W, 3) RGB
    example["keypoints"]  # float32 (14, 2) (x, y), original-image pixels, 0-based pixel centres
    example["visible"], example["labeled"]  # bool (14,)
    example["image_id"]   # int32 (), number in the file name (im1001.jpg -> 1001)

Dataset names (:data:`DATASET_NAMES`) and their splits (:data:`SPLIT_SIZES`):

* ``lsp``: ``train`` = images 1-1000, ``test`` = images 1001-2000; every joint labeled,
  ``visible`` = MATLAB flag 0.
* ``lsp_extended``: ``train`` = its 10000 images; ``visible`` = flag 1 and only visible
  joints are labeled (the others' coordinates are meaningless, kept as read).
* ``synthetic``: drawn stick figures, 128x128, ``train`` 512 / ``test`` 128; all joints
  labeled and visible. ``synthetic/small`` is 64x64 with 128 / 32.

Keypoints of LSP are the MATLAB values of ``joints.mat`` minus 1 (design.md sections 3
and 5). Examples are stored in image-id order. Building and reading need no TensorFlow.
Bad input raises :class:`DatasetError` with a message naming the file.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from unipose_jax.datasets import archives, integrity
from unipose_jax.datasets.archives import DatasetError
from unipose_jax.datasets.lsp import Lsp, LspExtended
from unipose_jax.datasets.synthetic import Synthetic, SyntheticConfig

__all__ = [
  "DATASET_NAMES",
  "SPLIT_SIZES",
  "DatasetError",
  "Lsp",
  "LspExtended",
  "PoseDataSource",
  "Synthetic",
  "SyntheticConfig",
  "builder",
  "data_source",
  "is_prepared",
  "prepare",
  "prepare_command",
]

#: Names accepted by :func:`prepare`, :func:`builder` and :func:`data_source`.
DATASET_NAMES: tuple[str, ...] = ("lsp", "lsp_extended", "synthetic")

#: Number of examples of each split (from the archive specs and the synthetic configs).
SPLIT_SIZES: dict[str, dict[str, int]] = {
  "lsp": archives.LSP.split_sizes,
  "lsp_extended": archives.LSP_EXTENDED.split_sizes,
  **{
    "synthetic" + ("" if c.name == "default" else f"/{c.name}"): {
      "train": c.num_train,
      "test": c.num_test,
    }
    for c in Synthetic.BUILDER_CONFIGS
  },
}


class _QuietVariantFolder(logging.Filter):
  """Drops TFDS's "Variant folder ... has no dataset_info.json": before a build that folder
  is expected to be empty, and the warning reads like an error (issue 21)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "has no dataset_info.json" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietVariantFolder())

_BUILDERS = {"lsp": Lsp, "lsp_extended": LspExtended, "synthetic": Synthetic}
_MANUAL = {"lsp": archives.LSP, "lsp_extended": archives.LSP_EXTENDED}


def prepare_command(
  data_dir: str | os.PathLike = "data/tfds", manual_dir: str | os.PathLike = "data"
) -> str:
  """The command line that prepares the datasets into ``data_dir``."""
  return f"unipose-jax --mode=prepare --manual_dir={manual_dir} --data_dir={data_dir}"


def _split_name(name: str) -> tuple[str, str | None]:
  base, _, config = name.partition("/")
  if base not in _BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
  if config and base != "synthetic":
    raise ValueError(f"dataset {base!r} has no configs, got {name!r}")
  return base, config or None


def builder(name: str, data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  """The TFDS builder of ``name`` (``"lsp"``, ``"lsp_extended"``, ``"synthetic[/config]"``)."""
  base, config = _split_name(name)
  kwargs: dict[str, Any] = {"data_dir": os.fspath(data_dir)}
  if config is not None:
    kwargs["config"] = config
  return _BUILDERS[base](**kwargs)


def is_prepared(name: str, data_dir: str | os.PathLike) -> bool:
  """Whether ``name`` has been completely built under ``data_dir``."""
  return builder(name, data_dir).is_prepared()


def _names(names: str | Iterable[str]) -> list[str]:
  if isinstance(names, str):
    names = [n.strip() for n in names.split(",") if n.strip()]
  names = list(names)
  for name in names:
    _split_name(name)
  return names


def prepare(
  names: str | Iterable[str] = DATASET_NAMES,
  manual_dir: str | os.PathLike | None = None,
  data_dir: str | os.PathLike = "data/tfds",
  log: Callable[[str], Any] = print,
) -> dict[str, str]:
  """Builds each dataset of ``names`` under ``data_dir`` unless it is already there.

  Args:
    names: dataset names, as a sequence or a comma-separated string.
    manual_dir: folder holding ``lsp_dataset.zip`` / ``lspet_dataset.zip`` (or their
      extracted folders); not needed for ``synthetic``.
    data_dir: root of the TFDS datasets (``<data_dir>/<name>/<version>/``).
    log: called with one line per event.

  Returns:
    ``{name: status}`` with status ``"built"``, ``"exists"`` (already prepared; not
    rebuilt, input not read) or ``"missing"`` (its archive is not in ``manual_dir``;
    skipped, with a message saying how to get it).

  Raises:
    DatasetError: some input was present but bad (corrupt zip, unreadable image,
      malformed ``joints.mat``, ...). Every other dataset is still prepared first;
      the error lists the failures, each naming its file. A failed build leaves no
      dataset behind that could be mistaken for a complete one.
  """
  statuses: dict[str, str] = {}
  failures: list[str] = []
  for name in _names(names):
    b = builder(name, data_dir)
    if b.is_prepared():
      problems = integrity.check(b, name)
      if not problems:
        statuses[name] = "exists"
        log(f"[{name}] already prepared in {b.data_dir} (every file read back); reusing it")
        continue
      for problem in problems:
        log(f"[{name}] {problem}")
    damaged = b.is_prepared()
    base, _ = _split_name(name)
    # A build killed without a chance to clean up (SIGKILL, power loss) leaves TFDS's
    # temporary folder; it is never mistaken for a dataset, but it takes space.
    for leftover in sorted(pathlib.Path(b.data_dir).parent.glob(f"incomplete.*_{b.version}")):
      log(f"[{name}] note: {leftover} is left over from an interrupted build; it can be deleted")
    download_config = tfds.download.DownloadConfig(try_download_gcs=False)
    if base in _MANUAL:
      spec = _MANUAL[base]
      source = archives.find_source(manual_dir, spec) if manual_dir is not None else None
      if source is None:
        statuses[name] = "missing"
        where = f"in {manual_dir}" if manual_dir is not None else "(no --manual_dir given)"
        log(
          f"[{name}] skipped: neither {spec.zip_name} nor {spec.stem}/ found {where}.\n"
          + b.MANUAL_DOWNLOAD_INSTRUCTIONS.replace(
            prepare_command(), prepare_command(data_dir, manual_dir or "data")
          )
        )
        continue
      download_config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir), try_download_gcs=False
      )
      log(f"[{name}] building from {source} into {b.data_dir} ...")
    else:
      log(f"[{name}] building into {b.data_dir} ...")
    if damaged:
      log(f"[{name}] removing the damaged {b.data_dir} and building it again")
      shutil.rmtree(b.data_dir)
      b = builder(name, data_dir)
    try:
      b.download_and_prepare(download_config=download_config)
    except DatasetError as e:
      statuses[name] = "failed"
      failures.append(f"[{name}] {e}")
      log(f"[{name}] FAILED: {e}")
      continue
    statuses[name] = "built"
    sizes = ", ".join(
      f"{split}={info.num_examples}" for split, info in sorted(b.info.splits.items())
    )
    log(f"[{name}] built: {sizes}")
  if failures:
    raise DatasetError("could not prepare:\n" + "\n".join(failures))
  return statuses


class PoseDataSource(Sequence):
  """Random access to one split of a prepared pose dataset, as numpy arrays.

  ``source[i]`` is a dict: ``image`` uint8 ``(H, W, 3)`` RGB, ``keypoints`` float32
  ``(14, 2)``, ``visible`` and ``labeled`` bool ``(14,)``, ``image_id`` int32 ``()``.
  Picklable (it reopens the files in the unpickling process), so it can be handed to
  grain worker processes.
  """

  def __init__(self, name: str, split: str, data_dir: str | os.PathLike):
    self.name, self.split, self.data_dir = name, split, os.fspath(data_dir)
    b = builder(name, data_dir)
    if not b.is_prepared():
      raise DatasetError(
        f"dataset {name!r} is not prepared in {pathlib.Path(data_dir).resolve()} "
        f"(expected {b.data_dir}); prepare it with:\n  {prepare_command(data_dir)}"
      )
    if split not in b.info.splits:
      raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {sorted(b.info.splits)}")
    self._builder = b
    try:
      self._source = b.as_data_source(split=split)
    except (RuntimeError, OSError) as e:
      raise integrity.damaged(name, b.data_dir, e, prepare_command(data_dir)) from None

  def _damaged(self, index: int, error: BaseException) -> DatasetError:
    path = integrity.shard_of(self._builder, self.split, index)
    return integrity.damaged(self.name, path, error, prepare_command(self.data_dir))

  def __len__(self) -> int:
    return len(self._source)

  @staticmethod
  def _convert(example: dict[str, Any]) -> dict[str, np.ndarray]:
    image = np.asarray(example["image"], dtype=np.uint8)
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, axis=-1)
    return {
      "image": np.ascontiguousarray(image),
      "keypoints": np.asarray(example["keypoints"], dtype=np.float32),
      "visible": np.asarray(example["visible"], dtype=bool),
      "labeled": np.asarray(example["labeled"], dtype=bool),
      "image_id": np.int32(example["image_id"]),
    }

  def __getitem__(self, index):  # type: ignore[override]
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    index = int(index)
    if index < 0:
      index += len(self)
    if not 0 <= index < len(self):
      raise IndexError(
        f"index {index} out of range for {self.name}:{self.split} of length {len(self)}"
      )
    try:
      return self._convert(self._source[index])
    except RuntimeError as e:  # Riegeli: "Corrupted Riegeli/records file: ..."
      raise self._damaged(index, e) from None

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    indices = [int(i) for i in indices]
    try:
      return [self._convert(e) for e in self._source.__getitems__(indices)]
    except RuntimeError as e:
      raise self._damaged(indices[0] if indices else 0, e) from None

  def __getstate__(self) -> dict[str, str]:
    return {"name": self.name, "split": self.split, "data_dir": self.data_dir}

  def __setstate__(self, state: dict[str, str]) -> None:
    self.__init__(state["name"], state["split"], state["data_dir"])

  def __repr__(self) -> str:
    return f"PoseDataSource(name={self.name!r}, split={self.split!r}, data_dir={self.data_dir!r}, len={len(self)})"


def data_source(name: str, split: str, data_dir: str | os.PathLike) -> PoseDataSource:
  """Random-access source of ``split`` of the prepared dataset ``name`` (see PoseDataSource).

  Raises:
    DatasetError: the dataset is not prepared under ``data_dir`` (the message says
      which command prepares it).
    ValueError: unknown dataset name or split.
  """
  return PoseDataSource(name, split, data_dir)
