"""Pose datasets as TFDS ArrayRecord datasets: LSP, LSP-extended, MPII, COCO, any
COCO-format keypoint dataset, Penn Action and a synthetic set.

Public API::

    from unipose_jax import datasets
    datasets.prepare(["lsp", "mpii"], manual_dir="data", data_dir="data/tfds")
    source = datasets.data_source("lsp", "test", data_dir="data/tfds")
    len(source)           # 1000
    example = source[0]   # image 1001
    example["image"]      # uint8 (H, W, 3) RGB
    example["keypoints"]  # float32 (K, 2) (x, y), stored-image pixels, 0-based pixel centres
    example["visible"], example["labeled"]  # bool (K,)
    example["image_id"]   # int32 ()
    example["box"]        # float32 (4,) the person's [x1, y1, x2, y2]
    datasets.keypoint_set("mpii", "data/tfds")  # its KeypointSet (K = 16)

:data:`DATASETS` is the one table of datasets: per name its builder, splits and sizes,
evaluation split, keypoint set and what to download and where to put it. The features
(and each dataset's extras) are described in :mod:`unipose_jax.datasets.features`, each
builder's reading of its files in its module (:mod:`~unipose_jax.datasets.lsp`,
:mod:`~unipose_jax.datasets.mpii`, :mod:`~unipose_jax.datasets.coco`,
:mod:`~unipose_jax.datasets.penn_action`, :mod:`~unipose_jax.datasets.synthetic`).
``coco_format/NAME`` names any COCO-format dataset in ``<manual_dir>/NAME/``; its keypoint
set is stored at prepare time in ``<data_dir>/coco_format/NAME/keypoint_set.json``.

Building and reading need no TensorFlow. Bad input raises :class:`DatasetError` with a
one-line message naming the file; an unknown name, one line listing the known ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from unipose_jax import keypoint_sets
from unipose_jax.datasets import archives, coco, integrity, mpii, penn_action
from unipose_jax.datasets.archives import DatasetError
from unipose_jax.datasets.coco import Coco, CocoFormat, CocoFormatConfig
from unipose_jax.datasets.features import labeled_extent
from unipose_jax.datasets.lsp import Lsp, LspExtended
from unipose_jax.datasets.mpii import Mpii
from unipose_jax.datasets.penn_action import PennAction
from unipose_jax.datasets.synthetic import Synthetic, SyntheticConfig

__all__ = [
  "DATASETS",
  "DEFAULT_PREPARE",
  "Coco",
  "CocoFormat",
  "DatasetEntry",
  "DatasetError",
  "Lsp",
  "LspExtended",
  "Mpii",
  "PennAction",
  "PoseDataSource",
  "Synthetic",
  "SyntheticConfig",
  "UnknownDatasetError",
  "builder",
  "check_names",
  "data_source",
  "entry",
  "is_prepared",
  "keypoint_set",
  "missing_message",
  "prepare",
  "prepare_command",
]

COCO_FORMAT = "coco_format"


class UnknownDatasetError(DatasetError):
  """A dataset name that is not in :data:`DATASETS` (launch.py: a usage error, exit 2)."""


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """One row of :data:`DATASETS`.

  Attributes:
    name: the name given to :func:`prepare` / :func:`data_source` (``"coco_format/NAME"``).
    builder: the TFDS builder class.
    config: its builder config's name, or None.
    split_sizes: examples per split of the full release (LSP and synthetic: exact and
      enforced; MPII, COCO, Penn Action: documentation, the builders count the annotation
      files; ``coco_format``: unknown, empty).
    eval_split: the split a run evaluates on (None: the dataset has none).
    keypoint_set: its :class:`~unipose_jax.keypoint_sets.KeypointSet`; None for
      ``coco_format`` (stored with the prepared data, :func:`keypoint_set`).
    download: one line, what to download and where to put it (``{manual}`` = the manual
      dir); empty for the synthetic set.
    crop: what training crops around by default (``data.crop``): ``"joints"`` (the labeled
      joints' extent: LSP, and MPII, whose ``box`` is that extent) or ``"box"`` (a person
      box of the annotation's own: COCO, Penn Action).
    eval_crop: the evaluation input by default (``data.eval_crop``): ``"whole"`` (the image
      letterboxed: LSP's protocol) or ``"box"`` (top-down, the person's crop: MPII's
      ``center``/``scale``, COCO's and Penn Action's box; ``transforms.person_region``).
    by_default: prepared by ``--mode=prepare`` without ``--datasets``.
  """

  name: str
  builder: type
  config: str | None
  split_sizes: Mapping[str, int]
  eval_split: str | None
  keypoint_set: keypoint_sets.KeypointSet | None
  download: str
  crop: str
  eval_crop: str
  by_default: bool = False


_LSP_DOWNLOAD = "{zip} from {page} (or its extracted folder {stem}/), unchanged, into {{manual}}/"

#: The one table of datasets (``coco_format/NAME`` is a pattern: :func:`entry`).
DATASETS: dict[str, DatasetEntry] = {
  "lsp": DatasetEntry(
    "lsp", Lsp, None, archives.LSP.split_sizes, "test", keypoint_sets.LSP,
    _LSP_DOWNLOAD.format(zip="lsp_dataset.zip", stem="lsp_dataset", page="http://sam.johnson.io/research/lsp.html"),
    "joints", "whole", by_default=True,
  ),
  "lsp_extended": DatasetEntry(
    "lsp_extended", LspExtended, None, archives.LSP_EXTENDED.split_sizes, None, keypoint_sets.LSP,
    _LSP_DOWNLOAD.format(zip="lspet_dataset.zip", stem="lspet_dataset", page="http://sam.johnson.io/research/lspet.html"),
    "joints", "whole", by_default=True,
  ),
  **{
    "synthetic" + ("" if c.name == "default" else f"/{c.name}"): DatasetEntry(
      "synthetic" + ("" if c.name == "default" else f"/{c.name}"), Synthetic, c.name,
      {"train": c.num_train, "test": c.num_test}, "test", keypoint_sets.LSP, "",
      "joints", "whole", by_default=c.name == "default",
    )
    for c in Synthetic.BUILDER_CONFIGS
  },
  "mpii": DatasetEntry(
    "mpii", Mpii, None, mpii.SPLIT_SIZES, "validation", keypoint_sets.MPII,
    mpii.DOWNLOAD.format(root="{manual}/mpii"), "joints", "box",
  ),
  "coco": DatasetEntry(
    "coco", Coco, None, coco.SPLIT_SIZES, "validation", keypoint_sets.COCO,
    coco.COCO_DOWNLOAD.format(root="{manual}/coco"), "box", "box",
  ),
  "penn_action": DatasetEntry(
    "penn_action", PennAction, None, {}, "test", keypoint_sets.PENN_ACTION,
    penn_action.DOWNLOAD.format(manual="{manual}", root="{manual}/Penn_Action"), "box", "box",
  ),
}  # fmt: skip

#: What ``--mode=prepare`` builds without ``--datasets``.
DEFAULT_PREPARE: tuple[str, ...] = tuple(n for n, e in DATASETS.items() if e.by_default)


def known_names() -> str:
  """The known names, for messages."""
  return ", ".join([*DATASETS, f"{COCO_FORMAT}/NAME"])


def entry(name: str) -> DatasetEntry:
  """The table row of ``name``; ``coco_format/NAME`` gets its own row (config NAME).

  Raises:
    UnknownDatasetError: one line listing the known names.
  """
  if name in DATASETS:
    return DATASETS[name]
  base, _, sub = str(name).partition("/")
  if base == COCO_FORMAT and coco.NAME_RE.match(sub):
    return DatasetEntry(
      name, CocoFormat, sub, {}, "validation", None,
      coco.FORMAT_DOWNLOAD.format(root="{manual}/" + sub), "box", "box",
    )  # fmt: skip
  hint = " (NAME: letters, digits, '_', '.', '-')" if base == COCO_FORMAT else ""
  raise UnknownDatasetError(f"unknown dataset {name!r}{hint}; known: {known_names()}")


def check_names(names: str | Iterable[str]) -> list[str]:
  """``names`` (a sequence or a comma-separated string) as a list, each checked."""
  if isinstance(names, str):
    names = [n.strip() for n in names.split(",") if n.strip()]
  names = list(names)
  for name in names:
    entry(name)
  return names


class _QuietVariantFolder(logging.Filter):
  """Drops TFDS's "Variant folder ... has no dataset_info.json": before a build that folder
  is expected to be empty, and the warning reads like an error (issue 21)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "has no dataset_info.json" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietVariantFolder())


def prepare_command(
  data_dir: str | os.PathLike = "data/tfds", manual_dir: str | os.PathLike = "data"
) -> str:
  """The command line that prepares the datasets into ``data_dir``."""
  return f"unipose-jax --mode=prepare --manual_dir={manual_dir} --data_dir={data_dir}"


def _keypoint_set_path(name: str, data_dir: str | os.PathLike) -> pathlib.Path:
  return pathlib.Path(data_dir) / COCO_FORMAT / entry(name).config / "keypoint_set.json"


def _stored_keypoint_set(name: str, data_dir) -> keypoint_sets.KeypointSet | None:
  path = _keypoint_set_path(name, data_dir)
  if not path.is_file():
    return None
  try:
    return keypoint_sets.from_dict(json.loads(path.read_text()), source=os.fspath(path))
  except (OSError, ValueError) as e:  # KeypointSetError and JSONDecodeError are ValueErrors
    raise DatasetError(
      f"{path}: unreadable keypoint set ({e}); prepare the dataset again"
    ) from None


def _not_prepared(name: str, data_dir, expected) -> DatasetError:
  return DatasetError(
    f"dataset {name!r} is not prepared in {pathlib.Path(data_dir).resolve()} "
    f"(expected {expected}); prepare it with:\n  {prepare_command(data_dir)} --datasets={name}"
  )


def builder(
  name: str,
  data_dir: str | os.PathLike,
  *,
  keypoints: keypoint_sets.KeypointSet | None = None,
) -> tfds.core.DatasetBuilder:
  """The TFDS builder of ``name`` (a name of :data:`DATASETS` or ``coco_format/NAME``).

  ``coco_format/NAME`` needs its ``K``: from ``keypoints`` (prepare), else from the set
  stored with the prepared data (a DatasetError saying how to prepare it if absent).
  """
  e = entry(name)
  kwargs: dict[str, Any] = {"data_dir": os.fspath(data_dir)}
  if e.builder is CocoFormat:
    keypoints = keypoints or _stored_keypoint_set(name, data_dir)
    if keypoints is None:
      raise _not_prepared(name, data_dir, _keypoint_set_path(name, data_dir))
    kwargs["config"] = CocoFormatConfig(name=e.config, joint_names=keypoints.joint_names)
  elif e.config is not None:
    kwargs["config"] = e.config
  return e.builder(**kwargs)


def is_prepared(name: str, data_dir: str | os.PathLike) -> bool:
  """Whether ``name`` has been completely built under ``data_dir``."""
  if entry(name).builder is CocoFormat and _stored_keypoint_set(name, data_dir) is None:
    return False
  return builder(name, data_dir).is_prepared()


def keypoint_set(name: str, data_dir: str | os.PathLike) -> keypoint_sets.KeypointSet:
  """The keypoint set of dataset ``name``: the table's, or for ``coco_format/NAME`` the
  one stored when it was prepared (no raw annotations needed).

  Raises:
    DatasetError: unknown name (one line listing the known ones), or a ``coco_format``
      dataset that is not prepared under ``data_dir``.
  """
  e = entry(name)
  if e.keypoint_set is not None:
    return e.keypoint_set
  found = _stored_keypoint_set(name, data_dir)
  if found is None:
    raise _not_prepared(name, data_dir, _keypoint_set_path(name, data_dir))
  return found


def missing_message(name: str, manual_dir: str | os.PathLike | None) -> str | None:
  """None when the input files of ``name`` are in ``manual_dir`` (always for the synthetic
  set), else one line: what is missing, what to download and where to put it."""
  e = entry(name)
  if not e.download:
    return None
  if manual_dir is None:
    return "no --manual_dir given; get " + e.download.format(manual="<manual_dir>")
  manual = pathlib.Path(manual_dir)
  if e.builder in (Lsp, LspExtended):
    spec = e.builder.SPEC
    if archives.find_source(manual, spec) is not None:
      return None
    return f"neither {spec.zip_name} nor {spec.stem}/ found in {manual}; get " + e.download.format(
      manual=manual
    )
  if e.builder is Mpii:
    return mpii.missing_input(manual)
  if e.builder is PennAction:
    return penn_action.missing_input(manual)
  return coco.missing_input(
    manual, e.config or "coco", "coco" if e.builder is Coco else COCO_FORMAT
  )


def _write_keypoint_set(name: str, data_dir, found: keypoint_sets.KeypointSet) -> None:
  path = _keypoint_set_path(name, data_dir)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(found.to_dict(), indent=1) + "\n")
  os.replace(tmp, path)


def prepare(
  names: str | Iterable[str] = DEFAULT_PREPARE,
  manual_dir: str | os.PathLike | None = None,
  data_dir: str | os.PathLike = "data/tfds",
  log: Callable[[str], Any] = print,
) -> dict[str, str]:
  """Builds each dataset of ``names`` under ``data_dir`` unless it is already there.

  Args:
    names: dataset names (:data:`DATASETS`, ``coco_format/NAME``), as a sequence or a
      comma-separated string.
    manual_dir: folder holding each dataset's files as the table's ``download`` says; not
      needed for ``synthetic``.
    data_dir: root of the TFDS datasets (``<data_dir>/<name>/[<config>/]<version>/``).
    log: called with one line per event.

  Returns:
    ``{name: status}`` with status ``"built"``, ``"exists"`` (already prepared; not
    rebuilt, input not read) or ``"missing"`` (its files are not in ``manual_dir``;
    skipped, with a line saying what to get and where: :func:`missing_message`).

  Raises:
    DatasetError: an unknown name (before anything is built), or some input was present
      but bad (corrupt zip, unreadable image, malformed annotation, image of the wrong
      size, ...). Every other dataset is still prepared first; the error lists the
      failures, each naming its file. A failed build leaves no dataset behind that could
      be mistaken for a complete one.
  """
  statuses: dict[str, str] = {}
  failures: list[str] = []
  for name in check_names(names):
    e = entry(name)
    if is_prepared(name, data_dir):
      b = builder(name, data_dir)
      problems = integrity.check(b, name)
      if not problems:
        statuses[name] = "exists"
        log(f"[{name}] already prepared in {b.data_dir} (every file read back); reusing it")
        continue
      for problem in problems:
        log(f"[{name}] {problem}")
    missing = missing_message(name, manual_dir)
    if missing is not None:
      statuses[name] = "missing"
      if e.builder in (Lsp, LspExtended):  # the archives' full instructions, as before
        log(
          f"[{name}] skipped: {missing}\n"
          + e.builder.MANUAL_DOWNLOAD_INSTRUCTIONS.replace(
            prepare_command(), prepare_command(data_dir, manual_dir or "data")
          )
        )
      else:
        log(f"[{name}] skipped: {missing}")
      continue
    try:
      found = None
      if e.builder is CocoFormat:
        found = coco.keypoint_set_of_files(manual_dir, e.config, COCO_FORMAT, e.config)
        _write_keypoint_set(name, data_dir, found)
      b = builder(name, data_dir, keypoints=found)
      damaged = b.is_prepared()
      # A build killed without a chance to clean up (SIGKILL, power loss) leaves TFDS's
      # temporary folder; it is never mistaken for a dataset, but it takes space.
      for leftover in sorted(pathlib.Path(b.data_dir).parent.glob(f"incomplete.*_{b.version}")):
        log(f"[{name}] note: {leftover} is left over from an interrupted build; it can be deleted")
      if manual_dir is not None and e.download:
        download_config = tfds.download.DownloadConfig(
          manual_dir=os.fspath(manual_dir), try_download_gcs=False
        )
        log(f"[{name}] building from {manual_dir} into {b.data_dir} ...")
      else:
        download_config = tfds.download.DownloadConfig(try_download_gcs=False)
        log(f"[{name}] building into {b.data_dir} ...")
      if damaged:
        log(f"[{name}] removing the damaged {b.data_dir} and building it again")
        shutil.rmtree(b.data_dir)
        b = builder(name, data_dir, keypoints=found)
      b.download_and_prepare(download_config=download_config)
    except DatasetError as err:
      statuses[name] = "failed"
      failures.append(f"[{name}] {err}")
      log(f"[{name}] FAILED: {err}")
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
  ``(K, 2)``, ``visible`` and ``labeled`` bool ``(K,)``, ``image_id`` int32 ``()``,
  ``box`` float32 ``(4,)`` and the dataset's extras (:mod:`.features`).
  Picklable (it reopens the files in the unpickling process), so it can be handed to
  grain worker processes.
  """

  def __init__(self, name: str, split: str, data_dir: str | os.PathLike):
    self.name, self.split, self.data_dir = name, split, os.fspath(data_dir)
    b = builder(name, data_dir)
    if not b.is_prepared():
      raise _not_prepared(name, data_dir, b.data_dir)
    if split not in b.info.splits:
      raise DatasetError(
        f"dataset {name!r} has no split {split!r}; splits: {sorted(b.info.splits)}"
      )
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
    out = {
      "image": np.ascontiguousarray(image),
      "keypoints": np.asarray(example["keypoints"], dtype=np.float32),
      "visible": np.asarray(example["visible"], dtype=bool),
      "labeled": np.asarray(example["labeled"], dtype=bool),
      "image_id": np.int32(example["image_id"]),
    }
    if "box" in example:
      out["box"] = np.asarray(example["box"], dtype=np.float32)
    else:  # LSP, LSP-extended, synthetic: the extent of the labeled joints (features.py)
      out["box"] = labeled_extent(out["keypoints"], out["labeled"])
    for key, value in example.items():  # the dataset's extras (features.EXTRAS)
      if key not in out:
        out[key] = np.asarray(value)
    return out

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

  def metadata(self) -> list[tuple[int, int]] | None:
    """``[(video_id, frame)]`` of every record in source order, read without decoding the
    images (a video dataset's cheap read, for ``clip_pipeline.index_videos``); None for a
    dataset without ``video_id`` / ``frame`` (an image dataset)."""
    if not {"video_id", "frame"} <= set(self._builder.info.features):
      return None
    import tensorflow_datasets as tfds  # noqa: PLC0415

    try:
      raw = self._builder.as_data_source(
        split=self.split, decoders={"image": tfds.decode.SkipDecoding()}
      )
      return [(int(raw[i]["video_id"]), int(raw[i]["frame"])) for i in range(len(raw))]
    except RuntimeError as e:
      raise self._damaged(0, e) from None

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
    DatasetError: unknown dataset name or split (one line listing the known ones).
  """
  return PoseDataSource(name, split, data_dir)
