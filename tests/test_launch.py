"""The command line: config overrides, SIGTERM during training, eval and predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from unipose_jax import datasets

SMALL = "synthetic/small"


def launch(*args, timeout=300, **popen):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONUNBUFFERED="1")
  cmd = [sys.executable, str(REPO_ROOT / "launch.py"), *args]
  if popen:
    return subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, text=True, **popen)
  return subprocess.run(
    cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
  )


def small_flags(data_dir, workdir, steps):
  return [
    "--config=configs/smoke.py",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    f"--config.data.train_sources=('{SMALL}',)",
    f"--config.data.eval_source={SMALL}",
    "--config.data.input_size=32",
    "--config.batch_size=4",
    "--config.eval_batch_size=8",
    f"--config.num_train_steps={steps}",
    "--config.log_every=1",
    "--config.checkpoint_every=1000",
  ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds")
  datasets.prepare([SMALL], manual_dir=None, data_dir=str(d), log=lambda *a, **k: None)
  return str(d)


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


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A finished 4-step training run (the config travels in its config.json), on a data
  folder that holds nothing yet: the synthetic set is built on first use."""
  root = tmp_path_factory.mktemp("cli")
  workdir, fresh = root / "run", root / "fresh_tfds"
  r = launch("--mode=train", *small_flags(str(fresh), workdir, 4))
  assert r.returncode == 0, r.stdout + r.stderr
  assert "building the synthetic dataset" in r.stdout and datasets.is_prepared(SMALL, str(fresh))
  assert json.loads((workdir / "config.json").read_text())["num_train_steps"] == 4
  return workdir


def _images(tmp_path):
  rng = np.random.default_rng(0)
  good = [tmp_path / "a.png", tmp_path / "b.jpg"]
  Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(good[0])
  Image.fromarray(rng.integers(0, 255, (90, 40, 3), dtype=np.uint8)).save(good[1])
  return good


def test_eval_and_predict_read_the_runs_config(run_dir, tmp_path):
  r = launch("--mode=eval", f"--workdir={run_dir}")  # no --config: config.json is used
  assert r.returncode == 0, r.stderr
  result = json.loads((run_dir / "eval" / "checkpoint_4" / "eval_metrics.json").read_text())
  assert set(result) == {"argmax", "shift", "upsample", "dark"}
  assert 0.0 <= result["dark"]["pck@0.2"] <= 1.0

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


def test_export_reproduces_predict_with_the_numpy_decoder(run_dir, tmp_path):
  from unipose_jax import deploy

  onnx_path = tmp_path / "m.onnx"
  r = launch("--mode=export", f"--workdir={run_dir}", f"--output={onnx_path}")
  assert r.returncode == 0, r.stderr
  settings = json.loads(onnx_path.with_suffix(".json").read_text())
  assert settings["checkpoint_step"] == 4 and settings["input_size"] == 32

  good = _images(tmp_path)
  out_dir = tmp_path / "pred"
  r = launch("--mode=predict", *small_flags(data_dir_of(run_dir), run_dir, 4),
             "--config.predict.second_pass=False", f"--inputs={good[0]},{good[1]}",
             f"--output={out_dir}")  # fmt: skip
  assert r.returncode == 0, r.stderr
  predictions = json.loads((out_dir / "predictions.json").read_text())
  images = [np.asarray(Image.open(p).convert("RGB")) for p in good]
  for image, p in zip(images, predictions):
    keypoints, scores = deploy.predict(
      deploy.onnx_runner(onnx_path), [image], settings["input_size"],
      decoding=settings["decoding"], sigma=settings["sigma"], dark_kernel=settings["dark_kernel"],
    )  # fmt: skip
    np.testing.assert_allclose(keypoints[0, :14], np.asarray(p["keypoints"]), atol=2e-3)
    np.testing.assert_allclose(scores[0, :14], np.asarray(p["scores"]), atol=1e-4)


def test_export_errors_name_the_path(tmp_path, run_dir):
  r = launch("--mode=export", f"--workdir={tmp_path / 'nothing'}", "--config=configs/smoke.py")
  assert r.returncode == 1 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr
  missing = tmp_path / "no_such_folder" / "m.onnx"
  r = launch("--mode=export", f"--workdir={run_dir}", f"--output={missing}")
  assert r.returncode == 1 and str(missing.parent) in r.stderr and "Traceback" not in r.stderr


TWIN_FLAGS = [
  "--config.model.backbone_depth=50", "--config.model.stage_sizes=(1,1,2,3)",
  "--config.model.backbone_width=8", "--config.model.output_stride=16",
  "--config.model.wasp_rates=(18,12,6)", "--config.model.wasp_features=16",
  "--config.model.low_level_features=8", "--config.model.decoder_features=16",
]  # fmt: skip


def test_eval_of_an_original_unipose_pth(data_dir, tmp_path):
  torch = pytest.importorskip("torch", reason="needs torch to write the .pth")
  import torch_twin

  twin = torch_twin.UniPoseTwin(14, layers=(1, 1, 2, 3), width=8, wasp_planes=16,
                                low_planes=8, decoder_planes=16)  # fmt: skip
  torch.save(torch_twin.randomise_(twin, 3).state_dict(), tmp_path / "lsp_model.pth")
  workdir = tmp_path / "table1"
  flags = [*small_flags(data_dir, workdir, 1), *TWIN_FLAGS]
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
