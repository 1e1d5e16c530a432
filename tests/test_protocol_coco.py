"""COCO OKS AP: a hand-worked OKS, rescoring and OKS-NMS by hand, the wrapper against
pycocotools' COCOeval run directly on the same JSON, and the real samples (GT boxes and the
detections file)."""

import contextlib
import io
import json

import numpy as np
import pytest
from conftest import lsp_archive_dir

from unipose_jax import coco_frame, keypoint_sets
from unipose_jax.metrics import coco_eval

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

SIGMAS = np.asarray(keypoint_sets.COCO.sigmas)


def _samples():
  folder = lsp_archive_dir() / "samples" / "coco"
  if not (folder / "test_coco.json").is_file():
    pytest.skip(f"real COCO sample absent ({folder}; set UNIPOSE_LSP_DIR)")
  return folder


def _one_person(area=10000.0):
  """One image, one person: 10 labeled joints, 7 unlabeled."""
  gt = np.arange(17 * 2, dtype=np.float64).reshape(17, 2) * 3 + 50
  v = np.array([2] * 10 + [0] * 7)
  ann = {
    "id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": area,
    "bbox": [40.0, 40.0, 100.0, 100.0], "num_keypoints": 10,
    "keypoints": [float(x) for x in np.concatenate([gt, v[:, None]], 1).ravel()],
  }  # fmt: skip
  data = {
    "images": [{"id": 7, "width": 300, "height": 300, "file_name": "a.jpg"}],
    "annotations": [ann],
    "categories": [{"id": 1, "name": "person", "keypoints": list(keypoint_sets.COCO.joint_names),
                    "skeleton": []}],
  }  # fmt: skip
  return data, gt, v > 0


def _direct_cocoeval(data, results, sigmas=None):
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO()
    gt.dataset = json.loads(json.dumps(data))
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(results))), "keypoints")
    if sigmas is not None:
      ev.params.kpt_oks_sigmas = np.asarray(sigmas)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  return ev


def test_hand_worked_oks_matches_cocoeval():
  data, gt, labeled = _one_person(area=10000.0)  # s = 100
  pred = gt.copy()
  # d = 200 sigma: d^2 / (2 s^2 (2 sigma)^2) = 0.5, so the joint's term is exp(-0.5).
  pred[:5, 0] += 200 * SIGMAS[:5]
  pred[10:] += 1000.0  # unlabeled joints: anywhere
  expected = (5 * np.exp(-0.5) + 5 * 1.0) / 10
  assert coco_eval.oks(pred, gt, labeled, 10000.0, SIGMAS) == pytest.approx(expected, rel=1e-12)
  res = coco_eval.person_results([7], pred[None], np.ones((1, 17)), [1.0], [1e4], SIGMAS)
  ev = _direct_cocoeval(data, res)
  assert ev.ious[(7, 1)][0, 0] == pytest.approx(expected, rel=1e-12)
  # OKS 0.803: a true positive at 0.5 ... 0.80, a miss at 0.85, 0.90, 0.95 -> AP = 7 / 10.
  s = coco_eval.evaluate(data, res)
  assert s["AP"] == pytest.approx(0.7)
  assert s["AP .5"] == pytest.approx(1.0) and s["AP .75"] == pytest.approx(1.0)
  assert s["AR"] == pytest.approx(0.7)
  assert np.isnan(s["AP (M)"]) and s["AP (L)"] == pytest.approx(0.7)  # area 1e4 is large


def test_rescore_by_hand():
  scores = coco_eval.rescore([0.8, 0.5, 1.0], [[0.1, 0.5, 0.9], [0.1, 0.2, 0.05], [1, 1, 1]])
  np.testing.assert_allclose(scores, [0.8 * 0.7, 0.0, 1.0])  # 0.2 itself is not "above"


def test_oks_nms_by_hand():
  base = np.arange(34, dtype=float).reshape(17, 2) * 4
  kp = np.stack([base, base + 0.5, base + 60.0])  # 1 duplicates 0; 2 is another person
  keep = coco_eval.oks_nms(kp, [0.5, 0.9, 0.7], [1e4] * 3, SIGMAS)
  np.testing.assert_array_equal(keep, [1, 2])  # the better of the twins, then the other one
  # Different images never suppress each other.
  res = coco_eval.person_results([1, 2, 1], kp, np.ones((3, 17)), [0.5, 0.9, 0.7], 1e4, SIGMAS)
  assert [(r["image_id"], r["score"]) for r in res] == [(1, 0.5), (2, 0.9), (1, 0.7)]
  res = coco_eval.person_results([1, 1, 1], kp, np.ones((3, 17)), [0.5, 0.9, 0.7], 1e4, SIGMAS)
  assert [r["score"] for r in res] == [0.9, 0.7]
  assert len(res[0]["keypoints"]) == 51 and res[0]["keypoints"][2] == 1.0


def _gt_arrays(data):
  anns = [a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
  kp = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), 17, 3)
  return anns, coco_frame.keypoints_from_coco(kp[..., :2]), kp[..., 2] > 0


def test_sample_perfect_predictions_score_one_on_gt_boxes():
  folder = _samples()
  data = json.loads((folder / "test_coco.json").read_text())
  anns, gt, _ = _gt_arrays(data)
  res = coco_eval.person_results(
    [a["image_id"] for a in anns], gt, np.ones(gt.shape[:2]), np.ones(len(anns)),
    [a["bbox"][2] * a["bbox"][3] for a in anns], SIGMAS,
  )  # fmt: skip
  assert len(res) == len(anns) == 12
  s = coco_eval.evaluate(str(folder / "test_coco.json"), res)
  assert list(s) == list(coco_eval.COCO_KEYS)
  assert s["AP"] == 1.0 and s["AR"] == 1.0


def test_wrapper_equals_cocoeval_on_the_same_json(tmp_path):
  folder = _samples()
  data = json.loads((folder / "test_coco.json").read_text())
  anns, gt, _ = _gt_arrays(data)
  rng = np.random.default_rng(0)
  scale = np.sqrt([a["area"] for a in anns])[:, None, None]
  pred = gt + rng.normal(size=gt.shape) * scale * 0.05
  res = coco_eval.person_results(
    [a["image_id"] for a in anns], pred, rng.uniform(0, 1, gt.shape[:2]), np.ones(len(anns)),
    [a["bbox"][2] * a["bbox"][3] for a in anns], SIGMAS,
  )  # fmt: skip
  path = tmp_path / "results.json"
  coco_eval.write_results(str(path), res)
  ours = coco_eval.evaluate(str(folder / "test_coco.json"), str(path))
  ev = _direct_cocoeval(data, json.loads(path.read_text()))
  assert [ours[k] for k in coco_eval.COCO_KEYS] == [float(v) for v in ev.stats]
  assert 0.0 < ours["AP"] < 1.0
  # A custom set's own sigmas reach COCOeval (wider sigmas: a higher AP).
  wide = coco_eval.evaluate(str(folder / "test_coco.json"), str(path), sigmas=SIGMAS * 3)
  ev = _direct_cocoeval(data, json.loads(path.read_text()), sigmas=SIGMAS * 3)
  assert wide["AP"] == float(ev.stats[0]) and wide["AP"] > ours["AP"]


def test_detections_pipeline_rescore_nms_then_cocoeval():
  """The detections file's boxes -> a pose per box (here: the best-overlapping annotation's
  joints, or noise) -> rescoring, OKS-NMS -> COCOeval, equal to COCOeval on the same list."""
  folder = _samples()
  data = json.loads((folder / "test_coco.json").read_text())
  dets = coco_eval.load_detections(
    str(folder / "test_coco_det_AP_H_56.json"), image_ids=[i["id"] for i in data["images"]]
  )
  assert sum(len(v) for v in dets.values()) == 118
  anns, gt, _ = _gt_arrays(data)
  gt_boxes = coco_frame.box_from_coco([a["bbox"] for a in anns])
  rng = np.random.default_rng(1)
  ids, kps, kscores, bscores, areas = [], [], [], [], []
  for image, boxes in dets.items():
    for box, score in boxes:
      x1, y1 = np.maximum(box[:2], gt_boxes[:, :2]).T
      x2, y2 = np.minimum(box[2:], gt_boxes[:, 2:]).T
      inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
      union = np.prod(box[2:] - box[:2]) + np.prod(gt_boxes[:, 2:] - gt_boxes[:, :2], 1) - inter
      iou = np.where([a["image_id"] == image for a in anns], inter / union, 0)
      j = int(np.argmax(iou))
      w, h = box[2:] - box[:2]
      kp = gt[j] if iou[j] > 0.5 else box[:2] + rng.uniform(0, 1, (17, 2)) * [w, h]
      ids.append(image), kps.append(kp), bscores.append(score), areas.append(w * h)
      kscores.append(rng.uniform(0.3, 1.0, 17) if iou[j] > 0.5 else rng.uniform(0, 0.3, 17))
  res = coco_eval.person_results(ids, np.stack(kps), np.stack(kscores), bscores, areas, SIGMAS)
  assert len(res) < 118  # OKS-NMS dropped the duplicate boxes' poses
  ours = coco_eval.evaluate(str(folder / "test_coco.json"), res)
  ev = _direct_cocoeval(data, res)
  assert [ours[k] for k in coco_eval.COCO_KEYS] == [float(v) for v in ev.stats]
  assert ours["AP .5"] > 0.5


def test_bad_inputs_are_one_line_naming_the_file(tmp_path):
  data, _, _ = _one_person()
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(coco_eval.CocoInputError, match="bad.json.*not JSON"):
    coco_eval.evaluate(data, str(bad))
  with pytest.raises(coco_eval.CocoInputError, match="image_id 99"):
    coco_eval.evaluate(
      data, [{"image_id": 99, "category_id": 1, "keypoints": [0] * 51, "score": 1}]
    )
  with pytest.raises(coco_eval.CocoInputError, match="3 x 17"):
    coco_eval.evaluate(data, [{"image_id": 7, "category_id": 1, "keypoints": [0] * 6, "score": 1}])
  # No result at all: AP 0, not a pycocotools crash.
  assert coco_eval.evaluate(data, [])["AP"] == 0.0
