"""MPII PCKh: a hand-worked case, an independent NumPy reference (HRNet's definition, written
here from the definition in its own 1-based, divide-then-compare form), batching, jit, and the
real sample of ``mpii_gt_val.mat``."""

import jax
import numpy as np
import pytest
import scipy.io
from conftest import lsp_archive_dir

from unipose_jax import keypoint_sets, metrics
from unipose_jax.metrics import pck_tables, pckh


def _hand_case():
  """Two persons (see the test for the numbers). Returns pred, gt, mask, head_box."""
  k = 16
  gt = np.zeros((2, k, 2), np.float32)
  gt[0] = np.arange(k)[:, None] * [3.0, 5.0]
  gt[1] = np.arange(k)[:, None] * [2.0, 1.0] + 7
  pred = gt.copy()
  mask = np.ones((2, k), bool)
  head_box = np.array([[0, 0, 30, 40], [10, 10, 13, 14]], np.float32)  # sizes 30 and 3
  # Person 0 (radius 15 at 0.5, 3 at 0.1).
  pred[0, 9] += [6.0, 8.0]  # head top, d = 10: correct at 0.5, not at 0.1
  pred[0, 12] += [16.0, 0.0]  # r shoulder, d = 16: wrong
  pred[0, 13] += [0.0, 2.0]  # l shoulder, d = 2: correct at both
  mask[0, 11] = False  # r elbow missing ...
  pred[0, 11] = np.nan  # ... with a NaN prediction: adds nothing
  pred[0, 14] += [20.0, 0.0]  # l elbow: wrong
  pred[0, 6] += [100.0, 0.0]  # pelvis: wrong, but not in the mean
  # Person 1 (radius 1.5 at 0.5, 0.3 at 0.1).
  pred[1, 10] += [0.6, 0.8]  # r wrist, d = 1: correct at 0.5 only
  mask[1, 15] = False  # l wrist missing
  return pred, gt, mask, head_box


def test_hand_worked_case():
  pred, gt, mask, head_box = _hand_case()
  s = pckh.summarize_mpii(pckh.mpii_counts(pred, gt, mask, head_box))
  assert list(s) == list(pckh.MPII_KEYS)
  assert s["Head"] == 1.0
  assert s["Shoulder"] == pytest.approx((0.5 + 1.0) / 2)
  # Elbow: r elbow 1/1, l elbow 1/2 -> the mean of the two values, 0.75 (pooled would be 2/3).
  assert s["Elbow"] == pytest.approx(0.75)
  assert s["Wrist"] == 1.0 and s["Hip"] == 1.0 and s["Knee"] == 1.0 and s["Ankle"] == 1.0
  # 26 counted joints outside pelvis/thorax; wrong at 0.5: r shoulder, l elbow.
  assert s["Mean"] == pytest.approx(24 / 26)
  # At 0.1 also the head top (10 > 3) and person 1's r wrist (1 > 0.3).
  assert s["Mean@0.1"] == pytest.approx(22 / 26)


def test_threshold_is_inclusive_and_a_zero_size_divides_nothing():
  gt = np.zeros((2, 3, 2), np.float32)
  pred = np.array([[[3, 4], [3, 4.01], [0, 0]], [[0, 0], [1, 0], [0, 0]]], np.float32)
  c = pck_tables.normalised_counts(pred, gt, np.ones((2, 3), bool), np.array([10.0, 0.0]), (0.5,))
  # Person 0: d = 5 <= 0.5 x 10 is correct, 5.0099 is not; person 1 (size 0): exact hits only.
  np.testing.assert_array_equal(np.asarray(c["correct"]), [[2, 0, 2]])
  np.testing.assert_array_equal(np.asarray(c["total"]), [2, 2, 2])


def hrnet_reference(preds_1based, pos_gt_src, jnt_missing, headboxes_src, index_01=10):
  """PCKh from MPII's ``.mat`` layout (``pos_gt_src (16, 2, N)``, ``jnt_missing (16, N)``,
  ``headboxes_src (2, 2, N)``, 1-based) and ``preds (N, 16, 2)`` 1-based, as HRNet defines
  it: divide, compare, per-joint PCKh, columns as means of the pairs, masked weighted mean.
  ``index_01`` picks the threshold of Mean@0.1 in ``arange(0, 0.51, 0.01)`` (HRNet: 11)."""
  pos_pred = np.transpose(preds_1based, [1, 2, 0])
  visible = 1 - jnt_missing
  err = np.linalg.norm(pos_pred - pos_gt_src, axis=1)
  size = 0.6 * np.linalg.norm(headboxes_src[1] - headboxes_src[0], axis=0)
  scaled = np.multiply(np.divide(err, size * np.ones((len(err), 1))), visible)
  count = visible.sum(axis=1)

  def pck(thr):
    return 100.0 * np.sum((scaled <= thr) * visible, axis=1) / count

  p = pck(0.5)
  p01 = pck(np.arange(0, 0.51, 0.01)[index_01])
  weights = count.astype(np.float64).copy()
  weights[6:8] = 0
  weights /= weights.sum()
  col = {
    "Head": p[9], "Shoulder": (p[12] + p[13]) / 2, "Elbow": (p[11] + p[14]) / 2,
    "Wrist": (p[10] + p[15]) / 2, "Hip": (p[2] + p[3]) / 2, "Knee": (p[1] + p[4]) / 2,
    "Ankle": (p[0] + p[5]) / 2, "Mean": np.sum(p * weights), "Mean@0.1": np.sum(p01 * weights),
  }  # fmt: skip
  return {k: v / 100 for k, v in col.items()}


def _random_case(rng, n):
  gt = rng.uniform(0, 300, (n, 16, 2))
  head = rng.uniform(0, 250, (n, 2))
  head_box = np.concatenate([head, head + rng.uniform(5, 50, (n, 2))], axis=1)
  size = 0.6 * np.linalg.norm(head_box[:, 2:] - head_box[:, :2], axis=1)
  pred = gt + rng.normal(size=(n, 16, 2)) * size[:, None, None] * 0.3
  missing = rng.random((n, 16)) < 0.1
  return pred, gt, ~missing, head_box


def test_matches_the_numpy_reference_on_random_data():
  rng = np.random.default_rng(0)
  pred, gt, present, head_box = _random_case(rng, 300)
  ours = pckh.summarize_mpii(pckh.mpii_counts(pred, gt, present, head_box))
  # The reference speaks MPII's 1-based .mat layout: +1 on everything.
  ref = hrnet_reference(
    pred + 1, np.transpose(gt + 1, [1, 2, 0]), (~present).T.astype(np.uint8),
    np.transpose(head_box.reshape(-1, 2, 2) + 1, [1, 2, 0]),
  )  # fmt: skip
  assert ours.keys() == ref.keys()
  for key in ref:
    assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
  # HRNet's printed Mean@0.1 is at 0.11: a different (higher) number on the same data.
  hrnet_01 = hrnet_reference(
    pred + 1, np.transpose(gt + 1, [1, 2, 0]), (~present).T.astype(np.uint8),
    np.transpose(head_box.reshape(-1, 2, 2) + 1, [1, 2, 0]), index_01=11,
  )["Mean@0.1"]  # fmt: skip
  assert hrnet_01 > ours["Mean@0.1"]


def test_batches_merge_exactly_and_jit():
  rng = np.random.default_rng(1)
  pred, gt, present, head_box = _random_case(rng, 50)
  whole = pckh.mpii_counts(pred, gt, present, head_box)
  merged = None
  step = jax.jit(pckh.mpii_counts)
  for lo in range(0, 50, 16):  # uneven last batch
    sl = slice(lo, lo + 16)
    merged = metrics.merge_counts(merged, step(pred[sl], gt[sl], present[sl], head_box[sl]))
  for key in whole:
    np.testing.assert_array_equal(np.asarray(merged[key]), np.asarray(whole[key]))
    assert np.asarray(merged[key]).dtype == np.int32
  assert np.asarray(whole["mpii_correct"]).shape == (2, 16)


def test_bad_shapes_name_the_argument():
  pred, gt, mask, head_box = _hand_case()
  with pytest.raises(ValueError, match="head_box"):
    pckh.mpii_counts(pred, gt, mask, head_box[:, :2])
  with pytest.raises(ValueError, match="mask"):
    pckh.mpii_counts(pred, gt, mask[:, :3], head_box)


def test_table_prints_the_keys_and_the_threshold_note():
  pred, gt, mask, head_box = _hand_case()
  text = pckh.format_mpii_table(pckh.summarize_mpii(pckh.mpii_counts(pred, gt, mask, head_box)))
  assert "Mean@0.1" in text and "0.11" in text and "92.31" in text


def test_real_sample_gt_scores_perfect_and_matches_reference():
  path = lsp_archive_dir() / "samples" / "mpii" / "mpii_gt_val.mat"
  if not path.is_file():
    pytest.skip(f"real MPII sample absent ({path}; set UNIPOSE_LSP_DIR)")
  m = scipy.io.loadmat(path)
  names = [str(n[0]) for n in m["dataset_joints"][0]]
  assert names[9] == "head" and names[6] == "pelv" and len(names) == keypoint_sets.MPII.num_joints
  gt = np.transpose(m["pos_gt_src"], [2, 0, 1]) - 1.0  # (N, 16, 2), 0-based
  present = (1 - m["jnt_missing"]).T.astype(bool)
  head_box = np.transpose(m["headboxes_src"], [2, 0, 1]).reshape(-1, 4) - 1.0
  perfect = pckh.summarize_mpii(pckh.mpii_counts(gt, gt, present, head_box))
  assert all(v == 1.0 for v in perfect.values())
  rng = np.random.default_rng(2)
  pred = gt + rng.normal(scale=6.0, size=gt.shape)
  ours = pckh.summarize_mpii(pckh.mpii_counts(pred, gt, present, head_box))
  ref = hrnet_reference(pred + 1, m["pos_gt_src"], m["jnt_missing"], m["headboxes_src"])
  for key in ref:
    assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
