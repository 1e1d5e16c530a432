"""Evaluation: the jitted evaluation step, the loop over a test set, the result files.

model -> heatmaps -> ``codec.decode`` with each decoder (all in one pass) -> keypoints in
input pixels -> ``inverse_affine`` -> original-image pixels -> PCK/PCKh (and, with a box
head, box IoU) as sums and counts, exact across batches, devices and processes.

The :class:`Evaluator` receives a predict function, a source and plain sizes; it builds
nothing from a config (:meth:`Evaluator.from_config` is the one adapter).

Files written by :meth:`Evaluator.run` into its output folder: ``eval_metrics.json``
({decoder: flat metrics}), ``predictions.csv`` (decoder, image_id, joint, joint_name, x, y,
score; original-image pixels, 0-based pixel centres), with a box head ``boxes.csv``
(decoder, image_id, x0, y0, x1, y1; same pixels), ``pck_curve.png`` and example PNGs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unipose_jax import (
  distributed,
  files,
  input_pipeline,
  metrics,
  run_config,
  skeleton,
  visualize,
)
from unipose_jax.codecs import HeatmapCodec
from unipose_jax.codecs import box as box_lib
from unipose_jax.models import normalize

EVAL_KEYS = ("image", "inverse_affine", "keypoints_orig", "labeled", "valid")


def predict_heatmaps(variables, images: jax.Array, *, model, flip_test: bool) -> jax.Array:
  """Heatmaps (B, h, w, K [+ 5 box maps]) of uint8 images (B, S, S, 3); background dropped.

  With ``flip_test`` the heatmaps of the mirrored images are mirrored back, their
  left/right channels swapped, and averaged with the plain ones (exact for S divisible
  by the stride, by the pixel-centre convention).
  """
  x = normalize(images, model.dtype)
  heatmaps = model.apply(variables, x, train=False)[..., 1:].astype(jnp.float32)
  if flip_test:
    perm = list(skeleton.FLIP_PERMUTATION)
    if heatmaps.shape[-1] > skeleton.NUM_JOINTS:
      perm += [skeleton.NUM_JOINTS + i for i in skeleton.BOX_FLIP_PERMUTATION]
    flipped = model.apply(variables, x[:, :, ::-1], train=False)[..., 1:].astype(jnp.float32)
    heatmaps = 0.5 * (heatmaps + flipped[:, :, ::-1][..., np.asarray(perm)])
  return heatmaps


def apply_affine(affine: jax.Array, points: jax.Array) -> jax.Array:
  """Map points (B, N, 2) by per-example 2x3 affines (B, 2, 3)."""
  return jnp.einsum("bij,bkj->bki", affine[:, :, :2], points) + affine[:, None, :, 2]


def eval_step(
  variables, batch, *, model, codec: HeatmapCodec, decodings: Sequence[str], flip_test: bool,
  box_margin: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
  """Predictions and metric sums of one (global) batch.

  batch: ``image`` (B, S, S, 3) uint8, ``inverse_affine`` (B, 2, 3) input -> original,
  ``keypoints_orig`` (B, K, 2), ``labeled`` (B, K), ``valid`` (B,).
  Returns ``{decoder: {"keypoints": (B, K, 2) original pixels, "scores": (B, K),
  ["box": (B, 4) x0 y0 x1 y1 original pixels,] "counts": sums}}`` and ``"heatmaps"``
  (B, h, w, K) of the joints.
  """
  k = skeleton.NUM_JOINTS
  maps = predict_heatmaps(variables, batch["image"], model=model, flip_test=flip_test)
  labeled = batch["labeled"].astype(bool)
  valid = batch["valid"].astype(bool)
  mask = jnp.logical_and(valid[:, None], labeled)
  if model.box_head:
    gt_box, has_box = box_lib.box_from_keypoints(batch["keypoints_orig"], labeled, box_margin)
  out: dict[str, Any] = {"heatmaps": maps[..., :k]}
  for decoding in decodings:
    points, scores = codec.decode(maps, decoding=decoding)
    points = apply_affine(batch["inverse_affine"], points)
    res = {
      "keypoints": points[:, :k],
      "scores": scores[:, :k],
      "counts": metrics.keypoint_counts(points[:, :k], batch["keypoints_orig"], mask),
    }
    if model.box_head:
      res["box"] = box_lib.box_from_points(points[:, k:])
      res["counts"].update(metrics.box_counts(res["box"], gt_box, valid & has_box))
    out[decoding] = res
  return out


def eval_step_of(config, model, codec: HeatmapCodec) -> Callable:
  """:func:`eval_step` with a config's decoders, flip test and box margin bound."""
  return functools.partial(
    eval_step, model=model, codec=codec, decodings=run_config.eval_decodings(config),
    flip_test=config.flip_test, box_margin=config.model.box_margin,
  )  # fmt: skip


class Evaluator:
  """Evaluates variables on a test source, every process its own shard.

  ``predict_fn(variables, global_batch) -> eval_step's output`` (jitted);
  ``source`` a random-access source of records; sizes are plain ints.
  """

  def __init__(
    self, predict_fn: Callable, source, mesh, *, decodings: Sequence[str], batch_size: int,
    input_size: int, worker_count: int = 0, num_examples: int = 0, example_decoding=None,
  ):  # fmt: skip
    self.predict_fn, self.source, self.mesh = predict_fn, source, mesh
    self.decodings = tuple(decodings)
    self.batch_size = distributed.per_process_batch_size(batch_size, mesh)
    self.input_size, self.worker_count = input_size, worker_count
    self.num_examples = num_examples
    self.example_decoding = example_decoding or self.decodings[-1]

  @classmethod
  def from_config(cls, config, model, codec: HeatmapCodec, mesh) -> Evaluator:
    """The evaluator of ``config.data.eval_source/eval_split`` with the configured decoders."""
    d = config.data
    return cls(
      jax.jit(eval_step_of(config, model, codec)),
      run_config.data_source(d.eval_source, d.eval_split, d.data_dir), mesh,
      decodings=run_config.eval_decodings(config), batch_size=config.eval_batch_size,
      input_size=d.input_size, worker_count=d.eval_worker_count,
      num_examples=config.num_example_images, example_decoding=config.codec.decoding,
    )  # fmt: skip

  def run(self, variables, out_dir: str, write_files: bool = True) -> dict[str, dict[str, float]]:
    """Evaluate; returns ``{decoder: summary}`` and writes the files (primary process)."""
    counts: dict[str, Any] = {d: None for d in self.decodings}
    rows: dict[str, list] = {d: [] for d in self.decodings}
    examples: list = []
    iterator = input_pipeline.make_eval_iterator(
      self.source, batch_size=self.batch_size, input_size=self.input_size,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      worker_count=self.worker_count,
    )  # fmt: skip
    for local in iterator:
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
      if write_files and len(examples) < self.num_examples:
        examples.extend(self._examples(local, out, len(examples)))
    summary = {d: metrics.summarize(counts[d]) for d in self.decodings}
    if distributed.is_primary():
      self._write(out_dir, summary, counts, rows, examples, write_files)
    return summary

  def _write(self, out_dir, summary, counts, rows, examples, write_files: bool) -> None:
    files.write_json(os.path.join(out_dir, "eval_metrics.json"), summary)
    if not write_files:
      return
    files.write_csv(
      os.path.join(out_dir, "predictions.csv"),
      ["decoder", "image_id", "joint", "joint_name", "x", "y", "score"],
      (
        [dec, int(i), j, skeleton.JOINT_NAMES[j], f"{kp[j, 0]:.4f}", f"{kp[j, 1]:.4f}", f"{sc[j]:.5f}"]
        for dec, chunks in rows.items()
        for ids, kps, scores, _ in chunks
        for i, kp, sc in zip(ids, kps, scores)
        for j in range(kp.shape[0])
      ),
    )  # fmt: skip
    if any(chunk[3] is not None for chunks in rows.values() for chunk in chunks):
      files.write_csv(
        os.path.join(out_dir, "boxes.csv"),
        ["decoder", "image_id", "x0", "y0", "x1", "y1"],
        (
          [dec, int(i), *(f"{v:.4f}" for v in box)]
          for dec, chunks in rows.items()
          for ids, _, _, boxes in chunks
          for i, box in zip(ids, boxes)
        ),
      )
    visualize.save_pck_curve(
      os.path.join(out_dir, "pck_curve.png"),
      {d: metrics.pck_curve(counts[d]) for d in self.decodings},
    )
    for i, (image, pred, gt, box, input_image, heatmaps) in enumerate(examples):
      visualize.save_prediction_png(
        os.path.join(out_dir, f"example_{i}.png"),
        image,
        pred,
        gt,
        box=box,
        title=self.example_decoding,
      )
      if i == 0:
        visualize.save_heatmap_panel(os.path.join(out_dir, "heatmaps_0.png"), input_image, heatmaps)

  def _examples(self, local, out, have: int) -> list:
    """(original image, predicted and annotated keypoints, box or None, network input, its
    joint heatmaps) of a few valid images of this process's batch (primary only)."""
    first = np.flatnonzero(local["valid"])[: self.num_examples - have]
    if not len(first) or not distributed.is_primary():
      return []
    res = out[self.example_decoding]
    preds = distributed.local_rows(res["keypoints"])
    boxes = distributed.local_rows(res["box"]) if "box" in res else None
    heatmaps = distributed.local_rows(out["heatmaps"])
    return [
      (
        self.source[int(local["source_index"][i])]["image"],
        preds[i],
        local["keypoints_orig"][i],
        None if boxes is None else boxes[i],
        local["image"][i],
        heatmaps[i],
      )  # fmt: skip
      for i in first
    ]


def write_final_summary(out_dir: str, summary: dict[str, dict[str, float]]) -> None:
  """``<out_dir>/eval_metrics.json`` and a one-line table per decoder on the console."""
  if not distributed.is_primary():
    return
  files.write_json(os.path.join(out_dir, "eval_metrics.json"), summary)
  has_box = any("box_iou" in r for r in summary.values())
  head = f"{'decoder':10s} {'PCK@0.2':>8s} {'PCK@0.1':>8s} {'PCK@0.05':>8s} {'AUC@0.2':>8s} {'PCKh@0.5*':>9s}"
  if has_box:
    head += f" {'boxIoU':>7s} {'IoU>=.5':>7s} {'ctr.err':>7s}"
  print(head + "   (*head = neck to head top: LSP has no head box)")
  for dec, r in summary.items():
    line = (
      f"{dec:10s} {r['pck@0.2']:8.4f} {r['pck@0.1']:8.4f} {r['pck@0.05']:8.4f} "
      f"{r['auc@0.2']:8.4f} {r['pckh@0.5']:9.4f}"
    )
    if has_box:
      line += f" {r['box_iou']:7.4f} {r['box_iou>=0.5']:7.4f} {r['box_centre_error']:7.4f}"
    print(line, flush=True)


def evaluate_checkpoint(
  config, workdir: str, step: int | None = None
) -> dict[str, dict[str, float]]:
  """``--mode=eval``: a run's checkpoint (best, else the newest intact one) or, with
  ``config.model.init_from`` and no checkpoint, an original UniPose ``.pth``, evaluated with
  every configured decoder; files go to ``<workdir>/eval/<name>/``."""
  run_config.validate(config, training=False)
  mesh = distributed.data_mesh()
  model, codec = run_config.build_model(config), run_config.build_codec(config)
  if config.model.init_from and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    from unipose_jax import models  # noqa: PLC0415

    shapes = jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0),
      jnp.zeros((1, config.data.input_size, config.data.input_size, 3), jnp.float32),
    )  # fmt: skip
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    variables, report = models.load_original_unipose(config.model.init_from, template)
    print(f"loaded {config.model.init_from}: {report}", flush=True)
    name = "original_" + os.path.splitext(os.path.basename(config.model.init_from))[0]
  else:
    how = "best, else newest intact" if step is None else "as asked"
    variables, step = run_config.load_variables(workdir, step)
    if distributed.is_primary():
      print(f"evaluating checkpoint {step} of {workdir} ({how})")
    name = f"checkpoint_{step}"
  out_dir = os.path.join(workdir, "eval", name)
  variables = distributed.replicate(variables, mesh)
  summary = Evaluator.from_config(config, model, codec, mesh).run(variables, out_dir)
  write_final_summary(out_dir, summary)
  return summary
