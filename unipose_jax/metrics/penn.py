"""Penn Action's PCK@0.2 (box normalised), as UniPose and the Penn Action papers report it.

Coordinates: ``(x, y)`` original-image pixels, 0-based, integer = pixel centre (the release's
1-based values minus 1); ``B`` frames, ``K`` = 13 joints in the release's order
(:data:`unipose_jax.keypoint_sets.PENN_ACTION`).

* normaliser ``= max(box width, box height)`` of the annotation's ``bbox`` ``[x1, y1, x2, y2]``;
* joint ``k`` of frame ``b`` is correct when its distance ``<= 0.2 x`` the normaliser;
* only visible joints count (the release's ``visibility`` = 1; pass them as ``mask``), over
  every test frame;
* columns Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle: the mean of the left and right
  per-joint values (as for MPII); ``Mean``: every counted joint, pooled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from unipose_jax.keypoint_sets import PENN_ACTION, KeypointSet
from unipose_jax.metrics.pck_tables import box_sizes, column_table, normalised_counts

#: Penn Action's threshold (fraction of the box's larger side).
PENN_ALPHA: float = 0.2
#: The table's keys, in print order.
PENN_KEYS: tuple[str, ...] = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")

Array = Any


def penn_counts(pred: Array, gt: Array, mask: Array, box: Array) -> dict[str, Any]:
  """Sums of one batch: ``penn_correct`` ``(1, K)`` int32 and ``penn_total`` ``(K,)`` int32.

  ``pred``, ``gt`` ``(B, K, 2)``; ``mask`` ``(B, K)`` (visible and valid); ``box`` ``(B, 4)``.
  """
  c = normalised_counts(pred, gt, mask, box_sizes(box), (PENN_ALPHA,))
  return {"penn_correct": c["correct"], "penn_total": c["total"]}


def summarize_penn(counts: Mapping[str, Array], keypoint_set: KeypointSet = PENN_ACTION) -> dict:
  """:data:`PENN_KEYS` -> fractions from (merged) :func:`penn_counts`."""
  correct = np.asarray(counts["penn_correct"])
  return column_table(correct[0], np.asarray(counts["penn_total"]), keypoint_set)


def format_penn_table(summary: Mapping[str, float], title: str = "") -> str:
  """The UniPose paper's table (percentages), two lines plus a note."""
  head = " ".join(f"{k:>8s}" for k in PENN_KEYS)
  row = " ".join(f"{100 * summary[k]:8.2f}" for k in PENN_KEYS)
  note = "PCK@0.2: distance <= 0.2 x max(box width, box height), visible joints, every frame"
  lines = [f"{title:10s} {head}" if title else head, f"{'':10s} {row}" if title else row, note]
  return "\n".join(lines)
