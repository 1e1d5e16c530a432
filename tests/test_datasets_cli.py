"""From the command line, per dataset: prepare tiny files in the real format, train a few
steps (``configs/tiny_<dataset>.py``), ``--mode=eval``, ``--mode=predict`` on one image and
``--mode=export``; the right ``K`` and joint names in every output, and the protocol's keys in
``eval_metrics.json``.

One chain of ``launch.py`` processes per dataset (all slow). MPII and Penn Action use tiny
files made here (the builders' test helpers); COCO the real sample (``samples/coco``),
skipped with the reason when it is absent.
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest
from conftest import launch
from pose_samples import sample
from test_datasets_mpii import make_fake
from test_datasets_penn_action import _labels, make_videos

from unipose_jax import keypoint_sets, score
from unipose_jax.metrics import coco_eval, pckh, penn

pytestmark = pytest.mark.slow

STEPS = 2


def _ok(r, what):
  assert r.returncode == 0, f"{what} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
  return r


def _chain(tmp_path: pathlib.Path, name: str, manual: pathlib.Path, image: pathlib.Path,
           kset: keypoint_sets.KeypointSet, keys: set[str], crops: tuple[str, str],
           gt: pathlib.Path, predictions: str = "predictions.csv",
           extra: tuple[str, ...] = ()) -> dict:  # fmt: skip
  """The whole chain for dataset ``name``; returns the eval metrics. ``gt``: the release's
  ground truth file, which ``python -m unipose_jax.score`` scores the evaluation's
  ``predictions`` file against (the same numbers as ``eval_metrics.json``)."""
  data, run = tmp_path / "tfds", tmp_path / "run"
  r = _ok(launch("--mode=prepare", f"--manual_dir={manual}", f"--data_dir={data}",
                 f"--datasets={name}"), "prepare")  # fmt: skip
  assert f"[{name}] built" in r.stdout, r.stdout
  _ok(launch("--mode=train", f"--config=configs/tiny_{name}.py", f"--workdir={run}",
             f"--config.data.data_dir={data}", f"--config.num_train_steps={STEPS}",
             f"--config.checkpoint_every={STEPS}", "--config.codec.eval_decodings=('dark',)",
             *extra),
      "train")  # fmt: skip
  saved = json.loads((run / "config.json").read_text())
  assert saved["keypoints"]["joint_names"] == list(kset.joint_names)
  assert (saved["data"]["crop"], saved["data"]["eval_crop"]) == crops  # resolved, written

  r = _ok(launch("--mode=eval", f"--workdir={run}"), "eval")
  out = run / "eval" / f"checkpoint_{STEPS}"
  metrics = json.loads((out / "eval_metrics.json").read_text())
  assert set(metrics) == {"dark"}
  for dec in metrics:
    assert set(metrics[dec]) == keys, metrics[dec]
  assert kset.best_metric in metrics["dark"]  # the best checkpoint's metric is written
  # The training run's final evaluation wrote the same keys.
  assert set(json.loads((run / "eval_metrics.json").read_text())["dark"]) == keys
  rows = list(csv.DictReader(open(out / "predictions.csv")))
  k = kset.num_joints
  assert [r["joint_name"] for r in rows[:k]] == list(kset.joint_names)
  preds = json.loads((out / "predictions.json").read_text())
  assert preds["joint_names"] == list(kset.joint_names)
  assert {len(p["keypoints"]) for p in preds["predictions"]} == {k}
  assert len(rows) == k * len(preds["predictions"])
  assert (out / "example_0.png").read_bytes()[:4] == b"\x89PNG"
  rescored = score.score(name, str(gt), str(out / predictions))
  rescored = rescored.get("dark", rescored.get(""))
  for key, value in rescored.items():
    assert value == pytest.approx(metrics["dark"][key], abs=1e-6, nan_ok=True), key

  pred_dir = tmp_path / "pred"
  _ok(launch("--mode=predict", f"--workdir={run}", f"--inputs={image}", f"--output={pred_dir}"),
      "predict")  # fmt: skip
  (found,) = json.loads((pred_dir / "predictions.json").read_text())
  assert found["joint_names"] == list(kset.joint_names) and len(found["keypoints"]) == k
  assert (pred_dir / f"{image.stem}_pose.png").read_bytes()[:4] == b"\x89PNG"

  onnx = tmp_path / "unipose.onnx"
  _ok(launch("--mode=export", f"--workdir={run}", f"--output={onnx}"), "export")
  settings = json.loads((tmp_path / "unipose.json").read_text())
  assert settings["num_joints"] == k and settings["joint_names"] == list(kset.joint_names)
  assert settings["flip_pairs"] == [list(p) for p in kset.flip_pairs]
  assert onnx.stat().st_size > 0
  return metrics


def test_mpii_from_the_command_line(tmp_path):
  manual = tmp_path / "manual"
  make_fake(manual)
  _chain(tmp_path, "mpii", manual, manual / "mpii" / "images" / "000000010.jpg",
         keypoint_sets.MPII, {*pckh.MPII_KEYS, "pckh@0.5"}, ("joints", "box"),
         manual / "mpii" / "annotations" / "mpii_gt_val.mat")  # fmt: skip


def test_penn_action_from_the_command_line(tmp_path):
  rng = np.random.default_rng(0)
  root = tmp_path / "manual" / "Penn_Action"
  make_videos(root, {1: _labels(rng, 6, 48, 40, 1), 2: _labels(rng, 3, 40, 56, -1)})
  _chain(tmp_path, "penn_action", tmp_path / "manual", root / "frames" / "0002" / "000001.jpg",
         keypoint_sets.PENN_ACTION, {*penn.PENN_KEYS, "pck@0.2"}, ("box", "box"),
         root / "labels")  # fmt: skip


@pytest.mark.parametrize("input_size", [None, "(64, 48)"], ids=["square", "64x48"])
def test_coco_from_the_command_line(tmp_path, input_size):
  """COCO top-down at the tiny config's square input and at a non-square one (DARK's
  256 x 192 in miniature): the whole chain, export included."""
  coco_dir = sample("coco")  # skips with the reason when the samples are absent
  root = tmp_path / "manual" / "coco"
  (root / "annotations").mkdir(parents=True)
  for split in ("train", "val"):
    (root / "annotations" / f"person_keypoints_{split}2017.json").write_bytes(
      (coco_dir / "test_coco.json").read_bytes()
    )
    (root / f"{split}2017").symlink_to(coco_dir)
  image = sorted(coco_dir.glob("*.jpg"))[0]
  _chain(tmp_path, "coco", tmp_path / "manual", image, keypoint_sets.COCO,
         set(coco_eval.COCO_KEYS), ("box", "box"), coco_dir / "test_coco.json",
         "coco_results_dark.json",
         () if input_size is None else (f"--config.data.input_size={input_size}",))  # fmt: skip
  if input_size is not None:
    settings = json.loads((tmp_path / "unipose.json").read_text())
    assert settings["input_size"] == [64, 48] and settings["heatmap_size"] == [8, 6]
  results = json.loads((tmp_path / "run" / "eval" / f"checkpoint_{STEPS}" /
                        "coco_results_dark.json").read_text())  # fmt: skip
  assert results and all(len(r["keypoints"]) == 17 * 3 for r in results)
