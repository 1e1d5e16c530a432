"""A non-square network input, ``data.input_size = (height, width)``: its one normalisation
(``geometry.input_hw``), the config, the codec, the input affines against hand-worked
numbers, the model's output shape, the compile programs, and a tiny run end to end (train,
eval, predict, calibrate, export to ONNX and ``deploy``) at 64 x 48 (``configs/smoke_nonsquare``).

Shapes are ``(height, width)``; points are ``(x, y)``.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SMALL, launch

from configs import smoke, smoke_nonsquare
from unipose_jax import geometry, run_config, transforms
from unipose_jax.run import build_codec

HW = (64, 48)  # the tests' non-square input: 64 high, 48 wide


# ----------------------------------------------------------------------------- the size itself


def test_input_hw_takes_a_side_or_a_pair_and_names_the_key_on_anything_else():
  assert geometry.input_hw(368) == (368, 368)
  assert geometry.input_hw((256, 192)) == (256, 192)
  assert geometry.input_hw([256, 192]) == (256, 192)  # as config.json stores it
  assert geometry.input_hw(np.int64(64)) == (64, 64)
  for bad in (0, -8, 1.5, True, (256,), (256, 0), (256, 192.0), "256", (1, 2, 3)):
    with pytest.raises(ValueError) as e:
      geometry.input_hw(bad)
    assert str(e.value) == (
      f"data.input_size: expected a positive int or (height, width), got {bad!r}"
    )


def test_the_config_field_takes_an_int_or_a_pair_and_validate_checks_both():
  c = smoke.get_config()
  assert type(c.data.input_size) is int  # an int stays the square side
  c.data.input_size = (64, 48)
  run_config.validate(c)
  c.data.input_size = (64, 44)
  with pytest.raises(run_config.ConfigError, match=r"data.input_size=\(64, 44\): must be a mul"):
    run_config.validate(c)
  c.data.input_size = (64,)
  with pytest.raises(run_config.ConfigError, match=r"expected a positive int or \(height, wi"):
    run_config.validate(c)


def test_a_saved_pair_loads_as_a_pair_and_a_saved_int_as_the_same_int(tmp_path):
  for size in ((64, 48), 32):
    c = smoke.get_config()
    c.data.input_size = size
    run_config.save(c, str(tmp_path))
    stored = json.loads((tmp_path / run_config.CONFIG_FILE).read_text())["data"]["input_size"]
    assert stored == (list(size) if isinstance(size, tuple) else size)
    loaded = run_config.load(str(tmp_path))
    assert loaded.data.input_size == size and type(loaded.data.input_size) is type(size)


# ----------------------------------------------------------------------------- codec and model


def test_codec_round_trip_at_a_non_square_input():
  c = smoke_nonsquare.get_config()
  c.codec.sigma = 1.5
  codec = build_codec(c)
  assert codec.input_size == (64, 48) and codec.heatmap_size == (8, 6)
  # x spans the width (48), y the height (64): a swapped codec puts y = 60 off its map.
  xy = np.array([[[3.3, 5.1], [23.5, 31.5], [44.2, 60.7], [10.0, 58.25], [40.6, 2.9]]])
  heat, weights = codec.encode(jnp.asarray(xy, jnp.float32), jnp.ones(xy.shape[:-1]))
  assert heat.shape == (1, 8, 6, 5) and np.all(np.asarray(weights) == 1.0)
  got, _ = codec.decode(heat, "dark")
  np.testing.assert_allclose(np.asarray(got), xy, atol=0.1)  # < 1/80 of a heatmap pixel


def test_model_output_is_ceil_of_an_eighth_per_axis():
  from unipose_jax.models import heatmap_size  # noqa: PLC0415
  from unipose_jax.run import Run  # noqa: PLC0415

  assert heatmap_size((256, 192)) == (32, 24) and heatmap_size((70, 97)) == (9, 13)
  assert heatmap_size(368) == 46  # a side for a side
  c = smoke_nonsquare.get_config()
  c.data.input_size = (72, 40)  # 9 x 5 heatmaps
  model = Run(c).model()
  x = jnp.zeros((2, 72, 40, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  out = model.apply(variables, x, train=False)
  assert out.shape == (2, 9, 5, 14 + 1)  # LSP's K (the synthetic set) + background


# ----------------------------------------------------------------------------- geometry


def test_letterbox_affine_non_square_by_hand():
  # A tall 100 x 50 image into 64 x 48: r = min(64/100, 48/50) = 0.64, ox = (48 - 32)/2 = 8,
  # oy = 0; x_in = 0.64 (x + 0.5) - 0.5 + 8.
  a = geometry.letterbox_affine(100, 50, HW)
  np.testing.assert_allclose(a, [[0.64, 0, 7.82], [0, 0.64, -0.18]], atol=1e-12)
  # A wide 50 x 100 image: r = min(64/50, 48/100) = 0.48, ox = 0, oy = (64 - 24)/2 = 20.
  a = geometry.letterbox_affine(50, 100, HW)
  np.testing.assert_allclose(a, [[0.48, 0, -0.26], [0, 0.48, 19.74]], atol=1e-12)
  # the image's pixel area [-0.5, 99.5] x [-0.5, 49.5] fills the width and is centred in y
  corners = geometry.apply_affine_to_points(a, np.array([[-0.5, -0.5], [99.5, 49.5]]))
  np.testing.assert_allclose(corners, [[-0.5, 19.5], [47.5, 43.5]], atol=1e-12)
  # an int is the square side, as before
  np.testing.assert_array_equal(
    geometry.letterbox_affine(90, 53, 32), geometry.letterbox_affine(90, 53, (32, 32))
  )


def test_crop_affine_grows_the_box_to_the_inputs_aspect_by_hand():
  # A tall box 20 x 80 centred at (20, 60): L = 64; grown: max(20 * 64/48, 80 * 64/64) = 80;
  # side 1.25 * 80 = 100, zoom 64/100; centre -> ((48 - 1)/2, (64 - 1)/2).
  a = geometry.crop_affine(np.array([10.0, 20, 30, 100]), 200, 200, HW, 1.25)
  np.testing.assert_allclose(a, [[0.64, 0, 23.5 - 12.8], [0, 0.64, 31.5 - 38.4]], atol=1e-12)
  # A wide box 90 x 30: grown max(90 * 64/48, 30) = 120, side 150: the box spans 48/1.25 in x.
  a = geometry.crop_affine(np.array([0.0, 0, 90, 30]), 200, 200, HW, 1.25)
  ends = geometry.apply_affine_to_points(a, np.array([[0.0, 15], [90, 15]]))
  np.testing.assert_allclose(ends, [[23.5 - 19.2, 31.5], [23.5 + 19.2, 31.5]], atol=1e-12)


def test_train_affine_fits_the_grown_box_and_centres_it_in_the_non_square_input():
  cfg = transforms.AugmentConfig(
    margin=1.25, scale_range=(1.0, 1.0), rotation_deg=0.0, rotation_prob=0.0, flip_prob=0.0,
    translate_frac=0.0,
  )  # fmt: skip
  kp = np.array([[10.0, 20], [30, 100], [20, 50]])  # box 20 x 80 centred at (20, 60)
  a = transforms.train_affine(kp, np.ones(3, bool), 200, 200, np.random.default_rng(0), cfg, HW)
  np.testing.assert_allclose(a, [[0.64, 0, 23.5 - 12.8], [0, 0.64, 31.5 - 38.4]], atol=1e-12)


def test_warp_and_inside_input_are_height_by_width():
  image = np.zeros((100, 50, 3), np.uint8)
  assert transforms.warp_image(image, geometry.letterbox_affine(100, 50, HW), HW).shape == (
    64, 48, 3,
  )  # fmt: skip
  pts = np.array([[47.0, 63.0], [48.0, 10.0], [10.0, 63.5], [0.0, 0.0]])
  assert transforms.inside_input(pts, HW).tolist() == [True, False, False, True]
  record = {
    "image": np.zeros((90, 53, 3), np.uint8),
    "keypoints": np.zeros((14, 2), np.float32),
    "labeled": np.ones(14, bool),
  }
  out = transforms.transform_eval(record, input_size=HW)
  assert out["image"].shape == (64, 48, 3)
  out = transforms.transform_train(record, np.random.default_rng(0), input_size=HW,
                                   flip_permutation=np.arange(14))  # fmt: skip
  assert out["image"].shape == (64, 48, 3)


@pytest.mark.slow
def test_the_compile_programs_lower_a_non_square_input():
  from unipose_jax.aot import programs  # noqa: PLC0415

  def flops(size):
    c = smoke_nonsquare.get_config()
    c.data.input_size = size
    c.batch_size = c.eval_batch_size = 2
    return programs.reference_flops(c, "eval", 2)

  # 64 x 48 has three quarters of 64 x 64's pixels at every stride (48 = 3 x 16)
  assert flops(HW) / flops(64) == pytest.approx(0.75, rel=0.05)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_non_square_run_trains_evaluates_predicts_calibrates_and_exports(
  small_data_dir, tmp_path, capsys
):
  from unipose_jax import deploy, inference, modes  # noqa: PLC0415
  from unipose_jax.predict import Predictor  # noqa: PLC0415
  from unipose_jax.run import Run  # noqa: PLC0415

  workdir = tmp_path / "run"
  r = launch(
    "--mode=train", "--config=configs/smoke_nonsquare.py", f"--workdir={workdir}",
    f"--config.data.data_dir={small_data_dir}", f"--config.data.train_sources=('{SMALL}',)",
    f"--config.data.eval_source={SMALL}", "--config.batch_size=4", "--config.eval_batch_size=8",
    "--config.num_train_steps=2", "--config.checkpoint_every=1000",
    "--config.calibrate_presence=True", "--config.num_example_images=1",
  )  # fmt: skip
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["data"]["input_size"] == [64, 48]
  run = Run.from_workdir(str(workdir))
  assert run.config.data.input_size == (64, 48) and run.codec.heatmap_size == (8, 6)
  assert saved["predict"]["presence_score"]  # the calibration ran at 64 x 48

  # Evaluation at 64 x 48: every joint of the 32 test images scored.
  summary = modes.evaluate_checkpoint(run)
  assert summary["dark"]["num_joints"] == 32 * 14

  # Prediction, both passes (the second a 64 x 48 crop of the person).
  image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
  predictor = Predictor.from_workdir(str(workdir))
  assert predictor.input_hw == (64, 48)
  p = predictor(image)
  assert p.keypoints.shape == (14, 2) and np.all(np.isfinite(p.keypoints))
  capsys.readouterr()

  # Export: the settings say (H, W); the ONNX file through deploy (NumPy decoding) equals
  # the JAX Predictor's letterboxed pass (no flip test: deploy has none).
  path = modes.export_checkpoint(run, str(workdir / "unipose.onnx"))
  settings = json.loads((workdir / "unipose.json").read_text())
  assert settings["input_size"] == [64, 48] and settings["heatmap_size"] == [8, 6]
  variables, _ = run.load_variables()
  heatmaps = inference.heatmap_fn(run.model(), variables, flip_test=False)
  onnx = deploy.onnx_runner(path)
  for decoding in ("argmax", "dark"):
    ref = Predictor(
      heatmaps, **{**run.predictor_settings(), "decoding": decoding, "second_pass": False}
    ).first_pass(image)
    got, scores = deploy.predict(
      onnx, [image], settings["input_size"], num_joints=settings["num_joints"],
      decoding=decoding, sigma=settings["sigma"], dark_kernel=settings["dark_kernel"],
      dark_sigma=settings["dark_sigma"],
    )  # fmt: skip
    assert got.shape == (1, 14, 2)
    np.testing.assert_allclose(got[0], ref.keypoints, atol=1e-3, rtol=0)
    np.testing.assert_allclose(scores[0], ref.scores, rtol=1e-4, atol=1e-5)
  assert os.path.exists(workdir / "unipose.onnx")


@pytest.mark.slow
def test_a_pair_on_the_command_line_is_parsed_and_checked_in_one_line(tmp_path):
  workdir = tmp_path / "run"
  r = launch("--mode=train", "--config=configs/smoke.py", f"--workdir={workdir}",
             "--config.data.input_size=(64, 44)")  # fmt: skip
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
  assert r.stderr.strip() == (
    "error: bad config:\n  data.input_size=(64, 44): must be a multiple of 8 (the heatmap stride)"
  )
  r = launch("--mode=train", "--config=configs/smoke.py", f"--workdir={workdir}",
             "--config.data.input_size=(64,)")  # fmt: skip
  assert r.returncode == 2 and r.stderr.strip() == (
    "error: bad config:\n  data.input_size: expected a positive int or (height, width), got (64,)"
  ), r.stderr
  assert not workdir.exists()


# ----------------------------------------------------------------------------- top-down crops


def test_top_down_crops_grow_the_person_box_to_the_inputs_aspect_by_hand():
  # COCO's box 20 x 80 centred at (20, 60) into 64 x 48: grown to 80 (as crop_affine).
  record = {"box": np.array([10.0, 20, 30, 100], np.float32)}
  kp, labeled = np.zeros((14, 2)), np.zeros(14, bool)
  centre, extent = transforms.person_region(record, kp, labeled, 200, 200, HW)
  np.testing.assert_allclose(centre, [20, 60])
  assert extent == pytest.approx(80.0)
  # a wide box 90 x 30: grown max(90 * 64/48, 30) = 120; a square input keeps 90
  record = {"box": np.array([0.0, 0, 90, 30], np.float32)}
  assert transforms.person_region(record, kp, labeled, 200, 200, HW)[1] == pytest.approx(120.0)
  assert transforms.person_region(record, kp, labeled, 200, 200, 64)[1] == pytest.approx(90.0)
  # MPII's square region of side 200 s: grown to 200 s * 64/48
  record = {"center": np.array([50.0, 50]), "scale": np.float32(0.3)}
  c, e = transforms.person_region(record, kp, labeled, 200, 200, HW)
  np.testing.assert_allclose(c, [50, 54.5])
  assert e == pytest.approx(60.0 * 64 / 48)
  # the crop: longer side 1.25 * 80 = 100 -> zoom 0.64, centre -> ((48-1)/2, (64-1)/2)
  a = geometry.square_crop_affine(np.array([20.0, 60]), 100.0, HW)
  np.testing.assert_allclose(a, [[0.64, 0, 23.5 - 12.8], [0, 0.64, 31.5 - 38.4]], atol=1e-12)
  record = {
    "image": np.zeros((200, 200, 3), np.uint8), "keypoints": np.zeros((14, 2), np.float32),
    "labeled": np.ones(14, bool), "box": np.array([10.0, 20, 30, 100], np.float32),
  }  # fmt: skip
  out = transforms.transform_eval(record, input_size=HW, crop="box", margin=1.25)
  assert out["image"].shape == (64, 48, 3)
  np.testing.assert_allclose(out["affine"], a, atol=1e-5)
  out = transforms.transform_train(
    record, np.random.default_rng(0), input_size=HW, flip_permutation=np.arange(14), crop="box"
  )
  assert out["image"].shape == (64, 48, 3)


def test_a_video_config_refuses_a_non_square_input_in_one_line():
  from configs import smoke_video
  from unipose_jax import run_config

  config = smoke_video.get_config()
  config.data.input_size = (64, 48)
  with pytest.raises(run_config.ConfigError, match=r"UniPose-LSTM .* takes a square input"):
    run_config.validate(config, training=True)
