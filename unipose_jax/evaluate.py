"""Evaluation: the jitted evaluation step and the loop over a test set. It measures;
``reports`` writes the files.

model -> heatmaps -> ``codec.decode`` with each decoder (all in one pass) -> keypoints in
input pixels -> ``inverse_affine`` -> original-image pixels (``inference``) -> the keypoint
set's protocol (``metrics.protocols.protocol_of``) as sums and counts, exact across batches,
devices and processes: LSP's PCK/PCKh (``metrics.keypoint_counts``), MPII's PCKh and Penn
Action's PCK (``protocols.protocol_counts``), with a box head also box IoU. COCO's AP is not
a sum: the persons and poses are gathered on the host (``protocols.CocoCollector``) and
scored after the loop (ground-truth boxes; each pose scores its own person).

The input is the whole image letterboxed (``data.eval_crop="whole"``, LSP) or the person's
crop (``"box"``, top-down: ``transforms.eval_affine``); either way ``inverse_affine`` maps
the predictions back to original pixels.

The :class:`Evaluator` receives a predict function, a source and plain sizes; it builds
nothing from a config (:meth:`Evaluator.from_run` is the one adapter). :meth:`Evaluator.run`
returns an :class:`EvalResult`: the metrics, the predictions and a few examples.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from unipose_jax import (
  distributed,
  inference,
  input_pipeline,
  keypoint_sets,
  metrics,
  preemption,
  run_config,
  skeleton,
)
from unipose_jax.codecs import HeatmapCodec
from unipose_jax.codecs import box as box_lib
from unipose_jax.metrics import protocols
from unipose_jax.metrics.boxes import summarize_boxes

EVAL_KEYS = ("image", "inverse_affine", "keypoints_orig", "labeled", "valid")
#: Fields of the batch COCO's collector reads on the host (``annotation_id`` stays int64 there:
#: JAX without x64 would truncate it to int32).
COCO_HOST_KEYS = (
  "image_id",
  "annotation_id",
  "keypoints_orig",
  "labeled",
  "visible",
  "box",
  "area",
)


def device_keys(keypoint_set: keypoint_sets.KeypointSet) -> tuple[str, ...]:
  """The batch fields carried to the devices: :data:`EVAL_KEYS` and the protocol's
  ``protocols.batch_keys`` that the jitted step reads (COCO's are read on the host only)."""
  if protocols.protocol_of(keypoint_set) == "coco":
    return EVAL_KEYS
  return EVAL_KEYS + tuple(protocols.batch_keys(keypoint_set))


#: With ``progress``, a console line at most this often (seconds).
PROGRESS_EVERY_S = 10.0


class EvaluationError(Exception):
  """An evaluation failed (a damaged test set, an unwritable ``eval/``); one line for users."""


def eval_step(
  variables, batch, *, model, codec: HeatmapCodec, decodings: Sequence[str], flip_test: bool,
  torso: tuple[int, int] | None = None, head: tuple[int, int] | None = None,
  flip_permutation: Sequence[int] | None = None, box_margin: float = 0.0,
  keypoint_set: keypoint_sets.KeypointSet | None = None,
) -> dict[str, Any]:  # fmt: skip
  """Predictions and metric sums of one (global) batch.

  ``K`` is ``model.num_joints``; ``flip_permutation`` (for ``flip_test``) is the keypoint
  set's. The counts are its protocol's: LSP's (``keypoint_set`` None or an LSP-protocol
  set) ``metrics.keypoint_counts`` with the set's ``torso`` and ``head`` joints; MPII's and
  Penn Action's ``protocols.protocol_counts``; COCO's none (scored on the host).

  batch: ``image`` (B, H_in, W_in, 3) uint8, ``inverse_affine`` (B, 2, 3) input -> original,
  ``keypoints_orig`` (B, K, 2), ``labeled`` (B, K), ``valid`` (B,) and the protocol's
  :func:`device_keys` (MPII ``head_box`` (B, 4); Penn Action ``box`` (B, 4), ``visible``).
  Returns ``{decoder: {"keypoints": (B, K, 2) original pixels, "scores": (B, K),
  ["box": (B, 4) x0 y0 x1 y1 original pixels,] "counts": sums}}`` and ``"heatmaps"``
  (B, h, w, K) of the joints.
  """
  maps = inference.predict_heatmaps(
    variables, batch["image"], model=model, flip_test=flip_test, flip_permutation=flip_permutation
  )
  k = model.num_joints
  labeled = batch["labeled"].astype(bool)
  valid = batch["valid"].astype(bool)
  mask = jnp.logical_and(valid[:, None], labeled)
  protocol = "lsp" if keypoint_set is None else protocols.protocol_of(keypoint_set)
  if model.box_head:
    gt_box, has_box = box_lib.box_from_keypoints(batch["keypoints_orig"], labeled, box_margin)
  out: dict[str, Any] = {"heatmaps": skeleton.split_maps(maps, background=False, num_joints=k)[1]}
  for decoding in decodings:
    points, scores = inference.decode_to_original(codec, maps, batch["inverse_affine"], decoding)
    _, keypoints, box_points = skeleton.split_maps(points, background=False, num_joints=k, axis=-2)
    if protocol == "lsp":
      counts = metrics.keypoint_counts(
        keypoints, batch["keypoints_orig"], mask, torso=torso, head=head
      )
    else:
      counts = protocols.protocol_counts(keypoint_set, keypoints, batch)
    res = {
      "keypoints": keypoints,
      "scores": skeleton.split_maps(scores, background=False, num_joints=k)[1],
      "counts": counts,
    }
    if model.box_head:
      res["box"] = box_lib.box_from_points(box_points)
      res["counts"].update(metrics.box_counts(res["box"], gt_box, valid & has_box))
    out[decoding] = res
  return out


def _host_rows(local: dict[str, np.ndarray], mesh) -> dict[str, np.ndarray]:
  """Every process's rows of :data:`COCO_HOST_KEYS` and ``valid``, on the host (each process
  the same arrays). ``annotation_id`` (int64) travels as two int32 halves (JAX without x64
  would truncate it) and is put together again."""
  ann = np.asarray(local["annotation_id"], np.int64)
  part = {k: local[k] for k in COCO_HOST_KEYS if k != "annotation_id"}
  part.update(
    valid=local["valid"], ann_hi=(ann >> 31).astype(np.int32),
    ann_lo=(ann & (2**31 - 1)).astype(np.int32),
  )  # fmt: skip
  if jax.process_count() > 1:
    part = distributed.to_host(distributed.global_batch(part, mesh))
  out = {k: np.asarray(v) for k, v in part.items()}
  out["annotation_id"] = (out.pop("ann_hi").astype(np.int64) << 31) | out.pop("ann_lo")
  return out


class Example(NamedTuple):
  """One test image for the example PNGs: ``image`` (H, W, 3) uint8 original, its
  predicted ``keypoints`` (K, 2) and ``annotation`` (K, 2) in original pixels, the
  predicted ``box`` (4,) or None, the network ``input`` (H_in, W_in, 3) uint8 and its joint
  ``heatmaps`` (h, w, K)."""

  image: np.ndarray
  keypoints: np.ndarray
  annotation: np.ndarray
  box: np.ndarray | None
  input: np.ndarray
  heatmaps: np.ndarray


@dataclasses.dataclass
class EvalResult:
  """What :meth:`Evaluator.run` measured (the same on every process).

  Attributes:
    summary: ``{decoder: {metric: float}}``: the protocol's keys (LSP
      ``metrics.summarize``; MPII and Penn Action ``protocols.protocol_summary``, with the
      best-metric alias; COCO ``coco_eval.COCO_KEYS``) [+ the box head's].
    counts: ``{decoder: merged sums}`` (the protocol's [+ ``box_counts``]; COCO: box sums
      or None).
    predictions: ``{decoder: [(image_ids (B,), keypoints (B, K, 2), scores (B, K),
      boxes (B, 4) or None), ...]}`` per batch, valid images only, original pixels.
    examples: a few :class:`Example` (primary process; empty unless asked for).
    example_decoding: the decoder of the examples.
    keypoint_set: the set of the ``K`` joints (names in the files, limbs in the pictures).
    annotation_ids: COCO: ``[(B,) int64, ...]`` per batch (valid rows, the order of every
      decoder's ``predictions``), the person of each pose; else None.
    coco_results: COCO: ``{decoder: results JSON}`` (COCO's format and frame); else None.
  """

  summary: dict[str, dict[str, float]]
  counts: dict[str, Any]
  predictions: dict[str, list]
  examples: list[Example]
  example_decoding: str
  keypoint_set: keypoint_sets.KeypointSet
  annotation_ids: list | None = None
  coco_results: dict[str, list] | None = None

  @property
  def protocol(self) -> str:
    """``protocols.protocol_of`` the keypoint set: ``"lsp"``, ``"mpii"``, ``"penn_action"``
    or ``"coco"``."""
    return protocols.protocol_of(self.keypoint_set)


def metric_joints(kset: keypoint_sets.KeypointSet) -> dict[str, tuple[int, int] | None]:
  """``{"torso": (a, b), "head": (a, b)}``: the joints of an LSP-protocol keypoint set that
  normalise :func:`metrics.keypoint_counts` (``{"torso": None, "head": None}`` for the other
  protocols, which normalise by boxes or sigmas). Raises ``run_config.ConfigError`` for an
  LSP-protocol set that names none."""
  if protocols.protocol_of(kset) != "lsp":
    return {"torso": None, "head": None}
  if kset.torso is None or kset.head is None:
    raise run_config.ConfigError(
      f"keypoint set {kset.name!r} has no torso and head joints: its protocol "
      f"({kset.best_metric}) is not evaluated here"
    )
  return {"torso": tuple(kset.torso), "head": tuple(kset.head)}


def eval_step_of(run, model=None) -> Callable:
  """:func:`eval_step` with a ``run.Run``'s decoders, flip test (its keypoint set's
  permutation), metric joints and box margin bound (``model`` defaults to ``run.model()``)."""
  config = run.config
  return functools.partial(
    eval_step, model=model or run.model(), codec=run.codec, decodings=run.eval_decodings,
    flip_test=run.flip_test, flip_permutation=run.flip_permutation,
    box_margin=config.model.box_margin, keypoint_set=run.keypoint_set,
    **metric_joints(run.keypoint_set),
  )  # fmt: skip


class Evaluator:
  """Evaluates variables on a test source, every process its own shard.

  ``predict_fn(variables, global_batch) -> eval_step's output`` (jitted);
  ``source`` a random-access source of records; sizes are plain ints.
  """

  def __init__(
    self, predict_fn: Callable, source, mesh, *, decodings: Sequence[str], batch_size: int,
    input_size: int | tuple[int, int], keypoint_set: keypoint_sets.KeypointSet, worker_count: int = 0,
    num_examples: int = 0, example_decoding=None, crop: str = "whole", margin: float = 1.25,
  ):  # fmt: skip
    self.predict_fn, self.source, self.mesh = predict_fn, source, mesh
    self.crop, self.margin = crop, margin
    self.protocol = protocols.protocol_of(keypoint_set)
    self.keypoint_set = keypoint_set
    self.decodings = tuple(decodings)
    self.batch_size = distributed.per_process_batch_size(batch_size, mesh)
    self.input_size, self.worker_count = input_size, worker_count
    self.num_examples = num_examples
    self.example_decoding = example_decoding or self.decodings[-1]

  @classmethod
  def from_run(cls, run, mesh, model=None) -> Evaluator:
    """The evaluator of a ``run.Run``: its evaluation source (``Run.eval_source``), crop
    (``Run.eval_crop``, ``data.eval_margin``), keypoint set, decoders, flip test and batch
    size; ``model`` defaults to ``run.model()``."""
    config = run.config
    decodings = run.eval_decodings
    d = config.data
    return cls(
      jax.jit(eval_step_of(run, model)), run.eval_source, mesh,
      decodings=decodings, batch_size=config.eval_batch_size, input_size=d.input_size,
      keypoint_set=run.keypoint_set, worker_count=d.eval_worker_count,
      num_examples=config.num_example_images, example_decoding=config.codec.decoding,
      crop=run.eval_crop, margin=d.eval_margin,
    )  # fmt: skip

  def run(self, variables, examples: bool = True, should_stop: Callable[[], bool] | None = None,
          progress: bool = False) -> EvalResult:  # fmt: skip
    """Evaluate ``variables`` (on the mesh) on the whole source; with ``examples`` also
    collect the :class:`Example` images (primary process).

    ``should_stop``: asked before every batch (every process at the same point, e.g.
    ``distributed.any_process`` of a signal flag); True raises ``preemption.Preempted``.
    ``progress``: a console line after the first batch (compiled) and every
    :data:`PROGRESS_EVERY_S` seconds.
    """
    counts: dict[str, Any] = {d: None for d in self.decodings}
    rows: dict[str, list] = {d: [] for d in self.decodings}
    found: list[Example] = []
    coco = self.protocol == "coco"
    collector = protocols.CocoCollector(self.keypoint_set, self.decodings) if coco else None
    annotation_ids: list | None = [] if coco else None
    keys = device_keys(self.keypoint_set)
    iterator = input_pipeline.make_eval_iterator(
      self.source, batch_size=self.batch_size, input_size=self.input_size,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      worker_count=self.worker_count, crop=self.crop, margin=self.margin,
    )  # fmt: skip
    batches = input_pipeline.num_eval_batches(
      len(self.source), self.batch_size, jax.process_count()
    )
    start = last = time.perf_counter()
    for done, local in enumerate(iterator):
      if should_stop is not None and should_stop():
        raise preemption.preempted(
          f"evaluation, after {done} of {batches} batches; no results written"
        )
      out = self.predict_fn(
        variables, distributed.global_batch({k: local[k] for k in keys}, self.mesh)
      )
      host = distributed.to_host({d: out[d] for d in self.decodings})
      ids = distributed.to_host(
        distributed.global_batch(
          {"image_id": local["image_id"], "valid": local["valid"]}, self.mesh
        )
      )
      valid = np.asarray(ids["valid"]).astype(bool)
      if coco:
        gt = _host_rows(local, self.mesh)
        collector.add(gt, {d: (host[d]["keypoints"], host[d]["scores"]) for d in self.decodings})
        annotation_ids.append(gt["annotation_id"][valid])
      for d in self.decodings:
        counts[d] = metrics.merge_counts(counts[d], host[d]["counts"] or None)
        box = host[d]["box"][valid] if "box" in host[d] else None
        rows[d].append(
          (ids["image_id"][valid], host[d]["keypoints"][valid], host[d]["scores"][valid], box)
        )
      if examples and len(found) < self.num_examples:
        found.extend(self._examples(local, out, len(found)))
      now = time.perf_counter()
      if progress and distributed.is_primary() and (done == 0 or now - last >= PROGRESS_EVERY_S):
        last = now
        print(f"evaluated batch {done + 1}/{batches} ({now - start:.1f} s)", flush=True)
    summary, results = self._summaries(counts, collector)
    return EvalResult(
      summary, counts, rows, found, self.example_decoding, self.keypoint_set, annotation_ids,
      results,
    )  # fmt: skip

  def _summaries(self, counts, collector) -> tuple[dict, dict | None]:
    """``({decoder: protocol keys [+ box keys]}, COCO results or None)``."""
    kset = self.keypoint_set
    if self.protocol == "lsp":
      names = kset.joint_names
      return {d: metrics.summarize(counts[d], joint_names=names) for d in self.decodings}, None
    results = None
    if self.protocol == "coco":
      summary, results = collector.summaries()
    else:
      summary = {d: protocols.protocol_summary(kset, counts[d]) for d in self.decodings}
    for d in self.decodings:
      if counts[d] is not None and "box_total" in counts[d]:
        summary[d].update(summarize_boxes(counts[d]))
    return summary, results

  def _examples(self, local, out, have: int) -> list[Example]:
    """A few valid images of this process's batch (primary only)."""
    first = np.flatnonzero(local["valid"])[: self.num_examples - have]
    if not len(first) or not distributed.is_primary():
      return []
    res = out[self.example_decoding]
    preds = distributed.local_rows(res["keypoints"])
    boxes = distributed.local_rows(res["box"]) if "box" in res else None
    heatmaps = distributed.local_rows(out["heatmaps"])
    return [
      Example(
        self.source[int(local["source_index"][i])]["image"],
        preds[i],
        local["keypoints_orig"][i],
        None if boxes is None else boxes[i],
        local["image"][i],
        heatmaps[i],
      )  # fmt: skip
      for i in first
    ]
