"""Keypoint accuracy normalised by two joints of the annotation: PCK (torso), its curve
and AUC, and PCKh (a head segment), as LSP defines them.

Everything here takes *coordinates*, never heatmaps: ``(x, y)`` in pixels of
the original image (design section 5), predictions and annotations in the same
frame. Shapes use ``B`` images, ``K`` joints (the keypoint set's order) and ``T``
thresholds. Which joints make the torso and the head segment is the keypoint set's
(``KeypointSet.torso`` / ``.head``), passed in by the caller: nothing here knows a
dataset. LSP's, the values below, are ``torso = (9, 2)`` and ``head = (12, 13)``.

Definitions (as implemented)
----------------------------
* distance ``d[b, k] = ||pred[b, k] - gt[b, k]||_2`` in original pixels.
* PCK@alpha (person-centric): joint ``k`` of image ``b`` is correct when
  ``d[b, k] <= alpha * torso[b]`` (inclusive), with
  ``torso[b] = ||gt[b, t0] - gt[b, t1]||`` (LSP: left shoulder to right hip of the
  annotation).
* PCKh@alpha: the same with ``head[b] = ||gt[b, h0] - gt[b, h1]||`` (LSP: neck to
  head top of the annotation). LSP has no head bounding box, so this is *not*
  the MPII head-box PCKh; it is the neck-to-head-top segment.
* Scores are micro-averages: correct joints / counted joints over all joints
  of all images (and per joint over all images). A ``mask`` ``(B, K)`` picks
  which joints count; masked entries (padding, unlabeled joints) add nothing to
  either the numerator or the denominator, even when their coordinates are NaN.
  The reference lengths are always taken from ``gt`` (the torso/head joints are
  used whether or not they are masked).
* Degenerate reference (torso or head of length 0): no division is ever made,
  the test is ``d <= alpha * 0``, so such a joint still counts in the total and
  is correct only if its distance is exactly 0. A NaN prediction or NaN
  reference makes the joint incorrect (comparisons with NaN are False); no NaN
  ever reaches the sums.
* PCK curve: PCK at every threshold of a grid; the default grid is
  ``PCK_THRESHOLDS = k / 200, k = 0..40`` (0 to 0.2 in steps of 0.005, which
  contains 0.05, 0.1 and 0.2 exactly).
* AUC@0.2: the area under the (micro-averaged) PCK curve by the trapezoidal rule
  over the grid, divided by the grid's span (``0.2 - 0``), so a perfect
  predictor scores 1.0 and the value is a PCK averaged over thresholds 0..0.2.

Accumulation: :func:`keypoint_counts` returns integer (``int32``) sums of
correct joints per threshold and per joint, and counts per joint; sums add
exactly across batches, devices and hosts (:func:`merge_counts`), so uneven last
batches and padding do not bias the averages. :func:`summarize` turns the sums
into python floats and :func:`pck_curve` gives the curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from unipose_jax.metrics.boxes import summarize_boxes
from unipose_jax.metrics.counts import ratio

#: Default threshold grid (fractions of the torso) for the PCK curve and AUC.
PCK_THRESHOLDS: tuple[float, ...] = tuple(k / 200 for k in range(41))
#: PCK thresholds reported as single numbers.
REPORTED_ALPHAS: tuple[float, ...] = (0.2, 0.1, 0.05)
#: PCKh threshold (fraction of the neck-to-head-top length).
PCKH_ALPHA: float = 0.5

Array = Any


# ---------------------------------------------------------------------------
# Validation helpers.


Pair = tuple[int, int]


def _check_keypoints(pred: Array, gt: Array) -> tuple[jnp.ndarray, jnp.ndarray]:
  pred = jnp.asarray(pred, jnp.float32)
  gt = jnp.asarray(gt, jnp.float32)
  if gt.ndim != 3 or gt.shape[-1] != 2:
    raise ValueError(f"gt must have shape (B, K, 2), got {gt.shape}")
  if pred.shape != gt.shape:
    raise ValueError(f"pred shape {pred.shape} does not match gt shape {gt.shape}")
  return pred, gt


def _check_pair(pair: Pair, k: int, what: str) -> Pair:
  if pair is None or len(pair) != 2 or not all(0 <= int(i) < k for i in pair):
    raise ValueError(f"{what} must be two joints of 0..{k - 1}, got {pair} (K={k})")
  return int(pair[0]), int(pair[1])


def _check_mask(mask: Array | None, shape: tuple[int, int]) -> jnp.ndarray:
  if mask is None:
    return jnp.ones(shape, bool)
  mask = jnp.asarray(mask)
  if mask.shape != shape:
    raise ValueError(f"mask must have shape (B, K) = {shape}, got {mask.shape}")
  return mask.astype(bool)


def _check_thresholds(thresholds: Sequence[float] | Array) -> np.ndarray:
  t = np.asarray(thresholds, np.float64)
  if t.ndim != 1 or t.size == 0:
    raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {t.shape}")
  if not np.all(np.isfinite(t)) or np.any(t < 0):
    raise ValueError(f"thresholds must be finite and >= 0, got {t}")
  if np.any(np.diff(t) <= 0):
    raise ValueError(f"thresholds must be strictly increasing, got {t}")
  return t


# ---------------------------------------------------------------------------
# Pure per-batch functions (jit-able; shapes are static).


def keypoint_distances(pred: Array, gt: Array) -> jnp.ndarray:
  """Euclidean distances ``(B, K)`` float32 between ``pred`` and ``gt`` ``(B, K, 2)``."""
  pred, gt = _check_keypoints(pred, gt)
  return jnp.linalg.norm(pred - gt, axis=-1)


def torso_lengths(gt: Array, torso: Pair) -> jnp.ndarray:
  """Torso ``(B,)``: ``||gt[:, a] - gt[:, b]||`` for ``torso = (a, b)`` (the keypoint
  set's; LSP: ``(9, 2)``, left shoulder to right hip)."""
  gt = jnp.asarray(gt, jnp.float32)
  a, b = _check_pair(torso, gt.shape[-2], "torso")
  return jnp.linalg.norm(gt[..., a, :] - gt[..., b, :], axis=-1)


def head_lengths(gt: Array, head: Pair) -> jnp.ndarray:
  """Head size ``(B,)``: ``||gt[:, a] - gt[:, b]||`` for ``head = (a, b)`` (the keypoint
  set's; LSP: ``(12, 13)``, neck to head top)."""
  gt = jnp.asarray(gt, jnp.float32)
  a, b = _check_pair(head, gt.shape[-2], "head")
  return jnp.linalg.norm(gt[..., a, :] - gt[..., b, :], axis=-1)


def correct_within(distances: Array, reference: Array, alphas: Array) -> jnp.ndarray:
  """``(T, B, K)`` bool: ``distances[b, k] <= alphas[t] * reference[b]``.

  Args:
    distances: ``(B, K)`` pixel distances.
    reference: ``(B,)`` reference lengths (torso or head), in the same pixels.
    alphas: ``(T,)`` thresholds as fractions of the reference.

  Never divides: a zero reference makes only exact hits correct; NaN anywhere
  gives False.
  """
  distances = jnp.asarray(distances, jnp.float32)
  reference = jnp.asarray(reference, jnp.float32)
  alphas = jnp.asarray(alphas, jnp.float32)
  radius = alphas[:, None, None] * reference[None, :, None]  # (T, B, 1)
  return distances[None] <= radius


def _threshold_array(thresholds: Sequence[float] | Array) -> jnp.ndarray:
  """Thresholds as a float32 array, validated when they are concrete."""
  if isinstance(thresholds, (tuple, list, np.ndarray)):
    thresholds = _check_thresholds(thresholds)
  return jnp.asarray(thresholds, jnp.float32)


def _masked_count(correct: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Sum over the batch axis (-2) of ``correct & mask`` as int32."""
  return jnp.sum(jnp.where(mask, correct, False), axis=-2, dtype=jnp.int32)


def keypoint_counts(
  pred: Array,
  gt: Array,
  mask: Array | None = None,
  thresholds: Sequence[float] | Array = PCK_THRESHOLDS,
  head_alpha: float = PCKH_ALPHA,
  *,
  torso: Pair,
  head: Pair,
) -> dict[str, jnp.ndarray]:
  """All sums needed by :func:`summarize`, for one batch. ``torso`` and ``head``: the
  keypoint set's two joints of each normaliser (:func:`torso_lengths`, :func:`head_lengths`).

  Returns a dict of int32 arrays:
    ``pck_correct`` ``(T, K)``, ``pckh_correct`` ``(K,)``, ``total`` ``(K,)``
    (counted joints) and ``num_images`` ``()`` (images with at least one
    counted joint).
  """
  pred, gt = _check_keypoints(pred, gt)
  mask = _check_mask(mask, gt.shape[:2])
  dist = keypoint_distances(pred, gt)
  pck_ok = correct_within(dist, torso_lengths(gt, torso), _threshold_array(thresholds))
  pckh_ok = correct_within(dist, head_lengths(gt, head), jnp.asarray([head_alpha]))[0]
  return {
    "pck_correct": _masked_count(pck_ok, mask),
    "pckh_correct": _masked_count(pckh_ok, mask),
    "total": jnp.sum(mask, axis=0, dtype=jnp.int32),
    "num_images": jnp.sum(jnp.any(mask, axis=1), dtype=jnp.int32),
  }


# ---------------------------------------------------------------------------
# Host-side summaries (python floats).


def area_under_curve(thresholds: Array, values: Array) -> float | np.ndarray:
  """Trapezoidal area under ``values(thresholds)`` divided by the threshold span.

  ``values`` may have extra leading axes; the result then has them too.
  A curve equal to 1 everywhere scores 1. Needs at least two thresholds.
  """
  t = _check_thresholds(thresholds)
  v = np.asarray(values, np.float64)
  if t.size < 2:
    raise ValueError("the area under a curve needs at least two thresholds")
  if v.shape[-1] != t.size:
    raise ValueError(f"values last axis {v.shape[-1]} != number of thresholds {t.size}")
  widths = np.diff(t)
  area = np.sum(widths * (v[..., 1:] + v[..., :-1]) / 2.0, axis=-1)
  return area / (t[-1] - t[0])


def pck_curve(
  counts: Mapping[str, Array], thresholds: Sequence[float] | Array = PCK_THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
  """Micro-averaged PCK curve ``(thresholds (T,), pck (T,))`` as float64 numpy.

  ``counts`` holds ``pck_correct (T, K)`` and ``total (K,)`` (from
  :func:`keypoint_counts`, possibly merged).
  """
  t = _check_thresholds(thresholds)
  correct = np.asarray(counts["pck_correct"])
  total = np.asarray(counts["total"])
  if correct.shape != (t.size, total.shape[0]):
    raise ValueError(
      f"correct has shape {correct.shape}, expected (T, K) = ({t.size}, {total.shape[0]})"
    )
  return t, ratio(correct.sum(axis=1), np.full(t.size, total.sum()))


def _find_threshold(t: np.ndarray, alpha: float) -> int | None:
  hits = np.flatnonzero(np.isclose(t, alpha, rtol=0.0, atol=1e-9))
  return int(hits[0]) if hits.size else None


def summarize(
  counts: Mapping[str, Array],
  thresholds: Sequence[float] | Array | None = None,
  head_alpha: float | None = None,
  *,
  joint_names: Sequence[str],
) -> dict[str, float]:
  """Flat dict of python floats from accumulated sums.

  Args:
    counts: the dict of :func:`keypoint_counts` (summed over batches).
    thresholds: the grid the counts were made with (default
      :data:`PCK_THRESHOLDS`).
    head_alpha: the PCKh alpha the counts were made with (default 0.5).
    joint_names: names for the per-joint keys, length K (the keypoint set's).

  Returns keys (values in [0, 1]; NaN where nothing was counted):
    ``pck@{a}`` for each of 0.2, 0.1, 0.05 present in the grid;
    ``auc@{max threshold}`` (if the grid has >= 2 points);
    ``pckh@{head_alpha}``; the same per joint as ``'<key>/<joint name>'``;
    ``num_joints`` and ``num_images`` (how many were counted).
    With the sums of :func:`box_counts` also ``box_iou`` (mean IoU), ``box_iou>=0.5``
    (share of boxes with IoU >= 0.5), ``box_centre_error`` (mean centre error) and
    ``num_boxes`` (NaN means where no box was counted).
    The curve itself is given by :func:`pck_curve`.
  """
  t = _check_thresholds(PCK_THRESHOLDS if thresholds is None else thresholds)
  head_alpha = PCKH_ALPHA if head_alpha is None else float(head_alpha)
  pck_correct = np.asarray(counts["pck_correct"])
  total = np.asarray(counts["total"])
  num_joints = total.shape[0]
  if pck_correct.shape != (t.size, num_joints):
    raise ValueError(
      f"pck_correct has shape {pck_correct.shape}, expected (T, K) = ({t.size}, {num_joints})"
    )
  if len(joint_names) != num_joints:
    raise ValueError(f"{len(joint_names)} joint names for {num_joints} joints")

  per_joint = ratio(pck_correct, total[None, :])  # (T, K)
  overall = pck_curve(counts, t)[1]  # (T,)
  out: dict[str, float] = {}
  for alpha in REPORTED_ALPHAS:
    i = _find_threshold(t, alpha)
    if i is None:
      continue
    out[f"pck@{alpha:g}"] = float(overall[i])
    for k, name in enumerate(joint_names):
      out[f"pck@{alpha:g}/{name}"] = float(per_joint[i, k])
  if t.size >= 2:
    key = f"auc@{t[-1]:g}"
    out[key] = float(area_under_curve(t, overall))
    auc_joint = area_under_curve(t, per_joint.T)
    for k, name in enumerate(joint_names):
      out[f"{key}/{name}"] = float(auc_joint[k])
  pckh_correct = np.asarray(counts["pckh_correct"])
  key = f"pckh@{head_alpha:g}"
  out[key] = float(ratio(pckh_correct.sum(), total.sum()))
  pckh_joint = ratio(pckh_correct, total)
  for k, name in enumerate(joint_names):
    out[f"{key}/{name}"] = float(pckh_joint[k])
  out["num_joints"] = float(total.sum())
  if "num_images" in counts:
    out["num_images"] = float(np.asarray(counts["num_images"]))
  if "box_total" in counts:
    out.update(summarize_boxes(counts))
  return out
