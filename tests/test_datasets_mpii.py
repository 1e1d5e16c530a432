"""The ``mpii`` builder: tiny files in the converted format made here, and the real
samples (``samples/mpii``: 5 validation persons, their JPEGs and ``mpii_gt_val.mat``)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy.io
from pose_samples import sample, silent, write_jpeg, write_json, write_mat

from unipose_jax import datasets, keypoint_sets

K = 16


def _person(rng, image, missing=()):
  joints = rng.uniform(5, 60, size=(K, 2)).round(2)
  vis = np.ones(K, int)
  for k in missing:
    joints[k] = -1.0
    vis[k] = 0
  return {
    "image": image,
    "joints": joints.tolist(),
    "joints_vis": vis.tolist(),
    "center": rng.uniform(20, 40, size=2).round(1).tolist(),
    "scale": float(rng.uniform(0.2, 0.5)),
  }


def _gt(persons, rng):
  n = len(persons)
  pos = np.zeros((K, 2, n))
  missing = np.zeros((K, n), np.uint8)
  heads = np.zeros((2, 2, n))
  for i, p in enumerate(persons):
    vis = np.asarray(p["joints_vis"])
    pos[:, :, i] = np.where(vis[:, None] > 0, np.asarray(p["joints"]), 0.0)
    missing[:, i] = vis == 0
    x1, y1 = rng.uniform(5, 20, size=2)
    heads[:, :, i] = [[x1, y1], [x1 + 9, y1 + 11]]
  return {"jnt_missing": missing, "pos_gt_src": pos, "headboxes_src": heads}


def make_fake(manual, rng=None):
  """3 train persons (2 images), 3 validation persons (2 images), some joints missing."""
  rng = rng or np.random.default_rng(0)
  root = manual / "mpii"
  train = [
    _person(rng, "000000001.jpg"),
    _person(rng, "000000001.jpg", (3,)),
    _person(rng, "000000002.jpg"),
  ]
  val = [
    _person(rng, "000000010.jpg", (0, 5)),
    _person(rng, "000000011.jpg"),
    _person(rng, "000000010.jpg"),
  ]
  for name, (h, w) in {
    "000000001.jpg": (64, 80),
    "000000002.jpg": (70, 66),
    "000000010.jpg": (72, 72),
    "000000011.jpg": (66, 90),
  }.items():
    write_jpeg(root / "images" / name, h, w)
  gt = _gt(val, rng)
  write_json(root / "annotations" / "mpii_train.json", train)
  write_json(root / "annotations" / "mpii_val.json", val)
  write_mat(root / "annotations" / "mpii_gt_val.mat", gt)
  return train, val, gt


def test_fake_mpii_against_its_files(tmp_path):
  train, val, gt = make_fake(tmp_path / "manual")
  data_dir = tmp_path / "tfds"
  assert datasets.prepare(
    "mpii", manual_dir=tmp_path / "manual", data_dir=data_dir, log=silent
  ) == {"mpii": "built"}
  assert datasets.keypoint_set("mpii", data_dir) is keypoint_sets.MPII
  source = datasets.data_source("mpii", "train", data_dir)
  assert len(source) == 3
  for example, person in zip(source, train):
    vis = np.asarray(person["joints_vis"]) > 0
    assert example["keypoints"].shape == (K, 2) and example["keypoints"].dtype == np.float32
    np.testing.assert_allclose(example["keypoints"], np.asarray(person["joints"]) - 1, atol=1e-4)
    np.testing.assert_array_equal(example["labeled"], vis)
    np.testing.assert_array_equal(example["visible"], vis)
    assert example["image_id"] == int(person["image"][:-4])
    assert np.isnan(example["head_box"]).all() and example["head_box"].shape == (4,)
    np.testing.assert_allclose(example["center"], np.asarray(person["center"]) - 1, atol=1e-4)
    assert example["scale"] == pytest.approx(person["scale"], rel=1e-6)
    kp = np.asarray(person["joints"])[vis] - 1
    np.testing.assert_allclose(example["box"], [*kp.min(0), *kp.max(0)], atol=1e-4)
  assert source[0]["image"].shape == (64, 80, 3) and source[2]["image"].shape == (70, 66, 3)
  assert not source[1]["labeled"][3]
  val_source = datasets.data_source("mpii", "validation", data_dir)
  assert len(val_source) == 3
  for i, example in enumerate(val_source):  # mpii_gt_val.mat's order and values
    np.testing.assert_allclose(example["keypoints"], gt["pos_gt_src"][:, :, i] - 1, atol=1e-4)
    np.testing.assert_array_equal(example["labeled"], gt["jnt_missing"][:, i] == 0)
    np.testing.assert_allclose(
      example["head_box"], gt["headboxes_src"][:, :, i].reshape(4) - 1, atol=1e-4
    )
    assert example["image_id"] == int(val[i]["image"][:-4])
  np.testing.assert_array_equal(
    val_source[0]["keypoints"][[0, 5]], [[-1, -1], [-1, -1]]
  )  # 0 - 1, unlabeled


def test_real_sample_validation_matches_gt_valid_mat(tmp_path):
  mpii_dir = sample("mpii")
  root = tmp_path / "manual" / "mpii"
  (root / "annotations").mkdir(parents=True)
  (root / "images").symlink_to(mpii_dir)
  for name in ("mpii_train.json", "mpii_val.json"):
    shutil.copy(mpii_dir / "test_mpii.json", root / "annotations" / name)
  shutil.copy(mpii_dir / "mpii_gt_val.mat", root / "annotations" / "mpii_gt_val.mat")
  data_dir = tmp_path / "tfds"
  datasets.prepare("mpii", manual_dir=tmp_path / "manual", data_dir=data_dir, log=silent)
  mat = scipy.io.loadmat(mpii_dir / "mpii_gt_val.mat")
  names = [str(n[0]) for n in mat["dataset_joints"][0]]
  assert len(names) == len(keypoint_sets.MPII.joint_names) == K
  entries = json.loads((mpii_dir / "test_mpii.json").read_text())
  source = datasets.data_source("mpii", "validation", data_dir)
  n = mat["pos_gt_src"].shape[2]
  assert len(source) == n == len(entries) == 5
  for i, example in enumerate(source):
    labeled = mat["jnt_missing"][:, i] == 0
    np.testing.assert_array_equal(example["labeled"], labeled)
    np.testing.assert_allclose(
      example["keypoints"][labeled], mat["pos_gt_src"][labeled, :, i] - 1, atol=1e-4
    )
    hb = mat["headboxes_src"][:, :, i]
    np.testing.assert_allclose(
      example["head_box"], [hb[0, 0] - 1, hb[0, 1] - 1, hb[1, 0] - 1, hb[1, 1] - 1], atol=1e-4
    )
    assert example["image_id"] == int(entries[i]["image"].split(".")[0])
    import PIL.Image

    with PIL.Image.open(mpii_dir / entries[i]["image"]) as im:
      assert example["image"].shape == (im.height, im.width, 3)
  assert (~source[2]["labeled"]).sum() == 2  # the sample's missing ankles
  train = datasets.data_source("mpii", "train", data_dir)
  np.testing.assert_allclose(train[0]["keypoints"], np.asarray(entries[0]["joints"]) - 1, atol=1e-4)


def _prepare_error(manual, tmp_path) -> str:
  with pytest.raises(datasets.DatasetError) as info:
    datasets.prepare("mpii", manual_dir=manual, data_dir=tmp_path / "tfds", log=silent)
  assert not datasets.is_prepared("mpii", tmp_path / "tfds")
  msg = str(info.value)
  assert "Traceback" not in msg
  return msg


def test_missing_dataset_says_what_to_get_and_where(tmp_path):
  lines = []
  assert datasets.prepare(
    "mpii", manual_dir=tmp_path, data_dir=tmp_path / "tfds", log=lines.append
  ) == {"mpii": "missing"}
  assert len(lines) == 1
  line = lines[0]
  assert str(tmp_path / "mpii" / "images") in line and "mpii_gt_val.mat" in line
  assert "human-pose.mpi-inf.mpg.de" in line and str(tmp_path / "mpii" / "annotations") in line


def test_errors_name_the_file_and_fault(tmp_path):
  manual = tmp_path / "m1"
  make_fake(manual)
  ann = manual / "mpii" / "annotations"
  val = json.loads((ann / "mpii_val.json").read_text())
  write_json(ann / "mpii_val.json", [val[1], val[0], val[2]])  # not the .mat's order
  msg = _prepare_error(manual, tmp_path)
  assert "mpii_val.json entry 0 (000000011.jpg) is not person 0" in msg and "mpii_gt_val.mat" in msg
  write_json(ann / "mpii_val.json", val[:2])
  assert "2 persons, but" in _prepare_error(manual, tmp_path)
  write_json(ann / "mpii_val.json", val)
  train = json.loads((ann / "mpii_train.json").read_text())
  train[1]["joints"] = train[1]["joints"][:15]
  write_json(ann / "mpii_train.json", train)
  msg = _prepare_error(manual, tmp_path)
  assert "mpii_train.json entry 1 'joints': has shape (15, 2), expected (16, 2)" in msg
  del train[1]["joints"]
  write_json(ann / "mpii_train.json", train)
  assert "mpii_train.json entry 1: has no field 'joints'" in _prepare_error(manual, tmp_path)

  manual = tmp_path / "m2"
  make_fake(manual)
  ann = manual / "mpii" / "annotations"
  gt = scipy.io.loadmat(ann / "mpii_gt_val.mat")
  joints = np.array(
    [[np.array([n])] for n in ("rank", "lank", *[f"x{i}" for i in range(14)])], object
  ).T
  write_mat(
    ann / "mpii_gt_val.mat",
    {
      **{k: gt[k] for k in ("jnt_missing", "pos_gt_src", "headboxes_src")},
      "dataset_joints": joints,
    },
  )
  assert "mpii_gt_val.mat: 'dataset_joints' is ['rank', 'lank', 'x0'" in _prepare_error(
    manual, tmp_path
  )
  write_mat(ann / "mpii_gt_val.mat", {"jnt_missing": np.zeros((16, 3))})
  assert "mpii_gt_val.mat: has no variable 'pos_gt_src'" in _prepare_error(manual, tmp_path)
  (ann / "mpii_gt_val.mat").write_bytes(b"not matlab")
  assert "mpii_gt_val.mat: not a readable MATLAB" in _prepare_error(manual, tmp_path)
  (ann / "mpii_train.json").write_text("[{")
  assert "mpii_train.json: not a readable JSON" in _prepare_error(manual, tmp_path)

  manual = tmp_path / "m3"
  make_fake(manual)
  (manual / "mpii" / "images" / "000000002.jpg").unlink()
  msg = _prepare_error(manual, tmp_path)
  assert "000000002.jpg: image file is missing" in msg
