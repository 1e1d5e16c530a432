"""COCO's OKS AP/AR through pycocotools' ``COCOeval``, and the top-down steps before it.

The published top-down numbers (HRNet, DarkPose, mmpose) score one pose per person box,
either the ground-truth boxes or a person detector's (COCO's ``..._AP_H_56_person.json``):

1. **rescoring**: a person's score = box score x the mean of its keypoint scores above 0.2
   (0 when none is; a ground-truth box scores 1) -- :func:`rescore`;
2. **OKS-NMS** per image at OKS 0.9, over all joints, the box areas as the scale --
   :func:`oks_nms`;
3. ``COCOeval(iouType="keypoints")`` (maxDets 20; areas all / medium / large) with the set's
   OKS sigmas -- :func:`evaluate`.

:func:`person_results` does 1 and 2 and returns the results JSON in COCO's format
(``image_id``, ``category_id``, ``keypoints`` ``[x, y, score] x K`` in COCO's frame,
``score``). :func:`evaluate` scores such a list (or file) against the annotations and returns
:data:`COCO_KEYS` as fractions; pycocotools' prints are captured, :func:`format_coco_table`
prints the standard table.

OKS (COCO's definition): for a ground truth with area ``s^2`` and labeled joints ``v > 0``,
``OKS = mean_k exp(-d_k^2 / (2 s^2 (2 sigma_k)^2))`` with ``sigma_k`` a keypoint set's sigma
(COCO's published values / 10: :data:`unipose_jax.keypoint_sets.COCO`). A set without
sigmas uses :data:`unipose_jax.keypoint_sets.DEFAULT_OKS_SIGMA` for every joint.

Frames. COCO's keypoints are integer *pixel indices* (0 .. W-1; detectron2 reads them so),
which is the project's frame (0-based, integer = pixel centre): keypoints convert with no
shift. COCO's boxes ``[x, y, w, h]`` are continuous, pixel ``i`` spanning ``[i, i + 1)``: the
project's ``[x1, y1, x2, y2]`` is ``[x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5]``.
:mod:`unipose_jax.coco_frame` owns both conversions, for the data and for the results.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unipose_jax import coco_frame, extras
from unipose_jax.keypoint_sets import DEFAULT_OKS_SIGMA, KeypointSet

#: The table's keys (COCOeval's ``stats``, in its order), as fractions.
COCO_KEYS: tuple[str, ...] = (
  "AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)",
)  # fmt: skip
#: Keypoint scores above this count in the rescoring mean (HRNet's ``in_vis_thre``).
RESCORE_THRESHOLD: float = 0.2
#: OKS above which the lower-scored of two poses of one image is dropped.
OKS_NMS_THRESHOLD: float = 0.9


class CocoInputError(ValueError):
  """Annotations or results that COCOeval cannot score (one line naming the file)."""


# ----------------------------------------------------------------------------- OKS, rescoring, NMS


def oks_sigmas(keypoint_set: KeypointSet) -> np.ndarray:
  """``(K,)`` the set's OKS sigmas, else :data:`DEFAULT_OKS_SIGMA` for each joint."""
  if keypoint_set.sigmas:
    return np.asarray(keypoint_set.sigmas, np.float64)
  return np.full(keypoint_set.num_joints, DEFAULT_OKS_SIGMA)


def oks(pred: Any, gt: Any, labeled: Any, area: float, sigmas: Any) -> float:
  """COCO's OKS of one pose ``pred`` ``(K, 2)`` against one ground truth ``gt`` ``(K, 2)``
  with ``labeled`` ``(K,)`` (``v > 0``) and ``area`` (its ``s^2``); NaN with no labeled
  joint (COCOeval then measures against the box, which this does not)."""
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  labeled = np.asarray(labeled, bool)
  if not labeled.any():
    return float("nan")
  var = (2 * np.asarray(sigmas, np.float64)) ** 2
  e = np.sum((pred - gt) ** 2, axis=-1) / var / (area + np.spacing(1)) / 2
  return float(np.mean(np.exp(-e[labeled])))


def rescore(box_scores: Any, keypoint_scores: Any, threshold: float = RESCORE_THRESHOLD):
  """``(N,)`` box score x the mean of the keypoint scores ``(N, K)`` above ``threshold``
  (0 for a person with none above it)."""
  ks = np.asarray(keypoint_scores, np.float64)
  above = ks > threshold
  n = above.sum(axis=1)
  mean = np.where(n > 0, np.sum(np.where(above, ks, 0.0), axis=1) / np.maximum(n, 1), 0.0)
  return np.asarray(box_scores, np.float64) * mean


def oks_nms(
  keypoints: Any, scores: Any, areas: Any, sigmas: Any, threshold: float = OKS_NMS_THRESHOLD
) -> np.ndarray:
  """Indices (best score first) of the poses ``(N, K, 2)`` of *one image* kept by greedy
  OKS-NMS: a pose goes when its OKS with a kept, better-scored one is above ``threshold``.
  The OKS of two poses uses all K joints and the mean of their ``areas`` ``(N,)``."""
  kp = np.asarray(keypoints, np.float64)
  areas = np.asarray(areas, np.float64)
  var = (2 * np.asarray(sigmas, np.float64)) ** 2
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(int(i))
    d2 = np.sum((kp[rest] - kp[i]) ** 2, axis=-1)  # (R, K)
    e = d2 / var / ((areas[i] + areas[rest])[:, None] / 2 + np.spacing(1)) / 2
    order = rest[np.mean(np.exp(-e), axis=1) <= threshold]
  return np.asarray(keep, np.int64)


def person_results(
  image_ids: Sequence[int],
  keypoints: Any,
  keypoint_scores: Any,
  box_scores: Any,
  areas: Any,
  sigmas: Any,
  category_ids: Sequence[int] | int = 1,
  *,
  rescoring: bool = True,
  nms_threshold: float | None = OKS_NMS_THRESHOLD,
) -> list[dict[str, Any]]:
  """The results JSON (a list of dicts, COCO's format and frame) of one pose per person box.

  Args:
    image_ids: ``(N,)`` the box's image.
    keypoints: ``(N, K, 2)`` the project's frame (original-image pixels).
    keypoint_scores: ``(N, K)``; box_scores: ``(N,)`` (1 for ground-truth boxes).
    areas: ``(N,)`` the boxes' areas (OKS-NMS's scale).
    sigmas: ``(K,)``.
    category_ids: one id for all, or ``(N,)``.
    rescoring: :func:`rescore` the persons (else ``score`` = the box score).
    nms_threshold: :func:`oks_nms` per image, or None for none.
  """
  ids = np.asarray(image_ids, np.int64)
  kp = coco_frame.keypoints_to_coco(keypoints)
  ks = np.asarray(keypoint_scores, np.float64)
  n = ids.shape[0]
  if kp.shape[:1] != (n,) or ks.shape != kp.shape[:2]:
    raise ValueError(f"{n} image ids, keypoints {kp.shape}, keypoint scores {ks.shape}")
  cats = np.broadcast_to(np.asarray(category_ids, np.int64), (n,))
  scores = rescore(box_scores, ks) if rescoring else np.asarray(box_scores, np.float64)
  areas = np.broadcast_to(np.asarray(areas, np.float64), (n,))
  keep_all = []
  for image in np.unique(ids):
    rows = np.flatnonzero(ids == image)
    if nms_threshold is None:
      keep_all.extend(rows)
    else:
      keep_all.extend(rows[oks_nms(kp[rows], scores[rows], areas[rows], sigmas, nms_threshold)])
  return [
    {
      "image_id": int(ids[i]),
      "category_id": int(cats[i]),
      "keypoints": [float(v) for v in np.concatenate([kp[i], ks[i][:, None]], axis=1).ravel()],
      "score": float(scores[i]),
    }
    for i in sorted(keep_all)
  ]


# ----------------------------------------------------------------------------- COCOeval


def _read_json(path: str, what: str):
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as e:
    raise CocoInputError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CocoInputError(f"{path}: the {what} are not JSON ({e})") from None


def load_annotations(gt: str | Mapping[str, Any]) -> tuple[Any, str]:
  """``(pycocotools COCO, name)`` of an annotations file or dict (one line on a bad one)."""
  COCO = extras.require("pycocotools.coco", "coco").COCO  # noqa: N806 (an optional dependency)

  name = gt if isinstance(gt, str) else "annotations"
  data = _read_json(gt, "annotations") if isinstance(gt, str) else copy.deepcopy(dict(gt))
  if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations")):
    raise CocoInputError(f"{name}: not a COCO annotations file (needs 'images', 'annotations')")
  if not any(c.get("keypoints") for c in data.get("categories", ()) if isinstance(c, dict)):
    raise CocoInputError(f"{name}: no category with 'keypoints' in 'categories'")
  coco = COCO()
  coco.dataset = data
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      coco.createIndex()
  except (KeyError, TypeError) as e:
    raise CocoInputError(f"{name}: malformed annotations ({type(e).__name__}: {e})") from None
  return coco, name


def _check_results(results: Any, name: str, coco, num_joints: int) -> list[dict]:
  if not isinstance(results, list):
    raise CocoInputError(f"{name}: COCO results must be a JSON list of poses")
  images = set(coco.getImgIds())
  cats = {c["id"] for c in coco.dataset.get("categories", ()) if c.get("keypoints")}
  out = []
  for i, r in enumerate(results):
    if not isinstance(r, dict) or not all(k in r for k in ("image_id", "keypoints", "score")):
      raise CocoInputError(f"{name}: result {i} lacks 'image_id', 'keypoints' or 'score'")
    if len(r["keypoints"]) != 3 * num_joints:
      raise CocoInputError(
        f"{name}: result {i} has {len(r['keypoints'])} keypoint values, expected 3 x {num_joints}"
      )
    if r["image_id"] not in images:
      raise CocoInputError(
        f"{name}: result {i}'s image_id {r['image_id']} is not in the annotations"
      )
    if r.get("category_id", next(iter(cats))) not in cats:
      raise CocoInputError(f"{name}: result {i}'s category_id {r['category_id']} has no keypoints")
    # COCOeval's loadRes takes a result with a 'bbox' for a box result: drop it (the area
    # of a keypoint result is its keypoints' extent, as for HRNet's results files).
    r = {k: v for k, v in r.items() if k not in ("bbox", "area", "segmentation", "id")}
    r.setdefault("category_id", next(iter(cats)))
    out.append(r)
  return out


def evaluate(
  gt: str | Mapping[str, Any], results: str | list, sigmas: Any | None = None
) -> dict[str, float]:
  """:data:`COCO_KEYS` -> fractions: ``COCOeval(iouType="keypoints")`` of ``results`` (a
  results list or file, COCO's format and frame) against ``gt`` (an annotations file or
  dict). ``sigmas`` ``(K,)``: COCOeval's ``kpt_oks_sigmas`` (None: COCO's 17). Every image
  of ``gt`` is evaluated, over the categories with keypoints; no result scores 0. pycocotools'
  prints are captured."""
  COCO = extras.require("pycocotools.coco", "coco").COCO  # noqa: N806
  COCOeval = extras.require("pycocotools.cocoeval", "coco").COCOeval  # noqa: N806

  coco, _ = load_annotations(gt)
  cats = [c for c in coco.dataset["categories"] if c.get("keypoints")]
  k = len(cats[0]["keypoints"])
  if sigmas is None and k != 17:
    raise ValueError(f"{k} keypoints: COCOeval needs the set's OKS sigmas")
  name = results if isinstance(results, str) else "results"
  raw = _read_json(results, "results") if isinstance(results, str) else results
  checked = _check_results(raw, name, coco, k)
  with contextlib.redirect_stdout(io.StringIO()):
    if checked:
      dt = coco.loadRes(checked)
    else:  # loadRes cannot take an empty list
      dt = COCO()
      dt.dataset = {"images": coco.dataset["images"], "categories": cats, "annotations": []}
      dt.createIndex()
    ev = COCOeval(coco, dt, "keypoints")
    if sigmas is not None:
      ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
    ev.params.catIds = sorted(c["id"] for c in cats)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  # COCOeval's -1 means "no ground truth in this range": NaN here.
  return {key: float(v) if v >= 0 else float("nan") for key, v in zip(COCO_KEYS, ev.stats)}


def format_coco_table(summary: Mapping[str, float], title: str = "") -> str:
  """The standard table (fractions, as COCOeval prints them), two lines."""
  head = " ".join(f"{k:>7s}" for k in COCO_KEYS)
  row = " ".join(f"{summary[k]:7.3f}" for k in COCO_KEYS)
  return f"{title:10s} {head}\n{'':10s} {row}" if title else f"{head}\n{row}"


# ----------------------------------------------------------------------------- detections


def load_detections(
  path: str, image_ids: Sequence[int] | None = None, category_id: int = 1, min_score: float = 0.0
) -> dict[int, list[tuple[np.ndarray, float]]]:
  """Person detections of a COCO results-format file (``image_id``, ``category_id``, ``bbox``
  ``[x, y, w, h]``, ``score``): ``{image_id: [(box (4,) [x1, y1, x2, y2] project frame,
  score), ...]}`` of ``category_id`` with ``score >= min_score``, best first. With
  ``image_ids``, a detection of another image is an error (one line naming the file)."""
  dets = _read_json(path, "detections")
  if not isinstance(dets, list):
    raise CocoInputError(f"{path}: detections must be a JSON list")
  known = None if image_ids is None else set(int(i) for i in image_ids)
  out: dict[int, list[tuple[np.ndarray, float]]] = {}
  for i, d in enumerate(dets):
    if not isinstance(d, dict) or not all(k in d for k in ("image_id", "bbox", "score")):
      raise CocoInputError(f"{path}: detection {i} lacks 'image_id', 'bbox' or 'score'")
    if len(d["bbox"]) != 4 or d["bbox"][2] < 0 or d["bbox"][3] < 0:
      raise CocoInputError(f"{path}: detection {i}'s bbox {d['bbox']} is not [x, y, w, h]")
    if d.get("category_id", category_id) != category_id or d["score"] < min_score:
      continue
    if known is not None and int(d["image_id"]) not in known:
      raise CocoInputError(f"{path}: detection {i}'s image_id {d['image_id']} is not annotated")
    out.setdefault(int(d["image_id"]), []).append(
      (coco_frame.box_from_coco(d["bbox"]), float(d["score"]))
    )
  for boxes in out.values():
    boxes.sort(key=lambda b: -b[1])
  return out


def write_results(path: str, results: list[dict[str, Any]]) -> None:
  """The results JSON at ``path`` (written whole, then renamed into place)."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(results, f)
  os.replace(tmp, path)
