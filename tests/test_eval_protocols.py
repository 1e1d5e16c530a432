"""Evaluation by the keypoint set's protocol, and the top-down crops it evaluates on.

* crops: ``transforms.eval_affine`` / ``person_region`` worked by hand (MPII's HRNet box from
  ``center``/``scale``, a COCO box, the joints' fallback), the whole image unchanged for
  LSP, predictions mapped back through ``inverse_affine``; training's ``crop="box"``;
* the evaluator's per-protocol keys and numbers, with a stand-in network that predicts the
  annotation (every protocol's score is then 1) or the annotation moved by a known amount;
* MPII's flip pairs in flip augmentation.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from unipose_jax import distributed, evaluate, geometry, keypoint_sets, reports
from unipose_jax import transforms as tr
from unipose_jax.metrics import coco_eval, pckh, penn, protocols

# ----------------------------------------------------------------------------- crops


def _record(k, h=60, w=80, **extra):
  rng = np.random.default_rng(k)
  kp = np.stack([rng.uniform(10, w - 10, k), rng.uniform(10, h - 10, k)], 1).astype(np.float32)
  return {
    "image": rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
    "keypoints": kp,
    "labeled": np.ones(k, bool),
    "visible": np.ones(k, bool),
    "image_id": np.int32(3),
    **extra,
  }


def test_mpii_crop_is_hrnets_box_from_center_and_scale():
  """centre (30, 20), scale 0.2: HRNet moves the centre down 15 x 0.2 = 3 px and crops a
  square of 200 x 0.2 x 1.25 = 50 px; at a 50 px input the zoom is 1, so
  x_in = x - 30 + 24.5 and y_in = y - 23 + 24.5."""
  rec = _record(16, center=np.array([30.0, 20.0], np.float32), scale=np.float32(0.2))
  centre, extent = tr.person_region(rec, rec["keypoints"], rec["labeled"], 60, 80)
  np.testing.assert_allclose(centre, [30.0, 23.0])
  assert extent == pytest.approx(40.0)
  out = tr.transform_eval(rec, input_size=50, crop="box", margin=1.25)
  want = np.array([[1.0, 0.0, -5.5], [0.0, 1.0, 1.5]])
  np.testing.assert_allclose(out["affine"], want, atol=1e-5)
  np.testing.assert_allclose(out["keypoints"], rec["keypoints"] + [-5.5, 1.5], atol=1e-4)
  # Back to original pixels through the inverse, as the evaluator maps predictions.
  back = geometry.apply_affine_to_points(out["inverse_affine"], out["keypoints"])
  np.testing.assert_allclose(back, rec["keypoints"], atol=1e-3)


def test_a_box_crop_is_the_boxs_longer_side_times_the_margin_around_its_centre():
  """box [10, 20, 50, 100] (40 x 80): centre (30, 60), side 1.25 x 80 = 100 -> at 50 px a
  zoom of 0.5: x_in = 0.5 (x - 30) + 24.5."""
  rec = _record(17, h=120, w=90, box=np.array([10, 20, 50, 100], np.float32))
  out = tr.transform_eval(rec, input_size=50, crop="box", margin=1.25)
  np.testing.assert_allclose(out["affine"], [[0.5, 0, 9.5], [0, 0.5, -5.5]], atol=1e-6)
  # A box that is not finite falls back to the labeled joints' box.
  nan = dict(rec, box=np.full(4, np.nan, np.float32))
  centre, extent = tr.person_region(nan, rec["keypoints"], rec["labeled"], 120, 90)
  lo, hi = rec["keypoints"].min(0), rec["keypoints"].max(0)
  np.testing.assert_allclose(centre, (lo + hi) / 2, atol=1e-5)
  assert extent == pytest.approx(float(np.max(hi - lo)), abs=1e-4)


def test_the_whole_image_crop_is_lsps_letterbox_unchanged():
  rec = _record(14)
  default = tr.transform_eval(rec, input_size=32)
  whole = tr.transform_eval(dict(rec, box=np.array([0, 0, 5, 5], np.float32)), input_size=32,
                            crop="whole")  # fmt: skip
  np.testing.assert_array_equal(
    default["affine"], geometry.letterbox_affine(60, 80, 32).astype(np.float32)
  )
  for key in ("image", "affine", "inverse_affine", "keypoints"):
    np.testing.assert_array_equal(default[key], whole[key])
  with pytest.raises(ValueError, match="eval crop must be one of"):
    tr.transform_eval(rec, input_size=32, crop="person")


def test_training_crops_on_the_box_when_asked_and_on_the_joints_by_default():
  """One labeled joint (a COCO person with few joints): its extent is a point, so the
  joints' crop is the whole image; the box crop centres the box (30, 60), zoom 64 /
  (1.25 x 80)."""
  rec = _record(17, h=120, w=90, box=np.array([10, 20, 50, 100], np.float32))
  rec["labeled"] = np.eye(17, dtype=bool)[0]
  box = tr.transform_train(rec, np.random.default_rng(0), cfg=tr.NO_AUGMENT, input_size=64,
                           crop="box")  # fmt: skip
  zoom = 64 / (1.25 * 80)
  np.testing.assert_allclose(box["affine"], [[zoom, 0, 31.5 - 30 * zoom], [0, zoom, 31.5 - 60 * zoom]],
                             atol=1e-5)  # fmt: skip
  joints = tr.transform_train(rec, np.random.default_rng(0), cfg=tr.NO_AUGMENT, input_size=64)
  zoom = 64 / (1.25 * 120)  # the whole image: its longer side
  np.testing.assert_allclose(joints["affine"], [[zoom, 0, 31.5 - 44.5 * zoom],
                                                [0, zoom, 31.5 - 59.5 * zoom]], atol=1e-5)  # fmt: skip


def test_flip_augmentation_swaps_mpiis_pairs():
  """MPII: r/l ankle, knee, hip (0-5), pelvis, thorax, neck, head top (6-9) stay, r/l wrist,
  elbow, shoulder (10-15). A flipped sample's joint k is the mirror of joint perm[k]."""
  perm = [5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10]
  np.testing.assert_array_equal(keypoint_sets.MPII.flip_permutation, perm)
  rec = _record(16)
  s = 48
  plain = tr.transform_train(rec, np.random.default_rng(2), cfg=tr.NO_AUGMENT, input_size=s)
  flipped = tr.transform_train(
    rec, np.random.default_rng(2), cfg=dataclasses.replace(tr.NO_AUGMENT, flip_prob=1.0),
    input_size=s, flip_permutation=keypoint_sets.MPII.flip_permutation,
  )  # fmt: skip
  mirrored = plain["keypoints"].copy()
  mirrored[:, 0] = (s - 1) - mirrored[:, 0]
  np.testing.assert_allclose(flipped["keypoints"], mirrored[perm], atol=1e-4)


# ----------------------------------------------------------------------------- the evaluator


class Oracle:
  """A stand-in eval step: predicts the annotation plus ``shift`` (K, 2) for every person,
  score 1, and the protocol's counts as the real step computes them."""

  def __init__(self, kset, shift=None):
    self.kset = kset
    self.shift = np.zeros((kset.num_joints, 2)) if shift is None else shift

  def __call__(self, variables, batch):
    kp = batch["keypoints_orig"] + jnp.asarray(self.shift, jnp.float32)
    b, k = kp.shape[:2]
    res = {"keypoints": kp, "scores": jnp.ones((b, k)),
           "counts": protocols.protocol_counts(self.kset, kp, batch)}  # fmt: skip
    return {"heatmaps": jnp.zeros((b, 2, 2, k)), "dark": res}


def _evaluate(kset, records, shift=None, crop="box"):
  mesh = distributed.data_mesh()
  ev = evaluate.Evaluator(  # one batch of the mesh's size, padded (valid=False) past the records
    Oracle(kset, shift), records, mesh, decodings=("dark",), batch_size=mesh.devices.size,
    input_size=32, keypoint_set=kset, crop=crop,
  )  # fmt: skip
  return ev.run(None, examples=False)


def _mpii_records(n=3):
  out = []
  for i in range(n):
    rec = _record(16, center=np.array([40.0, 30.0], np.float32), scale=np.float32(0.2))
    rec["head_box"] = np.array([10, 10, 20, 20], np.float32)  # 0.6 x diagonal = 8.49 px
    rec["labeled"][7] = i == 0  # thorax missing but in one
    rec["image_id"] = np.int32(i)
    out.append(rec)
  return out


def test_mpii_keys_and_numbers():
  kset = keypoint_sets.MPII
  result = _evaluate(kset, _mpii_records())
  assert set(result.summary["dark"]) == {*pckh.MPII_KEYS, "pckh@0.5"}
  assert all(v == 1.0 for v in result.summary["dark"].values())
  # The right ankle 3 px off (<= 0.5 x 8.49, > 0.1 x 8.49), the right wrist 9 px off (> 4.24):
  shift = np.zeros((16, 2))
  shift[0, 0], shift[10, 1] = 3.0, 9.0
  s = _evaluate(kset, _mpii_records(), shift).summary["dark"]
  assert s["Ankle"] == 1.0 and s["Wrist"] == 0.5 and s["Head"] == 1.0
  # Mean: 14 joints a person (pelvis, thorax left out) x 3, the 3 wrists wrong.
  assert s["Mean"] == pytest.approx(39 / 42) and s["pckh@0.5"] == s["Mean"]
  # Mean@0.1 (0.849 px): ankle and wrist wrong in each of the 3.
  assert s["Mean@0.1"] == pytest.approx(36 / 42)


def test_penn_action_keys_and_numbers():
  kset = keypoint_sets.PENN_ACTION
  recs = []
  for i in range(3):
    rec = _record(13, box=np.array([10, 10, 40, 60], np.float32))  # normaliser 50: 10 px
    rec["visible"] = np.arange(13) != (12 if i == 0 else -1)  # frame 0's right ankle hidden
    rec["image_id"] = np.int32(i)
    recs.append(rec)
  shift = np.zeros((13, 2))
  shift[0, 0] = 11.0  # the head wrong (> 10 px), every frame
  s = _evaluate(kset, recs, shift).summary["dark"]
  assert set(s) == {*penn.PENN_KEYS, "pck@0.2"}
  # 3 x 13 joints less the hidden one counted; the 3 heads wrong.
  assert s["Head"] == 0.0 and s["Ankle"] == 1.0 and s["Mean"] == pytest.approx(35 / 38)
  assert s["pck@0.2"] == s["Mean"]


def _coco_records():
  recs = []
  for i, ann in enumerate((2**40 + 5, 7, 2**33)):  # ids beyond int32 must survive
    rec = _record(17, box=np.array([5, 5, 70, 55], np.float32))
    rec.update(image_id=np.int32(100 + i // 2), annotation_id=np.int64(ann),
               area=np.float32(65 * 50 * 0.6))  # fmt: skip
    rec["visible"][:3] = False
    rec["keypoints"] = rec["keypoints"] + np.float32(15 * i)  # two persons of image 100 apart
    recs.append(rec)
  return recs


def test_coco_keys_numbers_and_files_on_ground_truth_boxes(tmp_path):
  kset = keypoint_sets.COCO
  result = _evaluate(kset, _coco_records())
  assert list(result.summary["dark"]) == list(coco_eval.COCO_KEYS)
  assert result.summary["dark"]["AP"] == pytest.approx(1.0)
  assert [int(a) for a in np.concatenate(result.annotation_ids)] == [2**40 + 5, 7, 2**33]
  # Every pose 40 px off: OKS ~ 0, AP 0.
  assert _evaluate(kset, _coco_records(), np.full((17, 2), 40.0)).summary["dark"]["AP"] == 0.0
  reports.write_eval(str(tmp_path), result)
  import csv  # noqa: PLC0415
  import json  # noqa: PLC0415

  results = json.loads((tmp_path / "coco_results_dark.json").read_text())
  assert len(results) == 3 and {r["image_id"] for r in results} == {100, 101}
  assert len(results[0]["keypoints"]) == 17 * 3 and results[0]["category_id"] == 1
  rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
  assert rows[0]["annotation_id"] == str(2**40 + 5)
  assert [r["joint_name"] for r in rows[:17]] == list(kset.joint_names)
  pred = json.loads((tmp_path / "predictions.json").read_text())
  assert pred["joint_names"] == list(kset.joint_names)
  assert pred["predictions"][2]["annotation_id"] == 2**33
  assert not (tmp_path / "pck_curve.png").exists()  # LSP's chart only
  # pycocotools on the results file and a ground truth written here by hand: the same AP.
  anns = []
  for r in _coco_records():
    v = np.where(r["visible"], 2, 1)
    x1, y1, x2, y2 = (float(b) for b in r["box"])
    anns.append({
      "id": int(r["annotation_id"]), "image_id": int(r["image_id"]), "category_id": 1,
      "iscrowd": 0, "area": float(r["area"]), "bbox": [x1 + 0.5, y1 + 0.5, x2 - x1, y2 - y1],
      "num_keypoints": 17,
      "keypoints": np.concatenate([r["keypoints"], v[:, None]], 1).ravel().tolist(),
    })  # fmt: skip
  gt = tmp_path / "gt.json"
  gt.write_text(json.dumps({
    "images": [{"id": 100}, {"id": 101}], "annotations": anns,
    "categories": [{"id": 1, "name": "person", "keypoints": list(kset.joint_names)}],
  }))  # fmt: skip
  again = coco_eval.evaluate(str(gt), str(tmp_path / "coco_results_dark.json"),
                             coco_eval.oks_sigmas(kset))  # fmt: skip
  assert again["AP"] == pytest.approx(1.0)


def test_the_best_metric_is_a_key_evaluation_writes():
  for kset, protocol in ((keypoint_sets.MPII, "mpii"), (keypoint_sets.PENN_ACTION, "penn_action"),
                         (keypoint_sets.COCO, "coco")):  # fmt: skip
    assert protocols.protocol_of(kset) == protocol
  assert "pckh@0.5" in _evaluate(keypoint_sets.MPII, _mpii_records()).summary["dark"]
  assert keypoint_sets.MPII.best_metric == "pckh@0.5"
  assert keypoint_sets.PENN_ACTION.best_metric == "pck@0.2"
  assert keypoint_sets.COCO.best_metric == "AP"
  from unipose_jax import train_loop  # noqa: PLC0415

  for kset in (keypoint_sets.MPII, keypoint_sets.PENN_ACTION, keypoint_sets.COCO,
               keypoint_sets.LSP):  # fmt: skip
    assert kset.best_metric in train_loop.SUMMARY  # saved with each checkpoint


def test_lsp_protocol_still_needs_torso_and_head_but_the_others_do_not():
  assert evaluate.metric_joints(keypoint_sets.MPII) == {"torso": None, "head": None}
  assert evaluate.metric_joints(keypoint_sets.LSP) == {"torso": (9, 2), "head": (12, 13)}
  assert evaluate.device_keys(keypoint_sets.MPII) == (*evaluate.EVAL_KEYS, "head_box")
  assert evaluate.device_keys(keypoint_sets.COCO) == evaluate.EVAL_KEYS
