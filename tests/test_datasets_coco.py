"""The ``coco`` and ``coco_format/NAME`` builders and COCO's frame: the real samples
(``samples/coco``: 4 val2017 images, 14 annotations) and tiny COCO-format files made here."""

from __future__ import annotations

import json
import pickle

import numpy as np
import PIL.Image
import pytest
from pose_samples import sample, silent, write_jpeg, write_json

from unipose_jax import coco_frame, datasets, keypoint_sets


def test_coco_frame_hand_worked_and_round_trip():
  # A box from x = 10 (left edge of pixel 10) spanning 4 pixels covers pixel centres 10..13:
  # in the project's frame its edges are 9.5 and 13.5.
  np.testing.assert_array_equal(coco_frame.box_from_coco([10, 20, 4, 2]), [9.5, 19.5, 13.5, 21.5])
  np.testing.assert_array_equal(coco_frame.box_to_coco([9.5, 19.5, 13.5, 21.5]), [10, 20, 4, 2])
  rng = np.random.default_rng(0)
  boxes = rng.uniform(0, 500, size=(7, 4))
  np.testing.assert_allclose(
    coco_frame.box_to_coco(coco_frame.box_from_coco(boxes)), boxes, atol=1e-3
  )
  xy = rng.uniform(0, 640, size=(3, 17, 2))
  np.testing.assert_array_equal(coco_frame.keypoints_from_coco(xy), xy.astype(np.float32))
  np.testing.assert_allclose(
    coco_frame.keypoints_to_coco(coco_frame.keypoints_from_coco(xy)), xy, atol=1e-4
  )
  assert coco_frame.keypoints_from_coco(xy).shape == (3, 17, 2)


@pytest.fixture(scope="module")
def coco_built(tmp_path_factory):
  """``coco`` built from the real sample (test_coco.json as both splits' file)."""
  coco_dir = sample("coco")
  tmp = tmp_path_factory.mktemp("coco")
  root = tmp / "manual" / "coco"
  (root / "annotations").mkdir(parents=True)
  for split in ("train", "val"):
    (root / "annotations" / f"person_keypoints_{split}2017.json").write_bytes(
      (coco_dir / "test_coco.json").read_bytes()
    )
    (root / f"{split}2017").symlink_to(coco_dir)
  assert datasets.prepare("coco", manual_dir=tmp / "manual", data_dir=tmp / "tfds", log=silent) == {
    "coco": "built"
  }
  return tmp / "tfds", json.loads((coco_dir / "test_coco.json").read_text()), coco_dir


def test_real_sample_examples_against_the_json(coco_built):
  data_dir, gt, coco_dir = coco_built
  assert datasets.keypoint_set("coco", data_dir) is keypoint_sets.COCO
  expected = [
    (im, a)
    for im in gt["images"]
    for a in gt["annotations"]
    if a["image_id"] == im["id"] and not a["iscrowd"] and any(v > 0 for v in a["keypoints"][2::3])
  ]
  assert len(expected) == 12  # 14 annotations, 2 without a labeled keypoint
  for split in ("train", "validation"):
    source = datasets.data_source("coco", split, data_dir)
    assert len(source) == len(expected)
  for example, (im, a) in zip(source, expected):
    kps = np.asarray(a["keypoints"], float).reshape(17, 3)
    assert example["keypoints"].shape == (17, 2)
    np.testing.assert_array_equal(example["keypoints"], kps[:, :2])  # pixel indices: unchanged
    np.testing.assert_array_equal(example["visible"], kps[:, 2] == 2)
    np.testing.assert_array_equal(example["labeled"], kps[:, 2] > 0)
    x, y, w, h = a["bbox"]
    np.testing.assert_allclose(
      example["box"], [x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5], atol=1e-4
    )
    assert example["annotation_id"] == a["id"] and example["annotation_id"].dtype == np.int64
    assert example["area"] == np.float32(a["area"])  # OKS's scale, as the file has it
    assert example["image_id"] == im["id"]
    assert example["image"].shape == (im["height"], im["width"], 3)
  with PIL.Image.open(coco_dir / expected[0][0]["file_name"]) as real:
    first = np.asarray(real.convert("RGB")).astype(int)
  assert np.abs(source[0]["image"].astype(int) - first).mean() < 2  # the sample's own bytes


def _format_files(root, *, names=("left_paw", "right_paw", "snout"), size=(40, 50)):
  """val.json only: 2 images; annotations: a person with 2 labeled joints, a crowd, one
  with none labeled, one on the second image."""
  images = [
    {"id": 7, "file_name": "a/one.jpg", "height": size[0], "width": size[1]},
    {"id": 9, "file_name": "two.jpg", "height": 30, "width": 30},
  ]
  for im in images:
    write_jpeg(root / "images" / im["file_name"], im["height"], im["width"])
  anns = [
    {
      "id": 101,
      "image_id": 7,
      "category_id": 3,
      "iscrowd": 0,
      "bbox": [1, 2, 30, 20],
      "keypoints": [5, 6, 2, 7, 8, 1, 0, 0, 0],
    },
    {
      "id": 102,
      "image_id": 7,
      "category_id": 3,
      "iscrowd": 1,
      "bbox": [0, 0, 9, 9],
      "keypoints": [5, 6, 2, 0, 0, 0, 0, 0, 0],
    },
    {
      "id": 103,
      "image_id": 9,
      "category_id": 3,
      "iscrowd": 0,
      "bbox": [0, 0, 9, 9],
      "keypoints": [0] * 9,
    },
    {
      "id": 104,
      "image_id": 9,
      "category_id": 3,
      "iscrowd": 0,
      "bbox": [3, 3, 10, 12],
      "keypoints": [4, 4, 1, 9, 9, 2, 6, 3, 2],
    },
  ]
  cats = [{"id": 3, "name": "dog", "keypoints": list(names), "skeleton": [[1, 3], [2, 3]]}]
  data = {"images": images, "annotations": anns, "categories": cats}
  write_json(root / "annotations" / "val.json", data)
  return data


def test_coco_format_dataset_and_its_stored_keypoint_set(tmp_path):
  data = _format_files(tmp_path / "manual" / "dogs")
  data_dir = tmp_path / "tfds"
  assert not datasets.is_prepared("coco_format/dogs", data_dir)
  with pytest.raises(datasets.DatasetError, match="not prepared"):
    datasets.keypoint_set("coco_format/dogs", data_dir)
  assert datasets.prepare(
    "coco_format/dogs", manual_dir=tmp_path / "manual", data_dir=data_dir, log=silent
  ) == {"coco_format/dogs": "built"}
  assert (data_dir / "coco_format" / "dogs" / "keypoint_set.json").is_file()
  ks = datasets.keypoint_set("coco_format/dogs", data_dir)
  assert ks == keypoint_sets.from_coco_categories(data["categories"], "dogs")
  assert ks.joint_names == ("left_paw", "right_paw", "snout") and ks.flip_pairs == ((0, 1),)
  assert ks.limbs == ((0, 2), (1, 2))
  source = datasets.data_source("coco_format/dogs", "validation", data_dir)
  assert len(source) == 2
  assert [int(e["annotation_id"]) for e in source] == [101, 104]
  # A file without 'area' (as these): the box's w * h.
  boxes = {a["id"]: a["bbox"] for a in data["annotations"]}
  assert [float(e["area"]) for e in source] == [boxes[i][2] * boxes[i][3] for i in (101, 104)]
  first, second = source[0], source[1]
  assert first["keypoints"].shape == (3, 2) and first["image"].shape == (40, 50, 3)
  np.testing.assert_array_equal(first["keypoints"], [[5, 6], [7, 8], [0, 0]])
  np.testing.assert_array_equal(first["visible"], [True, False, False])
  np.testing.assert_array_equal(first["labeled"], [True, True, False])
  np.testing.assert_allclose(second["box"], [2.5, 2.5, 12.5, 14.5])
  assert second["image_id"] == 9
  again = pickle.loads(pickle.dumps(source))  # for grain's worker processes
  np.testing.assert_array_equal(again[1]["keypoints"], second["keypoints"])
  with pytest.raises(datasets.DatasetError, match="no split 'train'"):
    datasets.data_source("coco_format/dogs", "train", data_dir)
  # Prepared again: reused, the raw files no longer needed.
  (tmp_path / "manual" / "dogs" / "annotations" / "val.json").unlink()
  assert datasets.prepare(
    "coco_format/dogs", manual_dir=tmp_path / "manual", data_dir=data_dir, log=silent
  ) == {"coco_format/dogs": "exists"}


def _error(tmp_path, name="coco_format/dogs") -> str:
  with pytest.raises(datasets.DatasetError) as info:
    datasets.prepare(name, manual_dir=tmp_path / "manual", data_dir=tmp_path / "tfds", log=silent)
  assert not datasets.is_prepared(name, tmp_path / "tfds")
  return str(info.value)


def test_errors_name_the_file_and_fault(tmp_path):
  root = tmp_path / "manual" / "dogs"
  data = _format_files(root, size=(41, 50))
  write_jpeg(root / "images" / "a" / "one.jpg", 40, 50)  # the annotation says 41 high
  msg = _error(tmp_path)
  assert (
    f"{root / 'images' / 'a' / 'one.jpg'}: image is 50x40 (WxH) but its annotation says 50x41"
    in msg
  )
  data["images"][0]["height"] = 40
  data["annotations"][0]["keypoints"] = [1, 2, 2]
  write_json(root / "annotations" / "val.json", data)
  assert "val.json annotation 0 (id 101) 'keypoints': has shape (3,), expected (9,)" in _error(
    tmp_path
  )
  data["annotations"][0]["keypoints"] = [5, 6, 2, 7, 8, 1, 0, 0, 0]
  data["annotations"][3]["image_id"] = 99
  write_json(root / "annotations" / "val.json", data)
  assert "val.json: annotations refer to image_id 99, which 'images' lacks" in _error(tmp_path)
  data["annotations"][3]["image_id"] = 9
  del data["annotations"][3]["bbox"]
  write_json(root / "annotations" / "val.json", data)
  assert "val.json annotation 3: has no field 'bbox'" in _error(tmp_path)
  data["annotations"][3]["bbox"] = [3, 3, 10, 12]
  (root / "images" / "two.jpg").unlink()
  write_json(root / "annotations" / "val.json", data)
  assert "two.jpg: image file is missing" in _error(tmp_path)
  data["categories"][0]["keypoints"] = []
  write_json(root / "annotations" / "val.json", data)
  assert "val.json: no category with 'keypoints'" in _error(tmp_path)


def test_missing_and_unknown(tmp_path):
  lines = []
  statuses = datasets.prepare(
    ["coco", "coco_format/none"], manual_dir=tmp_path, data_dir=tmp_path / "tfds", log=lines.append
  )
  assert statuses == {"coco": "missing", "coco_format/none": "missing"}
  assert "person_keypoints_train2017.json not found" in lines[0] and "cocodataset.org" in lines[0]
  assert str(tmp_path / "none" / "annotations" / "train.json") in lines[1]
  with pytest.raises(
    datasets.DatasetError, match=r"unknown dataset 'coco_format/a b' \(NAME: .*known: lsp"
  ):
    datasets.prepare("coco_format/a b", manual_dir=tmp_path, data_dir=tmp_path / "tfds")


def test_train_and_val_with_different_keypoints_are_refused(tmp_path):
  root = tmp_path / "manual" / "dogs"
  data = _format_files(root)
  data["categories"][0]["keypoints"] = ["a", "b", "c"]
  write_json(root / "annotations" / "train.json", data)
  msg = _error(tmp_path)
  assert "train.json" in msg and "val.json" in msg and "different keypoint sets" in msg
  assert not (tmp_path / "tfds" / "coco_format" / "dogs" / "keypoint_set.json").exists()
