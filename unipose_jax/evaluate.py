"""Evaluation: the jitted evaluation step and the loop over a test set. It measures;
``reports`` writes the files.

model -> heatmaps -> ``codec.decode`` with each decoder (all in one pass) -> keypoints in
input pixels -> ``inverse_affine`` -> original-image pixels (``inference``) -> PCK/PCKh
(and, with a box head, box IoU) as sums and counts, exact across batches, devices and
processes.

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

EVAL_KEYS = ("image", "inverse_affine", "keypoints_orig", "labeled", "valid")

#: With ``progress``, a console line at most this often (seconds).
PROGRESS_EVERY_S = 10.0


class EvaluationError(Exception):
  """An evaluation failed (a damaged test set, an unwritable ``eval/``); one line for users."""


def eval_step(
  variables, batch, *, model, codec: HeatmapCodec, decodings: Sequence[str], flip_test: bool,
  torso: tuple[int, int], head: tuple[int, int], flip_permutation: Sequence[int] | None = None,
  box_margin: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
  """Predictions and metric sums of one (global) batch.

  ``K`` is ``model.num_joints``; ``torso``, ``head`` (the metrics' normaliser joints) and
  ``flip_permutation`` (for ``flip_test``) are the keypoint set's.

  batch: ``image`` (B, H_in, W_in, 3) uint8, ``inverse_affine`` (B, 2, 3) input -> original,
  ``keypoints_orig`` (B, K, 2), ``labeled`` (B, K), ``valid`` (B,).
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
  if model.box_head:
    gt_box, has_box = box_lib.box_from_keypoints(batch["keypoints_orig"], labeled, box_margin)
  out: dict[str, Any] = {"heatmaps": skeleton.split_maps(maps, background=False, num_joints=k)[1]}
  for decoding in decodings:
    points, scores = inference.decode_to_original(codec, maps, batch["inverse_affine"], decoding)
    _, keypoints, box_points = skeleton.split_maps(points, background=False, num_joints=k, axis=-2)
    res = {
      "keypoints": keypoints,
      "scores": skeleton.split_maps(scores, background=False, num_joints=k)[1],
      "counts": metrics.keypoint_counts(
        keypoints, batch["keypoints_orig"], mask, torso=torso, head=head
      ),
    }
    if model.box_head:
      res["box"] = box_lib.box_from_points(box_points)
      res["counts"].update(metrics.box_counts(res["box"], gt_box, valid & has_box))
    out[decoding] = res
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
    summary: ``{decoder: {metric: float}}`` (``metrics.summarize``).
    counts: ``{decoder: merged sums}`` (``metrics.keypoint_counts`` [+ ``box_counts``]).
    predictions: ``{decoder: [(image_ids (B,), keypoints (B, K, 2), scores (B, K),
      boxes (B, 4) or None), ...]}`` per batch, valid images only, original pixels.
    examples: a few :class:`Example` (primary process; empty unless asked for).
    example_decoding: the decoder of the examples.
    keypoint_set: the set of the ``K`` joints (names in the files, limbs in the pictures).
  """

  summary: dict[str, dict[str, float]]
  counts: dict[str, Any]
  predictions: dict[str, list]
  examples: list[Example]
  example_decoding: str
  keypoint_set: keypoint_sets.KeypointSet


def metric_joints(kset: keypoint_sets.KeypointSet) -> dict[str, tuple[int, int]]:
  """``{"torso": (a, b), "head": (a, b)}``: the joints of a keypoint set that normalise
  :func:`metrics.keypoint_counts`. Raises ``run_config.ConfigError`` for a set that names
  none (its own protocol is not one of this evaluator's)."""
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
    box_margin=config.model.box_margin, **metric_joints(run.keypoint_set),
  )  # fmt: skip


class Evaluator:
  """Evaluates variables on a test source, every process its own shard.

  ``predict_fn(variables, global_batch) -> eval_step's output`` (jitted);
  ``source`` a random-access source of records; sizes are plain ints.
  """

  def __init__(
    self, predict_fn: Callable, source, mesh, *, decodings: Sequence[str], batch_size: int,
    input_size: int | tuple[int, int], keypoint_set: keypoint_sets.KeypointSet, worker_count: int = 0,
    num_examples: int = 0, example_decoding=None,
  ):  # fmt: skip
    self.predict_fn, self.source, self.mesh = predict_fn, source, mesh
    self.keypoint_set = keypoint_set
    self.decodings = tuple(decodings)
    self.batch_size = distributed.per_process_batch_size(batch_size, mesh)
    self.input_size, self.worker_count = input_size, worker_count
    self.num_examples = num_examples
    self.example_decoding = example_decoding or self.decodings[-1]

  @classmethod
  def from_run(cls, run, mesh, model=None) -> Evaluator:
    """The evaluator of a ``run.Run``: its evaluation source (``Run.eval_source``),
    keypoint set, decoders, flip test and batch size; ``model`` defaults to ``run.model()``."""
    config = run.config
    decodings = run.eval_decodings
    d = config.data
    return cls(
      jax.jit(eval_step_of(run, model)), run.eval_source, mesh,
      decodings=decodings, batch_size=config.eval_batch_size, input_size=d.input_size,
      keypoint_set=run.keypoint_set, worker_count=d.eval_worker_count,
      num_examples=config.num_example_images, example_decoding=config.codec.decoding,
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
    iterator = input_pipeline.make_eval_iterator(
      self.source, batch_size=self.batch_size, input_size=self.input_size,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      worker_count=self.worker_count,
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
        variables, distributed.global_batch({k: local[k] for k in EVAL_KEYS}, self.mesh)
      )
      host = distributed.to_host({d: out[d] for d in self.decodings})
      ids = distributed.to_host(
        distributed.global_batch(
          {"image_id": local["image_id"], "valid": local["valid"]}, self.mesh
        )
      )
      valid = np.asarray(ids["valid"]).astype(bool)
      for d in self.decodings:
        counts[d] = metrics.merge_counts(counts[d], host[d]["counts"])
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
    names = self.keypoint_set.joint_names
    summary = {d: metrics.summarize(counts[d], joint_names=names) for d in self.decodings}
    return EvalResult(summary, counts, rows, found, self.example_decoding, self.keypoint_set)

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
