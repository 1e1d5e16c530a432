"""Metrics: pure functions of coordinates (never heatmaps), accumulated as sums and counts.

* :mod:`~unipose_jax.metrics.keypoints`: PCK (a torso of two joints) with its curve and AUC, and
  PCKh (a head segment of two joints), as LSP defines them, the joints given by the
  keypoint set; the definitions are in that module's doc.
* :mod:`~unipose_jax.metrics.pckh`: MPII's PCKh (0.6 x head-box diagonal) and its table;
  :mod:`~unipose_jax.metrics.penn`: Penn Action's PCK@0.2 (larger side of the box); both on
  :mod:`~unipose_jax.metrics.pck_tables` (a per-person normaliser, the protocol tables).
* :mod:`~unipose_jax.metrics.coco_eval`: COCO's OKS AP through pycocotools (rescoring,
  OKS-NMS, the results JSON in COCO's frame).
* :mod:`~unipose_jax.metrics.protocols`: which of these scores a keypoint set, its sums in
  the jitted evaluation step and its keys afterwards.
* :mod:`~unipose_jax.metrics.boxes`: the person box's IoU and centre error.
* :mod:`~unipose_jax.metrics.roc`: ROC curve, AUC and the threshold for a stated
  false-positive rate of a ``score >= threshold`` decision (person presence).
* :mod:`~unipose_jax.metrics.counts`: :func:`merge_counts`, exact across batches, devices
  and hosts.
* :mod:`~unipose_jax.metrics.training`: :class:`TrainMetrics`, the training loss and
  gradient norm averaged on the device.
"""

from unipose_jax.metrics.boxes import (
  BOX_IOU_THRESHOLD,
  MIN_BOX_DIAGONAL,
  box_centre_errors,
  box_counts,
  box_iou,
  summarize_boxes,
)
from unipose_jax.metrics.counts import merge_counts
from unipose_jax.metrics.keypoints import (
  PCK_THRESHOLDS,
  PCKH_ALPHA,
  REPORTED_ALPHAS,
  area_under_curve,
  correct_within,
  head_lengths,
  keypoint_counts,
  keypoint_distances,
  pck_curve,
  summarize,
  torso_lengths,
)
from unipose_jax.metrics.roc import rates_at, roc_auc, roc_curve, threshold_for_fpr
from unipose_jax.metrics.training import TrainMetrics

__all__ = [
  "BOX_IOU_THRESHOLD",
  "MIN_BOX_DIAGONAL",
  "PCKH_ALPHA",
  "PCK_THRESHOLDS",
  "REPORTED_ALPHAS",
  "TrainMetrics",
  "area_under_curve",
  "box_centre_errors",
  "box_counts",
  "box_iou",
  "correct_within",
  "head_lengths",
  "keypoint_counts",
  "keypoint_distances",
  "merge_counts",
  "pck_curve",
  "rates_at",
  "roc_auc",
  "roc_curve",
  "summarize",
  "summarize_boxes",
  "threshold_for_fpr",
  "torso_lengths",
]
