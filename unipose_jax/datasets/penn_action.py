"""TFDS builder ``penn_action`` (Penn Action: 2,326 videos of 15 actions, 13 joints).

Input, in the manual dir (the release's ``Penn_Action.tar.gz``, extracted; nothing is
downloaded)::

  Penn_Action/frames/NNNN/NNNNNN.jpg    frame f (1-based) of video NNNN
  Penn_Action/labels/NNNN.mat           x, y, visibility (nframes, 13), bbox (nframes, 4),
                                        dimensions [H, W, nframes], nframes, train (1 / -1)

Splits from ``train``: ``train`` (1; 1,258 videos in the release) and ``test`` (-1; 1,068),
163,841 frames in all. One example per frame, in video then frame order; the number of
frames is checked against ``dimensions``, ``x``, ``y``, ``visibility`` and the frames folder, and each
frame's size against ``dimensions``.

13 joints (:data:`unipose_jax.keypoint_sets.PENN_ACTION`): head, shoulders, elbows,
wrists, hips, knees, ankles (left before right). Coordinates are MATLAB 1-based: every
``x``, ``y`` and ``bbox`` value minus 1. ``visible`` = ``labeled`` = ``visibility == 1``
(the protocol scores visible joints only; the coordinates of the others are kept as read,
minus 1). A visible joint outside the frame (the release has some) is kept, labeled.
``box`` is the ``bbox`` row [x1, y1, x2, y2] minus 1. Videos 1154 and 1865 have one
``bbox`` row fewer than frames: their last frame repeats the previous row (consecutive
rows differ by a few pixels). Any other mismatch is an error.

Each example adds ``video_id`` (NNNN) and ``frame`` (the file's number, 1-based);
``image_id`` = ``video_id * 10000 + frame``.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from unipose_jax import keypoint_sets, preemption
from unipose_jax.datasets import reading
from unipose_jax.datasets._tfds_compat import ArrayRecordBuilderMixin
from unipose_jax.datasets.archives import DatasetError
from unipose_jax.datasets.features import pose_features

K = keypoint_sets.PENN_ACTION.num_joints
FOLDER = "Penn_Action"
#: The full release's split sizes in videos (documentation; frames: 163,841 in all).
SPLIT_VIDEOS = {"train": 1258, "test": 1068}
#: Videos of the release whose ``bbox`` has one row fewer than frames.
SHORT_BBOX_VIDEOS = (1154, 1865)
_SPLIT_FLAG = {"train": 1, "test": -1}

DOWNLOAD = (
  "Penn_Action.tar.gz from http://dreamdragon.github.io/PennAction/, extracted into "
  "{manual}/ (giving {root}/frames/ and {root}/labels/)"
)

_CITATION = """\
@inproceedings{zhang2013actemes,
  title = {From Actemes to Action: A Strongly-supervised Representation for Detailed Action Understanding},
  author = {Zhang, Weiyu and Zhu, Menglong and Derpanis, Konstantinos G.},
  booktitle = {IEEE International Conference on Computer Vision (ICCV)},
  year = {2013}
}"""


def missing_input(manual_dir: pathlib.Path) -> str | None:
  """None when the labels and frames folders exist (with at least one label file)."""
  root = pathlib.Path(manual_dir) / FOLDER
  for path in (root / "labels", root / "frames"):
    if not path.is_dir():
      return f"{path} not found; get {DOWNLOAD.format(manual=manual_dir, root=root)}"
  if not any((root / "labels").glob("*.mat")):
    return f"{root / 'labels'} has no NNNN.mat; get {DOWNLOAD.format(manual=manual_dir, root=root)}"
  return None


def load_video(path: pathlib.Path) -> dict:
  """The validated labels of one video, 1-based as stored (see the module docstring)."""
  video_id = int(path.stem)
  mat = reading.load_mat(path, ("x", "y", "visibility", "bbox", "dimensions", "train"))
  dims = reading.numeric(np.ravel(mat["dimensions"]), f"{path}: 'dimensions'", (3,))
  n = int(dims[2])
  x = reading.numeric(mat["x"], f"{path}: 'x'", (n, K))
  y = reading.numeric(mat["y"], f"{path}: 'y'", (n, K))
  vis = reading.numeric(mat["visibility"], f"{path}: 'visibility'", (n, K))
  bbox = np.asarray(mat["bbox"], dtype=np.float64)
  if bbox.ndim != 2 or bbox.shape[1] != 4 or bbox.shape[0] not in (n, n - 1):
    raise DatasetError(f"{path}: 'bbox' has shape {bbox.shape}, expected ({n}, 4)")
  if bbox.shape[0] == n - 1:
    if video_id not in SHORT_BBOX_VIDEOS:
      raise DatasetError(f"{path}: 'bbox' has {n - 1} rows for {n} frames")
    bbox = np.concatenate([bbox, bbox[-1:]], axis=0)  # the last frame repeats the previous row
  if not np.isin(vis, (0, 1)).all():
    raise DatasetError(f"{path}: 'visibility' must hold 0 or 1")
  split = int(np.ravel(mat["train"])[0])
  if split not in (1, -1):
    raise DatasetError(f"{path}: 'train' is {split}, expected 1 or -1")
  xy = np.stack([x, y], axis=-1)
  if not np.isfinite(xy[vis == 1]).all() or not np.isfinite(bbox).all():
    raise DatasetError(f"{path}: non-finite coordinates of a visible joint or of 'bbox'")
  return {
    "video_id": video_id,
    "size": (int(dims[0]), int(dims[1])),
    "xy": xy,
    "visible": vis == 1,
    "bbox": bbox,
    "split": split,
  }


class PennAction(ArrayRecordBuilderMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Penn Action, one example per frame (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put in the manual dir: " + DOWNLOAD.format(
    manual="<manual_dir>", root="<manual_dir>/Penn_Action"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=pose_features(K, extras=("video_id", "frame")),
      disable_shuffling=True,  # video, then frame order
      homepage="http://dreamdragon.github.io/PennAction/",
      citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual = pathlib.Path(dl_manager.manual_dir)
    problem = missing_input(manual)
    if problem:
      raise DatasetError(problem)
    labels = sorted((manual / FOLDER / "labels").glob("*.mat"))
    for path in labels:
      if not path.stem.isdigit():
        raise DatasetError(f"{path}: label files are named NNNN.mat")
    return {
      split: self._generate_examples(manual / FOLDER, labels, flag)
      for split, flag in _SPLIT_FLAG.items()
    }

  def _generate_examples(self, root: pathlib.Path, labels: list[pathlib.Path], flag: int):
    for path in labels:
      video = load_video(path)  # one video in memory at a time
      if video["split"] != flag:
        continue
      vid = video["video_id"]
      folder = root / "frames" / path.stem
      n = len(video["xy"])
      on_disk = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
      if len(on_disk) != n:
        raise DatasetError(f"{folder}: {len(on_disk)} frames, {path} labels {n}")
      for f in range(1, n + 1):
        preemption.check(f"building {self.name}; the incomplete build is not kept")
        jpeg, _ = reading.read_image(folder / f"{f:06d}.jpg", video["size"])
        visible = video["visible"][f - 1]
        keypoints = np.where(np.isfinite(video["xy"][f - 1]), video["xy"][f - 1] - 1.0, 0.0)
        yield (
          vid * 10000 + f,
          {
            "image": jpeg,
            "keypoints": keypoints.astype(np.float32),
            "visible": visible,
            "labeled": visible,
            "image_id": np.int32(vid * 10000 + f),
            "box": (video["bbox"][f - 1] - 1.0).astype(np.float32),
            "video_id": np.int32(vid),
            "frame": np.int32(f),
          },
        )
