"""A run with a keypoint set other than LSP's: K and the names reach every output.

The run's set is resolved from its training sources (``datasets.keypoint_set``); here the
small synthetic set is relabelled (:class:`Relabelled`, 13 of its 14 joints under new names)
and the resolution answers with that set, so a real training, evaluation, prediction and
export run end to end with ``K = 13``. A set whose names say no side has no flip pairs:
it trains without flip augmentation and evaluates without the flip test, said once.
The flip itself (augmentation and test) is checked by hand on small sets with pairs.
"""

from __future__ import annotations

import csv
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SMALL, tiny_network

from configs import smoke
from unipose_jax import datasets, inference, keypoint_sets, run_config, train
from unipose_jax import run as run_lib
from unipose_jax import transforms as tr
from unipose_jax.run import Run

# ----------------------------------------------------------------------------- the sets

#: The LSP joints kept (neck, 12, dropped), in their new order.
KEPT = (13, 8, 9, 7, 10, 6, 11, 2, 3, 1, 4, 0, 5)
#: A 13-joint set whose names say nothing about sides: no flip pairs.
CUSTOM = keypoint_sets.KeypointSet(
  name="custom13",
  joint_names=tuple(f"p{i}" for i in range(13)),
  limbs=((0, 1), (1, 3), (3, 5), (0, 2), (2, 4), (4, 6), (1, 7), (2, 8), (7, 9), (9, 11)),
  pck_normaliser="torso",
  torso=(2, 7),  # LSP's left shoulder to right hip, as relabelled
  pckh_normaliser="head_segment",
  head=(0, 1),
  best_metric="pck@0.2",
)


class Relabelled:
  """A source whose records carry joints ``KEPT`` of another source's, in that order."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    record = dict(self.source[index])
    for key in ("keypoints", "visible", "labeled"):
      record[key] = np.asarray(record[key])[list(KEPT)]
    return record


@pytest.fixture
def custom_set(monkeypatch):
  """The small synthetic set relabelled as :data:`CUSTOM` (every source and the set)."""
  real = run_lib.data_source
  monkeypatch.setattr(run_lib, "data_source", lambda *a: Relabelled(real(*a)))
  monkeypatch.setattr(datasets, "keypoint_set", lambda name, data_dir: CUSTOM)
  return CUSTOM


def small_config(data_dir):
  c = tiny_network(smoke.get_config())
  c.data.data_dir = data_dir
  c.data.train_sources = (SMALL,)
  c.data.eval_source = SMALL
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_train_steps = 2
  c.log_every = 1
  c.eval_every = 0
  c.num_example_images = 1
  c.calibrate_presence = False
  c.flip_test = True  # asked for, but the set cannot: said once, then off
  c.data.augment.flip_prob = 0.5
  return c


# ----------------------------------------------------------------------------- resolution


def test_the_run_resolves_its_set_from_the_sources_and_refuses_a_mixture(monkeypatch, tmp_path):
  config = small_config(str(tmp_path))
  assert Run(config).keypoint_set is keypoint_sets.LSP  # the synthetic set is LSP's
  assert Run(config).best_metric == "dark/pck@0.2"
  sets = {SMALL: keypoint_sets.LSP, "other": keypoint_sets.PENN_ACTION}
  monkeypatch.setattr(datasets, "keypoint_set", lambda name, data_dir: sets[name])
  config.data.train_sources = (SMALL, "other")
  config.data.train_splits = ("train", "train")
  config.data.mixture_weights = (1.0, 1.0)
  with pytest.raises(run_config.ConfigError) as e:
    _ = Run(config).keypoint_set
  assert str(e.value) == (
    "data.train_sources: data sources 'synthetic/small' (lsp, 14 joints) and 'other' "
    "(penn_action, 13 joints) have different keypoint sets; one run trains on one set"
  )
  # The best checkpoint is picked by the set's metric: PCKh@0.5 for MPII, AP for COCO.
  config.data.train_sources, sets["other"] = ("other",), keypoint_sets.MPII
  assert Run(config).best_metric == "dark/pckh@0.5"
  sets["other"] = keypoint_sets.COCO
  assert Run(config).best_metric == "dark/AP"


def test_an_explicit_flip_map_is_checked_against_k(custom_set, tmp_path):
  config = small_config(str(tmp_path))
  config.data.flip_pairs = ((1, 2), (3, 4))
  kset = Run(config).keypoint_set
  assert kset.flip_pairs == ((1, 2), (3, 4)) and kset.joint_names == CUSTOM.joint_names
  np.testing.assert_array_equal(kset.flip_permutation, [0, 2, 1, 4, 3, *range(5, 13)])
  config.data.flip_pairs = ((1, 13),)
  with pytest.raises(run_config.ConfigError, match=r"^data.flip_pairs=\(\(1, 13\),\): .*0\.\.12"):
    _ = Run(config).keypoint_set
  config.data.flip_pairs = ((1, 2), (2, 3))
  with pytest.raises(run_config.ConfigError, match=r"joints \[2\] are in two pairs"):
    run_config.validate(config)


def test_the_keypoints_section_round_trips_and_is_a_network_key(tmp_path):
  config = smoke.get_config()
  resolved = Run(config).resolved_config()
  resolved.keypoints = run_config.keypoint_section(keypoint_sets.MPII)
  run_config.save(resolved, str(tmp_path))
  saved = run_config.load(str(tmp_path))
  assert Run(saved, str(tmp_path), saved).keypoint_set == keypoint_sets.MPII
  # A given config that has not resolved a set takes the run's; one that differs is refused.
  run_config.check_matches(smoke.get_config(), saved, str(tmp_path))
  other = Run(smoke.get_config()).resolved_config()  # LSP
  with pytest.raises(run_config.ConfigError, match=r"keypoints\.joint_names: run has"):
    run_config.check_matches(other, saved, str(tmp_path))
  changed = run_config.load(str(tmp_path))
  changed.keypoints.flip_pairs = [[0, 5]]
  with pytest.raises(run_config.ConfigError, match="keypoints.flip_pairs=.*a new run"):
    run_config.check_overrides(saved, changed, str(tmp_path), "eval")
  # A malformed section is one line naming the file and the section.
  raw = json.loads((tmp_path / "config.json").read_text())
  raw["keypoints"]["flip_pairs"] = [[0, 99]]
  (tmp_path / "config.json").write_text(json.dumps(raw))
  with pytest.raises(run_config.ConfigError, match=r"config.json: section 'keypoints': .*0\.\.15"):
    run_config.load(str(tmp_path))


# ----------------------------------------------------------------------------- flips by hand


def test_flip_augmentation_swaps_the_sets_left_and_right_channels():
  """A 5-joint set: nose, left/right eye, left/right hand. Its flip pairs, from the names,
  are (1, 2) and (3, 4): a flipped sample's joint k is the mirror image of joint perm[k]
  of the same sample unflipped, perm = [0, 2, 1, 4, 3] (worked by hand)."""
  kset = keypoint_sets.KeypointSet(
    "face5", ("nose", "left_eye", "right_eye", "Left Hand", "right-hand"),
    flip_pairs=keypoint_sets.flip_pairs_from_names(
      ("nose", "left_eye", "right_eye", "Left Hand", "right-hand")
    ),
  )  # fmt: skip
  assert kset.flip_pairs == ((1, 2), (3, 4))
  perm = [0, 2, 1, 4, 3]
  np.testing.assert_array_equal(kset.flip_permutation, perm)
  rng = np.random.default_rng(0)
  record = {
    "image": rng.integers(0, 255, (40, 50, 3), dtype=np.uint8),
    "keypoints": np.array([[25, 10], [20, 8], [30, 8], [10, 30], [40, 32]], np.float32),
    "labeled": np.array([True, True, True, False, True]),
  }
  s = 32
  flip = dataclasses_replace(tr.NO_AUGMENT, flip_prob=1.0)
  plain = tr.transform_train(record, np.random.default_rng(1), cfg=tr.NO_AUGMENT, input_size=s)
  flipped = tr.transform_train(
    record, np.random.default_rng(1), cfg=flip, input_size=s, flip_permutation=kset.flip_permutation
  )
  mirrored = plain["keypoints"].copy()
  mirrored[:, 0] = (s - 1) - mirrored[:, 0]  # the mirror about the input's centre column
  labeled = record["labeled"][perm]  # joint 4 of the flipped sample: the unlabeled left hand
  np.testing.assert_allclose(flipped["keypoints"][labeled], mirrored[perm][labeled], atol=1e-4)
  np.testing.assert_array_equal(flipped["keypoints"][~labeled], 0.0)
  np.testing.assert_array_equal(flipped["weights"], plain["weights"][perm])
  assert flipped["weights"][4] == 0  # the unlabeled left hand is now joint 4, right_hand's slot
  np.testing.assert_array_equal(flipped["image"], plain["image"][:, ::-1])
  with pytest.raises(ValueError, match="flip needs the keypoint set's flip permutation"):
    tr.transform_train(record, np.random.default_rng(1), cfg=flip, input_size=s)


def dataclasses_replace(cfg, **changes):
  import dataclasses  # noqa: PLC0415

  return dataclasses.replace(cfg, **changes)


class ScaledChannels:
  """A stand-in network: map ``c`` of an image is its red channel times ``c`` (background
  0, joints 1..K), so a flip test's result is worked out by hand."""

  dtype = jnp.float32

  def __init__(self, num_joints):
    self.num_joints = num_joints

  def apply(self, variables, x, train):
    del variables, train
    red = x[..., :1]
    return red * jnp.arange(self.num_joints + 1, dtype=jnp.float32)


def test_the_flip_test_averages_with_the_sets_permutation():
  model = ScaledChannels(5)
  images = np.random.default_rng(3).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
  perm = np.array([0, 2, 1, 4, 3])
  got = inference.predict_heatmaps(None, images, model=model, flip_test=True, flip_permutation=perm)
  red = (images[..., :1].astype(np.float32) / 255 - 0.485) / 0.229
  # Joint k (channel k + 1) averages itself with its partner's map of the mirrored image,
  # mirrored back: red * ((k + 1) + (perm[k] + 1)) / 2.
  want = red * ((np.arange(5) + 1) + (perm + 1)) / 2
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  plain = inference.predict_heatmaps(None, images, model=model, flip_test=False)
  np.testing.assert_allclose(plain, red * (np.arange(5) + 1), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="flip test needs the keypoint set's flip permutation"):
    inference.predict_heatmaps(None, images, model=model, flip_test=True)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_13_joint_set_without_flip_pairs_trains_evaluates_predicts_and_exports(
  custom_set, small_data_dir, tmp_path, capsys
):
  from unipose_jax import modes  # noqa: PLC0415
  from unipose_jax.predict import Predictor  # noqa: PLC0415

  workdir = str(tmp_path / "run")
  config = small_config(small_data_dir)
  summary = train.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  # Said once, for both flips (the run asks for both): the set has no pairs, so neither runs.
  note = (
    "note: keypoint set 'custom13' has no left/right flip pairs: no flip augmentation and no "
    "flip test (data.augment.flip_prob and flip_test are ignored; give pairs with "
    "--config.data.flip_pairs)\n"
  )
  assert out.count("has no left/right flip pairs") == 1 and note in out, out

  saved = json.loads(open(os.path.join(workdir, "config.json")).read())
  assert saved["keypoints"] == CUSTOM.to_dict()
  run = Run.from_workdir(workdir)
  assert run.keypoint_set == CUSTOM and run.num_joints == 13
  assert run.augment_config().flip_prob == 0.0 and run.flip_test is False
  assert run.best_metric == "dark/pck@0.2"
  model = run.model()
  variables, step = run.load_variables()
  assert step == 2
  maps = model.apply(variables, jnp.zeros((1, 32, 32, 3)), train=False)
  assert maps.shape == (1, 4, 4, 13 + 1)  # background + K

  # Evaluation: the set's names in the files, 13 joints a row.
  dark = summary["dark"]
  assert {k.split("/", 1)[1] for k in dark if k.startswith("pck@0.2/")} == set(CUSTOM.joint_names)
  assert dark["num_joints"] == 32 * 13  # every joint of the 32 test images counted
  rows = list(csv.DictReader(open(os.path.join(workdir, "eval", "step_2", "predictions.csv"))))
  assert [r["joint_name"] for r in rows[:13]] == list(CUSTOM.joint_names)
  assert len(rows) == len(run.eval_decodings) * 32 * 13
  assert os.path.exists(os.path.join(workdir, "eval", "step_2", "example_0.png"))

  # Prediction: the Predictor's JSON names the set's joints.
  predictor = Predictor.from_workdir(workdir)
  image = np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)
  record = predictor(image).to_json()
  assert record["joint_names"] == list(CUSTOM.joint_names) and len(record["keypoints"]) == 13

  # Export: unipose.json says K, the names and (no) flip pairs; ONNX has K + 1 channels.
  capsys.readouterr()
  path = modes.export_checkpoint(run, os.path.join(workdir, "unipose.onnx"))
  settings = json.loads(open(os.path.join(workdir, "unipose.json")).read())
  assert settings["num_joints"] == 13 and settings["joint_names"] == list(CUSTOM.joint_names)
  assert settings["flip_pairs"] == []
  from unipose_jax import deploy  # noqa: PLC0415

  keypoints, scores = deploy.predict(
    deploy.onnx_runner(path), [image], settings["input_size"], num_joints=13, decoding="argmax"
  )
  assert keypoints.shape == (1, 13, 2) and scores.shape == (1, 13)
