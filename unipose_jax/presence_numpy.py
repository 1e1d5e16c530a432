"""Person presence in NumPy: the scores of :mod:`unipose_jax.presence`, for the ONNX route.

``deploy`` imports this (NumPy only, no JAX) to decide "is there a person?" as
``Predictor`` does, from the settings an export writes into ``unipose.json``
(:func:`settings_of`): the score's name, the ``"combined"`` score's weights, the
threshold, and the limb pairs ``limb_symmetry`` compares. Each function here computes
what its namesake in ``presence`` does, in float32, on the same layout: heatmaps
``(B, h, w, N)``, background dropped, ``N = K`` joint maps then the 5 box maps of a box
head; ``sigma`` is the codec's Gaussian sigma in heatmap pixels. ``tests/test_presence.py``
checks every score against the JAX one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unipose_jax.skeleton import NUM_BOX_POINTS

COMBINED = "combined"
BOX_SCORES = ("box_centre", "box_fit")


def _split(heatmaps, num_joints: int) -> tuple[np.ndarray, np.ndarray | None]:
  maps = np.asarray(heatmaps, np.float32)
  if maps.ndim != 4 or maps.shape[-1] not in (num_joints, num_joints + NUM_BOX_POINTS):
    raise ValueError(
      f"heatmaps must be (B, h, w, {num_joints} (+ {NUM_BOX_POINTS} box)), got shape "
      f"{tuple(maps.shape)}"
    )
  box = maps[..., num_joints:] if maps.shape[-1] > num_joints else None
  return maps[..., :num_joints], box


def _box(heatmaps, num_joints: int, score: str) -> np.ndarray:
  box = _split(heatmaps, num_joints)[1]
  if box is None:
    raise ValueError(f"{score} needs the box head's maps, got shape {np.shape(heatmaps)}")
  return box


def peaks(maps: np.ndarray) -> np.ndarray:
  """``(B, h, w, N) -> (B, N)``: each map's maximum."""
  return np.max(maps, axis=(1, 2))


def argmax_points(maps: np.ndarray) -> np.ndarray:
  """``(B, h, w, N) -> (B, N, 2)`` float32 (x, y) of each map's first maximum."""
  b, h, w, n = maps.shape
  idx = np.argmax(maps.reshape(b, h * w, n), axis=1)
  return np.stack([idx % w, idx // w], axis=-1).astype(np.float32)


def argmax_gaussians(maps: np.ndarray, sigma: float) -> np.ndarray:
  """A unit-peak Gaussian of ``sigma`` at each map's argmax, ``(B, h, w, N)``."""
  _, h, w, _ = maps.shape
  pts = argmax_points(maps)
  cols, rows = pts[:, None, None, :, 0], pts[:, None, None, :, 1]
  yy = np.arange(h, dtype=np.float32)[None, :, None, None]
  xx = np.arange(w, dtype=np.float32)[None, None, :, None]
  d2 = (yy - rows) ** 2 + (xx - cols) ** 2
  return np.exp(-d2 / np.float32(2.0 * sigma**2)).astype(np.float32)


def target_fits(maps: np.ndarray, sigma: float) -> np.ndarray:
  """``(B, h, w, N) -> (B, N)``: ``1 - ||m - g||^2 / ||g||^2`` (``presence.target_fits``)."""
  m = np.asarray(maps, np.float32)
  g = argmax_gaussians(m, sigma)
  return 1.0 - np.sum((m - g) ** 2, axis=(1, 2)) / np.sum(g**2, axis=(1, 2))


def joint_max(heatmaps, *, num_joints: int, sigma: float, limbs=()) -> np.ndarray:
  return peaks(_split(heatmaps, num_joints)[0]).max(-1)


def joint_mean(heatmaps, *, num_joints: int, sigma: float, limbs=()) -> np.ndarray:
  return peaks(_split(heatmaps, num_joints)[0]).mean(-1)


def box_centre(heatmaps, *, num_joints: int, sigma: float, limbs=()) -> np.ndarray:
  return np.max(_box(heatmaps, num_joints, "box_centre")[..., 0], axis=(1, 2))


def target_fit(heatmaps, *, num_joints: int, sigma: float, limbs=()) -> np.ndarray:
  return np.mean(target_fits(_split(heatmaps, num_joints)[0], sigma), axis=-1)


def box_fit(heatmaps, *, num_joints: int, sigma: float, limbs=()) -> np.ndarray:
  return np.mean(target_fits(_box(heatmaps, num_joints, "box_fit"), sigma), axis=-1)


def joint_shape(heatmaps, *, num_joints: int, sigma: float, limbs=()) -> np.ndarray:
  m = _split(heatmaps, num_joints)[0]
  g = argmax_gaussians(m, sigma)
  mc = m - m.mean(axis=(1, 2), keepdims=True)
  gc = g - g.mean(axis=(1, 2), keepdims=True)
  num = np.sum(mc * gc, axis=(1, 2))
  den = np.sqrt(np.sum(mc**2, axis=(1, 2)) * np.sum(gc**2, axis=(1, 2)))
  return np.mean(np.where(den > 0, num / np.maximum(den, 1e-12), 0.0), axis=-1)


def joint_concentration(heatmaps, *, num_joints: int, sigma: float, limbs=()) -> np.ndarray:
  maps = _split(heatmaps, num_joints)[0]
  p = peaks(maps)
  mass = np.sum(np.maximum(maps, 0.0), axis=(1, 2))
  c = np.maximum(p, 0.0) * np.float32(2.0 * math.pi * sigma**2) / np.maximum(mass, 1e-12)
  return np.mean(p * np.minimum(c, 1.0), axis=-1)


def limb_symmetry(heatmaps, *, num_joints: int, sigma: float, limbs=()) -> np.ndarray:
  """``limbs``: the (right bone, left bone) pairs of the run's keypoint set
  (``presence.symmetric_limbs``), as the export writes them (``presence_limbs``)."""
  if not len(limbs):
    raise ValueError("the 'limb_symmetry' presence score needs its limb pairs (presence_limbs)")
  pts = argmax_points(_split(heatmaps, num_joints)[0])

  def length(a: int, b: int) -> np.ndarray:
    return np.maximum(np.linalg.norm(pts[:, a] - pts[:, b], axis=-1), np.float32(0.5))

  terms = [np.abs(np.log(length(*r) / length(*lft))) for r, lft in limbs]
  return -np.mean(np.stack(terms, -1), axis=-1)


SCORES = {
  "joint_max": joint_max,
  "joint_mean": joint_mean,
  "joint_shape": joint_shape,
  "joint_concentration": joint_concentration,
  "limb_symmetry": limb_symmetry,
  "target_fit": target_fit,
  "box_centre": box_centre,
  "box_fit": box_fit,
}


def features(heatmaps, *, num_joints: int, sigma: float) -> np.ndarray:
  """``(B, h, w, N) -> (B, F)``: ``presence.features`` (sorted joint statistics, then the
  box maps' peaks and target fits)."""
  m, box = _split(heatmaps, num_joints)
  stats = [peaks(m), target_fits(m, sigma), np.min(m, axis=(1, 2)), np.mean(m, axis=(1, 2))]
  out = [np.sort(x, axis=-1) for x in stats]
  if box is not None:
    out += [peaks(box), target_fits(box, sigma)]
  return np.concatenate(out, axis=-1).astype(np.float32)


def score(heatmaps, name: str, *, num_joints: int, sigma: float, weights: Sequence[float] = (),
          limbs=()) -> np.ndarray:  # fmt: skip
  """``(B,)`` float32 presence score ``name`` of ``heatmaps`` (``weights`` ``(F + 1,)``, bias
  last, for ``"combined"``; ``limbs`` for ``"limb_symmetry"``)."""
  if name == COMBINED:
    f = features(heatmaps, num_joints=num_joints, sigma=sigma)
    w = np.asarray(weights, np.float32).reshape(-1)
    if f.shape[-1] + 1 != w.size:
      raise ValueError(
        f"{COMBINED!r} presence weights have {w.size} values, the heatmaps give "
        f"{f.shape[-1]} features (+ 1 bias): calibrated for another network"
      )
    return (f @ w[:-1] + w[-1]).astype(np.float32)
  if name not in SCORES:
    raise ValueError(f"unknown presence score {name!r}; known: {', '.join([*SCORES, COMBINED])}")
  out = SCORES[name](heatmaps, num_joints=num_joints, sigma=sigma, limbs=limbs)
  return np.asarray(out, np.float32)


def settings_of(predict_config: Mapping[str, Any], limbs) -> dict[str, Any]:
  """The presence entries of an export's ``unipose.json``, from a run's ``predict``
  config section: ``presence_score`` ("" = uncalibrated: a person is found when any
  joint scores ``>= score_threshold``), ``presence_threshold``, ``presence_weights``,
  ``presence_limbs`` (``limbs``, for ``limb_symmetry``), ``score_threshold``."""
  p = predict_config
  return {
    "presence_score": str(p["presence_score"]),
    "presence_threshold": float(p["presence_threshold"]),
    "presence_weights": [float(w) for w in p["presence_weights"]],
    "presence_limbs": [[list(map(int, r)), list(map(int, lft))] for r, lft in limbs],
    "score_threshold": float(p["score_threshold"]),
  }


def decide(heatmaps, settings: Mapping[str, Any], *, num_joints: int, sigma: float):
  """``(presence (B,) float32 or None, person_found (B,) bool)`` of heatmaps by an export's
  settings (:func:`settings_of`): ``presence >= presence_threshold``, or, uncalibrated
  (``presence_score`` ""), any joint map's peak ``>= score_threshold`` (``Predictor``'s
  rule then)."""
  if "presence_score" not in settings or "score_threshold" not in settings:
    raise ValueError(
      "the settings hold no person-presence entries (presence_score, score_threshold): "
      "written by an older export; export the run again"
    )
  name = settings["presence_score"]
  if not name:
    joints = _split(heatmaps, num_joints)[0]
    return None, peaks(joints).max(-1).astype(np.float64) >= float(settings["score_threshold"])
  s = score(heatmaps, name, num_joints=num_joints, sigma=sigma,
            weights=settings.get("presence_weights", ()), limbs=settings.get("presence_limbs", ()))  # fmt: skip
  return s, s.astype(np.float64) >= float(settings["presence_threshold"])  # as Predictor
