"""Which protocol scores a keypoint set, and its sums and keys inside an evaluation loop.

The evaluator asks this module, by the run's :class:`~unipose_jax.keypoint_sets.KeypointSet`:

* :func:`protocol_of`: ``"lsp"`` (torso / head-segment normalisers: the existing
  :func:`~unipose_jax.metrics.keypoints.keypoint_counts`), ``"mpii"`` (head box:
  :mod:`~unipose_jax.metrics.pckh`), ``"penn_action"`` (person box:
  :mod:`~unipose_jax.metrics.penn`) or ``"coco"`` (OKS sigmas: :mod:`~unipose_jax.metrics.coco_eval`);
* :func:`batch_keys`: the example fields the evaluation batch must carry for it (MPII
  ``head_box``; Penn Action ``box`` and ``visible``; COCO, on the host after the loop,
  ``annotation_id``, ``box`` and ``area``);
* :func:`protocol_counts` (inside the jitted step) and :func:`protocol_summary` (after
  merging): the protocol's table keys, plus the set's ``best_metric`` as an alias where the
  table names it differently (MPII: ``pckh@0.5`` = ``Mean``; Penn Action: ``pck@0.2`` =
  ``Mean``), so the best checkpoint is picked by the protocol's own number;
* COCO's AP is not a sum: :class:`CocoCollector` gathers the persons and poses on the host
  and scores them after the loop (rescoring, OKS-NMS, COCOeval), against the release's
  annotations file when given, else the evaluated persons' own ground truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from unipose_jax import coco_frame
from unipose_jax.keypoint_sets import KeypointSet
from unipose_jax.metrics import coco_eval, pckh, penn

Array = Any
PROTOCOLS = ("lsp", "mpii", "penn_action", "coco")


def protocol_of(keypoint_set: KeypointSet) -> str:
  """The protocol of a set (see the module doc), from its normalisers and sigmas."""
  if keypoint_set.pckh_normaliser == "head_box":
    return "mpii"
  if keypoint_set.pck_normaliser == "box":
    return "penn_action"
  if keypoint_set.pck_normaliser == "torso":
    return "lsp"
  if keypoint_set.sigmas or keypoint_set.best_metric == "AP":
    return "coco"
  raise ValueError(f"keypoint set {keypoint_set.name!r} names no metric normaliser nor sigmas")


def batch_keys(keypoint_set: KeypointSet) -> tuple[str, ...]:
  """Example fields the protocol needs beyond ``keypoints_orig``, ``labeled``, ``valid``."""
  return {
    "mpii": ("head_box",),
    "penn_action": ("box", "visible"),
    "coco": ("annotation_id", "box", "area"),
    "lsp": (),
  }[protocol_of(keypoint_set)]


def protocol_counts(
  keypoint_set: KeypointSet, keypoints: Array, batch: Mapping[str, Array]
) -> dict[str, Any]:
  """The protocol's int32 sums of one batch (jit-able; empty for LSP and COCO).

  ``keypoints`` ``(B, K, 2)`` original pixels; ``batch`` holds ``keypoints_orig``
  ``(B, K, 2)``, ``labeled`` ``(B, K)``, ``valid`` ``(B,)`` and :func:`batch_keys`.
  MPII counts labeled joints (present in the ground truth), Penn Action visible ones.
  """
  p = protocol_of(keypoint_set)
  valid = jnp.asarray(batch["valid"]).astype(bool)[:, None]
  if p == "mpii":
    mask = valid & jnp.asarray(batch["labeled"]).astype(bool)
    return pckh.mpii_counts(keypoints, batch["keypoints_orig"], mask, batch["head_box"])
  if p == "penn_action":
    mask = valid & jnp.asarray(batch["visible"]).astype(bool)
    return penn.penn_counts(keypoints, batch["keypoints_orig"], mask, batch["box"])
  return {}


def protocol_summary(keypoint_set: KeypointSet, counts: Mapping[str, Array]) -> dict[str, float]:
  """The protocol's table keys (fractions) from merged :func:`protocol_counts`, with the
  set's best metric as an alias (see the module doc); empty for LSP and COCO."""
  p = protocol_of(keypoint_set)
  if p == "mpii":
    out = pckh.summarize_mpii(counts, keypoint_set)
    out["pckh@0.5"] = out["Mean"]
    return out
  if p == "penn_action":
    out = penn.summarize_penn(counts, keypoint_set)
    out["pck@0.2"] = out["Mean"]
    return out
  return {}


def format_table(keypoint_set: KeypointSet, summary: Mapping[str, float], title: str = "") -> str:
  """The protocol's standard table of one decoder's :func:`protocol_summary` (MPII, Penn
  Action) or COCO keys; LSP's console line is ``reports.print_summary``'s."""
  p = protocol_of(keypoint_set)
  if p == "mpii":
    return pckh.format_mpii_table(summary, title)
  if p == "penn_action":
    return penn.format_penn_table(summary, title)
  if p == "coco":
    return coco_eval.format_coco_table(summary, title)
  raise ValueError("LSP's table is reports.print_summary's")


def coco_ground_truth(
  keypoint_set: KeypointSet,
  image_ids: Array,
  annotation_ids: Array,
  keypoints: Array,
  labeled: Array,
  visible: Array,
  boxes: Array,
  areas: Array,
  category_id: int = 1,
) -> dict[str, Any]:
  """A COCO annotations dict rebuilt from evaluated examples (``(N,)`` ids, ``(N, K, 2)``
  keypoints in the project's frame, ``(N, K)`` flags, ``(N, 4)`` boxes ``[x1, y1, x2, y2]``,
  ``(N,)`` areas): ``v`` = 2 visible, 1 labeled, 0 not.

  It holds only the persons that were evaluated (COCO's crowd regions and persons without a
  labeled joint are not examples): on ground-truth boxes that changes no match of a pose to
  its own person, but the published numbers come from scoring the results file against the
  release's annotations (``python -m unipose_jax.score``), which this does not replace.
  """
  kp = coco_frame.keypoints_to_coco(keypoints)
  v = np.where(np.asarray(visible, bool), 2, np.where(np.asarray(labeled, bool), 1, 0))
  kp = np.where(v[..., None] > 0, kp, 0.0)
  xywh = coco_frame.box_to_coco(boxes)
  anns = [
    {
      "id": int(a), "image_id": int(i), "category_id": category_id, "iscrowd": 0,
      "area": float(ar), "bbox": [float(x) for x in b], "num_keypoints": int((vv > 0).sum()),
      "keypoints": [float(x) for x in np.concatenate([k, vv[:, None]], 1).ravel()],
    }
    for a, i, k, vv, b, ar in zip(annotation_ids, image_ids, kp, v, xywh, areas)
  ]  # fmt: skip
  images = [{"id": int(i)} for i in sorted({int(i) for i in image_ids})]
  category = {
    "id": category_id, "name": keypoint_set.name, "keypoints": list(keypoint_set.joint_names),
    "skeleton": [[a + 1, b + 1] for a, b in keypoint_set.limbs],
  }  # fmt: skip
  return {"images": images, "annotations": anns, "categories": [category]}


def coco_summary(
  keypoint_set: KeypointSet,
  ground_truth: Mapping[str, Any],
  image_ids: Array,
  keypoints: Array,
  keypoint_scores: Array,
  areas: Array,
  box_scores: Array | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
  """``(COCO keys, results JSON)`` of one decoder's poses (one per box; ground-truth boxes
  score 1): rescoring, OKS-NMS, then COCOeval against ``ground_truth`` (a dict or file)."""
  n = len(image_ids)
  sigmas = coco_eval.oks_sigmas(keypoint_set)
  results = coco_eval.person_results(
    image_ids, keypoints, keypoint_scores, np.ones(n) if box_scores is None else box_scores,
    areas, sigmas,
  )  # fmt: skip
  return coco_eval.evaluate(ground_truth, results, sigmas), results


class CocoCollector:
  """Host-side gathering of an evaluation's persons for COCO AP after the loop.

  Each :meth:`add` takes one batch as host NumPy arrays (every process's rows, as the
  evaluator's predictions are): ``valid`` ``(B,)``, ``image_id`` ``(B,)``,
  ``annotation_id`` ``(B,)`` (int64), ``keypoints_orig`` ``(B, K, 2)``, ``labeled`` and
  ``visible`` ``(B, K)``, ``box`` ``(B, 4)`` ``[x1, y1, x2, y2]`` and ``area`` ``(B,)``, and
  ``{decoder: (keypoints (B, K, 2), scores (B, K))}``. Poses are on ground-truth boxes (box
  score 1; OKS-NMS uses the box areas). :meth:`summaries` scores every decoder.
  """

  def __init__(self, keypoint_set: KeypointSet, decodings):
    self.keypoint_set = keypoint_set
    self.decodings = tuple(decodings)
    self._gt: dict[str, list] = {k: [] for k in ("image_id", "annotation_id", "keypoints_orig",
                                                 "labeled", "visible", "box", "area")}  # fmt: skip
    self._poses: dict[str, list] = {d: [] for d in self.decodings}
    self._scores: dict[str, list] = {d: [] for d in self.decodings}

  def add(self, batch: Mapping[str, Any], outputs: Mapping[str, tuple[Any, Any]]) -> None:
    valid = np.asarray(batch["valid"]).astype(bool)
    for key, rows in self._gt.items():
      rows.append(np.asarray(batch[key])[valid])
    for d in self.decodings:
      kp, sc = outputs[d]
      self._poses[d].append(np.asarray(kp)[valid])
      self._scores[d].append(np.asarray(sc)[valid])

  def ground_truth(self) -> dict[str, Any]:
    """The COCO annotations dict of the gathered persons (:func:`coco_ground_truth`)."""
    g = {k: np.concatenate(v) for k, v in self._gt.items()}
    return coco_ground_truth(
      self.keypoint_set, g["image_id"], g["annotation_id"], g["keypoints_orig"], g["labeled"],
      g["visible"], g["box"], g["area"],
    )  # fmt: skip

  def summaries(
    self, ground_truth: str | Mapping[str, Any] | None = None
  ) -> tuple[dict[str, dict[str, float]], dict[str, list]]:
    """``({decoder: COCO keys}, {decoder: results JSON})`` against ``ground_truth`` (the
    release's annotations file or dict; None: the gathered persons', :meth:`ground_truth`)."""
    gt = self.ground_truth() if ground_truth is None else ground_truth
    ids = np.concatenate(self._gt["image_id"])
    box = np.concatenate(self._gt["box"])
    areas = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    out, results = {}, {}
    for d in self.decodings:
      out[d], results[d] = coco_summary(
        self.keypoint_set, gt, ids, np.concatenate(self._poses[d]),
        np.concatenate(self._scores[d]), areas,
      )  # fmt: skip
    return out, results
