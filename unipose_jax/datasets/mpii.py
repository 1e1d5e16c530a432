"""TFDS builder ``mpii`` (MPII Human Pose, single-person split of HRNet / DarkPose / mmpose).

Input, in the manual dir (nothing is downloaded)::

  mpii/images/*.jpg                     the release's images (mpii_human_pose_v1.tar.gz)
  mpii/annotations/mpii_train.json      the converted annotations HRNet, DarkPose and
  mpii/annotations/mpii_val.json        mmpose use (HRNet names the .mat gt_valid.mat)
  mpii/annotations/mpii_gt_val.mat

Splits (full release; the builder takes the counts from the annotation files and checks
the files against each other, so a cut-down copy builds too):

==============  =========================================================================
``train``       22,246 persons: every entry of ``mpii_train.json``, in its order
``validation``  2,958 persons in 2,729 images: the persons of ``mpii_gt_val.mat``, in its
                order (the order of every published ``preds (N, 16, 2)``); image names
                from ``mpii_val.json``, whose entries must be the same persons in the
                same order (checked: coordinates within 0.01 px, same missing joints)
==============  =========================================================================

16 joints in ``dataset_joints`` order (:data:`unipose_jax.keypoint_sets.MPII`). Both files
hold MATLAB 1-based pixel coordinates: every coordinate is the stored value minus 1.
A missing joint (``joints_vis == 0`` / ``jnt_missing == 1``; coordinates -1 / 0 in the files)
is unlabeled and keeps its value minus 1. The converted annotations carry no visibility
flag, so ``visible`` = ``labeled``.

Each example also holds ``head_box`` (4,) [x1, y1, x2, y2] (validation: ``headboxes_src``
minus 1, the PCKh normaliser; train: NaN, the converted train file has no head boxes),
``center`` (2,) (the file's ``center`` minus 1, before HRNet's +15 * scale shift) and
``scale`` (the file's, person height / 200 px). ``box`` is the extent of the labeled
joints (MPII has no person box). ``image_id`` is the number of the image file
(``005808361.jpg`` -> 5808361); one image holds several persons, so ids repeat.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from unipose_jax import keypoint_sets, preemption
from unipose_jax.datasets import reading
from unipose_jax.datasets._tfds_compat import ArrayRecordBuilderMixin
from unipose_jax.datasets.archives import DatasetError
from unipose_jax.datasets.features import labeled_extent, pose_features

K = keypoint_sets.MPII.num_joints
FOLDER = "mpii"
ANNOTATIONS = ("mpii_train.json", "mpii_val.json", "mpii_gt_val.mat")
#: ``dataset_joints`` of ``mpii_gt_val.mat`` (checked when the file has it).
DATASET_JOINTS = (
  "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
  "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
)  # fmt: skip
#: The full release's split sizes (documentation; the builder counts the files).
SPLIT_SIZES = {"train": 22246, "validation": 2958}

DOWNLOAD = (
  "the MPII Human Pose images (mpii_human_pose_v1.tar.gz, http://human-pose.mpi-inf.mpg.de/) "
  "extracted into {root}/images/, and mpii_train.json, mpii_val.json and mpii_gt_val.mat "
  "(https://download.openmmlab.com/mmpose/datasets/mpii_annotations.tar; HRNet's gt_valid.mat "
  "renamed) into {root}/annotations/"
)

_CITATION = """\
@inproceedings{andriluka14cvpr,
  author = {Mykhaylo Andriluka and Leonid Pishchulin and Peter Gehler and Bernt Schiele},
  title = {2D Human Pose Estimation: New Benchmark and State of the Art Analysis},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year = {2014}
}"""


def missing_input(manual_dir: pathlib.Path) -> str | None:
  """None when every input is there, else one line: what is missing, what to get, where."""
  root = pathlib.Path(manual_dir) / FOLDER
  needed = [root / "images"] + [root / "annotations" / n for n in ANNOTATIONS]
  absent = [p for p in needed if not p.exists()]
  if not absent:
    return None
  return f"{absent[0]} not found; get {DOWNLOAD.format(root=root)}"


_NUMBER = re.compile(r"(\d+)")


def _image_id(name, where: str) -> np.int32:
  match = _NUMBER.search(pathlib.PurePath(str(name)).name)
  if match is None:
    raise DatasetError(f"{where}: image name {name!r} has no number")
  return reading.int32(match.group(1), where)


def _entry(e, where: str) -> dict:
  """One validated entry of the converted JSON (1-based values as stored)."""
  image = reading.field(e, "image", where)
  joints = reading.numeric(reading.field(e, "joints", where), f"{where} 'joints'", (K, 2))
  vis = reading.numeric(reading.field(e, "joints_vis", where), f"{where} 'joints_vis'", (K,))
  center = reading.numeric(reading.field(e, "center", where), f"{where} 'center'", (2,))
  scale = reading.numeric(reading.field(e, "scale", where), f"{where} 'scale'", ())
  labeled = vis > 0
  if not np.isfinite(joints[labeled]).all():
    raise DatasetError(f"{where}: non-finite coordinates of a labeled joint")
  return {
    "image": str(image),
    "joints": joints,
    "labeled": labeled,
    "center": center,
    "scale": scale,
  }


class Mpii(ArrayRecordBuilderMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """MPII Human Pose (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put in the manual dir: " + DOWNLOAD.format(
    root="<manual_dir>/mpii"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=pose_features(K, extras=("head_box", "center", "scale")),
      disable_shuffling=True,  # examples stay in the annotation files' order
      homepage="http://human-pose.mpi-inf.mpg.de/",
      citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir) / FOLDER
    problem = missing_input(dl_manager.manual_dir)
    if problem:
      raise DatasetError(problem)
    ann = root / "annotations"
    train = self._load_json(ann / "mpii_train.json")
    val = self._load_json(ann / "mpii_val.json")
    gt = self._load_gt(ann / "mpii_gt_val.mat")
    self._check_same_persons(ann / "mpii_val.json", val, ann / "mpii_gt_val.mat", gt)
    return {
      "train": self._generate_examples(root, ann / "mpii_train.json", train, None),
      "validation": self._generate_examples(root, ann / "mpii_gt_val.mat", val, gt),
    }

  @staticmethod
  def _load_json(path: pathlib.Path) -> list[dict]:
    data = reading.load_json(path)
    if not isinstance(data, list):
      raise DatasetError(f"{path}: expected a list of persons, got {type(data).__name__}")
    return [_entry(e, f"{path} entry {i}") for i, e in enumerate(data)]

  @staticmethod
  def _load_gt(path: pathlib.Path) -> dict[str, np.ndarray]:
    mat = reading.load_mat(path, ("jnt_missing", "pos_gt_src", "headboxes_src"))
    if "dataset_joints" in mat:
      try:
        names = tuple(str(np.ravel(n)[0]) for n in np.ravel(mat["dataset_joints"]))
      except (IndexError, TypeError):
        names = ()
      if names != DATASET_JOINTS:
        raise DatasetError(
          f"{path}: 'dataset_joints' is {list(names)}, expected {list(DATASET_JOINTS)}"
        )
    missing = np.asarray(mat["jnt_missing"])
    if missing.ndim != 2 or missing.shape[0] != K:
      raise DatasetError(f"{path}: 'jnt_missing' has shape {missing.shape}, expected ({K}, N)")
    n = missing.shape[1]
    pos = reading.numeric(mat["pos_gt_src"], f"{path}: 'pos_gt_src'", (K, 2, n))
    heads = reading.numeric(mat["headboxes_src"], f"{path}: 'headboxes_src'", (2, 2, n))
    if not np.isin(missing, (0, 1)).all():
      raise DatasetError(f"{path}: 'jnt_missing' must hold 0 or 1")
    labeled = missing.T == 0  # (N, K)
    keypoints = np.transpose(pos, (2, 0, 1))  # (N, K, 2), 1-based
    if not np.isfinite(keypoints[labeled]).all():
      raise DatasetError(f"{path}: non-finite 'pos_gt_src' of a joint that is not missing")
    head_box = np.transpose(heads, (2, 0, 1)).reshape(n, 4)  # [[x1, y1], [x2, y2]] -> x1 y1 x2 y2
    return {"keypoints": keypoints, "labeled": labeled, "head_box": head_box}

  @staticmethod
  def _check_same_persons(json_path, val: list[dict], mat_path, gt: dict) -> None:
    n = len(gt["labeled"])
    if len(val) != n:
      raise DatasetError(
        f"{json_path}: {len(val)} persons, but {mat_path} has {n}; the two files must list the "
        "same validation persons in the same order"
      )
    for i, e in enumerate(val):
      same = np.array_equal(e["labeled"], gt["labeled"][i]) and np.allclose(
        e["joints"][e["labeled"]], gt["keypoints"][i][e["labeled"]], atol=0.01
      )
      if not same:
        raise DatasetError(
          f"{json_path} entry {i} ({e['image']}) is not person {i} of {mat_path} (different "
          "joints); the two files must list the same persons in the same order"
        )

  def _generate_examples(self, root: pathlib.Path, source, entries: list[dict], gt: dict | None):
    for i, e in enumerate(entries):
      preemption.check(f"building {self.name}; the incomplete build is not kept")
      where = f"{source} person {i}"
      jpeg, _ = reading.read_image(root / "images" / e["image"])
      if gt is None:
        keypoints, labeled = e["joints"] - 1.0, e["labeled"]
        head_box = np.full(4, np.nan)
      else:
        keypoints, labeled = gt["keypoints"][i] - 1.0, gt["labeled"][i]
        head_box = gt["head_box"][i] - 1.0
      keypoints = np.where(np.isfinite(keypoints), keypoints, 0.0).astype(np.float32)
      yield (
        i,
        {
          "image": jpeg,
          "keypoints": keypoints,
          "visible": labeled,
          "labeled": labeled,
          "image_id": _image_id(e["image"], where),
          "box": labeled_extent(keypoints, labeled),
          "head_box": head_box.astype(np.float32),
          "center": (e["center"] - 1.0).astype(np.float32),
          "scale": np.float32(e["scale"]),
        },
      )
