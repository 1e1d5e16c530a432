"""The person box: targets and decoding (codecs.box) and its metrics, on hand-worked cases."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unipose_jax import keypoint_sets, metrics, skeleton
from unipose_jax.codecs import DECODINGS, HeatmapCodec
from unipose_jax.codecs import box as box_lib

K = keypoint_sets.LSP.num_joints

LSP = keypoint_sets.LSP


def lsp_counts(*args, **kwargs):
  """``metrics.keypoint_counts`` with LSP's torso and head joints."""
  return metrics.keypoint_counts(*args, **kwargs, torso=LSP.torso, head=LSP.head)


def lsp_summary(*args, **kwargs):
  """``metrics.summarize`` with LSP's joint names."""
  return metrics.summarize(*args, **kwargs, joint_names=LSP.joint_names)


# ---------------------------------------------------------------------------
# Targets.


def _hand_keypoints():
  """Three images. Image 0: labeled joints at x in {10, 40, 25}, y in {20, 5, 65}
  (extent x 10..40, y 5..65); the unlabeled joints are far away or NaN. Image 1: one
  labeled joint only. Image 2: two labeled joints (5, 7) and (5, 9) (zero width)."""
  kp = np.full((3, K, 2), 1000.0, np.float32)
  w = np.zeros((3, K), np.float32)
  kp[0, 0], kp[0, 5], kp[0, 12] = (10, 20), (40, 5), (25, 65)
  w[0, [0, 5, 12]] = (1.0, 0.5, 2.0)
  kp[0, 3] = (np.nan, np.nan)  # unlabeled NaN: ignored
  kp[0, 7] = (-500, 900)  # unlabeled far joint: ignored
  kp[1, 4] = (50, 50)
  w[1, 4] = 1.0
  kp[2, 1], kp[2, 2] = (5, 7), (5, 9)
  w[2, [1, 2]] = 1.0
  return kp, w


def test_box_targets_hand_computed():
  kp, w = _hand_keypoints()
  points, weights = jax.jit(box_lib.box_targets, static_argnums=2)(kp, w, 0.0)
  assert points.shape == (3, 5, 2) and weights.shape == (3, 5)
  assert points.dtype == jnp.float32 and weights.dtype == jnp.float32
  # Image 0: box (10, 5, 40, 65), centre (25, 35).
  np.testing.assert_array_equal(points[0], [[25, 35], [10, 5], [40, 5], [10, 65], [40, 65]])
  # Image 2: a zero-width box is still a box (two joints).
  np.testing.assert_array_equal(points[2], [[5, 8], [5, 7], [5, 7], [5, 9], [5, 9]])
  np.testing.assert_array_equal(weights, [[1] * 5, [0] * 5, [1] * 5])
  np.testing.assert_array_equal(points[1], np.zeros((5, 2)))


def test_box_margin_grows_each_side_by_a_share_of_the_size():
  kp, w = _hand_keypoints()
  # Width 30, height 60: margin 0.1 adds 3 px left and right, 6 px top and bottom.
  box, has_box = box_lib.box_from_keypoints(kp, w > 0, margin=0.1)
  np.testing.assert_allclose(box[0], [7, -1, 43, 71], rtol=0, atol=1e-5)
  np.testing.assert_array_equal(has_box, [True, False, True])
  np.testing.assert_array_equal(box[1], np.zeros(4))
  points, _ = box_lib.box_targets(kp, w, 0.1)
  np.testing.assert_allclose(points[0], [[25, 35], [7, -1], [43, -1], [7, 71], [43, 71]], atol=1e-5)


def test_min_box_joints_and_labeled_nan_joint_ignored():
  assert box_lib.MIN_BOX_JOINTS == 2
  kp, w = _hand_keypoints()
  labeled = w > 0
  kp[2, 2] = (np.nan, 3.0)  # a labeled joint without finite coordinates does not count
  box, has_box = box_lib.box_from_keypoints(kp, labeled)
  np.testing.assert_array_equal(has_box, [True, False, False])
  np.testing.assert_array_equal(box[2], np.zeros(4))
  assert np.all(np.isfinite(np.asarray(box)))


def test_bad_box_input_raises():
  kp, w = _hand_keypoints()
  with pytest.raises(ValueError, match=r"model.box_margin.*>= 0, got -0.1"):
    box_lib.box_targets(kp, w, -0.1)
  with pytest.raises(ValueError, match=r"labeled must have shape \(B, K\)"):
    box_lib.box_from_keypoints(kp, w[:, :5] > 0)
  with pytest.raises(ValueError, match=r"keypoints must have shape \(B, K, 2\)"):
    box_lib.box_from_keypoints(kp[..., 0], w > 0)
  with pytest.raises(ValueError, match=r"box points must have shape \(B, 5, 2\)"):
    box_lib.box_from_points(np.zeros((2, 4, 2)))
  with pytest.raises(ValueError, match=r"box must have shape \(B, 4\)"):
    box_lib.box_points(np.zeros((2, 5)))


# ---------------------------------------------------------------------------
# Points <-> box, and the round trip through the real codec.


BOXES = np.array(
  [[60.3, 80.7, 250.2, 300.9], [10.0, 20.0, 350.6, 200.25], [100.4, 50.2, 180.9, 340.7]],
  np.float32,
)


def test_box_points_order_and_exact_inverse():
  points = box_lib.box_points(np.array([[1.0, 2.0, 5.0, 10.0]]))
  np.testing.assert_array_equal(points[0], [[3, 6], [1, 2], [5, 2], [1, 10], [5, 10]])
  assert skeleton.BOX_POINT_NAMES[1:] == (
    "box_top_left",
    "box_top_right",
    "box_bottom_left",
    "box_bottom_right",
  )
  np.testing.assert_array_equal(box_lib.box_from_points(box_lib.box_points(BOXES)), BOXES)


def test_box_from_points_averages_sides_and_orders_them():
  # Corners off by hand-chosen amounts: x0 = (1 + 3) / 2 = 2, x1 = (9 + 11) / 2 = 10,
  # y0 = (4 + 6) / 2 = 5, y1 = (20 + 24) / 2 = 22; the centre is not used.
  pts = np.array([[[99, 99], [1, 4], [9, 6], [3, 20], [11, 24]]], np.float32)
  np.testing.assert_array_equal(box_lib.box_from_points(pts), [[2, 5, 10, 22]])
  # Left/right and top/bottom corners swapped: still an ordered box.
  swapped = pts[:, [0, 4, 3, 2, 1]]
  np.testing.assert_array_equal(box_lib.box_from_points(swapped), [[2, 5, 10, 22]])


def _round_trip(codec: HeatmapCodec, encoding: str, decoding: str):
  points = box_lib.box_points(BOXES)
  heatmaps, weights = codec.encode(points, np.ones((3, 5), np.float32), encoding=encoding)
  np.testing.assert_array_equal(weights, np.ones((3, 5)))  # all five points are on the map
  decoded, _ = codec.decode(heatmaps, decoding=decoding)
  return np.asarray(points), np.asarray(decoded)


@pytest.mark.slow
def test_round_trip_unbiased_dark_is_sub_hundredth_pixel():
  codec = HeatmapCodec(encoding="unbiased", decoding="dark")  # configs/dark_lsp_box.py
  points, decoded = _round_trip(codec, "unbiased", "dark")
  np.testing.assert_allclose(decoded, points, rtol=0, atol=0.01)  # measured 5e-5 px
  np.testing.assert_allclose(box_lib.box_from_points(decoded), BOXES, rtol=0, atol=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("decoding", ["argmax", "dark"])
def test_round_trip_quantized_lands_on_the_grid_point(decoding):
  # The quantized target peaks at the heatmap node nearest to each point; argmax and
  # DARK (on an exactly symmetric Gaussian) both decode that node.
  codec = HeatmapCodec(encoding="quantized")
  points, decoded = _round_trip(codec, "quantized", decoding)
  node = np.floor(np.asarray(codec.input_to_heatmap(points)) + 0.5)
  expected = np.asarray(codec.heatmap_to_input(node))
  np.testing.assert_allclose(decoded, expected, rtol=0, atol=0.01)
  box = np.asarray(box_lib.box_from_points(decoded))
  np.testing.assert_allclose(box, np.asarray(box_lib.box_from_points(expected)), atol=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["unbiased", "quantized"])
@pytest.mark.parametrize("decoding", DECODINGS)
def test_round_trip_every_decoder_within_half_a_stride(encoding, decoding):
  codec = HeatmapCodec()  # 368 -> 46, stride 8
  points, decoded = _round_trip(codec, encoding, decoding)
  tol = codec.stride[0] / 2 + 0.5  # grid quantisation (+ upsample's integer input pixel)
  np.testing.assert_allclose(decoded, points, rtol=0, atol=tol)
  np.testing.assert_allclose(box_lib.box_from_points(decoded), BOXES, rtol=0, atol=tol)


def test_flip_permutation_maps_mirrored_box_points():
  width = 368
  mirror = lambda xy: np.stack([width - 1 - xy[..., 0], xy[..., 1]], -1)  # noqa: E731
  points = np.asarray(box_lib.box_points(BOXES))
  flipped_box = np.stack(
    [width - 1 - BOXES[:, 2], BOXES[:, 1], width - 1 - BOXES[:, 0], BOXES[:, 3]], -1
  )
  relabeled = mirror(points)[:, skeleton.BOX_FLIP_PERMUTATION]
  np.testing.assert_allclose(relabeled, box_lib.box_points(flipped_box), rtol=0, atol=1e-4)
  # And without the permutation the corners would be the wrong ones.
  assert not np.allclose(mirror(points), box_lib.box_points(flipped_box), atol=1.0)


# ---------------------------------------------------------------------------
# Metrics.


def test_iou_hand_cases():
  a = np.array(
    [
      [0, 0, 2, 2],  # identical
      [0, 0, 2, 2],  # disjoint
      [0, 0, 2, 2],  # half of a overlaps: inter 2, union 6
      [0, 0, 4, 4],  # b inside a: 4 / 16
      [0, 0, 2, 2],  # touching edges only
      [1, 1, 1, 1],  # two empty boxes: empty union
      [0, 0, 2, 2],  # NaN prediction
    ],
    np.float32,
  )
  b = np.array(
    [[0, 0, 2, 2], [5, 5, 7, 9], [1, 0, 3, 2], [1, 1, 3, 3], [2, 0, 4, 2], [1, 1, 1, 1]]
    + [[np.nan] * 4],
    np.float32,
  )
  iou = jax.jit(metrics.box_iou)(a, b)
  np.testing.assert_allclose(iou, [1, 0, 1 / 3, 0.25, 0, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(metrics.box_iou(b, a), iou, rtol=1e-6)  # symmetric


def test_centre_error_hand_case():
  gt = np.array([[0, 0, 6, 8], [0, 0, 6, 8], [3, 3, 3, 3]], np.float32)  # diagonal 10, 10, 0
  pred = np.array([[3, 4, 9, 12], [0, 0, 6, 8], [3, 5, 3, 5]], np.float32)
  # Centres (6, 8) vs (3, 4): 5 / 10; identical: 0; degenerate gt: 2 / MIN_BOX_DIAGONAL.
  err = metrics.box_centre_errors(pred, gt)
  np.testing.assert_allclose(err, [0.5, 0.0, 2.0 / metrics.MIN_BOX_DIAGONAL], rtol=1e-6)


def _random_boxes(n, seed):
  rng = np.random.default_rng(seed)
  lo = rng.uniform(0, 100, (n, 2))
  gt = np.concatenate([lo, lo + rng.uniform(5, 80, (n, 2))], -1).astype(np.float32)
  pred = (gt + rng.normal(0, 12, (n, 4))).astype(np.float32)
  pred = np.concatenate(
    [np.minimum(pred[:, :2], pred[:, 2:]), np.maximum(pred[:, :2], pred[:, 2:])], -1
  )
  mask = rng.random(n) > 0.3
  return pred, gt, mask


def _numpy_box_summary(pred, gt, mask):
  pred, gt = pred[mask].astype(np.float64), gt[mask].astype(np.float64)
  iw = np.clip(np.minimum(pred[:, 2], gt[:, 2]) - np.maximum(pred[:, 0], gt[:, 0]), 0, None)
  ih = np.clip(np.minimum(pred[:, 3], gt[:, 3]) - np.maximum(pred[:, 1], gt[:, 1]), 0, None)
  area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
  iou = iw * ih / (area(pred) + area(gt) - iw * ih)
  centre = lambda b: (b[:, :2] + b[:, 2:]) / 2  # noqa: E731
  err = np.hypot(*(centre(pred) - centre(gt)).T) / np.hypot(*(gt[:, 2:] - gt[:, :2]).T)
  return {
    "box_iou": iou.mean(),
    "box_iou>=0.5": np.mean(iou >= 0.5),
    "box_centre_error": err.mean(),
    "num_boxes": float(len(iou)),
  }


@pytest.mark.slow
def test_box_counts_merge_and_summary_equal_numpy():
  pred, gt, mask = _random_boxes(50, 0)
  kp_pred = np.random.default_rng(1).uniform(0, 100, (50, K, 2)).astype(np.float32)
  kp_gt = kp_pred + 1.0
  expected = _numpy_box_summary(pred, gt, mask)
  assert 0.2 < expected["box_iou>=0.5"] < 0.95  # the threshold matters in this data

  def step(lo, hi):  # what evaluate.eval_step does, on two uneven batches
    c = lsp_counts(kp_pred[lo:hi], kp_gt[lo:hi])
    c.update(jax.jit(metrics.box_counts)(pred[lo:hi], gt[lo:hi], mask[lo:hi]))
    return jax.device_get(c)

  merged = metrics.merge_counts(metrics.merge_counts(None, step(0, 17)), step(17, 50))
  assert merged["box_total"].dtype == np.int32 and int(merged["box_total"]) == mask.sum()
  s = lsp_summary(merged)
  for key, value in expected.items():
    assert s[key] == pytest.approx(value, rel=1e-5), key
  assert s["num_images"] == 50 and s["pck@0.2"] == pytest.approx(1.0)

  # Keypoint counts alone still merge and summarise, without box keys.
  plain = metrics.merge_counts(None, lsp_counts(kp_pred, kp_gt))
  assert not any(k.startswith(("box", "num_boxes")) for k in lsp_summary(plain))
  with pytest.raises(ValueError, match="cannot merge counts with keys"):
    metrics.merge_counts(plain, merged)


@pytest.mark.slow
def test_box_counts_mask_ignores_nan_and_empty_is_nan():
  pred, gt, mask = _random_boxes(6, 3)
  mask[:] = [True, True, False, True, False, False]
  pred[2] = gt[4] = np.nan  # masked out: no effect
  c = metrics.box_counts(pred, gt, mask)
  ref = metrics.box_counts(pred[[0, 1, 3]], gt[[0, 1, 3]])
  for key in ref:
    np.testing.assert_allclose(c[key], ref[key], rtol=1e-6, err_msg=key)
  assert c["box_iou50"].dtype == jnp.int32 and c["box_iou_sum"].dtype == jnp.float32
  empty = metrics.summarize_boxes(metrics.box_counts(pred, gt, np.zeros(6, bool)))
  assert math.isnan(empty["box_iou"]) and math.isnan(empty["box_centre_error"])
  assert empty["num_boxes"] == 0.0
  with pytest.raises(ValueError, match=r"box mask must have shape \(B,\)"):
    metrics.box_counts(pred, gt, np.ones((6, 1), bool))
  with pytest.raises(ValueError, match="box shapes differ"):
    metrics.box_counts(pred, gt[:3])


def test_nan_prediction_counts_iou_zero_and_makes_centre_error_nan():
  pred, gt, _ = _random_boxes(3, 4)
  pred[1] = np.nan
  s = metrics.summarize_boxes(metrics.box_counts(pred, gt))
  ious = np.asarray(metrics.box_iou(pred, gt))
  assert ious[1] == 0.0
  assert s["box_iou"] == pytest.approx(ious.sum() / 3)
  assert math.isnan(s["box_centre_error"]) and s["num_boxes"] == 3.0


def test_eval_path_ground_truth_box_against_itself():
  """The evaluator's composition: gt box from the labeled joints, a prediction through
  box_points -> box_from_points, scores IoU 1 and centre error 0 on the boxed images."""
  kp, w = _hand_keypoints()
  gt_box, has_box = box_lib.box_from_keypoints(kp, w > 0, 0.25)
  pred_box = box_lib.box_from_points(box_lib.box_points(gt_box))
  valid = np.array([True, True, False])
  s = metrics.summarize_boxes(metrics.box_counts(pred_box, gt_box, valid & np.asarray(has_box)))
  assert s == {"box_iou": 1.0, "box_iou>=0.5": 1.0, "box_centre_error": 0.0, "num_boxes": 1.0}
