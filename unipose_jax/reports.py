"""The files and console lines of an evaluation (``evaluate.Evaluator.run`` only measures).

Written into an evaluation's folder by :func:`write_eval`:

* ``eval_metrics.json``: ``{decoder: flat metrics}``, the protocol's keys (LSP
  ``metrics.summarize``'s; MPII Head .. Ankle, Mean, Mean@0.1 and ``pckh@0.5``; Penn Action
  its table and ``pck@0.2``; COCO AP .. AR (L));
* ``predictions.csv``: decoder, image_id, [annotation_id (COCO),] joint, joint_name, x, y,
  score (original-image pixels, 0-based pixel centres; the names are the run's keypoint
  set's), and the same as ``predictions.json`` (``{"joint_names": [...], "predictions":
  [{decoder, image_id, [annotation_id,] keypoints (K [x, y]), scores (K)}]}``); both are
  what ``python -m unipose_jax.score`` reads;
* COCO: ``coco_results_<decoder>.json``, each decoder's poses in COCO's results format and
  frame (``coco_eval.person_results``);
* with a box head ``boxes.csv``: decoder, image_id, x0, y0, x1, y1 (same pixels);
* LSP: ``pck_curve.png`` (every decoder); ``example_<i>.png`` / ``heatmaps_0.png``;

``eval_metrics.json`` last, so a folder that has it has every file. The folder is checked
to be writable first (one line naming it).

:func:`print_summary` prints one line per decoder; :func:`write_final_summary` also
writes a run's final ``<workdir>/eval_metrics.json``. Only the primary process writes
or prints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from unipose_jax import charts, distributed, files, metrics, visualize
from unipose_jax.metrics import coco_eval, protocols

EVAL_METRICS_FILE = "eval_metrics.json"


def write_eval(out_dir: str, result, all_files: bool = True) -> None:
  """The files of an ``evaluate.EvalResult`` in ``out_dir``: ``eval_metrics.json`` always,
  the CSVs and PNGs with ``all_files`` (see the module doc)."""
  if not distributed.is_primary():
    return
  files.check_writable(out_dir, "the evaluation folder")
  if all_files:
    _write_files(out_dir, result)
  # Last: a folder whose eval_metrics.json exists holds every file (an interrupted or
  # failed write leaves none, or files without it).
  files.write_json(os.path.join(out_dir, EVAL_METRICS_FILE), result.summary)


def _write_files(out_dir: str, result) -> None:
  kset = result.keypoint_set
  write_predictions(
    out_dir, result.predictions, kset.joint_names, getattr(result, "annotation_ids", None)
  )
  for dec, res in (getattr(result, "coco_results", None) or {}).items():
    coco_eval.write_results(os.path.join(out_dir, f"coco_results_{dec}.json"), res)
  if protocols.protocol_of(kset) == "lsp":  # the curve of LSP's torso-normalised PCK
    charts.save_pck_curve(
      os.path.join(out_dir, "pck_curve.png"),
      {d: metrics.pck_curve(c) for d, c in result.counts.items()},
    )
  for i, ex in enumerate(result.examples):
    visualize.save_prediction_png(
      os.path.join(out_dir, f"example_{i}.png"), ex.image, ex.keypoints, ex.annotation,
      keypoint_set=kset, box=ex.box, title=result.example_decoding,
    )  # fmt: skip
    if i == 0:
      visualize.save_heatmap_panel(
        os.path.join(out_dir, "heatmaps_0.png"), ex.input, ex.heatmaps,
        names=visualize.heatmap_channel_names(ex.heatmaps.shape[-1], kset.joint_names),
      )  # fmt: skip


def _people(predictions: Mapping[str, list], annotation_ids: Sequence | None):
  """``(decoder, image_id, annotation_id or None, keypoints (K, 2), scores (K,))`` of every
  person, decoder by decoder, batch by batch."""
  for dec, chunks in predictions.items():
    for b, (ids, kps, scores, _) in enumerate(chunks):
      anns = annotation_ids[b] if annotation_ids is not None else [None] * len(ids)
      yield from ((dec, int(i), a, kp, sc) for i, a, kp, sc in zip(ids, anns, kps, scores))


def write_predictions(
  out_dir: str, predictions: Mapping[str, list], joint_names: Sequence[str],
  annotation_ids: Sequence | None = None,
) -> None:  # fmt: skip
  """``predictions.csv``, ``predictions.json`` and, when there are boxes, ``boxes.csv`` of
  ``{decoder: [(image_ids (B,), keypoints (B, K, 2), scores (B, K), boxes (B, 4) or None)]}``;
  ``joint_names``: the keypoint set's K names; ``annotation_ids`` (COCO): ``[(B,) ...]`` per
  batch, the person of each row (a column, and a field of each JSON entry)."""
  for chunks in predictions.values():
    for _, kps, _, _ in chunks:
      if kps.shape[1] != len(joint_names):
        raise ValueError(f"{len(joint_names)} joint names for {kps.shape[1]} joints")
  ann = annotation_ids is not None
  files.write_csv(
    os.path.join(out_dir, "predictions.csv"),
    ["decoder", "image_id", *(["annotation_id"] if ann else []), "joint", "joint_name", "x", "y",
     "score"],
    (
      [dec, i, *([int(a)] if ann else []), j, joint_names[j], f"{kp[j, 0]:.4f}",
       f"{kp[j, 1]:.4f}", f"{sc[j]:.5f}"]
      for dec, i, a, kp, sc in _people(predictions, annotation_ids)
      for j in range(kp.shape[0])
    ),
  )  # fmt: skip
  entries = [
    {
      "decoder": dec, "image_id": i, **({"annotation_id": int(a)} if ann else {}),
      "keypoints": [[round(float(x), 4), round(float(y), 4)] for x, y in kp],
      "scores": [round(float(v), 5) for v in sc],
    }
    for dec, i, a, kp, sc in _people(predictions, annotation_ids)
  ]  # fmt: skip
  files.write_json(
    os.path.join(out_dir, "predictions.json"),
    {"joint_names": list(joint_names), "predictions": entries},
  )
  if any(chunk[3] is not None for chunks in predictions.values() for chunk in chunks):
    files.write_csv(
      os.path.join(out_dir, "boxes.csv"),
      ["decoder", "image_id", "x0", "y0", "x1", "y1"],
      (
        [dec, int(i), *(f"{v:.4f}" for v in box)]
        for dec, chunks in predictions.items()
        for ids, _, _, boxes in chunks
        for i, box in zip(ids, boxes)
      ),
    )


def print_summary(summary: Mapping[str, Mapping[str, float]], title: str | None = None,
                  keypoint_set=None) -> None:  # fmt: skip
  """The table of each decoder on the console (primary process), under ``title`` (which
  checkpoint it is): LSP's one line per decoder (``keypoint_set`` None or an LSP-protocol
  set), else the protocol's standard table (``protocols.format_table``)."""
  if not distributed.is_primary():
    return
  if title:
    print(f"{title}:")
  if keypoint_set is not None and protocols.protocol_of(keypoint_set) != "lsp":
    for dec, r in summary.items():
      print(protocols.format_table(keypoint_set, r, title=dec), flush=True)
    return
  has_box = any("box_iou" in r for r in summary.values())
  head = f"{'decoder':10s} {'PCK@0.2':>8s} {'PCK@0.1':>8s} {'PCK@0.05':>8s} {'AUC@0.2':>8s} {'PCKh@0.5*':>9s}"
  if has_box:
    head += f" {'boxIoU':>7s} {'IoU>=.5':>7s} {'ctr.err':>7s}"
  print(head + "   (*head = neck to head top: LSP has no head box)")
  nan = float("nan")  # a metric the protocol has not (a video run's: no AUC, no PCKh)
  for dec, r in summary.items():
    line = (
      f"{dec:10s} {r['pck@0.2']:8.4f} {r['pck@0.1']:8.4f} {r['pck@0.05']:8.4f} "
      f"{r.get('auc@0.2', nan):8.4f} {r.get('pckh@0.5', nan):9.4f}"
    )
    if has_box:
      line += f" {r['box_iou']:7.4f} {r['box_iou>=0.5']:7.4f} {r['box_centre_error']:7.4f}"
    print(line, flush=True)


def write_final_summary(workdir: str, summary: Mapping[str, Mapping[str, float]],
                        title: str | None = None, keypoint_set=None) -> None:  # fmt: skip
  """A finished run's ``<workdir>/eval_metrics.json`` and the console table."""
  if distributed.is_primary():
    files.write_json(os.path.join(workdir, EVAL_METRICS_FILE), summary)
  print_summary(summary, title, keypoint_set)
