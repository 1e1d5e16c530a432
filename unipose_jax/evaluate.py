"""Evaluation: the jitted evaluation step, the loop over a test set, result files, prediction.

At evaluation: model -> joint heatmaps -> ``codec.decode`` with each configured decoder
(all in one pass) -> keypoints in input pixels -> ``inverse_affine`` -> original-image
pixels -> PCK/PCKh sums and counts (exact across batches, devices and processes).

Files written by :meth:`Evaluator.run` into its output folder:
``eval_metrics.json`` ({decoder: flat metrics}), ``predictions.csv`` (decoder, image_id,
joint, x, y, score; original-image pixels, 0-based pixel centres), ``pck_curve.png``,
and example PNGs (skeletons, heatmap panel).
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unipose_jax import (
  checkpoints,
  datasets,
  distributed,
  input_pipeline,
  metrics,
  skeleton,
  transforms,
  visualize,
)
from unipose_jax.codecs import HeatmapCodec
from unipose_jax.models import Bottleneck, ResNet, UniPose, normalize

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# ----------------------------------------------------------------------------- builders


def build_model(cfg: ml_collections.ConfigDict, bn_axis_name: str | None = None) -> UniPose:
  """``UniPose`` from ``config.model`` (plain arguments from here on)."""
  if cfg.dtype not in DTYPES:
    raise ValueError(f"unknown model.dtype {cfg.dtype!r}; expected one of {sorted(DTYPES)}")
  backbone = None
  if cfg.stage_sizes:  # a custom (small) bottleneck ResNet instead of a standard depth
    backbone = functools.partial(ResNet, stage_sizes=tuple(cfg.stage_sizes), block_cls=Bottleneck)
  return UniPose(
    num_joints=skeleton.NUM_JOINTS,
    backbone_depth=cfg.backbone_depth,
    backbone=backbone,
    output_stride=cfg.output_stride,
    backbone_width=cfg.backbone_width,
    wasp_features=cfg.wasp_features,
    wasp_rates=tuple(cfg.wasp_rates) or None,
    low_level_features=cfg.low_level_features,
    decoder_features=cfg.decoder_features,
    wasp_dropout=cfg.wasp_dropout,
    decoder_dropouts=tuple(cfg.decoder_dropout),
    dtype=DTYPES[cfg.dtype],
    bn_axis_name=bn_axis_name,
  )


def build_codec(config: ml_collections.ConfigDict) -> HeatmapCodec:
  """The heatmap codec of a config; heatmaps are at stride 8 of the square input."""
  size = config.data.input_size
  if size % 8:
    raise ValueError(f"data.input_size={size} must be a multiple of 8 (heatmaps are at stride 8)")
  return HeatmapCodec(
    input_size=(size, size),
    heatmap_size=(size // 8, size // 8),
    sigma=config.codec.sigma,
    encoding=config.codec.encoding,
    decoding=config.codec.decoding,
    dark_kernel=config.codec.dark_kernel or None,
  )


def load_source(name: str, split: str, data_dir: str):
  """A random-access source of records of a prepared dataset (see ``datasets.data_source``)."""
  return datasets.data_source(name, split, data_dir)


# ----------------------------------------------------------------------------- the step


def predict_heatmaps(variables, images: jax.Array, *, model, flip_test: bool) -> jax.Array:
  """Joint heatmaps (B, h, w, K) of normalised images (B, S, S, 3); background dropped.

  With ``flip_test`` the heatmaps of the mirrored images are mirrored back, their
  left/right channels swapped, and averaged with the plain ones (exact for S
  divisible by the stride, by the pixel-centre convention).
  """
  images = normalize(images, model.dtype)
  heatmaps = model.apply(variables, images, train=False)[..., 1:]
  if flip_test:
    flipped = model.apply(variables, images[:, :, ::-1], train=False)[..., 1:]
    flipped = flipped[:, :, ::-1][..., skeleton.FLIP_PERMUTATION]
    heatmaps = 0.5 * (heatmaps + flipped)
  return heatmaps


def eval_step(
  variables,
  batch: dict[str, jax.Array],
  *,
  model,
  codec: HeatmapCodec,
  decodings: Sequence[str],
  flip_test: bool,
) -> dict[str, Any]:
  """Predictions and metric sums for one (global) batch.

  batch: ``image`` (B, S, S, 3), ``inverse_affine`` (B, 2, 3) input -> original,
  ``keypoints_orig`` (B, K, 2), ``labeled`` (B, K), ``valid`` (B,).
  Returns ``{decoder: {"keypoints": (B, K, 2) original pixels, "scores": (B, K),
  "counts": metric sums of the batch}}`` and ``"heatmaps"`` (B, h, w, K).
  """
  heatmaps = predict_heatmaps(variables, batch["image"], model=model, flip_test=flip_test)
  mask = jnp.logical_and(batch["valid"][:, None].astype(bool), batch["labeled"].astype(bool))
  out: dict[str, Any] = {"heatmaps": heatmaps}
  for decoding in decodings:
    kp_input, scores = codec.decode(heatmaps, decoding=decoding)
    kp_orig = apply_affine(batch["inverse_affine"], kp_input)
    out[decoding] = {
      "keypoints": kp_orig,
      "scores": scores,
      "counts": metrics.keypoint_counts(kp_orig, batch["keypoints_orig"], mask),
    }
  return out


def apply_affine(affine: jax.Array, points: jax.Array) -> jax.Array:
  """Map points (B, K, 2) by per-example 2x3 affines (B, 2, 3)."""
  return jnp.einsum("bij,bkj->bki", affine[:, :, :2], points) + affine[:, None, :, 2]


# ----------------------------------------------------------------------------- the loop


class Evaluator:
  """Evaluates variables on the configured test split, every process its own shard."""

  def __init__(self, config: ml_collections.ConfigDict, model, codec: HeatmapCodec, mesh):
    self.config = config
    self.mesh = mesh
    self.decodings = tuple(config.codec.eval_decodings)
    if config.codec.decoding not in self.decodings:
      self.decodings += (config.codec.decoding,)
    self.source = load_source(config.data.eval_source, config.data.eval_split, config.data.data_dir)
    self.batch_size = distributed.per_process_batch_size(config.eval_batch_size, mesh)
    self._step = jax.jit(
      functools.partial(
        eval_step, model=model, codec=codec, decodings=self.decodings, flip_test=config.flip_test
      )
    )

  def iterator(self):
    return input_pipeline.make_eval_iterator(
      self.source,
      batch_size=self.batch_size,
      input_size=self.config.data.input_size,
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
      worker_count=self.config.data.eval_worker_count,
    )

  def run(self, variables, out_dir: str, write_files: bool = True) -> dict[str, dict[str, float]]:
    """Evaluate; returns ``{decoder: summary}`` and writes result files (primary process)."""
    counts = {d: None for d in self.decodings}
    rows: dict[str, list] = {d: [] for d in self.decodings}
    examples = []
    for local in self.iterator():
      batch = distributed.global_batch(
        {k: local[k] for k in ("image", "inverse_affine", "keypoints_orig", "labeled", "valid")},
        self.mesh,
      )
      out = self._step(variables, batch)
      host = distributed.to_host({d: out[d] for d in self.decodings})
      ids = distributed.to_host(
        distributed.global_batch(
          {"image_id": local["image_id"], "valid": local["valid"]}, self.mesh
        )
      )
      valid = np.asarray(ids["valid"]).astype(bool)
      for d in self.decodings:
        counts[d] = metrics.merge_counts(counts[d], host[d]["counts"])
        rows[d].append(
          (ids["image_id"][valid], host[d]["keypoints"][valid], host[d]["scores"][valid])
        )
      if write_files and len(examples) < self.config.num_example_images:
        examples.extend(self._examples(local, out, len(examples)))
    summary = {d: metrics.summarize(counts[d]) for d in self.decodings}
    if distributed.is_primary():
      os.makedirs(out_dir, exist_ok=True)
      write_json(os.path.join(out_dir, "eval_metrics.json"), summary)
      if write_files:
        write_predictions_csv(os.path.join(out_dir, "predictions.csv"), rows)
        visualize.save_pck_curve(
          os.path.join(out_dir, "pck_curve.png"),
          {d: metrics.pck_curve(counts[d]) for d in self.decodings},
        )
        for i, (image, pred, gt, input_image, heatmaps) in enumerate(examples):
          visualize.save_prediction_png(
            os.path.join(out_dir, f"example_{i}.png"),
            image,
            pred,
            gt,
            title=f"{self.config.codec.decoding}",
          )
          if i == 0:
            visualize.save_heatmap_panel(
              os.path.join(out_dir, "heatmaps_0.png"), input_image, heatmaps
            )
    return summary

  def _examples(self, local, out, have: int):
    """(original image, predicted and annotated keypoints, network input, its joint heatmaps)
    of a few valid images of this process's batch (only the primary's are written)."""
    want = self.config.num_example_images - have
    first = np.flatnonzero(local["valid"])[:want]
    if not len(first) or not distributed.is_primary():
      return []
    preds = distributed.local_rows(out[self.config.codec.decoding]["keypoints"])
    heatmaps = distributed.local_rows(out["heatmaps"])
    found = []
    for i in first:
      record = self.source[int(local["source_index"][i])]
      found.append(
        (
          record["image"],
          preds[i],
          local["keypoints_orig"][i],
          local["image"][i],
          heatmaps[i],
        )
      )
    return found


# ----------------------------------------------------------------------------- files


def _nan_to_none(obj: Any) -> Any:
  if isinstance(obj, dict):
    return {k: _nan_to_none(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_nan_to_none(v) for v in obj]
  if isinstance(obj, float) and obj != obj:
    return None
  return obj


def write_json(path: str, obj: Any) -> None:
  """Atomically write ``obj`` as indented, standard JSON (NaN, e.g. a joint never counted,
  becomes null)."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(_nan_to_none(obj), f, indent=1, sort_keys=True, allow_nan=False)
  os.replace(tmp, path)


def write_predictions_csv(path: str, rows: dict[str, list]) -> None:
  """One row per decoder, image and joint: decoder,image_id,joint,x,y,score (original pixels)."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["decoder", "image_id", "joint", "joint_name", "x", "y", "score"])
    for decoder, chunks in rows.items():
      for ids, kps, scores in chunks:
        for image_id, kp, sc in zip(ids, kps, scores):
          for j in range(kp.shape[0]):
            w.writerow(
              [
                decoder,
                int(image_id),
                j,
                skeleton.JOINT_NAMES[j],
                f"{kp[j, 0]:.4f}",
                f"{kp[j, 1]:.4f}",
                f"{sc[j]:.5f}",
              ]
            )
  os.replace(tmp, path)


def write_final_summary(workdir: str, summary: dict[str, dict[str, float]]) -> None:
  """``<workdir>/eval_metrics.json`` and a one-line table per decoder on the console."""
  if not distributed.is_primary():
    return
  write_json(os.path.join(workdir, "eval_metrics.json"), summary)
  print(
    f"{'decoder':10s} {'PCK@0.2':>8s} {'PCK@0.1':>8s} {'PCK@0.05':>8s} {'AUC@0.2':>8s} "
    f"{'PCKh@0.5*':>9s}   (*head = neck to head top: LSP has no head box)"
  )
  for dec, res in summary.items():
    print(
      f"{dec:10s} {res['pck@0.2']:8.4f} {res['pck@0.1']:8.4f} {res['pck@0.05']:8.4f} "
      f"{res['auc@0.2']:8.4f} {res['pckh@0.5']:9.4f}",
      flush=True,
    )


# ----------------------------------------------------------------------------- checkpoints


def restore_variables(workdir: str, mesh, step: int | None = None) -> tuple[dict, int]:
  """Model variables of a run's checkpoint (default: the best by PCK@0.2, else the latest).

  Returns ``({"params", "batch_stats"} replicated over ``mesh``, step)``.
  """
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  try:
    if step is None:
      step = ckpt.best_step() or ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(
        f"no checkpoint in {workdir}/checkpoints: train first "
        f"(launch.py --mode=train --workdir={workdir})"
      )
    state, _, _ = ckpt.restore(step=step)
  finally:
    ckpt.close()
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  return distributed.replicate(variables, mesh), step


def evaluate_checkpoint(
  config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> dict[str, dict[str, float]]:
  """``--mode=eval``: evaluate a checkpoint with every configured decoder and write the files
  into ``<workdir>/eval/checkpoint_<step>/``."""
  mesh = distributed.data_mesh()
  model, codec = build_model(config.model), build_codec(config)
  variables, step = restore_variables(workdir, mesh, step)
  out_dir = os.path.join(workdir, "eval", f"checkpoint_{step}")
  summary = Evaluator(config, model, codec, mesh).run(variables, out_dir, write_files=True)
  write_final_summary(out_dir, summary)
  return summary


# ----------------------------------------------------------------------------- predict


def read_image(path: str) -> np.ndarray:
  """An image file as uint8 RGB (H, W, 3); a clear error for a missing or unreadable file."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such image file")
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ValueError(f"{path}: not a readable image ({e})") from e


def predict_images(
  config: ml_collections.ConfigDict, workdir: str, paths: Sequence[str], output_dir: str
) -> dict[str, Any]:
  """``--mode=predict``: keypoints of image files with a trained run's best checkpoint.

  Writes ``<output_dir>/keypoints.json`` (``{file: {joint_name: [x, y, score]}}`` in
  original-image pixels, 0-based pixel centres, decoder ``config.codec.decoding``)
  and ``<output_dir>/<stem>_pose.png`` overlays. Returns the JSON content.
  """
  images = [read_image(p) for p in paths]  # fail on a bad file before any compilation
  mesh = distributed.data_mesh(jax.local_devices()[:1])
  model, codec = build_model(config.model), build_codec(config)
  variables, _ = restore_variables(workdir, mesh)

  @jax.jit
  def predict(variables, image, inverse_affine):
    heatmaps = predict_heatmaps(variables, image, model=model, flip_test=config.flip_test)
    keypoints, scores = codec.decode(heatmaps)
    return apply_affine(inverse_affine, keypoints), scores

  k = skeleton.NUM_JOINTS
  results: dict[str, Any] = {}
  write = distributed.is_primary()  # every process predicts; only the first writes
  if write:
    os.makedirs(output_dir, exist_ok=True)
  for path, image in zip(paths, images):
    record = {
      "image": image,
      "keypoints": np.zeros((k, 2), np.float32),
      "labeled": np.zeros(k, bool),
      "visible": np.zeros(k, bool),
      "image_id": 0,
    }
    x = transforms.transform_eval(record, input_size=config.data.input_size)
    kp, sc = jax.device_get(predict(variables, x["image"][None], x["inverse_affine"][None]))
    results[path] = {
      name: [float(kp[0, j, 0]), float(kp[0, j, 1]), float(sc[0, j])]
      for j, name in enumerate(skeleton.JOINT_NAMES)
    }
    stem = os.path.splitext(os.path.basename(path))[0]
    if write:
      visualize.save_prediction_png(
        os.path.join(output_dir, f"{stem}_pose.png"), image, kp[0], None, title=stem
      )
  if write:
    write_json(os.path.join(output_dir, "keypoints.json"), results)
  return results
