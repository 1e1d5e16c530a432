"""``python -m unipose_jax.score``: every dataset's ground truth and predictions formats, the
committed LSP results rescored, and bad input as one line with exit status 2."""

import csv
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from conftest import REPO_ROOT, lsp_archive_dir

from unipose_jax import keypoint_sets, score
from unipose_jax.metrics import coco_eval, pckh, penn

SAMPLES = lsp_archive_dir() / "samples"


def _need(path: pathlib.Path) -> pathlib.Path:
  if not path.exists():
    pytest.skip(f"sample absent: {path} (set UNIPOSE_LSP_DIR)")
  return path


def _write_csv(path, people, names, decoder="dark"):
  """people: [(image_id, keypoints (K, 2))] -> an evaluation's predictions.csv."""
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["decoder", "image_id", "joint", "joint_name", "x", "y", "score"])
    for i, kp in people:
      for j, (x, y) in enumerate(kp):
        w.writerow([decoder, i, j, names[j], f"{x:.6f}", f"{y:.6f}", "0.9"])


def _run_main(capsys, *args):
  rc = score.main(list(args))
  out = capsys.readouterr()
  return rc, out.out, out.err


# ----------------------------------------------------------------------------- LSP


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("run", ["lsp_cpu_box", "lsp_cpu_quantized", "lsp_cpu_unbiased"])
def test_committed_lsp_results_rescore_the_same(run, tmp_path, capsys):
  zip_path = lsp_archive_dir() / "lsp_dataset.zip"
  if not zip_path.is_file():
    pytest.skip(f"LSP archive absent: {zip_path} (set UNIPOSE_LSP_DIR)")
  folder = REPO_ROOT / "results" / run
  out = tmp_path / "metrics.json"
  rc, text, _ = _run_main(
    capsys, "--dataset=lsp", f"--gt={zip_path}", f"--predictions={folder / 'predictions.csv'}",
    f"--output={out}",
  )  # fmt: skip
  assert rc == 0 and "pck@0.2" in text
  ours = json.loads(out.read_text())
  committed = json.loads((folder / "eval_metrics.json").read_text())
  assert ours.keys() == committed.keys()
  flipped = []
  for dec, m in ours.items():
    assert "pck@0.2/head_top" in m
    for key, value in m.items():  # every keypoint metric (box metrics are not in the CSV)
      if value != pytest.approx(committed[dec][key], rel=1e-9, abs=1e-12):
        flipped.append((dec, key, abs(value - committed[dec][key])))
  # The CSV rounds to 4 decimals; that moved one joint across one point of the PCK curve's
  # grid in one run (lsp_cpu_quantized: dark's left elbow): the AUC of that joint and the
  # overall AUC change by that one point's weight (0.005 / 0.2 of one joint), nothing else.
  for dec, key, diff in flipped:
    assert key.startswith("auc@0.2"), (dec, key)
    joints = 1000 if "/" in key else 14000
    assert diff <= 0.025 / joints + 1e-12, (dec, key, diff)
  assert len(flipped) <= 2
  # The repository's independent rescoring script gives the same headline numbers.
  spec = importlib.util.spec_from_file_location(
    "sp", REPO_ROOT / "results" / "score_predictions.py"
  )
  sp = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(sp)
  gt = sp.lsp_annotations(zip_path)
  for dec, m in ours.items():
    table = [(int(r["image_id"]), int(r["joint"]), float(r["x"]), float(r["y"]))
             for r in csv.DictReader(open(folder / "predictions.csv")) if r["decoder"] == dec]  # fmt: skip
    pred = np.zeros((1000, 14, 2))
    for i, j, x, y in table:
      pred[i - 1001, j] = (x, y)
    ref = sp.score(pred, gt[1000:])
    for key in ("pck@0.2", "pck@0.1", "pck@0.05", "auc@0.2", "pckh@0.5"):
      assert m[key] == pytest.approx(ref[key], rel=1e-12), (dec, key)


# ----------------------------------------------------------------------------- MPII


def test_mpii_every_format_scores_the_same(tmp_path, capsys):
  gt_path = _need(SAMPLES / "mpii" / "mpii_gt_val.mat")
  g = score.mpii_ground_truth(str(gt_path))
  assert g["gt"].shape == (5, 16, 2) and g["head_box"].shape == (5, 4)
  rng = np.random.default_rng(0)
  pred = g["gt"] + rng.normal(scale=5.0, size=g["gt"].shape)
  expected = pckh.summarize_mpii(pckh.mpii_counts(pred, g["gt"], g["present"], g["head_box"]))
  np.save(tmp_path / "preds.npy", pred)
  scipy.io.savemat(tmp_path / "pred.mat", {"preds": pred + 1.0})  # HRNet's: 1-based
  ids = [7, 7, 7, 9, 9]  # MPII's image ids repeat: rows are taken in order
  _write_csv(tmp_path / "p.csv", list(zip(ids, pred)), keypoint_sets.MPII.joint_names)
  for name, extra, key in (("preds.npy", [], ""), ("pred.mat", ["--one_based"], ""),
                           ("p.csv", [], "dark")):  # fmt: skip
    out = tmp_path / f"{name}.json"
    rc, text, err = _run_main(
      capsys, "--dataset=mpii", f"--gt={gt_path}", f"--predictions={tmp_path / name}",
      f"--output={out}", *extra,
    )  # fmt: skip
    assert rc == 0, err
    got = json.loads(out.read_text())
    got = got[key] if key else got
    assert sorted(got) == sorted(pckh.MPII_KEYS)
    for k in pckh.MPII_KEYS:
      assert got[k] == pytest.approx(expected[k], abs=1e-6), (name, k)  # CSV: 6 decimals
    assert "Mean@0.1" in text and "0.11" in text


def test_mpii_wrong_count_is_one_line(tmp_path, capsys):
  gt_path = _need(SAMPLES / "mpii" / "mpii_gt_val.mat")
  np.save(tmp_path / "short.npy", np.zeros((4, 16, 2)))
  rc, _, err = _run_main(
    capsys, "--dataset=mpii", f"--gt={gt_path}", f"--predictions={tmp_path / 'short.npy'}"
  )
  assert rc == 2 and err.count("\n") == 1
  assert "short.npy: 4 predictions for the 5 persons" in err


# ----------------------------------------------------------------------------- COCO


def test_coco_results_json_and_project_json(tmp_path, capsys):
  gt_path = _need(SAMPLES / "coco" / "test_coco.json")
  data = json.loads(gt_path.read_text())
  anns = [a for a in data["annotations"] if a["num_keypoints"] > 0]
  kp = np.array([a["keypoints"] for a in anns], float).reshape(-1, 17, 3)
  # COCO's results format, perfect keypoints: AP 1.0.
  results = [
    {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
    for a in anns
  ]
  (tmp_path / "res.json").write_text(json.dumps(results))
  out = tmp_path / "m.json"
  rc, text, err = _run_main(
    capsys, "--dataset=coco", f"--gt={gt_path}", f"--predictions={tmp_path / 'res.json'}",
    f"--output={out}",
  )  # fmt: skip
  assert rc == 0, err
  got = json.loads(out.read_text())
  assert sorted(got) == sorted(coco_eval.COCO_KEYS) and got["AP"] == 1.0
  assert "AP .75" in text
  # The project's own JSON, one pose per annotation id, noisy: COCOeval of the same poses.
  rng = np.random.default_rng(0)
  noisy = kp[..., :2] + rng.normal(scale=3.0, size=kp[..., :2].shape)
  mine = [
    {"annotation_id": a["id"], "keypoints": noisy[n].tolist(), "scores": [0.9] * 17}
    for n, a in enumerate(anns)
  ]
  (tmp_path / "mine.json").write_text(json.dumps(mine))
  got = score.score("coco", str(gt_path), str(tmp_path / "mine.json"))[""]
  same = coco_eval.evaluate(
    data,
    [
      {
        "image_id": a["image_id"],
        "category_id": 1,
        "score": 0.9,
        "keypoints": np.concatenate([noisy[n], np.full((17, 1), 0.9)], 1).ravel().tolist(),
      }
      for n, a in enumerate(anns)
    ],  # fmt: skip
  )
  assert got == same and 0 < got["AP"] < 1
  # The same poses as an evaluation's CSV with an annotation_id column.
  with open(tmp_path / "p.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["decoder", "image_id", "annotation_id", "joint", "x", "y", "score"])
    for n, a in enumerate(anns):
      for j in range(17):
        w.writerow(
          [
            "dark",
            a["image_id"],
            a["id"],
            j,
            repr(float(noisy[n, j, 0])),
            repr(float(noisy[n, j, 1])),
            0.9,
          ]
        )
  assert score.score("coco", str(gt_path), str(tmp_path / "p.csv"))["dark"] == same
  # Without annotation ids a COCO pose has no box to belong to: one line.
  _write_csv(tmp_path / "q.csv", [(a["image_id"], noisy[n]) for n, a in enumerate(anns)],
             keypoint_sets.COCO.joint_names)  # fmt: skip
  with pytest.raises(score.ScoreError, match="annotation_id"):
    score.score("coco", str(gt_path), str(tmp_path / "q.csv"))


def test_coco_format_uses_its_own_sigmas(tmp_path):
  gt_path = _need(SAMPLES / "coco" / "test_coco.json")
  data = json.loads(gt_path.read_text())
  # A 3-keypoint dataset (the first three COCO joints under other names): no COCO sigmas.
  data["categories"][0]["keypoints"] = ["tip", "left_eyespot", "right_eyespot"]
  data["categories"][0]["skeleton"] = [[1, 2]]
  for a in data["annotations"]:
    a["keypoints"] = a["keypoints"][:9]
    a["num_keypoints"] = sum(1 for v in a["keypoints"][2::3] if v > 0)
  (tmp_path / "val.json").write_text(json.dumps(data))
  anns = [a for a in data["annotations"] if a["num_keypoints"] > 0]
  rng = np.random.default_rng(1)
  res = []
  for a in anns:
    k = np.array(a["keypoints"], float).reshape(3, 3)
    k[:, :2] += rng.normal(scale=2.0, size=(3, 2))
    k[:, 2] = 1.0
    res.append({"image_id": a["image_id"], "category_id": 1, "keypoints": k.ravel().tolist(),
                "score": 1.0})  # fmt: skip
  (tmp_path / "res.json").write_text(json.dumps(res))
  got = score.score("coco_format/bugs", str(tmp_path / "val.json"), str(tmp_path / "res.json"))
  sigmas = [keypoint_sets.DEFAULT_OKS_SIGMA] * 3
  assert got[""] == coco_eval.evaluate(data, res, sigmas)
  with pytest.raises(score.ScoreError, match="not COCO's 17 keypoints"):
    score.score("coco", str(tmp_path / "val.json"), str(tmp_path / "res.json"))


# ----------------------------------------------------------------------------- Penn Action


def test_penn_action_labels_folder(tmp_path, capsys):
  folder = _need(SAMPLES / "penn_action" / "labels")
  g = score.penn_ground_truth(str(folder))
  videos = sorted({int(i) // score.PENN_ID_FACTOR for i in g["ids"]})
  assert videos == [10, 1154]  # the samples' test videos
  m = scipy.io.loadmat(folder / "1154.mat")
  assert len(g["ids"]) == 111 + m["x"].shape[0]
  np.testing.assert_array_equal(g["box"][-1], g["box"][-2])  # 1154's missing last bbox row
  rng = np.random.default_rng(0)
  pred = g["gt"] + rng.normal(scale=6.0, size=g["gt"].shape)
  expected = penn.summarize_penn(penn.penn_counts(pred, g["gt"], g["visible"], g["box"]))
  _write_csv(tmp_path / "p.csv", list(zip(g["ids"], pred)), keypoint_sets.PENN_ACTION.joint_names)
  out = tmp_path / "m.json"
  rc, text, err = _run_main(
    capsys, "--dataset=penn_action", f"--gt={folder}", f"--predictions={tmp_path / 'p.csv'}",
    f"--output={out}",
  )  # fmt: skip
  assert rc == 0, err
  got = json.loads(out.read_text())["dark"]
  assert sorted(got) == sorted(penn.PENN_KEYS)
  for k in penn.PENN_KEYS:
    assert got[k] == pytest.approx(expected[k], abs=1e-6), k
  # Every test frame must be predicted.
  _write_csv(
    tmp_path / "short.csv", list(zip(g["ids"][1:], pred[1:])), keypoint_sets.PENN_ACTION.joint_names
  )
  rc, _, err = _run_main(
    capsys, "--dataset=penn_action", f"--gt={folder}", f"--predictions={tmp_path / 'short.csv'}"
  )
  assert rc == 2 and f"none for id {g['ids'][0]}" in err


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_are_one_line_exit_2(tmp_path, capsys):
  (tmp_path / "x.csv").write_text("a,b\n1,2\n")
  gt = tmp_path / "gt.mat"
  scipy.io.savemat(gt, {"nothing": np.zeros(3)})
  cases = [
    (["--dataset=lsp", f"--gt={tmp_path / 'none.zip'}", "--predictions=x"], "none.zip: no such"),
    (["--dataset=mpii", f"--gt={gt}", f"--predictions={tmp_path / 'x.csv'}"], "gt.mat: lacks"),
    (["--dataset=nope", f"--gt={gt}", "--predictions=x"], "--dataset=nope: unknown; known: lsp"),
  ]
  for args, message in cases:
    rc, _, err = _run_main(capsys, *args)
    assert rc == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_module_runs_as_a_command(tmp_path):
  """The real entry point, in a process (PYTHONPATH inherited): a bad file is exit 2."""
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
  (tmp_path / "p.npy").write_bytes(b"junk")
  gt = tmp_path / "gt.mat"
  scipy.io.savemat(gt, {"x": np.zeros(3)})
  p = subprocess.run(
    [sys.executable, "-m", "unipose_jax.score", "--dataset=mpii", f"--gt={gt}",
     f"--predictions={tmp_path / 'p.npy'}"],
    capture_output=True, text=True, env=env, timeout=120,
  )  # fmt: skip
  assert p.returncode == 2
  assert p.stderr.strip().splitlines()[-1].startswith(f"score: {gt}: lacks")
