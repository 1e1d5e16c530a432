"""Calibrating person presence for a run (``launch.py --mode=calibrate``, and at the end
of training).

1. The network of the run's best checkpoint (the one ``--mode=predict`` uses), in the
   prediction's first pass: the whole image letterboxed to the input size, flip test as
   configured.
2. Positives: every image of the evaluation split (``data.eval_source``/``eval_split``;
   LSP test for the LSP configs). Negatives (:mod:`unipose_jax.negatives`):
   ``predict.presence_negatives`` images of each generated kind, their sizes drawn from
   the positives', and up to as many background crops of the positives.
3. Each set is split in two halves by position (even: calibration, odd: held out); the
   negatives within each kind.
4. Every candidate score is computed: the fixed ones (:func:`presence.candidates`) and
   :data:`presence.COMBINED`, a logistic regression on :func:`presence.features` fitted
   on the calibration halves (:func:`add_combined`; out-of-fold scores there). The one
   with the highest ROC AUC on the calibration halves is kept, and its threshold is the
   one for ``predict.presence_fpr`` on the calibration negatives
   (:func:`roc.threshold_for_fpr`).
5. The held-out halves measure it: AUC, ROC curve, the false-positive rate (overall and
   per kind) and the true-positive rate at the threshold.

Stored with the run: ``predict.presence_score``, ``predict.presence_threshold``,
``predict.presence_weights`` (the combined score's, else empty), ``predict.presence_step``
(the checkpoint calibrated) and ``predict.presence_fpr`` (the rate it was calibrated for)
in ``<workdir>/config.json``, which the Predictor reads. Written to ``<workdir>/presence/``:
``calibration.json`` (every number above), ``roc.png`` and ``scores.csv`` (every image's
candidate scores).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import jax
import numpy as np

from unipose_jax import (
  files,
  geometry,
  negatives,
  preemption,
  presence,
  run_config,
  transforms,
)
from unipose_jax.metrics import roc

#: Negative images of each kind (and background crops at most), unless told.
PER_KIND = 200
OUT_DIR = "presence"


def letterbox_batches(
  images: Iterable[np.ndarray], input_size, batch_size: int
) -> Iterator[tuple[np.ndarray, int]]:
  """``(batch (batch_size, H_in, W_in, 3) uint8, n)``: ``images`` (each (H, W, 3) uint8)
  letterboxed as the prediction's first pass does, ``n`` real ones, the rest zeros
  (``input_size``: ``S`` or ``(H_in, W_in)``)."""
  size = geometry.input_hw(input_size, "input_size")
  batch = np.zeros((batch_size, *size, 3), np.uint8)
  n = 0
  for image in images:
    h, w = image.shape[:2]
    batch[n] = transforms.warp_image(image, geometry.letterbox_affine(h, w, input_size), input_size)
    n += 1
    if n == batch_size:
      yield batch.copy(), n
      n = 0
  if n:
    batch[n:] = 0
    yield batch.copy(), n


def score_images(
  images: Iterable[np.ndarray], heatmap_fn: Callable, names: tuple[str, ...], *,
  input_size: int | tuple[int, int], batch_size: int, num_joints: int, sigma: float, limb_pairs=(),
) -> tuple[dict[str, np.ndarray], np.ndarray]:  # fmt: skip
  """``({name: (N,) float64}, features (N, F) float64)``: every score ``names`` and the
  :func:`presence.features` of every image's first-pass heatmaps (``heatmap_fn``: uint8
  ``(B, H_in, W_in, 3)`` -> ``(B, h, w, N)``; ``limb_pairs``: the keypoint set's
  :func:`presence.symmetric_limbs`)."""
  kw = dict(num_joints=num_joints, sigma=sigma)

  @jax.jit
  def fn(maps):
    return (
      presence.all_scores(maps, names, **kw, limb_pairs=limb_pairs),
      presence.features(maps, **kw),
    )

  out: dict[str, list] = {n: [] for n in names}
  feats = []
  for batch, n in letterbox_batches(images, input_size, batch_size):
    preemption.check("person-presence calibration; nothing stored")
    scores, f = jax.device_get(fn(heatmap_fn(batch)))
    for name in names:
      out[name].append(np.asarray(scores[name], np.float64)[:n])
    feats.append(np.asarray(f, np.float64)[:n])
  return {k: np.concatenate(v) for k, v in out.items()}, np.concatenate(feats)


def build_negatives(
  rng: np.random.Generator, sizes, records: Iterable[dict], per_kind: int
) -> tuple[list[np.ndarray], list[str]]:
  """The negative images and their kinds: ``per_kind`` of each generated kind (sizes
  drawn from ``sizes``), then up to ``per_kind`` background crops of ``records``."""
  images, kinds = [], []
  for kind in negatives.GENERATORS:
    made = negatives.generate(rng, kind, sizes, per_kind)
    images += made
    kinds += [kind] * len(made)
  crops = negatives.background_crops(rng, records, per_kind)
  return images + crops, kinds + ["background_crop"] * len(crops)


def halves(kinds) -> np.ndarray:
  """``(N,)`` bool, True for the calibration half: every other item within each kind
  (the first one included), the rest held out."""
  kinds = np.asarray(kinds)
  out = np.zeros(kinds.shape, bool)
  for kind in np.unique(kinds):
    where = np.flatnonzero(kinds == kind)
    out[where[::2]] = True
  return out


def add_combined(pos: dict, neg: dict, pos_features, neg_features, neg_kinds):
  """Fit the :data:`presence.COMBINED` score on the calibration halves and add it to the
  scores: ``(pos, neg, weights)``, new dicts.

  Its calibration-half scores are out of fold (:func:`presence.out_of_fold`: each scored
  by a fit without it), so that its calibration AUC and threshold are as honest as a
  fixed score's; its held-out scores come from the fit on the whole calibration half,
  whose ``weights`` ``(F + 1,)`` are returned.
  """
  pos_cal, neg_cal = halves(np.zeros(len(pos_features), int)), halves(neg_kinds)
  pf, nf = np.asarray(pos_features, np.float64), np.asarray(neg_features, np.float64)
  x = np.concatenate([pf[pos_cal], nf[neg_cal]])
  y = np.r_[np.ones(pos_cal.sum(), bool), np.zeros(neg_cal.sum(), bool)]
  weights = presence.fit_logistic(x, y)
  oof = presence.out_of_fold(x, y)
  p, n = pf @ weights[:-1] + weights[-1], nf @ weights[:-1] + weights[-1]
  p[pos_cal], n[neg_cal] = oof[: pos_cal.sum()], oof[pos_cal.sum() :]
  return {**pos, presence.COMBINED: p}, {**neg, presence.COMBINED: n}, weights


def choose(
  pos: dict[str, np.ndarray], neg: dict[str, np.ndarray], neg_kinds, target_fpr: float
) -> dict:
  """The calibration of scores of positives ``pos`` and negatives ``neg`` (``{name: (N,)}``,
  the same names) with kinds ``neg_kinds`` (see the module doc, steps 3-5).

  Returns the JSON-ready record: ``score``, ``threshold``, ``target_fpr``, ``calibration``
  and ``heldout`` (``auc``, ``fpr``, ``tpr``, counts; held out also ``fpr_by_kind``) and
  ``candidates`` (``{name: {"calibration_auc", "heldout_auc"}}``).
  """
  if not 0.0 < target_fpr < 1.0:
    raise ValueError(f"predict.presence_fpr must be in (0, 1), got {target_fpr}")
  neg_kinds = np.asarray(neg_kinds)
  pos_cal = halves(np.zeros(len(next(iter(pos.values()))), int))
  neg_cal = halves(neg_kinds)
  cands = {}
  for name in pos:
    cands[name] = {
      "calibration_auc": roc.roc_auc(pos[name][pos_cal], neg[name][neg_cal]),
      "heldout_auc": roc.roc_auc(pos[name][~pos_cal], neg[name][~neg_cal]),
    }
  best = max(cands, key=lambda n: (cands[n]["calibration_auc"], n))
  p, n = pos[best], neg[best]
  threshold = roc.threshold_for_fpr(n[neg_cal], target_fpr)

  def measured(pmask, nmask, auc_key):
    tpr, fpr = roc.rates_at(p[pmask], n[nmask], threshold)
    return {
      "auc": cands[best][auc_key], "tpr": tpr, "fpr": fpr,
      "num_positives": int(pmask.sum()), "num_negatives": int(nmask.sum()),
    }  # fmt: skip

  heldout = measured(~pos_cal, ~neg_cal, "heldout_auc")
  heldout["fpr_by_kind"] = {
    k: float(np.mean(n[~neg_cal & (neg_kinds == k)] >= threshold))
    for k in dict.fromkeys(neg_kinds)
    if np.any(~neg_cal & (neg_kinds == k))
  }
  return {
    "score": best, "threshold": threshold, "target_fpr": float(target_fpr),
    "calibration": measured(pos_cal, neg_cal, "calibration_auc"), "heldout": heldout,
    "candidates": cands,
  }  # fmt: skip


def save_roc_png(path, pos, neg, neg_kinds, record: dict, title: str):
  """The held-out ROC curve of every candidate score (``charts.save_roc_curve``), the
  chosen one bold and its threshold's operating point marked."""
  from unipose_jax import charts  # noqa: PLC0415

  pos_out = ~halves(np.zeros(len(next(iter(pos.values()))), int))
  neg_out = ~halves(neg_kinds)
  best, curves = record["score"], {}
  for name in sorted(pos, key=lambda x: -record["candidates"][x]["heldout_auc"]):
    fpr, tpr, _ = roc.roc_curve(pos[name][pos_out], neg[name][neg_out])
    label = f"{name}: AUC {record['candidates'][name]['heldout_auc']:.3f}"
    curves[label] = (fpr, tpr)
    best = label if name == record["score"] else best
  h = record["heldout"]
  return charts.save_roc_curve(
    path, curves, chosen=best, point=(h["fpr"], h["tpr"]), target_fpr=record["target_fpr"],
    point_label=f"{record['score']} >= {record['threshold']:.4g}:\nFPR {h['fpr']:.3f}, TPR {h['tpr']:.3f}",
    title=title,
  )  # fmt: skip


def write_scores_csv(path, pos, neg, neg_kinds):
  """One row per image: set, kind, half, index within the set, every candidate's score."""
  names = sorted(pos)
  pos_cal = halves(np.zeros(len(pos[names[0]]), int))
  neg_cal = halves(neg_kinds)

  def rows():
    for i, cal in enumerate(pos_cal):
      yield ["positive", "person", "calibration" if cal else "heldout", i] + [
        f"{pos[n][i]:.6g}" for n in names
      ]
    for i, (kind, cal) in enumerate(zip(neg_kinds, neg_cal)):
      yield ["negative", kind, "calibration" if cal else "heldout", i] + [
        f"{neg[n][i]:.6g}" for n in names
      ]

  return files.write_csv(path, ["set", "kind", "half", "index", *names], rows())


def calibrate(
  heatmap_fn: Callable, source, *, input_size: int | tuple[int, int], batch_size: int, sigma: float,
  box_head: bool, target_fpr: float, keypoint_set, seed: int = 0, per_kind: int = PER_KIND,
) -> tuple[dict, dict, dict, list[str]]:  # fmt: skip
  """Scores and calibration of a network (``heatmap_fn``) on the positives of ``source``
  (random-access records with ``image``, ``keypoints``, ``labeled``) and the negatives;
  ``keypoint_set``: the run's (``K``, the limbs ``limb_symmetry`` compares).

  Returns ``(record, positive scores, negative scores, negative kinds)`` (see
  :func:`choose`; scores ``{name: (N,)}``, :data:`presence.COMBINED` included).
  ``record`` also holds ``negatives`` (``{kind: count}``), ``num_positives`` and
  ``combined_weights`` (:func:`add_combined`).
  """
  limbs = presence.symmetric_limbs(keypoint_set.joint_names)
  names = presence.candidates(box_head, limbs)
  kw = dict(input_size=input_size, batch_size=batch_size, num_joints=keypoint_set.num_joints,
            sigma=sigma, limb_pairs=limbs)  # fmt: skip
  sizes = []

  def positives():
    for i in range(len(source)):
      image = source[i]["image"]
      sizes.append(image.shape[:2])
      yield image

  pos, pos_features = score_images(positives(), heatmap_fn, names, **kw)
  records = (source[i] for i in range(len(source)))
  neg_images, kinds = build_negatives(np.random.default_rng(seed), sizes, records, per_kind)
  neg, neg_features = score_images(neg_images, heatmap_fn, names, **kw)
  pos, neg, weights = add_combined(pos, neg, pos_features, neg_features, kinds)
  record = choose(pos, neg, kinds, target_fpr)
  record["combined_weights"] = [float(w) for w in weights]
  record["negatives"] = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
  record["negatives_requested"] = int(per_kind)
  record["negatives_note"] = negatives_note(record["negatives"], per_kind, len(sizes))
  record["num_positives"] = len(sizes)
  return record, pos, neg, kinds


def negatives_note(counts: dict[str, int], per_kind: int, num_images: int) -> str:
  """Why a kind of negatives has fewer than ``per_kind`` images ("" when none has): the
  background crops need room beside the person, which a set of images cut close around
  their person (LSP: 36 of its 1000 test images) seldom has."""
  got = counts.get("background_crop", 0)
  if got >= per_kind:
    return ""
  return (
    f"background_crop: {got} of {per_kind}: only {got} of the {num_images} evaluation "
    f"images have a strip beside the person at least {negatives.MIN_CROP_SIDE} px wide, "
    f"clear of the joints by {negatives.CROP_CLEARANCE:.0%} of the person's size (images "
    "cut close around their person leave no room); the generated kinds have "
    f"{per_kind} each"
  )


def calibrate_run(run) -> dict:
  """Calibrate a ``run.Run``'s best checkpoint and store the result (the module doc).

  Returns the calibration record (``calibration.json``'s content).
  """
  from unipose_jax import inference  # noqa: PLC0415

  config, workdir = run.config, run.workdir
  variables, step = run.load_variables()
  forward = inference.heatmap_fn(
    run.model(), variables, flip_test=run.flip_test, flip_permutation=run.flip_permutation
  )
  d = config.data
  source = run.eval_source
  print(
    f"calibrating person presence of checkpoint {step} of {workdir}: positives "
    f"{d.eval_source}:{d.eval_split} ({len(source)} images), negatives built here",
    flush=True,
  )
  record, pos, neg, kinds = calibrate(
    forward, source, input_size=d.input_size, batch_size=config.eval_batch_size,
    sigma=run.codec.sigma, box_head=bool(config.model.box_head),
    target_fpr=config.predict.presence_fpr, keypoint_set=run.keypoint_set, seed=config.seed,
    per_kind=config.predict.presence_negatives,
  )  # fmt: skip
  record["checkpoint_step"] = int(step)
  record["positives"] = f"{d.eval_source}:{d.eval_split}"
  out = os.path.join(workdir, OUT_DIR)
  files.write_json(os.path.join(out, "calibration.json"), record)
  write_scores_csv(os.path.join(out, "scores.csv"), pos, neg, kinds)
  title = f"person presence, {os.path.basename(os.path.normpath(workdir))} step {step}, held out"
  save_roc_png(os.path.join(out, "roc.png"), pos, neg, kinds, record, title)
  run_config.update_saved(
    workdir,
    {
      "predict.presence_score": record["score"],
      "predict.presence_threshold": record["threshold"],
      "predict.presence_weights": (
        record["combined_weights"] if record["score"] == presence.COMBINED else []
      ),
      "predict.presence_step": int(step),
      "predict.presence_fpr": record["target_fpr"],  # the rate it was chosen for
    },
  )
  print(summary_line(record) + f"; stored in {workdir}/config.json, report in {out}/", flush=True)
  if record["negatives_note"]:
    print(f"note: negatives {record['negatives_note']}", flush=True)
  return record


def after_training(run) -> dict | None:
  """Calibrate a ``run.Run`` that reached ``num_train_steps`` (called by training, holding
  the lock), unless ``config.calibrate_presence`` is False. A failure to calibrate (the
  evaluation data gone, a full disk) is reported in one line and leaves the trained run
  as it is: it is then predicted with the old rule until ``--mode=calibrate`` succeeds."""
  from unipose_jax import checkpoints, datasets  # noqa: PLC0415

  if not run.config.calibrate_presence:
    return None
  if jax.process_count() > 1:  # the primary alone: orbax's reads would wait for the others
    print(
      "person presence NOT calibrated (a multi-process run); calibrate it on one host with: "
      f"unipose-jax --mode=calibrate --workdir={run.workdir}",
      flush=True,
    )
    return None
  with run.checkpointer(read_only=True) as ckpt:
    latest = ckpt.latest_step()
  if latest is None or latest < run.config.num_train_steps:
    return None
  try:
    return calibrate_run(run)
  except (OSError, ValueError, datasets.DatasetError, checkpoints.CheckpointError) as e:
    print(
      f"person presence NOT calibrated ({type(e).__name__}: {e}); the run is trained and "
      f"saved; calibrate it with: unipose-jax --mode=calibrate --workdir={run.workdir}",
      flush=True,
    )
    return None


def finished_note(run, saved) -> str | None:
  """The line training prints instead of running again when ``run`` (a ``run.Run``) is
  finished: its newest checkpoint is step ``num_train_steps``, that step's final
  evaluation is written, and (unless ``calibrate_presence`` is off) its saved config
  ``saved`` holds a person-presence calibration of that checkpoint. None otherwise."""
  from unipose_jax import reports  # noqa: PLC0415

  config, workdir, total = run.config, run.workdir, run.config.num_train_steps
  final = os.path.join(workdir, "eval", f"step_{total}", reports.EVAL_METRICS_FILE)
  if saved is None or not os.path.isdir(run.checkpoint_dir) or not os.path.exists(final):
    return None
  with run.checkpointer(read_only=True) as ckpt:
    if ckpt.latest_step() != total:
      return None
  p = saved.predict
  calibrated = bool(p.presence_score) and int(p.presence_step) == total
  if config.calibrate_presence and not calibrated:
    return None
  presence = (
    f" and person presence calibrated on it ({os.path.join(workdir, OUT_DIR, 'calibration.json')})"
    if calibrated
    else ""
  )
  return (
    f"{workdir} is finished: checkpoint {total} of {total} steps evaluated "
    f"({os.path.join(workdir, reports.EVAL_METRICS_FILE)}){presence}; nothing to do "
    "(a larger --config.num_train_steps trains on)"
  )


def summary_line(record: dict) -> str:
  """One line: the score, threshold and the held-out AUC/FPR/TPR."""
  h = record["heldout"]
  return (
    f"person presence: {record['score']} >= {record['threshold']:.4g} (held out: AUC "
    f"{h['auc']:.3f}, FPR {h['fpr']:.3f} for a target of {record['target_fpr']:g}, TPR "
    f"{h['tpr']:.3f})"
  )
