"""MPII's PCKh (head-box normalised), as HRNet / DarkPose and mmpose compute it.

Coordinates: ``(x, y)`` original-image pixels, 0-based, integer = pixel centre, predictions,
annotations and head boxes in one frame (the release's MATLAB 1-based values minus 1; a
shift of both changes no distance). ``B`` persons, ``K`` = 16 joints in MPII's
``dataset_joints`` order (:data:`unipose_jax.keypoint_sets.MPII`).

Definition (HRNet's ``lib/dataset/mpii.py`` ``evaluate``, restated):

* head size ``= SC_BIAS x ||head_box[x2, y2] - head_box[x1, y1]||``, ``SC_BIAS = 0.6``;
* joint ``k`` of person ``b`` is correct at threshold ``t`` when its distance
  ``<= t x head size`` (inclusive; HRNet divides, ``err / size <= t``; this multiplies, so a
  zero head box never divides);
* only joints present in the ground truth count (``1 - jnt_missing``; MPII's visibility flag
  plays no part): pass them as ``mask``;
* columns Head (head top), Shoulder, Elbow, Wrist, Hip, Knee, Ankle: the *mean of the left
  and right per-joint PCKh* (HRNet: ``0.5 * (PCKh[lsho] + PCKh[rsho])``), not the pooled
  counts of the pair;
* ``Mean``: every counted joint but pelvis and thorax, pooled (HRNet: per-joint PCKh weighted
  by ``jnt_count`` with those two masked, which is the same number);
* ``Mean@0.1``: the same at threshold exactly 0.1 with ``<=``. HRNet's / DarkPose's table
  prints ``pckAll[11]`` of ``arange(0, 0.51, 0.01)``, i.e. threshold **0.11**, under that
  name (an indexing slip; its numbers are a little higher); mmpose uses 0.10 with a strict
  ``<``.

Accumulation: :func:`mpii_counts` gives int32 sums per batch (jit-able; they add exactly,
:func:`~unipose_jax.metrics.counts.merge_counts`); :func:`summarize_mpii` turns them into the
table's keys as fractions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from unipose_jax.keypoint_sets import MPII, KeypointSet
from unipose_jax.metrics.pck_tables import column_table, head_box_sizes, normalised_counts

#: MPII's head-size factor: the head size is 0.6 x the head box's diagonal.
SC_BIAS: float = 0.6
#: The two thresholds of the table: PCKh@0.5 (the columns and ``Mean``) and ``Mean@0.1``.
MPII_THRESHOLDS: tuple[float, float] = (0.5, 0.1)
#: The table's keys, in print order.
MPII_KEYS: tuple[str, ...] = (
  "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1",
)  # fmt: skip

Array = Any


def mpii_counts(pred: Array, gt: Array, mask: Array, head_box: Array) -> dict[str, Any]:
  """Sums of one batch: ``mpii_correct`` ``(2, K)`` int32 (rows: thresholds 0.5, 0.1) and
  ``mpii_total`` ``(K,)`` int32.

  ``pred``, ``gt`` ``(B, K, 2)``; ``mask`` ``(B, K)`` (joint present in the ground truth, and
  the person valid); ``head_box`` ``(B, 4)`` ``[x1, y1, x2, y2]``, same frame.
  """
  c = normalised_counts(pred, gt, mask, head_box_sizes(head_box, SC_BIAS), MPII_THRESHOLDS)
  return {"mpii_correct": c["correct"], "mpii_total": c["total"]}


def summarize_mpii(counts: Mapping[str, Array], keypoint_set: KeypointSet = MPII) -> dict:
  """:data:`MPII_KEYS` -> fractions (NaN where nothing was counted) from (merged)
  :func:`mpii_counts`. The columns and mean come from ``keypoint_set.table_columns`` and
  ``mean_excludes``."""
  correct = np.asarray(counts["mpii_correct"])
  total = np.asarray(counts["mpii_total"])
  out = column_table(correct[0], total, keypoint_set)
  out["Mean@0.1"] = column_table(correct[1], total, keypoint_set)["Mean"]
  return out


def format_mpii_table(summary: Mapping[str, float], title: str = "") -> str:
  """The standard table (percentages, as the papers print them), two lines plus a note."""
  head = " ".join(f"{k:>8s}" for k in MPII_KEYS)
  row = " ".join(f"{100 * summary[k]:8.2f}" for k in MPII_KEYS)
  note = (
    "PCKh: distance <= t x 0.6 x head-box diagonal, joints present in the ground truth; "
    "Mean@0.1 at t = 0.10 with <= (HRNet's table prints t = 0.11 under this name)"
  )
  lines = [f"{title:10s} {head}" if title else head, f"{'':10s} {row}" if title else row, note]
  return "\n".join(lines)
