"""Release folders (unipose_jax/release.py): what inference needs of a run, in <= 8 files.

The fast tests write and read releases of a tiny network's variables; the slow ones turn
the shared trained smoke run into a release with ``launch.py --mode=export
--format=release`` and check that eval, predict, export and ``Predictor.from_workdir``
give from it what they give from the full run folder.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from conftest import copy_of, launch, tiny_network
from PIL import Image

from configs import smoke
from unipose_jax import keypoint_sets, release, run_config
from unipose_jax.run import Run, build_model


@pytest.fixture(scope="module")
def tiny():
  """(config, variables) of the suite's tiny network, random weights and statistics."""
  config = tiny_network(smoke.get_config())
  model = build_model(config, keypoint_sets.LSP.num_joints)  # the synthetic set is LSP's
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda a: np.asarray(a) + rng.normal(0, 0.1, a.shape), variables)
  variables = jax.tree.map(lambda a: a.astype(np.float32), variables)
  return config, variables


def _leaves(tree):
  return jax.tree_util.tree_leaves_with_path(tree)


def test_float32_round_trip_is_exact_and_folder_is_small(tiny, tmp_path):
  config, variables = tiny
  out = tmp_path / "rel"
  manifest = release.write_release(str(out), config, variables, 7, source="runs/x")
  names = sorted(os.listdir(out))
  assert names == sorted(["config.json", "release.json", manifest["parts"][0]["file"]])
  assert manifest["checkpoint_step"] == 7 and manifest["params_dtype"] == "float32"
  got, step = release.load_release(str(out))
  assert step == 7
  assert jax.tree.structure(got) == jax.tree.structure(variables)
  for (path, a), (_, b) in zip(_leaves(got), _leaves(variables)):
    assert a.dtype == np.float32, path
    np.testing.assert_array_equal(a, b, err_msg=str(path))
  # config.json is the run's config (it loads back to the same values).
  assert run_config.load(str(out)).to_dict() == config.to_dict()


def test_bfloat16_params_are_the_rounded_weights_and_statistics_stay_float32(tiny, tmp_path):
  config, variables = tiny
  out = tmp_path / "rel16"
  manifest = release.write_release(str(out), config, variables, 3, dtype="bfloat16")
  f32 = release.write_release(str(tmp_path / "rel32"), config, variables, 3)
  assert manifest["params_dtype"] == "bfloat16"
  n_params = sum(a.size for a in jax.tree.leaves(variables["params"]))
  # Half of the params' bytes go (msgpack framing aside).
  assert f32["bytes"] - manifest["bytes"] == pytest.approx(2 * n_params, rel=0.02)
  got, _ = release.load_release(str(out))
  for (path, a), (_, b) in zip(_leaves(got["params"]), _leaves(variables["params"])):
    want = b.astype(ml_dtypes.bfloat16).astype(np.float32)  # an independent rounding
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, want, err_msg=str(path))
  for (_, a), (_, b) in zip(_leaves(got["batch_stats"]), _leaves(variables["batch_stats"])):
    np.testing.assert_array_equal(a, b)


def test_parts_split_join_and_replace_the_previous_release(tiny, tmp_path, monkeypatch):
  config, variables = tiny
  out = str(tmp_path / "rel")
  first = release.write_release(out, config, variables, 1)
  size = first["bytes"]
  monkeypatch.setattr(release, "PART_BYTES", size // 3 + 1)  # 3 parts
  scaled = jax.tree.map(lambda a: a * 2, variables)
  second = release.write_release(out, config, scaled, 2)
  assert [p["bytes"] for p in second["parts"]] == [size // 3 + 1] * 2 + [size - 2 * (size // 3 + 1)]
  # The first release's part is gone; the folder holds the new parts, config and manifest.
  assert sorted(os.listdir(out)) == sorted(
    ["config.json", "release.json"] + [p["file"] for p in second["parts"]]
  )
  got, step = release.load_release(out)
  assert step == 2
  for (_, a), (_, b) in zip(_leaves(got), _leaves(scaled)):
    np.testing.assert_array_equal(a, b)


def test_too_many_parts_are_refused_before_anything_is_written(tiny, tmp_path, monkeypatch):
  config, variables = tiny
  monkeypatch.setattr(release, "PART_BYTES", 1000)
  out = tmp_path / "rel"
  with pytest.raises(release.ReleaseError, match=r"more than the 6 a release holds; try "):
    release.write_release(str(out), config, variables, 1)
  assert not out.exists()


def test_damaged_or_foreign_folders_are_named(tiny, tmp_path):
  config, variables = tiny
  out = tmp_path / "rel"
  manifest = release.write_release(str(out), config, variables, 1)
  part = out / manifest["parts"][0]["file"]
  data = bytearray(part.read_bytes())
  data[len(data) // 2] ^= 0xFF
  part.write_bytes(bytes(data))
  with pytest.raises(release.ReleaseError, match=f"release part {part} is damaged"):
    release.load_release(str(out))
  part.unlink()
  with pytest.raises(release.ReleaseError, match=f"release part {part} cannot be read"):
    release.load_release(str(out))
  (out / "release.json").write_text('{"format": "something else"}')
  with pytest.raises(release.ReleaseError, match="not a release manifest"):
    release.load_release(str(out))
  other = tmp_path / "run"
  other.mkdir()
  (other / "notes.txt").write_text("x")
  with pytest.raises(release.ReleaseError, match=f"{other} exists and is not a release folder"):
    release.write_release(str(other), config, variables, 1)
  assert sorted(os.listdir(other)) == ["notes.txt"]


def test_a_run_on_a_release_folder_loads_its_variables(tiny, tmp_path):
  config, variables = tiny
  out = str(tmp_path / "rel")
  release.write_release(out, config, variables, 5)
  run = Run.from_workdir(out)
  assert run.is_release
  got, step = run.load_variables()
  assert step == 5
  np.testing.assert_array_equal(
    jax.tree.leaves(got["params"])[0], jax.tree.leaves(variables["params"])[0]
  )
  with pytest.raises(
    release.ReleaseError, match="release of checkpoint 5: it holds no checkpoint 3"
  ):
    run.load_variables(step=3)


# ----------------------------------------------------------------------------- the CLI


def _image(tmp_path):
  path = tmp_path / "a.png"
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)
  return path


def _eval_metrics(folder, step=4):
  return json.loads((folder / "eval" / f"checkpoint_{step}" / "eval_metrics.json").read_text())


@pytest.mark.slow
def test_release_folder_gives_the_full_runs_eval_predict_and_export(trained_run, tmp_path):
  from unipose_jax import Predictor

  run_dir = copy_of(trained_run, tmp_path / "run")
  rel, rel16 = tmp_path / "release", tmp_path / "release16"
  r = launch("--mode=export", f"--workdir={run_dir}", "--format=release", f"--output={rel}")
  assert r.returncode == 0, r.stderr
  assert f"wrote release {rel} (checkpoint 4, float32 parameters" in r.stdout
  names = sorted(os.listdir(rel))
  assert len(names) <= release.MAX_FILES and "config.json" in names and "release.json" in names
  assert all(os.path.getsize(rel / n) <= 16 * 2**20 for n in names)
  # The presence calibration travels in config.json.
  saved = json.loads((rel / "config.json").read_text())
  assert saved["predict"]["presence_score"] and saved["predict"]["presence_step"] == 4
  assert saved == json.loads((run_dir / "config.json").read_text())
  # A release of the release, in bfloat16.
  r = launch("--mode=export", f"--workdir={rel}", "--format=release", "--release_dtype=bfloat16",
             f"--output={rel16}")  # fmt: skip
  assert r.returncode == 0, r.stderr

  for folder in (run_dir, rel, rel16):
    r = launch("--mode=eval", f"--workdir={folder}")
    assert r.returncode == 0, r.stderr
  full, same, half = (_eval_metrics(f) for f in (run_dir, rel, rel16))
  assert full == same  # every decoder's every number
  for decoder in full:  # bfloat16 weights: within 2 points of PCK, same counts
    assert half[decoder]["num_joints"] == full[decoder]["num_joints"]
    assert abs(half[decoder]["pck@0.2"] - full[decoder]["pck@0.2"]) <= 0.02, decoder

  image = _image(tmp_path)
  for folder, name in ((run_dir, "p_run"), (rel, "p_rel")):
    r = launch("--mode=predict", f"--workdir={folder}", f"--inputs={image}",
               f"--output={tmp_path / name}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "predicting with checkpoint 4 of" in r.stdout
  p_run, p_rel = (json.loads((tmp_path / n / "predictions.json").read_text())[0]
                  for n in ("p_run", "p_rel"))  # fmt: skip
  assert p_rel["keypoints"] == p_run["keypoints"] and p_rel["scores"] == p_run["scores"]
  assert p_rel["person_found"] == p_run["person_found"]

  pixels = np.asarray(Image.open(image).convert("RGB"))
  a, b, c = (Predictor.from_workdir(str(f))(pixels) for f in (run_dir, rel, rel16))
  np.testing.assert_array_equal(a.keypoints, b.keypoints)
  np.testing.assert_array_equal(a.scores, b.scores)
  # bfloat16 weights: keypoints within 0.5 original pixels, scores within 0.02.
  np.testing.assert_allclose(c.keypoints, a.keypoints, atol=0.5)
  np.testing.assert_allclose(c.scores, a.scores, atol=0.02)

  onnx_run, onnx_rel = tmp_path / "run.onnx", tmp_path / "rel.onnx"
  for folder, path in ((run_dir, onnx_run), (rel, onnx_rel)):
    r = launch("--mode=export", f"--workdir={folder}", f"--output={path}")
    assert r.returncode == 0, r.stderr
  assert onnx_run.read_bytes() == onnx_rel.read_bytes()
  assert onnx_run.with_suffix(".json").read_text() == onnx_rel.with_suffix(".json").read_text()


@pytest.mark.slow
def test_release_errors_are_one_line(trained_run, tmp_path):
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "x.txt").write_text("keep")
  r = launch("--mode=export", f"--workdir={trained_run}", "--format=release", f"--output={busy}")
  assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
  assert f"error: release output {busy} exists and is not a release folder" in r.stderr
  assert (busy / "x.txt").read_text() == "keep"
  r = launch("--mode=eval", f"--workdir={trained_run}", "--format=release")
  assert r.returncode == 2 and "--format and --release_dtype are for --mode=export" in r.stderr
  r = launch("--mode=export", f"--workdir={trained_run}", "--release_dtype=bfloat16",
             f"--output={tmp_path / 'm.onnx'}")  # fmt: skip
  assert r.returncode == 2 and "--release_dtype is for --format=release" in r.stderr, r.stderr
