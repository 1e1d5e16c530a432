"""A run's facts (unipose_jax.run.Run): config loading (old work directories included),
model and codec, the best-checkpoint metric, export and predictor settings; the
command-line modes' messages."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
from conftest import copy_of

from configs import smoke
from unipose_jax import datasets, keypoint_sets, modes, run_config
from unipose_jax.run import NoConfigError, Run

#: ``config.json`` as the main branch at 8106d4f writes it, for configs/dark_lsp_box.py
#: (its ``codec.dark_kernel`` is 0, "the default").
MAIN_CONFIG = pathlib.Path(__file__).parent / "data" / "config_main_8106d4f.json"


def _old_workdir(tmp_path, drop=("predict",)) -> str:
  """A work directory holding the main branch's config.json, less the sections in
  ``drop`` (as a version before they existed would have written it)."""
  saved = json.loads(MAIN_CONFIG.read_text())
  for key in drop:
    del saved[key]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  return str(tmp_path)


def test_an_old_config_json_loads_with_its_missing_keys_from_the_package(tmp_path):
  run = Run.from_workdir(_old_workdir(tmp_path))
  assert run.config.model.box_head and run.config.data.input_size == 368
  assert run.config.predict.score_threshold == 0.2  # absent from the file: the default
  run_config.validate(run.config)
  assert run.best_metric == "dark/pck@0.2"
  assert run.eval_decodings == ("argmax", "shift", "upsample", "dark")
  model = run.model()
  assert model.box_head and model.backbone_depth == 101 and model.output_stride == 16
  # Sigma 3 and kernel 0 ("the default"): the codec, the export file and a re-saved
  # config all hold the size the codec uses, 2 * ceil(3 * 3) + 1 = 19.
  assert run.codec.dark_kernel_size == 19 and run.codec.heatmap_size == (46, 46)
  from unipose_jax import presence

  # Saved before keypoint sets: the run is LSP, and says so in its export settings.
  assert run.keypoint_set is keypoint_sets.LSP and model.num_joints == 14
  assert run.export_settings(7) == {
    "checkpoint_step": 7, "input_size": 368, "heatmap_size": [46, 46], "sigma": 3.0,
    "decoding": "dark", "dark_kernel": 19, "dark_sigma": 3.0, "box_head": True,
    "num_joints": 14, "joint_names": list(keypoint_sets.LSP.joint_names),
    "flip_pairs": [[0, 5], [1, 4], [2, 3], [6, 11], [7, 10], [8, 9]],
    # An old run is uncalibrated: the export carries the old rule's joint-score threshold.
    "presence_score": "", "presence_threshold": 0.0, "presence_weights": [],
    "presence_limbs": [
      [list(r), list(lft)] for r, lft in presence.symmetric_limbs(keypoint_sets.LSP.joint_names)
    ],
    "presence_step": -1, "score_threshold": 0.2,
  }  # fmt: skip
  resolved = run.resolved_config()
  assert resolved.codec.dark_kernel == 19 and run.config.codec.dark_kernel == 0
  assert resolved.keypoints.to_dict() == keypoint_sets.LSP.to_dict()
  settings = run.predictor_settings()
  assert settings["codec"] is run.codec and settings["box_head"] and settings["crop_margin"] == 1.25
  assert settings["keypoint_set"] is keypoint_sets.LSP


def test_a_given_config_is_checked_against_the_runs_and_none_at_all_is_named(tmp_path):
  workdir = _old_workdir(tmp_path)
  given = run_config.load(workdir)
  given.codec.decoding = "argmax"  # may differ: not what the checkpoint depends on
  run = Run.from_workdir(workdir, given)
  assert run.config.codec.decoding == "argmax"
  assert run.best_metric == "dark/pck@0.2"  # the metric training selected with
  given.model.decoder_features = 24
  with pytest.raises(run_config.ConfigError, match="model.decoder_features: run has 256"):
    Run.from_workdir(workdir, given)
  with pytest.raises(NoConfigError, match="config.json not found: not a run folder"):
    Run.from_workdir(str(tmp_path / "nothing"))
  assert Run.from_workdir(str(tmp_path / "nothing"), smoke.get_config()).saved is None


def test_prepare_names_the_missing_archives_and_the_command(tmp_path):
  with pytest.raises(datasets.DatasetError) as e:
    modes.prepare(["lsp"], str(tmp_path / "archives"), str(tmp_path / "tfds"))
  assert str(e.value).startswith(f"not prepared: lsp (archives not found in {tmp_path}/archives)")
  assert f"--manual_dir={tmp_path / 'archives'} --data_dir={tmp_path / 'tfds'}" in str(e.value)


@pytest.mark.slow
def test_an_old_work_directory_predicts_and_exports(trained_run, tmp_path):
  """The shared run with its config.json as the main branch wrote it (kernel size 0, no
  ``predict`` section): the predictor and an export work, the settings resolved."""
  import numpy as np

  from unipose_jax import Predictor

  workdir = copy_of(trained_run, tmp_path / "run")
  saved = json.loads((workdir / "config.json").read_text())
  saved["codec"]["dark_kernel"] = 0
  del saved["predict"]
  (workdir / "config.json").write_text(json.dumps(saved))
  predictor = Predictor.from_workdir(str(workdir))
  assert predictor.checkpoint_step == 4 and predictor.codec.dark_kernel_size == 13
  pred = predictor(np.full((40, 60, 3), 90, np.uint8))
  assert pred.keypoints.shape == (14, 2)
  out = tmp_path / "m.onnx"
  modes.export_checkpoint(Run.from_workdir(str(workdir)), str(out))
  settings = json.loads(out.with_suffix(".json").read_text())
  assert settings["dark_kernel"] == 13 and settings["dark_sigma"] == 2.0
  shutil.rmtree(workdir)
