"""Configs from the command line, with real ``launch.py`` processes (all slow): overrides
of a saved run without ``--config`` (run-time keys taken, network and training keys
refused with the reason, unknown keys with the nearest real one), ``predict.max_pixels``
end to end, bad values and bad ``config.json`` files, a work directory that is a file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import copy_of, launch
from PIL import Image

pytestmark = pytest.mark.slow


def _image(tmp_path):
  path = tmp_path / "a.png"  # 70 x 50 = 3500 pixels
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)).save(path)
  return path


def _one_line_error(r, code: int = 2) -> str:
  assert r.returncode == code and "Traceback" not in r.stderr, r.stdout + r.stderr
  return r.stderr.strip()


def test_a_saved_run_takes_run_time_overrides_without_config(trained_run, tmp_path):
  """README's promise: predict needs no --config and --config.predict.second_pass=False
  turns the second pass off; here on an old run whose config.json has only part of the
  predict section, with a value saved before it was checked, which an override repairs."""
  run_dir = copy_of(trained_run, tmp_path / "run")
  saved = json.loads((run_dir / "config.json").read_text())
  saved["predict"] = {"crop_margin": -1.0}  # no second_pass, max_pixels ...: the defaults
  (run_dir / "config.json").write_text(json.dumps(saved))
  image = _image(tmp_path)
  r = launch("--mode=predict", f"--workdir={run_dir}", f"--inputs={image}")
  assert _one_line_error(r) == (
    f"error: bad config ({run_dir / 'config.json'}):\n"
    "  predict.crop_margin=-1.0: must be a finite number > 0"
  )
  repair = "--config.predict.crop_margin=1.25"
  r = launch("--mode=predict", f"--workdir={run_dir}", f"--inputs={image}", repair,
             f"--output={tmp_path / 'two'}")  # fmt: skip
  assert r.returncode == 0 and "two passes" in r.stdout, r.stderr
  (two,) = json.loads((tmp_path / "two" / "predictions.json").read_text())
  assert two["passes"] == 2 and two["person_found"]
  r = launch("--mode=predict", f"--workdir={run_dir}", f"--inputs={image}", repair,
             f"--output={tmp_path / 'one'}", "--config.predict.second_pass=False",
             "--config.predict.max_pixels=3500")  # fmt: skip
  assert r.returncode == 0, r.stderr
  assert "one pass" in r.stdout
  (one,) = json.loads((tmp_path / "one" / "predictions.json").read_text())
  assert one["passes"] == 1 and one["person_found"]  # found, yet no second pass

  r = launch("--mode=eval", f"--workdir={run_dir}", repair, "--config.eval_batch_size=4",
             "--config.codec.eval_decodings=('argmax',)",
             f"--config.data.data_dir={saved['data']['data_dir']}")  # fmt: skip
  assert r.returncode == 0, r.stderr
  result = json.loads((run_dir / "eval" / "checkpoint_4" / "eval_metrics.json").read_text())
  assert set(result) == {"argmax", "dark"}  # the override's, plus the run's own decoder

  onnx = tmp_path / "m.onnx"
  r = launch("--mode=export", f"--workdir={run_dir}", f"--output={onnx}", repair,
             "--config.codec.dark_kernel=5")  # fmt: skip
  assert r.returncode == 0, r.stderr
  assert json.loads(onnx.with_suffix(".json").read_text())["dark_kernel"] == 5


def test_refused_overrides_name_the_key_and_the_reason(trained_run, tmp_path):
  run_dir, config = trained_run, trained_run / "config.json"  # nothing is written
  image = _image(tmp_path)
  r = launch("--mode=eval", f"--workdir={run_dir}", "--config.model.decoder_features=24")
  assert _one_line_error(r) == (
    "error: cannot override the saved run's config:\n  model.decoder_features=24: the network "
    f"was trained with 32 ({config}); a new value needs a new run"
  )
  r = launch("--mode=predict", f"--workdir={run_dir}", f"--inputs={image}", "--config.batch_size=2")
  assert _one_line_error(r).endswith(
    "batch_size=2: only training reads it, not --mode=predict; did you mean 'eval_batch_size'?"
  )
  r = launch("--mode=export", f"--workdir={run_dir}", "--config.predict.secnd_pass=False")
  assert _one_line_error(r) == (
    "error: unknown config key 'predict.secnd_pass'; did you mean 'predict.second_pass'?"
  )
  r = launch("--mode=train", f"--workdir={run_dir}", "--config.data.input_size=64")
  assert "data.input_size=64: the network was trained with 32" in _one_line_error(r)
  # predict.max_pixels from the command line reaches the input checks.
  r = launch("--mode=predict", f"--workdir={run_dir}", f"--inputs={image}",
             "--config.predict.max_pixels=3499")  # fmt: skip
  assert _one_line_error(r, code=1) == (
    f"error: bad input:\n  {image}: 70x50 = 0.0035 MP is over the limit of 0.003499 MP "
    "(--config.predict.max_pixels; raise it to read this file)"
  )
  r = launch("--mode=predict", f"--workdir={run_dir}", f"--inputs={image}",
             "--config.predict.crop_margin=0")  # fmt: skip
  assert _one_line_error(r) == (
    f"error: bad config ({config} and the overrides):\n"
    "  predict.crop_margin=0.0: must be a finite number > 0"
  )


def test_non_finite_and_negative_values_are_refused_before_training(tmp_path):
  workdir = tmp_path / "run"
  r = launch("--mode=train", "--config=configs/smoke.py", f"--workdir={workdir}",
             "--config.optimizer.learning_rate=nan", "--config.seed=-1",
             "--config.data.augment.rotation_deg=-10", "--config.predict.crop_margin=-1",
             "--config.codec.sigma=inf")  # fmt: skip
  assert _one_line_error(r) == (
    "error: bad config:\n"
    "  seed=-1: must be an integer >= 0\n"
    "  optimizer.learning_rate=nan: must be a finite number > 0\n"
    "  data.augment.rotation_deg=-10.0: must be a finite number >= 0 and <= 180\n"
    "  codec.sigma=inf: must be a finite number > 0\n"
    "  predict.crop_margin=-1.0: must be a finite number > 0"
  )
  assert not workdir.exists()


def test_bad_config_json_and_a_workdir_that_is_a_file(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  for text, fault in [
    ("[]", "not a config (a JSON object expected, got [])"),
    ('{"eval_batch_size": "32"}', 'eval_batch_size="32": expected an integer'),
  ]:
    (workdir / "config.json").write_text(text)
    r = launch("--mode=eval", f"--workdir={workdir}")
    assert _one_line_error(r) == f"error: {workdir / 'config.json'}: {fault}"
  afile = tmp_path / "afile"
  afile.write_text("not a folder")
  for mode in ("train", "eval", "predict", "export"):
    config = ["--config=configs/smoke.py"] if mode == "train" else []
    r = launch(f"--mode={mode}", f"--workdir={afile}", f"--inputs={afile}", *config)
    assert _one_line_error(r) == (
      f"error: --workdir={afile}: not a work directory ({afile} is a file, not a folder)"
    )


def test_an_unknown_key_is_matched_among_the_keys_the_mode_accepts(tmp_path):
  """eval reads only run-time keys: a typo of batch_size leads to eval_batch_size (which
  eval takes), not to batch_size (which it would refuse); training still gets batch_size."""
  from configs import smoke
  from unipose_jax import run_config

  workdir = tmp_path / "run"
  run_config.save(smoke.get_config(), str(workdir))  # a saved run's config.json, no checkpoint
  r = launch("--mode=eval", f"--workdir={workdir}", "--config.batch_sze=4")
  assert _one_line_error(r) == (
    "error: unknown config key 'batch_sze'; did you mean 'eval_batch_size'?"
  )
  r = launch("--mode=eval", "--config=configs/smoke.py", f"--workdir={workdir}",
             "--config.batch_sze=4")  # fmt: skip
  assert _one_line_error(r) == (
    "error: unknown config key 'batch_sze'; did you mean 'eval_batch_size'?"
  )
  r = launch("--mode=train", f"--workdir={workdir}", "--config.batch_sze=4")
  assert _one_line_error(r) == "error: unknown config key 'batch_sze'; did you mean 'batch_size'?"


def test_eval_without_a_run_says_train_first_in_one_step_and_leaves_nothing(tmp_path):
  missing, empty = tmp_path / "missing", tmp_path / "empty"
  empty.mkdir()
  for workdir in (missing, empty):
    r = launch("--mode=eval", f"--workdir={workdir}")
    assert _one_line_error(r) == (
      f"error: --mode=eval: no run in {workdir} (no config.json, no checkpoints): train first "
      f"(unipose-jax --mode=train --config=configs/<name>.py --workdir={workdir})"
    )
    r = launch("--mode=eval", f"--workdir={workdir}", "--config=configs/smoke.py")
    assert _one_line_error(r, code=1) == (
      f"error: no checkpoint in {workdir / 'checkpoints'}: train first "
      f"(unipose-jax --mode=train --workdir={workdir})"
    )
  assert not missing.exists() and list(empty.iterdir()) == []


def test_a_missing_config_file_is_named_with_the_configs_beside_it(tmp_path):
  r = launch("--mode=eval", "--config=configs/nope.py", f"--workdir={tmp_path}")
  message = _one_line_error(r)
  assert message.startswith(
    "error: no such config file: configs/nope.py (the configs in configs/: "
  )
  assert "smoke.py" in message and "dark_lsp.py" in message and "__init__" not in message
  r = launch("--mode=train", "--config=nowhere/x.py", f"--workdir={tmp_path}")
  assert _one_line_error(r) == "error: no such config file: nowhere/x.py (no folder nowhere/)"
