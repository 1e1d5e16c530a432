"""metrics.protocols: the protocol of each keypoint set, its sums inside jit (invalid rows
add nothing), its keys with the best-metric alias, and COCO's ground truth rebuilt from
examples."""

import json

import jax
import numpy as np
import pytest
from conftest import lsp_archive_dir

from unipose_jax import coco_frame, keypoint_sets, transforms
from unipose_jax.metrics import coco_eval, pckh, penn, protocols


def test_protocol_of_each_set():
  assert protocols.protocol_of(keypoint_sets.LSP) == "lsp"
  assert protocols.protocol_of(keypoint_sets.MPII) == "mpii"
  assert protocols.protocol_of(keypoint_sets.PENN_ACTION) == "penn_action"
  assert protocols.protocol_of(keypoint_sets.COCO) == "coco"
  custom = keypoint_sets.from_coco_categories([{"keypoints": ["a", "b"], "skeleton": []}], "x")
  assert protocols.protocol_of(custom) == "coco"
  assert protocols.batch_keys(keypoint_sets.MPII) == ("head_box",)
  assert protocols.batch_keys(keypoint_sets.PENN_ACTION) == ("box", "visible")
  assert protocols.batch_keys(keypoint_sets.LSP) == ()
  # Every set's best metric is a key its protocol produces.
  for kset in (keypoint_sets.MPII, keypoint_sets.PENN_ACTION):
    c = protocols.protocol_counts(kset, *_batch(kset, np.random.default_rng(0)))
    assert kset.best_metric in protocols.protocol_summary(kset, c)
  assert keypoint_sets.COCO.best_metric in coco_eval.COCO_KEYS


def _batch(kset, rng, b=6):
  k = kset.num_joints
  gt = rng.uniform(0, 100, (b, k, 2)).astype(np.float32)
  pred = gt + rng.normal(scale=4.0, size=gt.shape).astype(np.float32)
  corner = rng.uniform(0, 50, (b, 2))
  box = np.concatenate([corner, corner + rng.uniform(10, 60, (b, 2))], 1).astype(np.float32)
  batch = {
    "keypoints_orig": gt,
    "labeled": rng.random((b, k)) < 0.9,
    "visible": rng.random((b, k)) < 0.7,
    "valid": np.array([True] * (b - 2) + [False] * 2),
    "head_box": box,
    "box": box,
  }
  return pred, batch


@pytest.mark.parametrize("kset", [keypoint_sets.MPII, keypoint_sets.PENN_ACTION])
def test_counts_in_jit_match_the_protocol_functions(kset):
  pred, batch = _batch(kset, np.random.default_rng(1))
  got = jax.jit(lambda p, bt: protocols.protocol_counts(kset, p, bt))(pred, batch)
  v = batch["valid"]
  if kset is keypoint_sets.MPII:
    want = pckh.mpii_counts(
      pred[v], batch["keypoints_orig"][v], batch["labeled"][v], batch["box"][v]
    )
  else:
    want = penn.penn_counts(
      pred[v], batch["keypoints_orig"][v], batch["visible"][v], batch["box"][v]
    )
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
  s = protocols.protocol_summary(kset, got)
  assert s[kset.best_metric] == s["Mean"]


def test_lsp_and_coco_have_no_in_loop_sums():
  pred, batch = _batch(keypoint_sets.LSP, np.random.default_rng(2))
  assert protocols.protocol_counts(keypoint_sets.LSP, pred, batch) == {}
  assert protocols.protocol_summary(keypoint_sets.COCO, {}) == {}


def test_coco_ground_truth_from_examples_scores_like_the_file():
  path = lsp_archive_dir() / "samples" / "coco" / "test_coco.json"
  if not path.is_file():
    pytest.skip(f"real COCO sample absent ({path}; set UNIPOSE_LSP_DIR)")
  data = json.loads(path.read_text())
  anns = [a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
  kp = np.array([a["keypoints"] for a in anns], float).reshape(-1, 17, 3)
  xy = coco_frame.keypoints_from_coco(kp[..., :2])
  boxes = coco_frame.box_from_coco([a["bbox"] for a in anns])
  gt = protocols.coco_ground_truth(
    keypoint_sets.COCO, [a["image_id"] for a in anns], [a["id"] for a in anns], xy,
    kp[..., 2] > 0, kp[..., 2] == 2, boxes, [a["area"] for a in anns],
  )  # fmt: skip
  # The rebuilt annotations hold the file's keypoints, flags, boxes and areas.
  for a, b in zip(anns, gt["annotations"]):
    assert b["keypoints"] == pytest.approx(a["keypoints"]) and b["area"] == a["area"]
    assert b["bbox"] == pytest.approx(a["bbox"]) and b["num_keypoints"] == a["num_keypoints"]
  rng = np.random.default_rng(3)
  noisy = xy + rng.normal(scale=4.0, size=xy.shape)
  scores = rng.uniform(0.1, 1.0, xy.shape[:2])
  areas = [a["bbox"][2] * a["bbox"][3] for a in anns]
  ids = [a["image_id"] for a in anns]
  ours, results = protocols.coco_summary(keypoint_sets.COCO, gt, ids, noisy, scores, areas)
  assert ours == coco_eval.evaluate(str(path), results)
  assert 0 < ours["AP"] < 1


def test_eval_records_carry_the_protocol_fields():
  """MPII's head box, the person box, COCO's area and annotation id reach the evaluation
  batch as the record holds them (original pixels); a record without them adds none."""
  rng = np.random.default_rng(4)
  record = {
    "image": rng.integers(0, 255, (30, 40, 3), dtype=np.uint8),
    "keypoints": rng.uniform(0, 30, (16, 2)).astype(np.float32),
    "visible": np.ones(16, bool),
    "labeled": np.ones(16, bool),
    "image_id": np.int32(5),
  }
  plain = transforms.transform_eval(record, input_size=32)
  assert not set(transforms.PROTOCOL_FIELDS) & set(plain)
  extra = {
    "head_box": np.array([1.5, 2, 9, 12.25], np.float32),
    "box": np.array([0, 1, 30, 29], np.float32),
    "area": np.float32(412.5),
    "annotation_id": np.int64(900100581904),
  }
  out = transforms.transform_eval({**record, **extra}, input_size=32)
  for key, value in extra.items():
    np.testing.assert_array_equal(out[key], value)
    assert out[key].dtype == value.dtype


def test_coco_collector_over_batches_equals_one_evaluation():
  path = lsp_archive_dir() / "samples" / "coco" / "test_coco.json"
  if not path.is_file():
    pytest.skip(f"real COCO sample absent ({path}; set UNIPOSE_LSP_DIR)")
  data = json.loads(path.read_text())
  anns = [a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
  kp = np.array([a["keypoints"] for a in anns], float).reshape(-1, 17, 3)
  xy = coco_frame.keypoints_from_coco(kp[..., :2])
  rng = np.random.default_rng(5)
  poses = {"dark": xy + rng.normal(scale=3.0, size=xy.shape), "argmax": xy.copy()}
  scores = rng.uniform(0.1, 1.0, xy.shape[:2])
  boxes = coco_frame.box_from_coco([a["bbox"] for a in anns])
  collector = protocols.CocoCollector(keypoint_sets.COCO, ["dark", "argmax"])
  n = len(anns)
  for lo in range(0, n + 4, 5):  # batches of 5, the last padded with invalid rows
    idx = np.arange(lo, lo + 5) % n
    valid = np.arange(lo, lo + 5) < n
    batch = {
      "valid": valid, "image_id": np.array([anns[i]["image_id"] for i in idx]),
      "annotation_id": np.array([anns[i]["id"] for i in idx], np.int64),
      "keypoints_orig": xy[idx], "labeled": kp[idx, :, 2] > 0, "visible": kp[idx, :, 2] == 2,
      "box": boxes[idx], "area": np.array([anns[i]["area"] for i in idx]),
    }  # fmt: skip
    collector.add(batch, {d: (p[idx], scores[idx]) for d, p in poses.items()})
  summary, results = collector.summaries()
  assert summary["argmax"]["AP"] == 1.0  # the ground truth itself
  assert len(results["dark"]) == n
  # The same as the release's file scoring the same results list.
  for d in poses:
    assert summary[d] == coco_eval.evaluate(str(path), results[d])
  assert collector.summaries(str(path))[0] == summary
