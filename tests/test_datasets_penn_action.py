"""The ``penn_action`` builder: tiny label files made here, and the 4 real label files of
``samples/penn_action/labels`` with stand-in frames of their ``dimensions``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io
from pose_samples import sample, silent, write_jpeg, write_mat

from unipose_jax import datasets, keypoint_sets

K = 13


def _labels(rng, n, h, w, train, short_bbox=False):
  x = rng.uniform(1, w, size=(n, K))
  y = rng.uniform(1, h, size=(n, K))
  vis = (rng.random((n, K)) > 0.3).astype(np.uint8)
  bbox = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)
  if short_bbox:
    bbox = bbox[:-1]
  return {
    "x": x, "y": y, "visibility": vis, "bbox": bbox, "dimensions": np.array([[h, w, n]], np.uint16),
    "nframes": np.array([[n]], np.uint8), "train": np.array([[train]], np.int32),
    "action": np.array(["jumping_jacks"]), "pose": np.array(["front"]),
  }  # fmt: skip


def make_videos(root, videos, frames_of=None):
  """``videos``: {video_id: labels}; stand-in frames at each video's size."""
  for vid, labels in videos.items():
    write_mat(root / "labels" / f"{vid:04d}.mat", labels)
    h, w, n = (int(v) for v in labels["dimensions"][0])
    for f in range(1, n + 1):
      write_jpeg(root / "frames" / f"{vid:04d}" / f"{f:06d}.jpg", h, w, value=f)


def _check_video(examples, labels, vid):
  n = labels["x"].shape[0]
  assert len(examples) == n
  bbox = labels["bbox"]
  if len(bbox) == n - 1:  # the release's short videos: the last frame repeats the previous row
    bbox = np.concatenate([bbox, bbox[-1:]])
  h, w = (int(v) for v in np.ravel(labels["dimensions"])[:2])
  for f, e in enumerate(examples, start=1):
    assert (int(e["video_id"]), int(e["frame"]), int(e["image_id"])) == (vid, f, vid * 10000 + f)
    assert e["image"].shape == (h, w, 3)
    xy = np.stack([labels["x"][f - 1], labels["y"][f - 1]], axis=-1) - 1
    np.testing.assert_allclose(e["keypoints"], xy, atol=1e-4)
    np.testing.assert_array_equal(e["visible"], labels["visibility"][f - 1] == 1)
    np.testing.assert_array_equal(e["labeled"], labels["visibility"][f - 1] == 1)
    np.testing.assert_allclose(e["box"], bbox[f - 1] - 1, atol=1e-4)


def test_fake_videos_splits_order_and_short_bbox(tmp_path):
  rng = np.random.default_rng(0)
  videos = {
    3: _labels(rng, 3, 24, 32, 1),
    1: _labels(rng, 2, 20, 20, -1),
    1154: _labels(rng, 4, 18, 26, -1, short_bbox=True),
  }
  root = tmp_path / "manual" / "Penn_Action"
  make_videos(root, videos)
  data_dir = tmp_path / "tfds"
  assert datasets.prepare(
    "penn_action", manual_dir=tmp_path / "manual", data_dir=data_dir, log=silent
  ) == {"penn_action": "built"}
  assert datasets.keypoint_set("penn_action", data_dir) is keypoint_sets.PENN_ACTION
  train = list(datasets.data_source("penn_action", "train", data_dir))
  test = list(datasets.data_source("penn_action", "test", data_dir))
  _check_video(train, videos[3], 3)
  assert len(test) == 6
  _check_video(test[:2], videos[1], 1)  # video then frame order
  _check_video(test[2:], videos[1154], 1154)
  np.testing.assert_array_equal(test[-1]["box"], test[-2]["box"])


@pytest.mark.slow
def test_real_label_files_with_stand_in_frames(tmp_path_factory):
  labels_dir = sample("penn_action", "labels")
  tmp = tmp_path_factory.mktemp("penn")
  root = tmp / "manual" / "Penn_Action"
  (root / "labels").mkdir(parents=True)
  mats = {}
  for path in sorted(labels_dir.glob("*.mat")):
    shutil.copy(path, root / "labels" / path.name)
    mats[int(path.stem)] = scipy.io.loadmat(path)
    h, w, n = (int(v) for v in mats[int(path.stem)]["dimensions"][0])
    for f in range(1, n + 1):
      write_jpeg(root / "frames" / path.stem / f"{f:06d}.jpg", h, w)
  assert len(mats[1154]["bbox"]) == len(mats[1154]["x"]) - 1  # the sample's short video
  datasets.prepare("penn_action", manual_dir=tmp / "manual", data_dir=tmp / "tfds", log=silent)
  for split, flag in (("train", 1), ("test", -1)):
    source = list(datasets.data_source("penn_action", split, tmp / "tfds"))
    vids = sorted(v for v, m in mats.items() if int(m["train"][0, 0]) == flag)
    assert len(source) == sum(len(mats[v]["x"]) for v in vids)
    start = 0
    for vid in vids:
      n = len(mats[vid]["x"])
      _check_video(source[start : start + n], mats[vid], vid)
      start += n


def _error(tmp_path) -> str:
  with pytest.raises(datasets.DatasetError) as info:
    datasets.prepare(
      "penn_action", manual_dir=tmp_path / "manual", data_dir=tmp_path / "tfds", log=silent
    )
  assert not datasets.is_prepared("penn_action", tmp_path / "tfds")
  return str(info.value)


def test_errors_name_the_file_and_fault(tmp_path):
  rng = np.random.default_rng(1)
  root = tmp_path / "manual" / "Penn_Action"
  labels = _labels(rng, 2, 16, 20, 1)
  make_videos(root, {7: labels})
  write_jpeg(root / "frames" / "0007" / "000002.jpg", 16, 21)
  msg = _error(tmp_path)
  assert (
    f"{root / 'frames' / '0007' / '000002.jpg'}: image is 21x16 (WxH) but its annotation says 20x16"
    in msg
  )
  write_jpeg(root / "frames" / "0007" / "000002.jpg", 16, 20)
  write_mat(
    root / "labels" / "0007.mat", {**labels, "bbox": labels["bbox"][:1]}
  )  # not 1154 or 1865
  assert "0007.mat: 'bbox' has 1 rows for 2 frames" in _error(tmp_path)
  write_mat(root / "labels" / "0007.mat", {**labels, "x": labels["x"][:, :12]})
  assert "0007.mat: 'x': has shape (2, 12), expected (2, 13)" in _error(tmp_path)
  write_mat(root / "labels" / "0007.mat", {k: v for k, v in labels.items() if k != "visibility"})
  assert "0007.mat: has no variable 'visibility'" in _error(tmp_path)
  write_mat(root / "labels" / "0007.mat", labels)
  (root / "frames" / "0007" / "000002.jpg").unlink()
  assert f"{root / 'frames' / '0007'}: 1 frames, {root / 'labels' / '0007.mat'} labels 2" in _error(
    tmp_path
  )


def test_missing_dataset_says_what_to_get_and_where(tmp_path):
  lines = []
  assert datasets.prepare(
    "penn_action", manual_dir=tmp_path, data_dir=tmp_path / "tfds", log=lines.append
  ) == {"penn_action": "missing"}
  assert str(tmp_path / "Penn_Action" / "labels") in lines[0] and "Penn_Action.tar.gz" in lines[0]
