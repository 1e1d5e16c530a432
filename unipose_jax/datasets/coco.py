"""TFDS builders ``coco`` (COCO 2017 person keypoints) and ``coco_format/NAME`` (any
COCO-format keypoint dataset).

Input, in the manual dir (nothing is downloaded)::

  coco/annotations/person_keypoints_train2017.json   coco/train2017/*.jpg
  coco/annotations/person_keypoints_val2017.json     coco/val2017/*.jpg

  NAME/annotations/train.json   NAME/annotations/val.json   NAME/images/<file_name>

For ``coco_format/NAME`` either annotation file may be absent (that split is not built);
``file_name`` is relative to ``NAME/images/``. Splits ``train`` and ``validation``; for
``coco`` the full release has 149,813 and 6,352 examples.

Examples: one per annotation that is not a crowd (``iscrowd`` 0) and has at least one
labeled keypoint (``v > 0``), of a category that has keypoint names; in the file's order
of ``images``, then of ``annotations``. The whole image is stored (every person of an
image repeats its bytes; COCO train takes about 24 GB). Each example adds
``annotation_id`` (int64, the annotation's ``id``) and ``area`` (float32, the annotation's
``area``, OKS's scale; the box's ``w * h`` where a COCO-format file has none); ``image_id``
is the image's ``id``.

Coordinates (:mod:`unipose_jax.coco_frame`): COCO's keypoints are pixel indices, the
project's convention, and are stored unchanged; ``box`` is the annotation's ``bbox``
``[x, y, w, h]`` (continuous, the image spans [0, W]) as ``[x - 0.5, y - 0.5, x + w - 0.5,
y + h - 0.5]``. ``visible`` = ``v == 2``, ``labeled`` = ``v > 0``; unlabeled joints keep
their stored (0, 0). Each image's size is checked against its ``height`` / ``width``.

The keypoint set: COCO's 17 (:data:`unipose_jax.keypoint_sets.COCO`; the file's names must
be those); a ``coco_format`` dataset's from its ``categories``
(:func:`unipose_jax.keypoint_sets.from_coco_categories`, one category or several sharing one
keypoint list; train and val must agree). ``prepare`` stores it as
``<data_dir>/coco_format/NAME/keypoint_set.json`` so a run resolves it without the raw files.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections import defaultdict

import numpy as np
import tensorflow_datasets as tfds

from unipose_jax import coco_frame, keypoint_sets, preemption
from unipose_jax.datasets import reading
from unipose_jax.datasets._tfds_compat import ArrayRecordBuilderMixin
from unipose_jax.datasets.archives import DatasetError
from unipose_jax.datasets.features import pose_features

#: The full release's split sizes of ``coco`` (documentation; the builder counts the file).
SPLIT_SIZES = {"train": 149813, "validation": 6352}

COCO_FILES = {
  "train": ("annotations/person_keypoints_train2017.json", "train2017"),
  "validation": ("annotations/person_keypoints_val2017.json", "val2017"),
}
FORMAT_FILES = {
  "train": ("annotations/train.json", "images"),
  "validation": ("annotations/val.json", "images"),
}

COCO_DOWNLOAD = (
  "annotations_trainval2017.zip, train2017.zip and val2017.zip from https://cocodataset.org/#download "
  "(http://images.cocodataset.org/), extracted into {root}/ (giving {root}/annotations/"
  "person_keypoints_{{train,val}}2017.json, {root}/train2017/, {root}/val2017/)"
)
FORMAT_DOWNLOAD = (
  "a COCO-format keypoint dataset: {root}/annotations/train.json and/or val.json, and its "
  "images under {root}/images/ (each image's file_name relative to that folder)"
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_CITATION = """\
@inproceedings{lin2014microsoft,
  title = {Microsoft COCO: Common Objects in Context},
  author = {Lin, Tsung-Yi and others},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year = {2014}
}"""


def _files(kind: str) -> dict[str, tuple[str, str]]:
  return COCO_FILES if kind == "coco" else FORMAT_FILES


def missing_input(manual_dir: pathlib.Path, folder: str, kind: str) -> str | None:
  """None when the inputs are there (``coco``: both annotation files; ``coco_format``: at
  least one), else one line: what is missing, what to get and where."""
  root = pathlib.Path(manual_dir) / folder
  download = (COCO_DOWNLOAD if kind == "coco" else FORMAT_DOWNLOAD).format(root=root)
  present = [s for s, (ann, _) in _files(kind).items() if (root / ann).is_file()]
  if kind == "coco" and len(present) < len(COCO_FILES):
    absent = next(root / a for s, (a, _) in COCO_FILES.items() if s not in present)
    return f"{absent} not found; get {download}"
  if not present:
    return f"neither {root / FORMAT_FILES['train'][0]} nor {root / FORMAT_FILES['validation'][0]} found; put there {download}"
  return None


def splits_present(
  manual_dir: pathlib.Path, folder: str, kind: str
) -> dict[str, tuple[pathlib.Path, pathlib.Path]]:
  """``{split: (annotation file, image folder)}`` of the splits whose file exists."""
  root = pathlib.Path(manual_dir) / folder
  return {s: (root / a, root / i) for s, (a, i) in _files(kind).items() if (root / a).is_file()}


def _categories(data, path: pathlib.Path, name: str) -> keypoint_sets.KeypointSet:
  cats = reading.field(data, "categories", str(path))
  if not isinstance(cats, list):
    raise DatasetError(f"{path}: 'categories' must be a list")
  try:
    return keypoint_sets.from_coco_categories(cats, name, source=str(path))
  except keypoint_sets.KeypointSetError as e:
    raise DatasetError(str(e)) from None


def keypoint_set_of_files(manual_dir: pathlib.Path, folder: str, kind: str, name: str):
  """The keypoint set that the annotation files of ``folder`` define (each file's
  ``categories``; train and val must agree). For ``coco``, :data:`keypoint_sets.COCO`
  after checking the names."""
  sets, sources = [], []
  for _, (path, _) in splits_present(manual_dir, folder, kind).items():
    sets.append(_categories(reading.load_json(path), path, name))
    sources.append(str(path))
  if not sets:
    raise DatasetError(missing_input(manual_dir, folder, kind) or f"{folder}: no annotations")
  try:
    found = keypoint_sets.common(sets, sources)
  except keypoint_sets.KeypointSetError as e:
    raise DatasetError(str(e)) from None
  if kind == "coco":
    if found.joint_names != keypoint_sets.COCO.joint_names:
      raise DatasetError(
        f"{sources[0]}: keypoint names {list(found.joint_names)} are not COCO's 17"
      )
    return keypoint_sets.COCO
  return found


def iter_persons(path: pathlib.Path, images: pathlib.Path, joint_names: tuple[str, ...]):
  """Yields ``(key, example)`` of the annotation file ``path`` (see the module docstring),
  reading the file once and each image of ``images`` once, streaming; the file's keypoint
  names must be ``joint_names``."""
  data = reading.load_json(path)
  for key in ("images", "annotations", "categories"):
    if not isinstance(reading.field(data, key, str(path)), list):
      raise DatasetError(f"{path}: {key!r} must be a list")
  names = _categories(data, path, "check").joint_names
  if names != tuple(joint_names):
    raise DatasetError(f"{path}: keypoint names {list(names)}, expected {list(joint_names)}")
  k = len(names)
  with_kp = {c.get("id") for c in data["categories"] if isinstance(c, dict) and c.get("keypoints")}
  per_image: dict[int, list] = defaultdict(list)
  for i, a in enumerate(data["annotations"]):
    where = f"{path} annotation {i}"
    if reading.field(a, "category_id", where) not in with_kp:
      continue
    kps = reading.numeric(
      reading.field(a, "keypoints", where), f"{where} (id {a.get('id')}) 'keypoints'", (3 * k,)
    )
    kps = kps.reshape(k, 3)
    if a.get("iscrowd", 0) or not (kps[:, 2] > 0).any():
      continue
    if not np.isin(kps[:, 2], (0, 1, 2)).all():
      raise DatasetError(f"{where} (id {a.get('id')}): keypoint flags v must be 0, 1 or 2")
    bbox = reading.numeric(
      reading.field(a, "bbox", where), f"{where} (id {a.get('id')}) 'bbox'", (4,)
    )
    # OKS scales by the person's area: COCO's segmentation area, else (a COCO-format file
    # without it) the box's.
    area = a.get("area", float(bbox[2] * bbox[3]))
    area = float(reading.numeric(area, f"{where} (id {a.get('id')}) 'area'", ()))
    per_image[reading.field(a, "image_id", where)].append(
      (reading.field(a, "id", where), kps, bbox, area)
    )
  known = set()
  for j, im in enumerate(data["images"]):
    known.add(reading.field(im, "id", f"{path} image {j}"))
  unknown = sorted(set(per_image) - known, key=str)
  if unknown:
    raise DatasetError(
      f"{path}: annotations refer to image_id {unknown[0]!r}, which 'images' lacks"
    )
  index = 0  # the key: TFDS stores examples in key order (disable_shuffling)
  for j, im in enumerate(data["images"]):
    persons = per_image.pop(im["id"], ())
    if not persons:
      continue
    where = f"{path} image {j}"
    size = (int(reading.field(im, "height", where)), int(reading.field(im, "width", where)))
    jpeg, _ = reading.read_image(images / str(reading.field(im, "file_name", where)), size)
    image_id = reading.int32(im["id"], f"{where} 'id'")
    for ann_id, kps, bbox, area in persons:
      preemption.check("building a COCO-format dataset; the incomplete build is not kept")
      v = kps[:, 2]
      index += 1
      yield (
        index,
        {
          "image": jpeg,
          "keypoints": coco_frame.keypoints_from_coco(kps[:, :2]),
          "visible": v == 2,
          "labeled": v > 0,
          "image_id": image_id,
          "box": coco_frame.box_from_coco(bbox),
          "annotation_id": np.int64(ann_id),
          "area": np.float32(area),
        },
      )


class _CocoBase(ArrayRecordBuilderMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  _KIND: str

  def _folder(self) -> str:
    raise NotImplementedError

  def _num_joints(self) -> int:
    raise NotImplementedError

  def _joint_names(self) -> tuple[str, ...]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=pose_features(self._num_joints(), extras=("annotation_id", "area")),
      disable_shuffling=True,  # the file's order
      homepage="https://cocodataset.org/",
      citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual = pathlib.Path(dl_manager.manual_dir)
    problem = missing_input(manual, self._folder(), self._KIND)
    if problem:
      raise DatasetError(problem)
    # Each split's file is read once, when its examples are generated (COCO's train file
    # is 240 MB); each checks its own keypoint names.
    return {
      split: self._generate_examples(path, images)
      for split, (path, images) in splits_present(manual, self._folder(), self._KIND).items()
    }

  def _generate_examples(self, path: pathlib.Path, images: pathlib.Path):
    return iter_persons(path, images, self._joint_names())


class Coco(_CocoBase):
  """COCO 2017 person keypoints (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put in the manual dir: " + COCO_DOWNLOAD.format(
    root="<manual_dir>/coco"
  )
  _KIND = "coco"

  def _folder(self) -> str:
    return "coco"

  def _num_joints(self) -> int:
    return keypoint_sets.COCO.num_joints

  def _joint_names(self) -> tuple[str, ...]:
    return keypoint_sets.COCO.joint_names


@dataclasses.dataclass(eq=False)
class CocoFormatConfig(tfds.core.BuilderConfig):
  """One COCO-format dataset: ``name`` = its folder in the manual dir, ``joint_names`` = the
  K names of its keypoint set."""

  joint_names: tuple[str, ...] = ()


class CocoFormat(_CocoBase):
  """Any COCO-format keypoint dataset, one config per dataset (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put in the manual dir: " + FORMAT_DOWNLOAD.format(
    root="<manual_dir>/NAME"
  )
  _KIND = "coco_format"

  def _folder(self) -> str:
    return self.builder_config.name

  def _num_joints(self) -> int:
    return len(self.builder_config.joint_names)

  def _joint_names(self) -> tuple[str, ...]:
    return self.builder_config.joint_names
