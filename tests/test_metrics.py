"""PCK / PCKh / AUC against hand-computed cases; exact merging across batches and devices."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unipose_jax import keypoint_sets, metrics

K = keypoint_sets.LSP.num_joints

LSP = keypoint_sets.LSP


def lsp_counts(*args, **kwargs):
  """``metrics.keypoint_counts`` with LSP's torso and head joints."""
  return metrics.keypoint_counts(*args, **kwargs, torso=LSP.torso, head=LSP.head)


def lsp_summary(*args, **kwargs):
  """``metrics.summarize`` with LSP's joint names."""
  return metrics.summarize(*args, **kwargs, joint_names=LSP.joint_names)


def _hand_batch():
  """Two images whose distances, torsos and head sizes are chosen by hand.

  Image 0: torso ||(10,20)-(40,60)|| = 50 -> radii 2.5 / 5 / 10 at alpha
  0.05 / 0.1 / 0.2; head ||(10,0)-(10,16)|| = 16 -> PCKh@0.5 radius 8.
  Image 1: torso ||(100,100)-(100,120)|| = 20 -> radii 1 / 2 / 4; head
  ||(100,90)-(100,60)|| = 30 -> radius 15.
  Image 0 errors are along x, image 1 errors along y.
  """
  rng = np.random.default_rng(0)
  gt = rng.uniform(0, 200, size=(2, K, 2)).astype(np.float32)
  gt[0, 9], gt[0, 2], gt[0, 12], gt[0, 13] = (10, 20), (40, 60), (10, 0), (10, 16)
  gt[1, 9], gt[1, 2], gt[1, 12], gt[1, 13] = (100, 100), (100, 120), (100, 90), (100, 60)
  d0 = np.array([0, 2, 4, 7, 8, 9.9, 12, 30, 1, 3, 6, 0.5, 20, 100], np.float32)
  d1 = np.array([0.5, 1.5, 3, 5, 0, 0, 0, 0, 14, 16, 2.5, 0.9, 1.1, 3.9], np.float32)
  pred = gt.copy()
  pred[0, :, 0] += d0
  pred[1, :, 1] -= d1
  return pred, gt


# Correctness written out by hand from the distances above (rows: image 0, image 1).
HAND = {
  0.05: [[1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0], [1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0]],
  0.1: [[1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0], [1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0]],
  0.2: [[1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1]],
  "pckh": [
    [1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0],  # d=8 == radius 8 counts
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1],
  ],
}


def test_reference_lengths():
  pred, gt = _hand_batch()
  np.testing.assert_allclose(metrics.torso_lengths(gt, LSP.torso), [50.0, 20.0], rtol=1e-6)
  np.testing.assert_allclose(metrics.head_lengths(gt, LSP.head), [16.0, 30.0], rtol=1e-6)
  np.testing.assert_allclose(metrics.keypoint_distances(pred, gt)[0, :4], [0, 2, 4, 7], rtol=1e-5)


def test_pck_counts_hand_computed():
  pred, gt = _hand_batch()
  thresholds = (0.05, 0.1, 0.2)
  c = lsp_counts(pred, gt, thresholds=thresholds)
  assert c["pck_correct"].dtype == jnp.int32 and c["pck_correct"].shape == (3, K)
  for i, t in enumerate(thresholds):
    np.testing.assert_array_equal(c["pck_correct"][i], np.sum(HAND[t], axis=0), err_msg=str(t))
  np.testing.assert_array_equal(c["total"], np.full(K, 2))
  np.testing.assert_array_equal(c["pckh_correct"], np.sum(HAND["pckh"], axis=0))


def test_summary_hand_computed():
  pred, gt = _hand_batch()
  s = lsp_summary(lsp_counts(pred, gt))
  assert s["pck@0.2"] == pytest.approx(21 / 28)
  assert s["pck@0.1"] == pytest.approx(14 / 28)
  assert s["pck@0.05"] == pytest.approx(10 / 28)
  assert s["pckh@0.5"] == pytest.approx(22 / 28)
  per_joint_02 = np.sum(HAND[0.2], axis=0) / 2
  for k, name in enumerate(keypoint_sets.LSP.joint_names):
    assert s[f"pck@0.2/{name}"] == pytest.approx(per_joint_02[k]), name
  assert s["pckh@0.5/head_top"] == pytest.approx(0.5)
  assert s["num_joints"] == 28 and s["num_images"] == 2
  assert all(isinstance(v, float) for v in s.values())


def test_auc_step_curve_hand_computed():
  # Every joint off by 3.9 px with a torso of 40: ratio 0.0975, between grid points
  # 0.095 and 0.1. The curve is 0 for k = 0..19 and 1 for k = 20..40 (21 ones):
  # trapezoid area = 0.005 * (21 - 0.5) = 0.1025, over the span 0.2 -> 0.5125.
  gt = np.zeros((3, K, 2), np.float32)
  gt[:, :, 0] = np.arange(K) * 7.0
  gt[:, 9] = (0, 0)
  gt[:, 2] = (0, 40)
  pred = gt + np.array([0.0, 3.9], np.float32)
  counts = lsp_counts(pred, gt)
  t, curve = metrics.pck_curve(counts)
  assert t.shape == curve.shape == (41,)
  np.testing.assert_array_equal(curve, (np.arange(41) >= 20).astype(float))
  s = lsp_summary(counts)
  assert s["auc@0.2"] == pytest.approx(0.5125)
  assert s["auc@0.2/neck"] == pytest.approx(0.5125)
  assert s["pck@0.1"] == 1.0 and s["pck@0.05"] == 0.0


def test_perfect_predictor_scores_one():
  gt = np.random.default_rng(1).uniform(0, 100, (4, K, 2)).astype(np.float32)
  s = lsp_summary(lsp_counts(gt, gt))
  for key in ("pck@0.2", "pck@0.1", "pck@0.05", "auc@0.2", "pckh@0.5"):
    assert s[key] == 1.0, key


def test_area_under_curve_linear():
  t = np.linspace(0, 0.2, 41)
  assert metrics.area_under_curve(t, t / 0.2) == pytest.approx(0.5)
  assert metrics.area_under_curve(t, np.ones(41)) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="at least two"):
    metrics.area_under_curve([0.1], [1.0])


def test_default_grid_contains_reported_alphas_exactly():
  assert metrics.PCK_THRESHOLDS[0] == 0.0 and metrics.PCK_THRESHOLDS[-1] == 0.2
  for a in (0.05, 0.1, 0.2):
    assert a in metrics.PCK_THRESHOLDS


def test_degenerate_torso_gives_no_nan():
  gt = np.random.default_rng(2).uniform(0, 100, (1, K, 2)).astype(np.float32)
  gt[0, 2] = gt[0, 9]  # zero torso
  pred = gt.copy()
  pred[0, :7, 0] += 0.1  # joints 0..6 off by 0.1 px, the rest exact
  c = lsp_counts(pred, gt)
  s = lsp_summary(c)
  assert not any(math.isnan(v) for v in s.values())
  # Counted in the total, correct only where the distance is exactly 0.
  assert s["num_joints"] == K
  for key in ("pck@0.2", "pck@0.05"):
    assert s[key] == pytest.approx(7 / K)
  assert s["pck@0.2/right_ankle"] == 0.0 and s["pck@0.2/head_top"] == 1.0


def test_nan_prediction_is_incorrect_but_counted():
  pred, gt = _hand_batch()
  pred[0, 0] = np.nan  # joint 0 of image 0 was correct at every threshold
  s = lsp_summary(lsp_counts(pred, gt))
  assert s["pck@0.2"] == pytest.approx(20 / 28)
  assert s["num_joints"] == 28


def test_mask_excludes_joints_and_padded_images():
  pred, gt = _hand_batch()
  mask = np.ones((2, K), bool)
  mask[0, 6] = False  # an incorrect joint no longer counts
  c = lsp_counts(pred, gt, mask)
  assert int(c["total"][6]) == 1 and int(c["total"].sum()) == 27
  assert lsp_summary(c)["pck@0.2"] == pytest.approx(21 / 27)

  # A padded third image full of NaN with valid=False changes nothing.
  pad_pred = np.concatenate([pred, np.full((1, K, 2), np.nan, np.float32)])
  pad_gt = np.concatenate([gt, np.full((1, K, 2), np.nan, np.float32)])
  pad_mask = np.concatenate([mask, np.zeros((1, K), bool)])
  padded = lsp_counts(pad_pred, pad_gt, pad_mask)
  for key in c:
    np.testing.assert_array_equal(padded[key], c[key], err_msg=key)


def test_joint_with_no_count_is_nan():
  pred, gt = _hand_batch()
  mask = np.ones((2, K), bool)
  mask[:, 13] = False
  s = lsp_summary(lsp_counts(pred, gt, mask))
  assert math.isnan(s["pck@0.2/head_top"])
  assert not math.isnan(s["pck@0.2"])


def test_bad_input_raises():
  pred, gt = _hand_batch()
  with pytest.raises(ValueError, match="does not match"):
    lsp_counts(pred[:, :13], gt)
  with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
    lsp_counts(pred[..., 0], gt[..., 0])
  with pytest.raises(ValueError, match="mask"):
    lsp_counts(pred, gt, np.ones((2, 13), bool))
  with pytest.raises(ValueError, match="increasing"):
    lsp_counts(pred, gt, thresholds=(0.2, 0.1))
  with pytest.raises(ValueError, match=r"torso must be two joints of 0\.\.4, got \(9, 2\) \(K=5\)"):
    lsp_counts(pred[:, :5], gt[:, :5])
  with pytest.raises(TypeError, match="torso"):  # no set is assumed
    metrics.keypoint_counts(pred, gt)
  with pytest.raises(TypeError, match="joint_names"):
    metrics.summarize(lsp_counts(pred, gt))


def _random_batch(n, seed):
  rng = np.random.default_rng(seed)
  gt = rng.uniform(0, 150, (n, K, 2)).astype(np.float32)
  pred = gt + rng.normal(0, 6, (n, K, 2)).astype(np.float32)
  mask = rng.random((n, K)) > 0.2
  return pred, gt, mask


def test_merged_batches_equal_one_batch_under_jit():
  pred, gt, mask = _random_batch(37, 3)
  whole = lsp_counts(pred, gt, mask)
  counts = jax.jit(lsp_counts)
  merged = None
  for lo, hi in ((0, 10), (10, 30), (30, 37)):  # uneven batches
    part = counts(pred[lo:hi], gt[lo:hi], mask[lo:hi])
    merged = part if merged is None else metrics.merge_counts(merged, part)
  for key in whole:
    np.testing.assert_array_equal(merged[key], whole[key], err_msg=key)
  assert lsp_summary(merged) == lsp_summary(whole)


def test_merge_counts_on_host_arrays_starting_from_none():
  pred, gt, mask = _random_batch(12, 8)
  whole = lsp_counts(pred, gt, mask)
  acc = None
  for part in (slice(0, 5), slice(5, 12)):
    host = jax.device_get(lsp_counts(pred[part], gt[part], mask[part]))
    acc = metrics.merge_counts(acc, host)
  for key in whole:
    np.testing.assert_array_equal(acc[key], whole[key], err_msg=key)
  assert metrics.merge_counts(None, None) is None
  with pytest.raises(ValueError, match="shapes"):
    metrics.merge_counts(whole, {**whole, "total": whole["total"][:3]})


def test_sharded_over_fake_devices_equals_one_batch():
  n = jax.device_count()
  if n < 2:
    pytest.skip("needs several (fake) devices")
  pred, gt, mask = _random_batch(2 * n, 7)
  mesh = jax.make_mesh((n,), ("batch",))
  spec = jax.sharding.PartitionSpec("batch")

  def per_shard(p, g, m):
    local = lsp_counts(p, g, m)
    return jax.tree.map(lambda x: jax.lax.psum(x, "batch"), local)

  f = jax.jit(
    jax.shard_map(
      per_shard, mesh=mesh, in_specs=(spec, spec, spec), out_specs=jax.sharding.PartitionSpec()
    )
  )
  sharding = jax.sharding.NamedSharding(mesh, spec)
  sharded = f(*(jax.device_put(x, sharding) for x in (pred, gt, mask)))
  whole = lsp_counts(pred, gt, mask)
  for key in whole:
    np.testing.assert_array_equal(sharded[key], whole[key], err_msg=key)


def test_merge_counts_widens_host_float_sums_to_float64():
  # 0.1 added 1000 times in float32 drifts (to 100.00 + ~1e-3); the host merge is float64.
  part = {"box_iou_sum": np.float32(0.1), "box_total": np.int32(1)}
  acc = None
  for _ in range(1000):
    acc = metrics.merge_counts(acc, part)
  assert acc["box_iou_sum"].dtype == np.float64 and acc["box_total"].dtype == np.int32
  assert abs(acc["box_iou_sum"] - 1000 * float(np.float32(0.1))) < 1e-9
  assert int(acc["box_total"]) == 1000
