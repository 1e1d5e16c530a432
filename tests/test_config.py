"""Configs: every key's role (network, training, run-time), what a saved run lets the
command line override, the value checks (finite floats, ranges), config.json read back
with the flags' checks, and a work directory that is a file.

The command-line side (real ``launch.py`` processes) is in ``test_config_cli.py``.
"""

from __future__ import annotations

import json
import math
import pathlib
import types

import cv2
import numpy as np
import pytest

from configs import smoke
from unipose_jax import config_defaults, keypoint_sets, media, modes, predict, run_config
from unipose_jax.run import NotAWorkdirError, Run, check_workdir

MAIN_CONFIG = pathlib.Path(__file__).parent / "data" / "config_main_8106d4f.json"


# ----------------------------------------------------------------------------- key roles


def test_every_key_has_exactly_one_role_and_the_lists_do_not_overlap():
  keys = list(run_config.flat_keys(config_defaults.get_config()))
  assert len(keys) > 60
  assert [k for k in keys if config_defaults.key_role(k) is None] == []
  lists = (config_defaults.NETWORK_KEYS, config_defaults.TRAINING_KEYS,
           config_defaults.RUN_TIME_KEYS)  # fmt: skip
  prefixes = [p for lst in lists for p in lst]
  assert len(prefixes) == len(set(prefixes))  # no prefix in two lists
  # Every listed prefix names a real key or section (the keypoint set's section is empty
  # in the defaults: a run fills it with the set it resolved).
  sections = {k.rsplit(".", i)[0] for k in keys for i in range(3)}
  assert set(prefixes) <= sections | set(keys) | {run_config.KEYPOINTS_SECTION}
  assert config_defaults.get_config().keypoints.to_dict() == {}
  resolved = Run(smoke.get_config()).resolved_config()
  for key in run_config.flat_keys(resolved):
    assert config_defaults.key_role(key) is not None, key
  assert config_defaults.key_role("keypoints.flip_pairs") == "network"
  assert config_defaults.key_role("data.flip_pairs") == "training"


@pytest.mark.parametrize(
  "key, role",
  [
    ("model.decoder_features", "network"), ("model.box_head", "network"),
    ("model.stage_sizes", "network"), ("codec.sigma", "network"),
    ("codec.encoding", "network"), ("data.input_size", "network"),
    ("model.dtype", "run-time"), ("model.pretrained", "training"),
    ("model.init_from", "training"), ("codec.decoding", "run-time"),
    ("codec.dark_kernel", "run-time"), ("codec.eval_decodings", "run-time"),
    ("predict.second_pass", "run-time"), ("predict.max_pixels", "run-time"),
    ("data.data_dir", "run-time"), ("data.eval_worker_count", "run-time"),
    ("eval_batch_size", "run-time"), ("flip_test", "run-time"),
    ("batch_size", "training"), ("seed", "training"), ("data.augment.rotation_deg", "training"),
    ("optimizer.learning_rate", "training"), ("data.worker_count", "training"),
    ("no.such.key", None),
  ],
)  # fmt: skip
def test_key_role(key, role):
  assert config_defaults.key_role(key) == role


# ----------------------------------------------------------------------------- overrides


@pytest.fixture
def main_config(tmp_path):
  """A loader of the main branch's config.json (8106d4f): a fresh ConfigDict per call."""
  (tmp_path / "saved").mkdir()
  (tmp_path / "saved" / "config.json").write_bytes(MAIN_CONFIG.read_bytes())
  return lambda: run_config.load(str(tmp_path / "saved"))


def test_run_time_overrides_pass_network_keys_are_refused_with_the_trained_value(main_config):
  saved, config = main_config(), main_config()
  config.predict.second_pass = False
  config.predict.max_pixels = 5
  config.eval_batch_size = 4
  config.data.data_dir = "/elsewhere"
  config.codec.eval_decodings = ("dark",)
  config.model.dtype = "bfloat16"
  config.flip_test = True
  for mode in ("eval", "predict", "export", "train"):
    run_config.check_overrides(saved, config, "runs/x", mode)
  config.model.decoder_features = 24
  config.codec.encoding = "quantized"
  with pytest.raises(run_config.ConfigError) as e:
    run_config.check_overrides(saved, config, "runs/x", "predict")
  assert str(e.value) == (
    "cannot override the saved run's config:\n"
    "  codec.encoding='quantized': the network was trained with 'unbiased' "
    "(runs/x/config.json); a new value needs a new run\n"
    "  model.decoder_features=24: the network was trained with 256 (runs/x/config.json); "
    "a new value needs a new run"
  )


def test_training_keys_are_refused_outside_training_naming_the_nearest_run_time_key(main_config):
  saved, config = main_config(), main_config()
  config.batch_size = 64
  with pytest.raises(run_config.ConfigError) as e:
    run_config.check_overrides(saved, config, "runs/x", "eval")
  assert str(e.value).endswith(
    "batch_size=64: only training reads it, not --mode=eval; did you mean 'eval_batch_size'?"
  )
  run_config.check_overrides(saved, config, "runs/x", "train")  # a resumed run may
  config.optimizer.learning_rate = 0.5
  with pytest.raises(run_config.ConfigError, match=r"learning_rate=0.5: only training reads it"):
    run_config.check_overrides(saved, config, "runs/x", "export")


def test_a_given_config_with_another_encoding_is_refused(main_config):
  saved, given = main_config(), main_config()
  given.codec.encoding = "quantized"
  with pytest.raises(run_config.ConfigError, match="codec.encoding: run has 'unbiased'"):
    run_config.check_matches(given, saved, "runs/x")


# ----------------------------------------------------------------------------- value checks


@pytest.mark.parametrize(
  "key, value, fault",
  [
    ("optimizer.learning_rate", math.nan, "must be a finite number > 0"),
    ("optimizer.learning_rate", math.inf, "must be a finite number > 0"),
    ("codec.sigma", math.nan, "must be a finite number > 0"),
    ("optimizer.weight_decay", math.inf, "must be a finite number >= 0"),
    ("loss.background_weight", -math.inf, "must be a finite number >= 0"),
    ("data.augment.scale_range", (0.7, math.nan), "must be (low, high), 0 < low <= high"),
    ("data.augment.scale_range", (1.3, 0.7), "must be (low, high), 0 < low <= high"),
    ("data.mixture_weights", (math.nan,), "need >= 0, sum > 0"),
    ("model.decoder_dropout", (0.5, math.nan), "must be 2 rates in [0, 1]"),
    ("predict.score_threshold", math.nan, "must be a finite number"),
    ("data.augment.rotation_deg", -1.0, "must be a finite number >= 0 and <= 180"),
    ("data.augment.flip_prob", 1.5, "must be a finite number >= 0 and <= 1"),
    ("seed", -1, "must be an integer >= 0"),
    ("predict.crop_margin", -1.0, "must be a finite number > 0"),
    ("predict.crop_margin", 0.0, "must be a finite number > 0"),
    ("predict.max_pixels", 0, "must be an integer >= 1"),
    ("codec.dark_kernel", 4, "must be 0 (the default) or odd and > 0"),
    ("model.stage_sizes", (1, 1), "must be () (the default) or 4 integers >= 1"),
    ("model.wasp_rates", (6, 0), "must be () (the default) or integers >= 1"),
    ("model.backbone_depth", 19, "expected one of 18, 34, 50, 101, 152"),
    ("data.eval_worker_count", -1, "must be an integer >= 0"),
    ("optimizer.decay_steps", (200, 170), "must be increasing integers >= 1"),
    ("optimizer.decay_steps", (0,), "must be increasing integers >= 1"),
    ("optimizer.decay_steps", (10, 10), "must be increasing integers >= 1"),
  ],
)  # fmt: skip
def test_every_bad_value_is_named(key, value, fault):
  c = smoke.get_config()
  c.model.stage_sizes = ()  # the standard sizes of backbone_depth (which is then checked)
  section, _, name = key.rpartition(".")
  target = c
  for part in section.split(".") if section else ():
    target = target[part]
  with c.unlocked():
    target[name] = value
  with pytest.raises(run_config.ConfigError) as e:
    run_config.validate(c)
  assert str(e.value) == f"bad config:\n  {key}={value!r}: {fault}"  # named once


def test_run_time_checks_apply_outside_training_and_training_ones_do_not():
  c = smoke.get_config()
  c.seed, c.optimizer.learning_rate = -1, -1.0  # training's: eval, predict, export ignore
  run_config.validate(c, training=False)
  c.predict.crop_margin = -1.0  # predict's: refused wherever the config is checked
  with pytest.raises(run_config.ConfigError, match="predict.crop_margin=-1.0"):
    run_config.validate(c, training=False)


def test_every_shipped_config_and_an_old_run_validate(main_config):
  import importlib

  for path in sorted(pathlib.Path(__file__).parents[1].glob("configs/*.py")):
    if path.stem != "__init__":
      run_config.validate(importlib.import_module(f"configs.{path.stem}").get_config())
  run_config.validate(main_config())


# ----------------------------------------------------------------------------- config.json


def _workdir(tmp_path, text: str) -> str:
  (tmp_path / "config.json").write_text(text)
  return str(tmp_path)


@pytest.mark.parametrize(
  "text, fault",
  [
    ("[]", "not a config (a JSON object expected, got [])"),
    ("null", "not a config (a JSON object expected, got null)"),
    ('"runs/x"', 'not a config (a JSON object expected, got "runs/x")'),
    ("{", "not a readable config (Expecting property name"),
    ('{"batch_size": "8"}', 'batch_size="8": expected an integer'),
    ('{"flip_test": 1}', "flip_test=1: expected true or false"),
    ('{"eval_batch_size": 8.5}', "eval_batch_size=8.5: expected an integer"),
    ('{"eval_batch_size": true}', "eval_batch_size=true: expected an integer"),
    ('{"data": {"data_dir": null}}', "data.data_dir=null: expected a string"),
    ('{"predict": 3}', "predict=3: expected a section (a JSON object)"),
    ('{"codec": {"eval_decodings": "dark"}}',
     'codec.eval_decodings="dark": expected a list of strings'),
    ('{"model": {"stage_sizes": [1, [2]]}}',
     "model.stage_sizes=[1, [2]]: expected a list of numbers or strings"),
    ('{"model": {"decoder_dropout": [0.5, "x"]}}',
     'model.decoder_dropout=[0.5, "x"]: expected a list of numbers'),
    ('{"predict": {"secnd_pass": false}}',
     "unknown key 'predict.secnd_pass'; did you mean 'predict.second_pass'?"),
    ('{"zzz": 1}', "unknown key 'zzz'"),
  ],
)  # fmt: skip
def test_a_bad_config_json_is_one_line_naming_the_file_and_the_key(tmp_path, text, fault):
  workdir = _workdir(tmp_path, text)
  with pytest.raises(run_config.ConfigError) as e:
    Run.from_workdir(workdir)
  assert str(e.value).startswith(f"{tmp_path / 'config.json'}: {fault}"), str(e.value)
  assert "\n" not in str(e.value)


def test_config_json_values_get_the_flags_checks_and_numbers_load_as_the_defaults_types(tmp_path):
  saved = json.loads(MAIN_CONFIG.read_text())
  saved["optimizer"]["learning_rate"] = 1  # an int where the default is a float
  saved["codec"]["sigma"] = 3  # the same
  workdir = _workdir(tmp_path, json.dumps(saved))
  config = Run.from_workdir(workdir).config
  assert type(config.codec.sigma) is float and config.codec.sigma == 3.0
  assert config.model.decoder_dropout == (0.5, 0.1) and config.data.train_sources == ("lsp",)
  saved["predict"] = {"crop_margin": -1.0}  # as training before these checks saved it
  saved["codec"]["sigma"] = float("nan")  # json writes NaN, and reads it back
  workdir = _workdir(tmp_path, json.dumps(saved))
  with pytest.raises(run_config.ConfigError) as e:
    Run.from_workdir(workdir)
  assert str(e.value) == (
    f"bad config ({tmp_path / 'config.json'}):\n"
    "  codec.sigma=nan: must be a finite number > 0\n"
    "  predict.crop_margin=-1.0: must be a finite number > 0"
  )


def test_a_workdir_that_is_a_file_is_named(tmp_path):
  (tmp_path / "f").write_text("x")
  for workdir in (tmp_path / "f", tmp_path / "f" / "run"):
    with pytest.raises(NotAWorkdirError) as e:
      Run.from_workdir(str(workdir))
    assert (
      str(e.value) == f"{workdir}: not a work directory ({tmp_path / 'f'} is a file, not a folder)"
    )
  check_workdir(str(tmp_path / "new" / "run"))  # missing: fine, training creates it
  check_workdir(str(tmp_path))


# ----------------------------------------------------------------------------- max_pixels


def test_predict_reads_every_image_under_the_runs_max_pixels(tmp_path, monkeypatch):
  assert config_defaults.get_config().predict.max_pixels == media.MAX_PIXELS == 120_000_000
  cv2.imwrite(str(tmp_path / "a.png"), np.zeros((50, 70, 3), np.uint8))  # 3500 pixels
  k = keypoint_sets.LSP.num_joints
  answer = predict.Prediction(
    np.zeros((k, 2)), np.zeros(k), np.zeros(k, bool), None, False,
    keypoint_set=keypoint_sets.LSP,
  )  # fmt: skip
  monkeypatch.setattr(
    predict.Predictor, "from_run", classmethod(lambda cls, run: lambda im: answer)
  )
  reads = []
  read_image = media.read_image
  monkeypatch.setattr(
    media, "read_image", lambda p, m=media.MAX_PIXELS: reads.append(m) or read_image(p, m)
  )
  config = smoke.get_config()
  run = types.SimpleNamespace(config=config, workdir=str(tmp_path), is_video=False)
  config.predict.max_pixels = 3500
  out = modes.predict_inputs(run, [str(tmp_path / "a.png")], str(tmp_path / "out"))
  assert len(out["images"]) == 1 and reads == [3500]  # the image was read under the run's limit
  config.predict.max_pixels = 3499
  with pytest.raises(
    media.PredictInputError, match=r"70x50 = 0.0035 MP is over the limit of 0.003499 MP"
  ):
    modes.predict_inputs(run, [str(tmp_path / "a.png")], str(tmp_path / "out"))
  items = media.collect_inputs([str(tmp_path / "a.png")])
  with pytest.raises(media.PredictInputError, match="over the limit of 0.0001 MP"):
    media.predict_all(items, lambda im: answer, str(tmp_path / "o2"), max_pixels=100)
