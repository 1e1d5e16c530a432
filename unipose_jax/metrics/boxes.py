"""The person box's accuracy (UniPose's box head), as sums for ``merge_counts``.

Person box (UniPose's box head; boxes ``(x0, y0, x1, y1)`` continuous, in the same
frame for prediction and annotation):

* IoU: ``area(a & b) / area(a | b)`` with ``area = (x1 - x0) * (y1 - y0)`` (a side of
  negative length counts as 0); 0 when the union is empty (two zero-area boxes) and when
  a coordinate is NaN.
* Centre error: ``||centre(pred) - centre(gt)|| / diagonal(gt)``, the diagonal floored at
  :data:`MIN_BOX_DIAGONAL` pixel so that a degenerate annotation (all joints on one
  point) never divides by zero. A NaN prediction gives a NaN error, which makes the
  mean NaN (reported as null) instead of being hidden.
* :func:`box_counts` gives the sums ``box_iou_sum``, ``box_iou50`` (IoU >= 0.5),
  ``box_centre_error_sum`` and ``box_total`` over the boxes of a ``mask``; they live in
  the same dict as the keypoint counts and merge the same way. The two float sums are
  float32 on the device and are merged in float64 on the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from unipose_jax.metrics.counts import ratio

#: Box IoU threshold of the ``box_iou>=0.5`` share.
BOX_IOU_THRESHOLD: float = 0.5
#: The ground-truth box diagonal is floored at this many pixels for the centre error.
MIN_BOX_DIAGONAL: float = 1.0

Array = Any


def _check_boxes(a: Array, b: Array) -> tuple[jnp.ndarray, jnp.ndarray]:
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.ndim != 2 or a.shape[-1] != 4:
    raise ValueError(f"boxes must have shape (B, 4) as (x0, y0, x1, y1), got {a.shape}")
  if b.shape != a.shape:
    raise ValueError(f"box shapes differ: {a.shape} and {b.shape}")
  return a, b


def _box_area(box: jnp.ndarray) -> jnp.ndarray:
  return jnp.maximum(box[:, 2] - box[:, 0], 0.0) * jnp.maximum(box[:, 3] - box[:, 1], 0.0)


def box_iou(a: Array, b: Array) -> jnp.ndarray:
  """Intersection over union ``(B,)`` float32 of boxes ``(B, 4)`` ``(x0, y0, x1, y1)``.

  0 where the union is empty or a coordinate is NaN; never NaN.
  """
  a, b = _check_boxes(a, b)
  w = jnp.maximum(jnp.minimum(a[:, 2], b[:, 2]) - jnp.maximum(a[:, 0], b[:, 0]), 0.0)
  h = jnp.maximum(jnp.minimum(a[:, 3], b[:, 3]) - jnp.maximum(a[:, 1], b[:, 1]), 0.0)
  inter = w * h
  union = _box_area(a) + _box_area(b) - inter
  ok = union > 0  # False for NaN too
  return jnp.where(ok, inter / jnp.where(ok, union, 1.0), 0.0)


def box_centre_errors(pred: Array, gt: Array) -> jnp.ndarray:
  """``(B,)`` float32: distance between the box centres over the ``gt`` box diagonal.

  Boxes ``(B, 4)`` ``(x0, y0, x1, y1)``; the diagonal is floored at
  :data:`MIN_BOX_DIAGONAL` pixels. NaN in ``pred`` gives NaN.
  """
  pred, gt = _check_boxes(pred, gt)
  centre = lambda box: 0.5 * (box[:, :2] + box[:, 2:])  # noqa: E731
  distance = jnp.linalg.norm(centre(pred) - centre(gt), axis=-1)
  diagonal = jnp.linalg.norm(gt[:, 2:] - gt[:, :2], axis=-1)
  return distance / jnp.maximum(diagonal, MIN_BOX_DIAGONAL)


def box_counts(pred: Array, gt: Array, mask: Array | None = None) -> dict[str, jnp.ndarray]:
  """The box sums of one batch, for :func:`merge_counts` and :func:`summarize`.

  Args:
    pred, gt: ``(B, 4)`` boxes ``(x0, y0, x1, y1)`` in the same frame.
    mask: ``(B,)`` bool, the boxes that count (valid images with an annotated box);
      masked-out boxes add nothing, even when NaN. ``None``: all.

  Returns ``box_iou_sum`` ``()`` float32, ``box_iou50`` ``()`` int32 (IoU >= 0.5),
  ``box_centre_error_sum`` ``()`` float32 and ``box_total`` ``()`` int32.
  """
  pred, gt = _check_boxes(pred, gt)
  if mask is None:
    mask = jnp.ones(gt.shape[:1], bool)
  mask = jnp.asarray(mask)
  if mask.shape != gt.shape[:1]:
    raise ValueError(f"box mask must have shape (B,) = {gt.shape[:1]}, got {mask.shape}")
  mask = mask.astype(bool)
  iou = box_iou(pred, gt)
  err = box_centre_errors(pred, gt)
  return {
    "box_iou_sum": jnp.sum(jnp.where(mask, iou, 0.0)),
    "box_iou50": jnp.sum(mask & (iou >= BOX_IOU_THRESHOLD), dtype=jnp.int32),
    "box_centre_error_sum": jnp.sum(jnp.where(mask, err, 0.0)),
    "box_total": jnp.sum(mask, dtype=jnp.int32),
  }


def summarize_boxes(counts: Mapping[str, Array]) -> dict[str, float]:
  """``box_iou``, ``box_iou>=0.5``, ``box_centre_error`` and ``num_boxes`` (python floats)
  from the (merged) sums of :func:`box_counts`; the means are NaN when no box counted."""
  missing = sorted({"box_iou_sum", "box_iou50", "box_centre_error_sum", "box_total"} - set(counts))
  if missing:
    raise ValueError(f"box counts lack {missing}")
  total = np.asarray(counts["box_total"])
  return {
    "box_iou": float(ratio(counts["box_iou_sum"], total)),
    f"box_iou>={BOX_IOU_THRESHOLD:g}": float(ratio(counts["box_iou50"], total)),
    "box_centre_error": float(ratio(counts["box_centre_error_sum"], total)),
    "num_boxes": float(total),
  }
