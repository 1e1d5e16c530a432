"""The command line: config overrides, eval, predict and export of a trained run.

Every test here starts ``launch.py`` processes: all are marked slow.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TRAINED_RUN_FLAGS, TRAINED_RUN_STEPS, copy_of, launch, small_flags
from PIL import Image

from unipose_jax import keypoint_sets

pytestmark = pytest.mark.slow


def test_unknown_config_key_is_an_error(tmp_path):
  r = launch(
    "--mode=train",
    "--config=configs/smoke.py",
    f"--workdir={tmp_path}",
    "--config.model.no_such_key=3",
  )
  assert r.returncode != 0
  assert "no_such_key" in r.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_mode_is_required():
  r = launch("--config=configs/smoke.py")
  assert r.returncode != 0 and "mode" in r.stderr


def test_the_shared_run_built_its_data_and_saved_its_resolved_config(trained_run):
  log = (trained_run.parent / "train.log").read_text()
  assert "building the synthetic dataset" in log  # the data folder held nothing
  saved = json.loads((trained_run / "config.json").read_text())
  assert saved["num_train_steps"] == TRAINED_RUN_STEPS
  # Given as 0 ("the default"); saved as the size used: 2 * ceil(3 * sigma 2.0) + 1.
  assert saved["codec"]["dark_kernel"] == 13 and saved["codec"]["sigma"] == 2.0


def _images(tmp_path):
  rng = np.random.default_rng(0)
  good = [tmp_path / "a.png", tmp_path / "b.jpg"]
  Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(good[0])
  Image.fromarray(rng.integers(0, 255, (90, 40, 3), dtype=np.uint8)).save(good[1])
  return good


def test_eval_and_predict_read_the_runs_config(trained_run, tmp_path):
  run_dir = copy_of(trained_run, tmp_path / "run")
  r = launch("--mode=eval", f"--workdir={run_dir}")  # no --config: config.json is used
  assert r.returncode == 0, r.stderr
  out = run_dir / "eval" / "checkpoint_4"
  result = json.loads((out / "eval_metrics.json").read_text())
  assert set(result) == {"argmax", "shift", "upsample", "dark"}
  assert 0.0 <= result["dark"]["pck@0.2"] <= 1.0
  assert result["dark"]["num_boxes"] == 32  # the shared run has a box head
  assert {p.name for p in out.iterdir()} >= {"predictions.csv", "boxes.csv", "pck_curve.png"}
  # The console table is the file's numbers (written once, printed once).
  assert f"dark       {result['dark']['pck@0.2']:8.4f}" in r.stdout, r.stdout

  good = _images(tmp_path)
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  r = launch("--mode=predict", f"--workdir={run_dir}", f"--inputs={good[0]},{bad}")
  assert r.returncode == 1 and "broken.jpg" in r.stderr and "Traceback" not in r.stderr, r.stderr
  out_dir = tmp_path / "pred"
  r = launch("--mode=predict", f"--workdir={run_dir}", f"--inputs={good[0]},{good[1]}",
             f"--output={out_dir}")  # fmt: skip
  assert r.returncode == 0, r.stderr
  predictions = json.loads((out_dir / "predictions.json").read_text())
  assert [p["input"] for p in predictions] == [str(good[0]), str(good[1])]
  for p, path in zip(predictions, good):
    assert len(p["keypoints"]) == 14 and len(p["scores"]) == 14
    assert (out_dir / f"{path.stem}_pose.png").read_bytes()[:4] == b"\x89PNG"
  assert "predicting with checkpoint 4 of" in r.stdout

  # The Python API reads the same run and gives the command line's answer.
  from unipose_jax import Predictor

  p = Predictor.from_workdir(str(run_dir))(np.asarray(Image.open(good[0]).convert("RGB")))
  assert p.keypoints.shape == (14, 2) and p.scores.shape == (14,) and p.visible.shape == (14,)
  np.testing.assert_allclose(p.keypoints, predictions[0]["keypoints"], atol=1e-3)
  np.testing.assert_allclose(p.scores, predictions[0]["scores"], atol=1e-5)
  assert p.person_found == predictions[0]["person_found"]

  # A --config whose network differs from the run's is refused, naming the keys.
  r = launch("--mode=eval", *small_flags(data_dir_of(run_dir), run_dir, 4),
             "--config.model.decoder_features=24")  # fmt: skip
  assert r.returncode == 2 and "model.decoder_features" in r.stderr, r.stderr


def data_dir_of(run_dir):
  return json.loads((run_dir / "config.json").read_text())["data"]["data_dir"]


def test_export_reproduces_predict_with_the_numpy_decoder(trained_run, tmp_path):
  from unipose_jax import deploy

  run_dir = copy_of(trained_run, tmp_path / "run")
  onnx_path = tmp_path / "m.onnx"
  r = launch("--mode=export", f"--workdir={run_dir}", f"--output={onnx_path}")
  assert r.returncode == 0, r.stderr
  assert "onnxruntime check: the heatmaps of 2 random images differ from JAX's by " in r.stdout
  settings = json.loads(onnx_path.with_suffix(".json").read_text())
  # The run's config says dark_kernel=0 ("the default"); the file holds what the codec uses.
  decoding = {k: v for k, v in settings.items() if not k.startswith("presence")}
  assert decoding == {
    "checkpoint_step": 4, "input_size": 32, "heatmap_size": [4, 4], "sigma": 2.0,
    "decoding": "dark", "dark_kernel": 13, "dark_sigma": 2.0, "box_head": True,
    "num_joints": 14, "joint_names": list(keypoint_sets.LSP.joint_names),
    "flip_pairs": [list(p) for p in keypoint_sets.LSP.flip_pairs],
    "score_threshold": 0.2,
  }  # fmt: skip
  # ... and the run's person-presence calibration, as config.json holds it.
  p = json.loads((run_dir / "config.json").read_text())["predict"]
  assert p["presence_score"] and settings["presence_score"] == p["presence_score"]
  assert settings["presence_threshold"] == p["presence_threshold"]
  assert settings["presence_weights"] == list(p["presence_weights"])
  assert settings["presence_step"] == p["presence_step"] == 4

  good = _images(tmp_path)
  out_dir = tmp_path / "pred"
  r = launch("--mode=predict", *small_flags(data_dir_of(run_dir), run_dir, 4), *TRAINED_RUN_FLAGS,
             "--config.predict.second_pass=False", f"--inputs={good[0]},{good[1]}",
             f"--output={out_dir}")  # fmt: skip
  assert r.returncode == 0, r.stderr
  predictions = json.loads((out_dir / "predictions.json").read_text())
  images = [np.asarray(Image.open(p).convert("RGB")) for p in good]
  for image, p in zip(images, predictions):
    keypoints, scores = deploy.predict(
      deploy.onnx_runner(onnx_path), [image], settings["input_size"],
      num_joints=settings["num_joints"], decoding=settings["decoding"], sigma=settings["sigma"],
      dark_kernel=settings["dark_kernel"], dark_sigma=settings["dark_sigma"],
    )  # fmt: skip
    assert keypoints.shape == (1, 14 + 5, 2)  # the joints, then the 5 box points
    np.testing.assert_allclose(keypoints[0, :14], np.asarray(p["keypoints"]), atol=2e-3)
    np.testing.assert_allclose(scores[0, :14], np.asarray(p["scores"]), atol=1e-4)


def test_the_onnx_route_finds_a_person_as_the_predictor_does(trained_run, tmp_path):
  """deploy.predict_with_settings applies the export's presence settings in NumPy: the
  same presence score and person_found as Predictor's first pass on the same images,
  with the calibrated threshold and with one between the images' scores (both verdicts)."""
  from unipose_jax import Predictor, deploy

  run_dir = copy_of(trained_run, tmp_path / "run")
  r = launch("--mode=export", f"--workdir={run_dir}")
  assert r.returncode == 0, r.stderr
  settings = json.loads((run_dir / "unipose.json").read_text())
  rng = np.random.default_rng(5)
  images = [np.asarray(Image.open(p).convert("RGB")) for p in _images(tmp_path)]
  images += [np.full((48, 64, 3), 128, np.uint8), rng.integers(0, 256, (60, 40, 3), np.uint8)]
  predictor = Predictor.from_workdir(str(run_dir))
  runner = deploy.onnx_runner(run_dir / "unipose.onnx")
  want = [predictor.first_pass(image) for image in images]
  scores = np.array([p.presence for p in want])
  got = deploy.predict_with_settings(runner, images, settings)
  np.testing.assert_allclose(got.presence, scores, rtol=1e-4, atol=1e-4)
  assert got.person_found.tolist() == [p.person_found for p in want]
  between = float(np.sort(scores)[len(scores) // 2 - 1 : len(scores) // 2 + 1].mean())
  predictor.presence_threshold = between
  got = deploy.predict_with_settings(runner, images, {**settings, "presence_threshold": between})
  found = [predictor.first_pass(image).person_found for image in images]
  assert got.person_found.tolist() == found and True in found and False in found
  keypoints, joint_scores = deploy.predict(
    runner, images, settings["input_size"], num_joints=settings["num_joints"],
    decoding=settings["decoding"],
    sigma=settings["sigma"], dark_kernel=settings["dark_kernel"], dark_sigma=settings["dark_sigma"],
  )  # fmt: skip
  np.testing.assert_array_equal(got.keypoints, keypoints)
  np.testing.assert_array_equal(got.scores, joint_scores)


def test_a_finished_and_calibrated_run_says_so_and_ends(trained_run, tmp_path):
  """The same training command on a finished run whose last checkpoint is evaluated and
  calibrated: one line saying so, no calibration again, nothing rewritten."""
  run_dir = copy_of(trained_run, tmp_path / "run")
  kept = ("config.json", "metrics.jsonl", "presence/calibration.json", "eval_metrics.json")
  before = {name: (run_dir / name).read_bytes() for name in kept}
  r = launch("--mode=train", *small_flags(data_dir_of(run_dir), run_dir, TRAINED_RUN_STEPS),
             *TRAINED_RUN_FLAGS)  # fmt: skip
  assert r.returncode == 0, r.stdout + r.stderr
  assert f"{run_dir} is finished: checkpoint 4 of 4 steps evaluated " in r.stdout, r.stdout
  assert (
    f"person presence calibrated on it ({run_dir / 'presence' / 'calibration.json'})" in r.stdout
  )
  assert "person presence:" not in r.stdout and "final evaluation" not in r.stdout, r.stdout
  assert {name: (run_dir / name).read_bytes() for name in kept} == before
  # One more step is not finished: it trains on (and calibrates again; off here).
  r = launch("--mode=train", *small_flags(data_dir_of(run_dir), run_dir, TRAINED_RUN_STEPS + 1),
             *TRAINED_RUN_FLAGS, "--config.calibrate_presence=False")  # fmt: skip
  assert r.returncode == 0 and "is finished" not in r.stdout, r.stdout + r.stderr
  assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 5


def test_export_errors_name_the_path(tmp_path, trained_run):
  run_dir = trained_run  # nothing is written: both commands fail before
  r = launch("--mode=export", f"--workdir={tmp_path / 'nothing'}", "--config=configs/smoke.py")
  assert r.returncode == 1 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr
  missing = tmp_path / "no_such_folder" / "m.onnx"
  r = launch("--mode=export", f"--workdir={run_dir}", f"--output={missing}")
  assert r.returncode == 1 and str(missing.parent) in r.stderr and "Traceback" not in r.stderr


def test_export_without_the_onnx_extra_is_one_line(trained_run, tmp_path):
  """Without onnx installed (its import blocked), export names the extra to install."""
  import subprocess
  import sys

  from conftest import REPO_ROOT

  block = (
    "import runpy, sys; sys.modules['onnx'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
  )
  out = tmp_path / "m.onnx"
  r = subprocess.run(
    [sys.executable, "-c", block, str(REPO_ROOT / "launch.py"), "--mode=export",
     f"--workdir={trained_run}", f"--output={out}"],
    capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
  )  # fmt: skip
  errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
  assert errors == [
    "error: ONNX export and running an exported file needs onnx, which is not installed "
    "(import of onnx halted; None in sys.modules); install it with: pip install 'unipose_jax[onnx]'"
  ], r.stderr
  assert not out.exists()


TWIN_FLAGS = [
  "--config.model.backbone_depth=50", "--config.model.stage_sizes=(1,1,2,3)",
  "--config.model.backbone_width=8", "--config.model.output_stride=16",
  "--config.model.wasp_rates=(18,12,6)", "--config.model.wasp_features=16",
  "--config.model.low_level_features=8", "--config.model.decoder_features=16",
]  # fmt: skip


def test_eval_of_an_original_unipose_pth(small_data_dir, tmp_path):
  torch = pytest.importorskip("torch", reason="needs torch to write the .pth")
  import torch_twin

  twin = torch_twin.UniPoseTwin(14, layers=(1, 1, 2, 3), width=8, wasp_planes=16,
                                low_planes=8, decoder_planes=16)  # fmt: skip
  torch.save(torch_twin.randomise_(twin, 3).state_dict(), tmp_path / "lsp_model.pth")
  workdir = tmp_path / "table1"
  flags = [*small_flags(small_data_dir, workdir, 1), *TWIN_FLAGS]
  r = launch("--mode=eval", *flags, f"--config.model.init_from={tmp_path / 'lsp_model.pth'}")
  assert r.returncode == 0, r.stdout + r.stderr
  assert "unused" in r.stdout and "decoder.conv2.weight" in r.stdout
  out = workdir / "eval" / "original_lsp_model"
  result = json.loads((out / "eval_metrics.json").read_text())
  assert set(result) == {"argmax", "shift", "upsample", "dark"}
  assert (out / "predictions.csv").read_text().count("\n") == 1 + 4 * 32 * 14
  # The original's box-head checkpoint (5 more maps) is refused in one line.
  boxed = torch_twin.UniPoseTwin(14, layers=(1, 1, 2, 3), width=8, wasp_planes=16,
                                 low_planes=8, decoder_planes=16, extra_maps=5)  # fmt: skip
  torch.save(boxed.state_dict(), tmp_path / "boxed.pth")
  r = launch("--mode=eval", *flags, f"--config.model.init_from={tmp_path / 'boxed.pth'}")
  assert r.returncode == 1 and "box head" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_no_code_in_a_checkpoint_runs_on_the_command_line(small_data_dir, tmp_path):
  """eval and train with ``--config.model.init_from`` a .pth whose pickle would run code."""
  torch = pytest.importorskip("torch", reason="needs torch to write the .pth")
  import os as os_module

  class RunsCode:
    def __reduce__(self):
      return os_module.system, (f"touch {tmp_path / 'ran'}",)

  evil = tmp_path / "evil.pth"
  torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": RunsCode()}, evil)
  for mode in ("eval", "train"):
    workdir = tmp_path / mode
    r = launch(f"--mode={mode}", *small_flags(small_data_dir, workdir, 1),
               f"--config.model.init_from={evil}")  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "evil.pth" in r.stderr and "blocked" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ran").exists()


def test_inputs_repeat_and_hold_commas(trained_run, tmp_path):
  """``--inputs`` more than once, a comma list, and a path with a comma in its name."""
  for name in ("a,b.png", "c.png", "d.png"):
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(tmp_path / name)
  out = tmp_path / "out"
  r = launch("--mode=predict", f"--workdir={trained_run}", f"--inputs={tmp_path / 'a,b.png'}",
             f"--inputs={tmp_path / 'c.png'},{tmp_path / 'd.png'}", f"--output={out}")  # fmt: skip
  assert r.returncode == 0, r.stdout + r.stderr
  got = [rec["input"] for rec in json.loads((out / "predictions.json").read_text())]
  assert got == [str(tmp_path / n) for n in ("a,b.png", "c.png", "d.png")]
