"""Penn Action PCK@0.2 (box normaliser): a hand-worked case, a NumPy reference written from
the definition, and the real label samples."""

import numpy as np
import pytest
import scipy.io
from conftest import lsp_archive_dir

from unipose_jax import keypoint_sets
from unipose_jax.metrics import penn


def test_hand_worked_case():
  gt = np.zeros((2, 13, 2), np.float32)
  pred = gt.copy()
  box = np.array([[0, 0, 20, 50], [5, 5, 45, 15]], np.float32)  # larger sides 50 and 40
  visible = np.ones((2, 13), bool)
  pred[0, 0] = [6, 8]  # head, d = 10 <= 0.2 x 50: correct
  pred[1, 0] = [6, 8]  # head, d = 10 > 0.2 x 40 = 8: wrong
  pred[0, 5] = [0, 11]  # l wrist: wrong
  visible[1, 5] = False  # l wrist of frame 1 not visible ...
  pred[1, 5] = np.nan  # ... and anything may be there
  s = penn.summarize_penn(penn.penn_counts(pred, gt, visible, box))
  assert list(s) == list(penn.PENN_KEYS)
  assert s["Head"] == 0.5
  assert s["Wrist"] == pytest.approx((0.0 + 1.0) / 2)  # l wrist 0/1, r wrist 2/2
  assert s["Shoulder"] == 1.0 and s["Ankle"] == 1.0
  assert s["Mean"] == pytest.approx(23 / 25)  # 25 visible joints, 2 wrong
  assert "Mean" in penn.format_penn_table(s) and "92.00" in penn.format_penn_table(s)


def numpy_pck(pred, gt, visible, box, alpha=0.2):
  """Per-joint and overall PCK from the definition (divide and compare)."""
  norm = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
  ok = (np.linalg.norm(pred - gt, axis=-1) / norm[:, None] <= alpha) & visible
  return ok.sum(0) / visible.sum(0), ok.sum() / visible.sum()


def test_matches_numpy_on_the_real_labels():
  folder = lsp_archive_dir() / "samples" / "penn_action" / "labels"
  if not folder.is_dir():
    pytest.skip(f"real Penn Action samples absent ({folder}; set UNIPOSE_LSP_DIR)")
  rng = np.random.default_rng(0)
  for path in sorted(folder.glob("*.mat")):
    m = scipy.io.loadmat(path)
    n = min(len(m["bbox"]), m["x"].shape[0])  # 1154.mat: one bbox row fewer than frames
    gt = np.stack([m["x"][:n], m["y"][:n]], -1) - 1.0
    visible = m["visibility"][:n].astype(bool)
    box = m["bbox"][:n] - 1.0
    pred = gt + rng.normal(scale=8.0, size=gt.shape)
    s = penn.summarize_penn(penn.penn_counts(pred, gt, visible, box))
    per_joint, overall = numpy_pck(pred, gt, visible, box)
    assert s["Mean"] == pytest.approx(overall, abs=1e-9), path.name
    for col, joints in keypoint_sets.PENN_ACTION.table_columns:
      assert s[col] == pytest.approx(np.mean(per_joint[list(joints)]), abs=1e-9), (path.name, col)
