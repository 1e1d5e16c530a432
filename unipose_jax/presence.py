"""Person presence: a score per image from the network's heatmaps, and its calibration maths.

The network answers every image with K joint positions, person or not; whether a person
is there is a separate decision: a presence score ``s`` of the image's heatmaps, and a
person is found when ``s >= threshold``. The threshold is chosen on images with a person
(positives) and without one (negatives, :mod:`unipose_jax.negatives`) for a stated
false-positive rate (:mod:`unipose_jax.calibrate` does it for a run).

Heatmaps here are ``(B, h, w, N)`` float, background dropped, ``N = K`` joint maps, plus
the 5 box maps (centre first) when the run has a box head: the layout of the evaluation
and prediction forward pass. Scores (:data:`SCORES`) are pure ``jnp`` functions
``(heatmaps, *, num_joints, sigma) -> (B,)`` float32 (higher = more like a person),
jittable; ``sigma`` is the codec's Gaussian sigma in heatmap pixels.

The ROC maths (:func:`roc_curve`, :func:`roc_auc`, :func:`threshold_for_fpr`,
:func:`rates_at`) is NumPy on host arrays of scores.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from unipose_jax import skeleton

#: Symmetric limbs (right bone, left bone) compared by :func:`limb_symmetry`.
SYMMETRIC_LIMBS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
  ((8, 7), (9, 10)),  # upper arms
  ((7, 6), (10, 11)),  # forearms
  ((2, 1), (3, 4)),  # thighs
  ((1, 0), (4, 5)),  # shins
)


def _joint_maps(heatmaps: jax.Array, num_joints: int) -> jax.Array:
  if heatmaps.ndim != 4 or heatmaps.shape[-1] < num_joints:
    raise ValueError(
      f"heatmaps must be (B, h, w, N >= {num_joints}), got shape {tuple(heatmaps.shape)}"
    )
  return heatmaps[..., :num_joints].astype(jnp.float32)


def peaks(heatmaps: jax.Array) -> jax.Array:
  """``(B, h, w, N) -> (B, N)``: each map's maximum."""
  return jnp.max(heatmaps, axis=(1, 2))


def joint_max(heatmaps: jax.Array, *, num_joints: int, sigma: float) -> jax.Array:
  """The highest joint-map peak: today's rule (a person when any joint reaches the
  joint-score threshold) as a score."""
  del sigma
  return peaks(_joint_maps(heatmaps, num_joints)).max(-1)


def joint_mean(heatmaps: jax.Array, *, num_joints: int, sigma: float) -> jax.Array:
  """The mean of the K joint-map peaks."""
  del sigma
  return peaks(_joint_maps(heatmaps, num_joints)).mean(-1)


def box_centre(heatmaps: jax.Array, *, num_joints: int, sigma: float) -> jax.Array:
  """The peak of the box head's centre map (channel ``num_joints``)."""
  del sigma
  return jnp.max(_box_maps(heatmaps, num_joints, "box_centre")[..., 0], axis=(1, 2))


def argmax_points(maps: jax.Array) -> jax.Array:
  """``(B, h, w, N) -> (B, N, 2)`` float32 (x, y) heatmap pixels of each map's argmax."""
  b, h, w, n = maps.shape
  idx = jnp.argmax(maps.reshape(b, h * w, n), axis=1)
  return jnp.stack([idx % w, idx // w], axis=-1).astype(jnp.float32)


def argmax_gaussians(maps: jax.Array, sigma: float) -> jax.Array:
  """``(B, h, w, N) -> (B, h, w, N)``: for each map, the training target of a point at
  its (first) argmax pixel: a unit-peak Gaussian of ``sigma`` heatmap pixels there."""
  _, h, w, _ = maps.shape
  pts = argmax_points(maps)  # (B, N, 2)
  cols, rows = pts[:, None, None, :, 0], pts[:, None, None, :, 1]
  yy = jnp.arange(h, dtype=jnp.float32)[None, :, None, None]
  xx = jnp.arange(w, dtype=jnp.float32)[None, None, :, None]
  d2 = (yy - rows) ** 2 + (xx - cols) ** 2
  return jnp.exp(-d2 / (2.0 * sigma**2))


def target_fits(maps: jax.Array, sigma: float) -> jax.Array:
  """``(B, h, w, N) -> (B, N)``: how well each map matches the target the network is
  trained to draw for one point, ``1 - ||m - g||^2 / ||g||^2`` with ``g`` the unit
  Gaussian at the map's argmax (:func:`argmax_gaussians`). 1 for a perfect target;
  ``1 - (1 - a)^2`` for a clean Gaussian of height ``a`` (so 0 for an empty map and for a
  blob twice too high); lower still for extra blobs, broad or negative regions."""
  m = maps.astype(jnp.float32)
  g = argmax_gaussians(m, sigma)
  err = jnp.sum((m - g) ** 2, axis=(1, 2)) / jnp.sum(g**2, axis=(1, 2))
  return 1.0 - err


def target_fit(heatmaps: jax.Array, *, num_joints: int, sigma: float) -> jax.Array:
  """The mean over joints of :func:`target_fits`: the joint maps look like the maps the
  network draws for a person (one Gaussian blob per joint, near unit height, nothing
  else), not merely have high values somewhere."""
  return jnp.mean(target_fits(_joint_maps(heatmaps, num_joints), sigma), axis=-1)


def _box_maps(heatmaps: jax.Array, num_joints: int, score: str) -> jax.Array:
  if heatmaps.ndim != 4 or heatmaps.shape[-1] < num_joints + skeleton.NUM_BOX_POINTS:
    raise ValueError(
      f"{score} needs the box head's maps: heatmaps (B, h, w, {num_joints} + 5), got "
      f"shape {tuple(heatmaps.shape)}"
    )
  return heatmaps[..., num_joints : num_joints + skeleton.NUM_BOX_POINTS].astype(jnp.float32)


def box_fit(heatmaps: jax.Array, *, num_joints: int, sigma: float) -> jax.Array:
  """:func:`target_fit` of the box head's 5 maps (centre and corners)."""
  return jnp.mean(target_fits(_box_maps(heatmaps, num_joints, "box_fit"), sigma), axis=-1)


def joint_shape(heatmaps: jax.Array, *, num_joints: int, sigma: float) -> jax.Array:
  """The mean over joints of the correlation coefficient (in [-1, 1]) of each map with
  the unit Gaussian at its argmax (:func:`argmax_gaussians`): how Gaussian the map is,
  whatever its height."""
  m = _joint_maps(heatmaps, num_joints)
  g = argmax_gaussians(m, sigma)
  mc = m - m.mean(axis=(1, 2), keepdims=True)
  gc = g - g.mean(axis=(1, 2), keepdims=True)
  num = jnp.sum(mc * gc, axis=(1, 2))
  den = jnp.sqrt(jnp.sum(mc**2, axis=(1, 2)) * jnp.sum(gc**2, axis=(1, 2)))
  return jnp.mean(jnp.where(den > 0, num / jnp.maximum(den, 1e-12), 0.0), axis=-1)


def joint_concentration(heatmaps: jax.Array, *, num_joints: int, sigma: float) -> jax.Array:
  """The mean over joints of ``peak * c``, ``c = peak * 2 pi sigma^2 / sum(max(map, 0))``
  the share of the map's positive mass a Gaussian of that peak would hold: ``c = 1`` for
  one clean Gaussian blob, lower for broad, flat or several blobs. A Gaussian of height
  ``a`` scores ``a``."""
  maps = _joint_maps(heatmaps, num_joints)
  p = peaks(maps)
  mass = jnp.sum(jnp.maximum(maps, 0.0), axis=(1, 2))
  c = jnp.maximum(p, 0.0) * (2.0 * math.pi * sigma**2) / jnp.maximum(mass, 1e-12)
  return jnp.mean(p * jnp.minimum(c, 1.0), axis=-1)


def limb_symmetry(heatmaps: jax.Array, *, num_joints: int, sigma: float) -> jax.Array:
  """Whether the joints' argmax positions form a body: minus the mean over the four
  symmetric limb pairs (:data:`SYMMETRIC_LIMBS`) of ``|log(right length / left length)|``
  (lengths at least half a heatmap pixel). 0 for a symmetric skeleton, lower otherwise."""
  del sigma
  pts = argmax_points(_joint_maps(heatmaps, num_joints))

  def length(a: int, b: int) -> jax.Array:
    return jnp.maximum(jnp.linalg.norm(pts[:, a] - pts[:, b], axis=-1), 0.5)

  terms = [jnp.abs(jnp.log(length(*r) / length(*lft))) for r, lft in SYMMETRIC_LIMBS]
  return -jnp.mean(jnp.stack(terms, -1), axis=-1)


ScoreFn = Callable[..., jax.Array]

#: Every candidate presence score; calibration measures each and keeps the best by AUC.
SCORES: dict[str, ScoreFn] = {
  "joint_max": joint_max,
  "joint_mean": joint_mean,
  "joint_shape": joint_shape,
  "joint_concentration": joint_concentration,
  "limb_symmetry": limb_symmetry,
  "target_fit": target_fit,
  "box_centre": box_centre,
  "box_fit": box_fit,
}
#: Scores that need the box head's maps.
BOX_SCORES: tuple[str, ...] = ("box_centre", "box_fit")


def candidates(box_head: bool) -> tuple[str, ...]:
  """The names of :data:`SCORES` that apply to a run with or without a box head."""
  return tuple(n for n in SCORES if box_head or n not in BOX_SCORES)


def score_fn(name: str, *, num_joints: int, sigma: float) -> Callable[[jax.Array], jax.Array]:
  """``heatmaps (B, h, w, N) -> (B,)``: score ``name`` with its settings bound."""
  if name not in SCORES:
    raise ValueError(f"unknown presence score {name!r}; known: {', '.join(SCORES)}")
  return functools.partial(SCORES[name], num_joints=num_joints, sigma=sigma)


def all_scores(
  heatmaps: jax.Array, names: tuple[str, ...], *, num_joints: int, sigma: float
) -> dict[str, jax.Array]:
  """``{name: (B,)}`` of several scores of the same heatmaps."""
  return {n: score_fn(n, num_joints=num_joints, sigma=sigma)(heatmaps) for n in names}


# ----------------------------------------------------------------------------- ROC maths


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
