"""ROC of a binary decision ``score >= threshold``: the curve, its area and the threshold
for a stated false-positive rate (person presence is calibrated with these).

NumPy on host arrays of scores: positives ``(P,)`` (the decision should say yes) and
negatives ``(M,)`` (it should say no); every score must be finite.
"""

from __future__ import annotations

import math

import numpy as np


def _scores(x, name: str) -> np.ndarray:
  a = np.asarray(x, np.float64).reshape(-1)
  if not a.size:
    raise ValueError(f"{name} is empty: need at least one score")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(a)))} non-finite scores")
  return a


def roc_curve(positives, negatives) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The ROC curve of the rule ``score >= t``.

  Args:
    positives: ``(P,)`` scores of images with a person; negatives: ``(M,)`` without.
  Returns:
    ``(fpr, tpr, thresholds)``, each ``(T + 1,)``: the thresholds are the distinct
    scores in decreasing order after a first ``+inf`` (nothing accepted: the point
    (0, 0)); ``fpr[i]``, ``tpr[i]`` the shares of negatives and positives with a score
    ``>= thresholds[i]``. The last point is (1, 1).
  """
  pos, neg = _scores(positives, "positives"), _scores(negatives, "negatives")
  thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
  pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
  # Count of scores >= t: size minus the count of scores < t.
  tp = pos.size - np.searchsorted(pos_sorted, thresholds, side="left")
  fp = neg.size - np.searchsorted(neg_sorted, thresholds, side="left")
  fpr = np.concatenate([[0.0], fp / neg.size])
  tpr = np.concatenate([[0.0], tp / pos.size])
  return fpr, tpr, np.concatenate([[np.inf], thresholds])


def roc_auc(positives, negatives) -> float:
  """Area under :func:`roc_curve` (trapezoids): the probability that a random positive
  scores above a random negative, ties counting one half."""
  fpr, tpr, _ = roc_curve(positives, negatives)
  return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def threshold_for_fpr(negatives, fpr: float) -> float:
  """The smallest threshold ``t`` with at most ``floor(fpr * M)`` of the ``M`` negative
  scores ``>= t``: just above (the next float64 after) the ``(n + 1)``-th highest
  negative score, ``n = floor(fpr * M)``. ``fpr >= 1`` accepts everything (``-inf``)."""
  neg = np.sort(_scores(negatives, "negatives"))[::-1]
  if not 0.0 <= fpr:
    raise ValueError(f"fpr must be in [0, 1], got {fpr}")
  allowed = math.floor(fpr * neg.size + 1e-9)
  if allowed >= neg.size:
    return -math.inf
  return float(np.nextafter(neg[allowed], np.inf))


def rates_at(positives, negatives, threshold: float) -> tuple[float, float]:
  """``(tpr, fpr)``: the shares of positives and negatives with a score ``>= threshold``."""
  pos, neg = _scores(positives, "positives"), _scores(negatives, "negatives")
  return float(np.mean(pos >= threshold)), float(np.mean(neg >= threshold))
