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

The ROC maths that calibrates a score is in :mod:`unipose_jax.metrics.roc`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from unipose_jax import skeleton
from unipose_jax.keypoint_sets import name_side

#: The bones :func:`limb_symmetry` compares between the right and left side, by the
#: joints' names without their side word (``keypoint_sets.name_side``).
SYMMETRIC_BONES: tuple[tuple[str, str], ...] = (
  ("shoulder", "elbow"),  # upper arms
  ("elbow", "wrist"),  # forearms
  ("hip", "knee"),  # thighs
  ("knee", "ankle"),  # shins
)

LimbPairs = tuple[tuple[tuple[int, int], tuple[int, int]], ...]


def symmetric_limbs(joint_names) -> LimbPairs:
  """``((right bone), (left bone))`` joint-index pairs of :data:`SYMMETRIC_BONES` that a
  keypoint set's ``joint_names`` have on both sides, in that order (LSP: upper arms
  ``((8, 7), (9, 10))``, forearms, thighs, shins). Empty for a set without them."""
  index = {}
  for k, name in enumerate(joint_names):
    side, rest = name_side(name)
    if side:
      index[(side, rest)] = k
  out = []
  for a, b in SYMMETRIC_BONES:
    keys = [(side, j) for side in ("right", "left") for j in (a, b)]
    if all(key in index for key in keys):
      ra, rb, la, lb = (index[key] for key in keys)
      out.append(((ra, rb), (la, lb)))
  return tuple(out)


def _split(heatmaps: jax.Array, num_joints: int) -> tuple[jax.Array, jax.Array | None]:
  """``(joints (B, h, w, K), box (B, h, w, 5) or None)`` float32, by the channel layout
  (``skeleton.split_maps``, background already dropped)."""
  if heatmaps.ndim != 4:
    raise ValueError(f"heatmaps must be (B, h, w, N), got shape {tuple(heatmaps.shape)}")
  _, joints, box = skeleton.split_maps(heatmaps, background=False, num_joints=num_joints)
  return joints.astype(jnp.float32), None if box is None else box.astype(jnp.float32)


def _joint_maps(heatmaps: jax.Array, num_joints: int) -> jax.Array:
  return _split(heatmaps, num_joints)[0]


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
  box = _split(heatmaps, num_joints)[1]
  if box is None:
    raise ValueError(
      f"{score} needs the box head's maps: heatmaps (B, h, w, {num_joints} + 5), got "
      f"shape {tuple(heatmaps.shape)}"
    )
  return box


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


def limb_symmetry(
  heatmaps: jax.Array, *, num_joints: int, sigma: float, limb_pairs: LimbPairs
) -> jax.Array:
  """Whether the joints' argmax positions form a body: minus the mean over the symmetric
  limb pairs (``limb_pairs``, :func:`symmetric_limbs` of the keypoint set) of
  ``|log(right length / left length)|`` (lengths at least half a heatmap pixel). 0 for a
  symmetric skeleton, lower otherwise."""
  del sigma
  if not limb_pairs:
    raise ValueError("limb_symmetry needs the keypoint set's symmetric limbs; it has none")
  pts = argmax_points(_joint_maps(heatmaps, num_joints))

  def length(a: int, b: int) -> jax.Array:
    return jnp.maximum(jnp.linalg.norm(pts[:, a] - pts[:, b], axis=-1), 0.5)

  terms = [jnp.abs(jnp.log(length(*r) / length(*lft))) for r, lft in limb_pairs]
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


def candidates(box_head: bool, limb_pairs: LimbPairs = ()) -> tuple[str, ...]:
  """The names of :data:`SCORES` that apply to a run with or without a box head, and
  with or without symmetric limbs (``limb_pairs``, :func:`symmetric_limbs`)."""
  return tuple(
    n for n in SCORES
    if (box_head or n not in BOX_SCORES) and (limb_pairs or n != "limb_symmetry")
  )  # fmt: skip


def score_fn(
  name: str, *, num_joints: int, sigma: float, weights=None, limb_pairs: LimbPairs = ()
) -> Callable[[jax.Array], jax.Array]:
  """``heatmaps (B, h, w, N) -> (B,)``: score ``name`` with its settings bound (``weights``
  ``(F + 1,)`` for :data:`COMBINED` only, ``limb_pairs`` for ``limb_symmetry`` only)."""
  if name == COMBINED:
    if weights is None or not len(weights):
      raise ValueError(f"the {COMBINED!r} presence score needs its fitted weights")
    w = jnp.asarray(np.asarray(weights, np.float32))
    return functools.partial(combined, num_joints=num_joints, sigma=sigma, weights=w)
  if name not in SCORES:
    known = ", ".join([*SCORES, COMBINED])
    raise ValueError(f"unknown presence score {name!r}; known: {known}")
  if name == "limb_symmetry":
    return functools.partial(
      limb_symmetry, num_joints=num_joints, sigma=sigma, limb_pairs=tuple(limb_pairs)
    )
  return functools.partial(SCORES[name], num_joints=num_joints, sigma=sigma)


def all_scores(
  heatmaps: jax.Array, names: tuple[str, ...], *, num_joints: int, sigma: float,
  limb_pairs: LimbPairs = (),
) -> dict[str, jax.Array]:  # fmt: skip
  """``{name: (B,)}`` of several scores of the same heatmaps."""
  kw = dict(num_joints=num_joints, sigma=sigma, limb_pairs=limb_pairs)
  return {n: score_fn(n, **kw)(heatmaps) for n in names}


# ----------------------------------------------------------------------------- a learned score

#: The score whose weights calibration fits: a logistic regression on :func:`features`.
COMBINED = "combined"
#: Its L2 penalty on the standardised weights (each class weighs one half in the loss).
L2 = 1e-3


def num_features(num_joints: int, box_head: bool) -> int:
  """``F``, the length of :func:`features`: ``4 K`` (``+ 10`` with the box maps)."""
  return 4 * num_joints + (2 * skeleton.NUM_BOX_POINTS if box_head else 0)


def features(heatmaps: jax.Array, *, num_joints: int, sigma: float) -> jax.Array:
  """``(B, h, w, N) -> (B, F)``: statistics of each image's maps that a person changes.

  Each joint map's peak, :func:`target_fits` value, minimum and mean, each sorted
  ascending over the K joints (so which joint is which, and left/right confusions, do
  not matter: "how many joints are strong"); then, when ``N`` holds the box maps, their 5
  peaks and target fits in channel order. ``F`` = :func:`num_features`.
  """
  m, box = _split(heatmaps, num_joints)
  stats = [peaks(m), target_fits(m, sigma), jnp.min(m, axis=(1, 2)), jnp.mean(m, axis=(1, 2))]
  out = [jnp.sort(x, axis=-1) for x in stats]
  if box is not None:
    out += [peaks(box), target_fits(box, sigma)]
  return jnp.concatenate(out, axis=-1)


def combined(heatmaps: jax.Array, *, num_joints: int, sigma: float, weights) -> jax.Array:
  """``features @ weights[:-1] + weights[-1]``: the log-odds of a person under the
  logistic regression calibration fitted (:func:`fit_logistic`); ``weights`` ``(F + 1,)``."""
  f = features(heatmaps, num_joints=num_joints, sigma=sigma)
  if f.shape[-1] + 1 != weights.shape[-1]:
    raise ValueError(
      f"{COMBINED!r} presence weights have {weights.shape[-1]} values, the heatmaps give "
      f"{f.shape[-1]} features (+ 1 bias): calibrated for another network"
    )
  return f @ weights[:-1] + weights[-1]


def fit_logistic(x, y, l2: float = L2, iterations: int = 30) -> np.ndarray:
  """Logistic regression of ``y`` on ``x`` by Newton's method (NumPy, deterministic).

  Args:
    x: ``(N, F)`` features; y: ``(N,)`` bool, both classes present.
    l2: penalty on the weights of the standardised features (not the bias); each class
      weighs one half of the loss whatever its count.
  Returns:
    ``(F + 1,)`` float64: weights in ``x``'s own units (the standardisation folded in),
    bias last, so that ``x @ w[:-1] + w[-1]`` is the log-odds.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, bool)
  if x.ndim != 2 or y.shape != (len(x),) or y.all() or not y.any():
    raise ValueError(f"need x (N, F) and y (N,) with both classes, got {x.shape}, {y.shape}")
  mu, sd = x.mean(0), x.std(0)
  sd = np.where(sd > 0, sd, 1.0)
  z = np.c_[(x - mu) / sd, np.ones(len(x))]
  sample = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())
  penalty = l2 * np.r_[np.ones(x.shape[1]), 0.0]
  w = np.zeros(z.shape[1])
  for _ in range(iterations):
    p = 1.0 / (1.0 + np.exp(-(z @ w)))
    grad = z.T @ (sample * (p - y)) + penalty * w
    hess = (z * (sample * p * (1 - p))[:, None]).T @ z + np.diag(penalty)
    w = w - np.linalg.solve(hess, grad)
  return np.r_[w[:-1] / sd, w[-1] - np.sum(w[:-1] * mu / sd)]


def out_of_fold(x, y, folds: int = 5, l2: float = L2) -> np.ndarray:
  """``(N,)`` scores of ``x`` (``(N, F)``), each by :func:`fit_logistic` fitted without its
  fold (item ``i`` is in fold ``i mod folds``): honest scores of the fitting data."""
  x, y = np.asarray(x, np.float64), np.asarray(y, bool)
  fold = np.arange(len(x)) % folds
  out = np.zeros(len(x))
  for f in range(folds):
    w = fit_logistic(x[fold != f], y[fold != f], l2)
    out[fold == f] = x[fold == f] @ w[:-1] + w[-1]
  return out
