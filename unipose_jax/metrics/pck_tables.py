"""PCK with a per-person normaliser, accumulated as sums, and the protocol tables built on it.

The shared part of MPII's PCKh (:mod:`~unipose_jax.metrics.pckh`) and Penn Action's PCK
(:mod:`~unipose_jax.metrics.penn`). Coordinates are ``(x, y)`` original-image pixels, 0-based,
integer = pixel centre; predictions and annotations in the same frame. ``B`` persons, ``K``
joints (the keypoint set's order), ``T`` thresholds.

* A joint is correct at threshold ``t`` when ``||pred - gt|| <= t * size[b]`` (inclusive, no
  division: a zero size makes only exact hits correct; NaN anywhere is incorrect).
* Only joints of ``mask`` count (numerator and denominator); a masked joint's coordinates
  may be anything, NaN included.
* The table (:func:`column_table`): each column of ``KeypointSet.table_columns`` is the
  *mean of its joints' per-joint values* (HRNet's and mmpose's ``0.5 * (PCKh[l] + PCKh[r])``,
  not the pooled counts of the pair); ``Mean`` is pooled: the correct joints over the counted
  joints of every joint but ``KeypointSet.mean_excludes`` (= HRNet's ``jnt_count``-weighted
  mean of the per-joint values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from unipose_jax.keypoint_sets import KeypointSet
from unipose_jax.metrics.counts import ratio

Array = Any


def head_box_sizes(head_box: Array, bias: float) -> jnp.ndarray:
  """``(B,)`` ``bias x`` the diagonal of ``head_box`` ``(B, 4)`` ``[x1, y1, x2, y2]``
  (MPII's head size, ``bias`` = 0.6)."""
  head_box = jnp.asarray(head_box, jnp.float32)
  _check_boxes(head_box, "head_box")
  return bias * jnp.linalg.norm(head_box[:, 2:] - head_box[:, :2], axis=-1)


def box_sizes(box: Array) -> jnp.ndarray:
  """``(B,)`` ``max(width, height)`` of ``box`` ``(B, 4)`` ``[x1, y1, x2, y2]`` (Penn Action's
  normaliser; width = ``x2 - x1``, the same in any pixel frame)."""
  box = jnp.asarray(box, jnp.float32)
  _check_boxes(box, "box")
  return jnp.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])


def _check_boxes(box: jnp.ndarray, name: str) -> None:
  if box.ndim != 2 or box.shape[-1] != 4:
    raise ValueError(f"{name} must have shape (B, 4), got {box.shape}")


def normalised_counts(
  pred: Array, gt: Array, mask: Array, sizes: Array, thresholds: Sequence[float]
) -> dict[str, jnp.ndarray]:
  """Sums of one batch: ``correct`` ``(T, K)`` int32 (counted joints within
  ``thresholds[t] * sizes[b]``) and ``total`` ``(K,)`` int32 (counted joints).

  ``pred``, ``gt`` ``(B, K, 2)``; ``mask`` ``(B, K)`` bool; ``sizes`` ``(B,)``. jit-able.
  """
  pred = jnp.asarray(pred, jnp.float32)
  gt = jnp.asarray(gt, jnp.float32)
  if gt.ndim != 3 or gt.shape[-1] != 2 or pred.shape != gt.shape:
    raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both have shape (B, K, 2)")
  mask = jnp.asarray(mask).astype(bool)
  if mask.shape != gt.shape[:2]:
    raise ValueError(f"mask must have shape (B, K) = {gt.shape[:2]}, got {mask.shape}")
  sizes = jnp.asarray(sizes, jnp.float32)
  if sizes.shape != gt.shape[:1]:
    raise ValueError(f"sizes must have shape (B,) = {gt.shape[:1]}, got {sizes.shape}")
  t = jnp.asarray(thresholds, jnp.float32)
  dist = jnp.linalg.norm(pred - gt, axis=-1)  # (B, K)
  ok = dist[None] <= t[:, None, None] * sizes[None, :, None]  # (T, B, K)
  return {
    "correct": jnp.sum(ok & mask[None], axis=1, dtype=jnp.int32),
    "total": jnp.sum(mask, axis=0, dtype=jnp.int32),
  }


def column_table(
  correct: Array, total: Array, keypoint_set: KeypointSet, mean_key: str = "Mean"
) -> dict[str, float]:
  """``{column: value, ..., mean_key: value}`` (fractions; NaN where nothing counted) of
  one threshold's ``correct`` ``(K,)`` and ``total`` ``(K,)`` (see the module doc)."""
  correct = np.asarray(correct, np.int64)
  total = np.asarray(total, np.int64)
  k = keypoint_set.num_joints
  if correct.shape != (k,) or total.shape != (k,):
    raise ValueError(
      f"counts of shape {correct.shape} / {total.shape} for the {k} joints of {keypoint_set.name}"
    )
  if not keypoint_set.table_columns:
    raise ValueError(f"keypoint set {keypoint_set.name!r} has no table_columns")
  per_joint = ratio(correct, total)
  out = {col: float(np.mean(per_joint[list(joints)])) for col, joints in keypoint_set.table_columns}
  out[mean_key] = _pooled(correct, total, keypoint_set.mean_excludes)
  return out


def _pooled(correct: np.ndarray, total: np.ndarray, excludes: Sequence[int]) -> float:
  keep = np.ones(correct.shape[0], bool)
  keep[list(excludes)] = False
  return float(ratio(correct[keep].sum(), total[keep].sum()))
