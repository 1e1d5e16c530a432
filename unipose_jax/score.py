"""Score a predictions file against a dataset's own ground truth, by the dataset's protocol.

  python -m unipose_jax.score --dataset=lsp|mpii|coco|coco_format/NAME|penn_action \\
      --gt=FILE --predictions=FILE [--output=metrics.json] [--decoder=NAME]

Ground truth (``--gt``), the release's own files:

* ``lsp``: ``joints.mat`` or the LSP zip (``lsp_dataset.zip``); MATLAB 1-based, minus 1.
* ``mpii``: ``mpii_gt_val.mat`` (HRNet: ``gt_valid.mat``); 1-based, minus 1.
* ``coco``, ``coco_format/NAME``: the annotations JSON (its categories give the keypoint
  set and, for ``coco_format``, the sigmas: the set's own or the documented default).
* ``penn_action``: the release's ``labels/`` folder (its test videos, ``train == -1``, every
  frame); 1-based, minus 1; a video with one ``bbox`` row fewer than frames repeats its
  last row for its last frame (as the ``penn_action`` builder does).

Predictions (``--predictions``), all in the project's frame (0-based, integer = pixel centre)
except COCO's results JSON, which is in COCO's (the same numbers for keypoints):

* ``predictions.csv`` as an evaluation writes it (``decoder, image_id, joint, joint_name, x,
  y, score``); every decoder is scored. Persons are matched by ``image_id``: LSP's 1-based
  image number, Penn Action's ``video_id * 10000 + frame``; COCO's by an ``annotation_id``
  column (one pose per ground-truth box). MPII's ids repeat (several persons per image), so
  MPII's rows are taken in file order, one person per ``K`` rows, in the ground truth's order.
* ``.json``: COCO's results format (a list of ``image_id``, ``category_id``, ``keypoints``
  ``[x, y, score] x K``, ``score``), scored as it is (coco / coco_format); or the project's
  own, a list of ``{image_id, keypoints (K lists [x, y]), [scores], [decoder]}`` matched as
  the CSV (COCO: ``annotation_id`` in place of ``image_id``).
* ``.npy`` or ``.mat`` (``preds``): ``(N, K, 2)`` in the ground truth's order (MPII's
  common format). HRNet's ``pred.mat`` is 1-based: pass ``--one_based``.

It prints the protocol's standard table and writes (``--output``) JSON of the table's keys as
fractions: ``{decoder: {key: value}}`` when the file names decoders, else ``{key: value}``.
MPII: Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Mean, Mean@0.1; Penn Action the same
without Mean@0.1 (PCK@0.2); COCO: AP, AP .5, AP .75, AP (M), AP (L), AR, AR .5, AR .75,
AR (M), AR (L); LSP: the evaluation's keys (``pck@0.2``, ..., per joint). Bad input is one
line naming the file and the fault, exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pathlib
import sys
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unipose_jax import files, keypoint_sets, metrics
from unipose_jax.metrics import coco_eval, pckh, penn, protocols

#: Penn Action's example id of frame ``f`` (1-based) of video ``v``: ``v * 10000 + f``.
PENN_ID_FACTOR = 10000
DATASETS = ("lsp", "mpii", "coco", "coco_format/NAME", "penn_action")


class ScoreError(ValueError):
  """Input the scorer cannot use: one line naming the file and the fault."""


# ----------------------------------------------------------------------------- ground truth


def _loadmat(path, fields: Sequence[str], data: bytes | None = None) -> dict:
  import scipy.io  # noqa: PLC0415

  try:
    m = scipy.io.loadmat(io.BytesIO(data) if data is not None else path)
  except (OSError, ValueError, TypeError, NotImplementedError) as e:
    raise ScoreError(f"{path}: not a readable .mat file ({e})") from None
  missing = [f for f in fields if f not in m]
  if missing:
    raise ScoreError(f"{path}: lacks {', '.join(repr(f) for f in missing)}")
  return m


def lsp_ground_truth(path: str) -> np.ndarray:
  """``(2000, 14, 2)`` LSP annotations (0-based) of ``joints.mat`` or the LSP zip, row
  ``image_id - 1``."""
  data = None
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
      names = [n for n in z.namelist() if n.endswith("joints.mat")]
      if not names:
        raise ScoreError(f"{path}: the zip holds no joints.mat")
      data = z.read(names[0])
  joints = np.asarray(_loadmat(path, ["joints"], data)["joints"], np.float64)
  k = keypoint_sets.LSP.num_joints
  if joints.shape[:2] != (3, k):
    raise ScoreError(f"{path}: 'joints' has shape {joints.shape}, expected LSP's (3, {k}, N)")
  return np.transpose(joints[:2], (2, 1, 0)) - 1.0


def mpii_ground_truth(path: str) -> dict[str, np.ndarray]:
  """``mpii_gt_val.mat`` -> ``gt (N, 16, 2)``, ``present (N, 16)``, ``head_box (N, 4)``
  (0-based, ``[x1, y1, x2, y2]``)."""
  m = _loadmat(path, ["jnt_missing", "pos_gt_src", "headboxes_src"])
  pos, missing, head = (np.asarray(m[k]) for k in ("pos_gt_src", "jnt_missing", "headboxes_src"))
  n = pos.shape[-1] if pos.ndim == 3 else -1
  if pos.shape != (16, 2, n) or missing.shape != (16, n) or head.shape != (2, 2, n):
    raise ScoreError(
      f"{path}: pos_gt_src {pos.shape}, jnt_missing {missing.shape}, headboxes_src "
      f"{head.shape}; expected (16, 2, N), (16, N), (2, 2, N)"
    )
  return {
    "gt": np.transpose(pos, (2, 0, 1)).astype(np.float64) - 1.0,
    "present": (missing == 0).T,
    "head_box": np.transpose(head, (2, 0, 1)).reshape(n, 4).astype(np.float64) - 1.0,
  }


def penn_ground_truth(folder: str) -> dict[str, np.ndarray]:
  """The test frames of a Penn Action ``labels/`` folder: ``ids (N,)`` (``video * 10000 +
  frame``), ``gt (N, 13, 2)``, ``visible (N, 13)``, ``box (N, 4)``, all 0-based."""
  root = pathlib.Path(folder)
  if not root.is_dir():
    raise ScoreError(f"{folder}: not a folder (Penn Action's labels/ of NNNN.mat files)")
  out: dict[str, list] = {"ids": [], "gt": [], "visible": [], "box": []}
  paths = sorted(root.glob("*.mat"))
  if not paths:
    raise ScoreError(f"{folder}: no .mat label files")
  for p in paths:
    m = _loadmat(p, ["x", "y", "visibility", "bbox", "train"])
    if int(np.asarray(m["train"]).ravel()[0]) != -1:
      continue
    x, y, vis, bbox = (np.asarray(m[k], np.float64) for k in ("x", "y", "visibility", "bbox"))
    n = x.shape[0]
    if x.shape != (n, 13) or y.shape != (n, 13) or vis.shape != (n, 13):
      raise ScoreError(f"{p}: x, y, visibility of shapes {x.shape}, {y.shape}, {vis.shape}")
    if bbox.shape == (n - 1, 4):
      bbox = np.concatenate([bbox, bbox[-1:]])  # the release's two short videos
    if bbox.shape != (n, 4):
      raise ScoreError(f"{p}: 'bbox' has shape {bbox.shape} for {n} frames")
    video = int(p.stem)
    out["ids"].append(video * PENN_ID_FACTOR + np.arange(1, n + 1))
    out["gt"].append(np.stack([x, y], -1) - 1.0)
    out["visible"].append(vis == 1)
    out["box"].append(bbox - 1.0)
  if not out["ids"]:
    raise ScoreError(f"{folder}: no test video (train == -1) among {len(paths)} label files")
  return {k: np.concatenate(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- predictions


def _read_csv(path: str, k: int, key: str) -> dict[str, list[tuple[int, np.ndarray, np.ndarray]]]:
  """``{decoder: [(id, keypoints (K, 2), scores (K,)), ...]}`` in file order, ``id`` the
  column ``key``: each person is ``K`` consecutive rows of one decoder, joints ``0 .. K-1``."""
  rows: dict[str, list[tuple]] = {}
  try:
    with open(path, newline="") as f:
      reader = csv.DictReader(f)
      need = {"decoder", key, "joint", "x", "y"}
      if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise ScoreError(f"{path}: a predictions.csv needs columns {sorted(need)}")
      for line, row in enumerate(reader, start=2):
        try:
          val = (int(row[key]), int(row["joint"]), float(row["x"]), float(row["y"]),
                 float(row.get("score") or 1.0), line)  # fmt: skip
        except (TypeError, ValueError):
          raise ScoreError(f"{path}: line {line} is not a prediction row") from None
        rows.setdefault(row["decoder"], []).append(val)
  except OSError as e:
    raise ScoreError(f"{path}: cannot read ({e.strerror or e})") from None
  out = {}
  for dec, rs in rows.items():
    if len(rs) % k:
      raise ScoreError(f"{path}: decoder {dec!r} has {len(rs)} rows, not a multiple of K = {k}")
    people = []
    for n in range(0, len(rs), k):
      block = rs[n : n + k]
      if [r[1] for r in block] != list(range(k)) or len({r[0] for r in block}) != 1:
        raise ScoreError(
          f"{path}: lines {block[0][5]}-{block[-1][5]} are not joints 0..{k - 1} of one {key}"
        )
      v = np.array([r[2:5] for r in block], np.float64)
      people.append((block[0][0], v[:, :2], v[:, 2]))
    out[dec] = people
  return out


def _keyed(people: list[tuple], path: str) -> dict[int, tuple] | None:
  """``{image_id: (kp, scores)}``, or None when ids repeat (MPII: several persons)."""
  keyed = {i: (kp, sc) for i, kp, sc in people}
  return keyed if len(keyed) == len(people) else None


def read_predictions(
  path: str, k: int, one_based: bool = False, key: str = "image_id"
) -> tuple[str, Any]:
  """``(kind, data)`` of a predictions file (see the module doc): ``("keyed", {decoder:
  ({id: (kp, scores)} or None where ids repeat, [(kp, scores), ...] in file order)})`` with
  ``id`` the rows' ``key`` (``image_id``; COCO's poses: ``annotation_id``),
  ``("array", (N, K, 2))`` or ``("coco", results list)``; ``kp`` ``(K, 2)`` in the project's
  frame."""
  ext = os.path.splitext(path)[1].lower()
  shift = 1.0 if one_based else 0.0
  if not os.path.isfile(path):
    raise ScoreError(f"{path}: no such predictions file")
  if ext == ".csv":
    people = _read_csv(path, k, key)
    if not people:
      raise ScoreError(f"{path}: no prediction rows")
    return "keyed", {
      dec: (_keyed(ps, path), [(kp - shift, sc) for _, kp, sc in ps]) for dec, ps in people.items()
    }
  if ext in (".npy", ".mat"):
    if ext == ".npy":
      try:
        arr = np.load(path, allow_pickle=False)
      except (OSError, ValueError) as e:
        raise ScoreError(f"{path}: not a readable .npy file ({e})") from None
    else:
      arr = _loadmat(path, ["preds"])["preds"]
    arr = np.asarray(arr, np.float64)
    if arr.ndim != 3 or arr.shape[1:] not in ((k, 2), (k, 3)):
      raise ScoreError(f"{path}: predictions of shape {arr.shape}, expected (N, {k}, 2)")
    return "array", arr[..., :2] - shift
  if ext == ".json":
    try:
      with open(path) as f:
        data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ScoreError(f"{path}: not a readable JSON file ({e})") from None
    if isinstance(data, dict) and "predictions" in data:
      data = data["predictions"]
    if not isinstance(data, list) or not data or not all(isinstance(r, dict) for r in data):
      raise ScoreError(f"{path}: expected a non-empty JSON list of predictions")
    if "score" in data[0] and np.ndim(data[0].get("keypoints")) == 1:
      return "coco", data
    people: dict[str, list[tuple]] = {}
    for n, r in enumerate(data):
      try:
        i = int(r[key])
        kp = np.asarray(r["keypoints"], np.float64).reshape(k, 2)
        sc = np.asarray(r.get("scores", np.ones(k)), np.float64).reshape(k)
      except (KeyError, TypeError, ValueError):
        raise ScoreError(
          f"{path}: prediction {n} needs {key} and keypoints of {k} [x, y] (scores {k})"
        ) from None
      people.setdefault(str(r.get("decoder", "")), []).append((i, kp - shift, sc))
    return "keyed", {
      dec: (_keyed(ps, path), [(kp, sc) for _, kp, sc in ps]) for dec, ps in people.items()
    }
  raise ScoreError(f"{path}: unknown predictions format {ext!r} (.csv, .json, .npy or .mat)")


# ----------------------------------------------------------------------------- per dataset


def _select(keyed: dict | None, ids: Sequence[int], path: str, what: str, all_needed: bool):
  if keyed is None:
    raise ScoreError(f"{path}: an id repeats; each {what} needs its own")
  present = [i for i in ids if i in keyed]
  extra = sorted(set(keyed) - set(ids))
  if extra:
    raise ScoreError(f"{path}: id {extra[0]} is not a {what} of the ground truth")
  if all_needed and len(present) != len(ids):
    missing = next(i for i in ids if i not in keyed)
    raise ScoreError(
      f"{path}: predictions for {len(present)} of {len(ids)} {what}s (none for id {missing})"
    )
  return present


def _decoders(kind: str, data, path: str) -> dict[str, Any]:
  """``{decoder: data}`` (decoder "" for files without names)."""
  if kind == "keyed":
    return dict(data)
  return {"": data}


def score_lsp(gt_path: str, pred_path: str, one_based: bool = False) -> dict:
  gt = lsp_ground_truth(gt_path)
  kind, data = read_predictions(pred_path, keypoint_sets.LSP.num_joints, one_based)
  out = {}
  for dec, d in _decoders(kind, data, pred_path).items():
    if kind == "keyed":
      ids = _select(d[0], list(range(1, len(gt) + 1)), pred_path, "LSP image", False)
      pred = np.stack([d[0][i][0] for i in ids])
      ref = gt[np.asarray(ids) - 1]
    elif kind == "array" and len(d) in (len(gt), len(gt) // 2):
      pred, ref = d, gt[-len(d) :]  # every image, or the test half (1001-2000)
    else:
      raise ScoreError(f"{pred_path}: not LSP predictions (for {len(gt)} or {len(gt) // 2} images)")
    lsp = keypoint_sets.LSP
    counts = metrics.keypoint_counts(pred, ref, torso=lsp.torso, head=lsp.head)
    out[dec] = metrics.summarize(counts, joint_names=keypoint_sets.LSP.joint_names)
  return out


def _ordered(kind, d, n: int, path: str, what: str) -> np.ndarray:
  if kind == "array":
    arr = d
  elif kind == "keyed":
    arr = np.stack([kp for kp, _ in d[1]])
  else:
    raise ScoreError(f"{path}: COCO results are scored with --dataset=coco or coco_format/NAME")
  if len(arr) != n:
    raise ScoreError(f"{path}: {len(arr)} predictions for the {n} {what}s of the ground truth")
  return arr


def score_mpii(gt_path: str, pred_path: str, one_based: bool = False) -> dict:
  g = mpii_ground_truth(gt_path)
  kind, data = read_predictions(pred_path, keypoint_sets.MPII.num_joints, one_based)
  out = {}
  for dec, d in _decoders(kind, data, pred_path).items():
    pred = _ordered(kind, d, len(g["gt"]), pred_path, "person")
    counts = pckh.mpii_counts(pred, g["gt"], g["present"], g["head_box"])
    out[dec] = pckh.summarize_mpii(counts)
  return out


def score_penn(gt_path: str, pred_path: str, one_based: bool = False) -> dict:
  g = penn_ground_truth(gt_path)
  kind, data = read_predictions(pred_path, keypoint_sets.PENN_ACTION.num_joints, one_based)
  out = {}
  for dec, d in _decoders(kind, data, pred_path).items():
    if kind == "keyed":
      ids = _select(d[0], list(g["ids"]), pred_path, "test frame", True)
      pred = np.stack([d[0][i][0] for i in ids])
    else:
      pred = _ordered(kind, d, len(g["ids"]), pred_path, "test frame")
    out[dec] = penn.summarize_penn(penn.penn_counts(pred, g["gt"], g["visible"], g["box"]))
  return out


def score_coco(gt_path: str, pred_path: str, dataset: str, one_based: bool = False) -> dict:
  coco, _ = coco_eval.load_annotations(gt_path)
  name = dataset.split("/", 1)[-1]
  kset = keypoint_sets.from_coco_categories(coco.dataset["categories"], name, gt_path)
  if dataset == "coco" and kset.joint_names != keypoint_sets.COCO.joint_names:
    raise ScoreError(f"{gt_path}: not COCO's 17 keypoints; use --dataset=coco_format/NAME")
  sigmas = coco_eval.oks_sigmas(kset)
  kind, data = read_predictions(pred_path, kset.num_joints, one_based, "annotation_id")
  if kind == "coco":
    return {"": coco_eval.evaluate(coco.dataset, pred_path, sigmas)}
  if kind != "keyed":
    raise ScoreError(f"{pred_path}: COCO predictions are a results JSON, a .csv or a .json")
  anns = {a["id"]: a for a in coco.dataset["annotations"]}
  out = {}
  for dec, (keyed, _) in _decoders(kind, data, pred_path).items():
    ids = _select(keyed, list(anns), pred_path, "annotation id", False)
    if not ids:
      raise ScoreError(f"{pred_path}: no prediction names an annotation id of {gt_path}")
    results = coco_eval.person_results(
      [anns[i]["image_id"] for i in ids], np.stack([keyed[i][0] for i in ids]),
      np.stack([keyed[i][1] for i in ids]), np.ones(len(ids)),
      [anns[i]["bbox"][2] * anns[i]["bbox"][3] for i in ids], sigmas,
      [anns[i]["category_id"] for i in ids],
    )  # fmt: skip
    out[dec] = coco_eval.evaluate(coco.dataset, results, sigmas)
  return out


def score(dataset: str, gt: str, predictions: str, one_based: bool = False) -> dict:
  """``{decoder: {key: fraction}}`` (decoder ``""`` for files without decoder names)."""
  if not os.path.exists(gt):
    raise ScoreError(f"{gt}: no such ground-truth file or folder")
  if dataset == "lsp":
    return score_lsp(gt, predictions, one_based)
  if dataset == "mpii":
    return score_mpii(gt, predictions, one_based)
  if dataset == "penn_action":
    return score_penn(gt, predictions, one_based)
  if dataset == "coco" or (dataset.startswith("coco_format/") and len(dataset) > 12):
    return score_coco(gt, predictions, dataset, one_based)
  raise ScoreError(f"--dataset={dataset}: unknown; known: {', '.join(DATASETS)}")


def format_table(dataset: str, result: Mapping[str, Mapping[str, float]]) -> str:
  """The protocol's standard table, one block per decoder."""
  blocks = []
  kset = {"mpii": keypoint_sets.MPII, "penn_action": keypoint_sets.PENN_ACTION}.get(
    dataset, keypoint_sets.COCO
  )
  for dec, s in result.items():
    if dataset == "lsp":
      keys = ("pck@0.2", "pck@0.1", "pck@0.05", "auc@0.2", "pckh@0.5")
      head = " ".join(f"{k:>9s}" for k in keys)
      row = " ".join(f"{s[k]:9.4f}" for k in keys)
      blocks.append(f"{dec:10s} {head}\n{'':10s} {row}\n(pckh: head = neck to head top)")
    else:
      blocks.append(protocols.format_table(kset, s, dec))
  return "\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m unipose_jax.score", description=__doc__.split("\n")[0]
  )
  p.add_argument("--dataset", required=True, help=" | ".join(DATASETS))
  p.add_argument("--gt", required=True, help="the dataset's ground-truth file or folder")
  p.add_argument("--predictions", required=True, help=".csv, .json, .npy or .mat")
  p.add_argument("--output", help="write the metrics here (JSON, fractions)")
  p.add_argument("--one_based", action="store_true", help="predictions are MATLAB 1-based")
  a = p.parse_args(argv)
  try:
    result = score(a.dataset, a.gt, a.predictions, a.one_based)
    print(format_table(a.dataset, result), flush=True)
    if a.output:
      files.write_json(a.output, result[""] if list(result) == [""] else result)
  except (ScoreError, coco_eval.CocoInputError, keypoint_sets.KeypointSetError, OSError) as e:
    print(f"score: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
