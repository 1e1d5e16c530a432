"""Prediction on photos and videos: the two-pass affine chain, no-person handling, inputs,
output files, and the Predictor API with a real (tiny, random) network.

Most tests use a stub network that "sees" the synthetic figure: each joint is a Gaussian
blob whose colour codes the joint (green/red and blue/red ratios on a 4 x 4 grid; red
carries the intensity), so the stub finds every joint's centroid in whatever input it is
given and answers with exact Gaussian heatmaps there. A keypoint that comes back in the
right ORIGINAL pixel therefore proves the letterbox, the crop, the warps and the inverse
affines, not the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from unipose_jax import keypoint_sets, media, predict, visualize
from unipose_jax.codecs import HeatmapCodec
from unipose_jax.models import heatmap_size

K = keypoint_sets.LSP.num_joints
S = 256  # stub network input side
CODEC = HeatmapCodec(
  input_size=(S, S), heatmap_size=(heatmap_size(S),) * 2, sigma=2.0, decoding="dark", dark_kernel=5
)

# A standing figure, (x, y) in a 100 x 100 frame (LSP order), scaled to 150 px below.
FIGURE = np.array(
  [[30, 95], [32, 75], [35, 55], [65, 55], [68, 75], [70, 95], [15, 50],
   [20, 35], [35, 20], [65, 20], [80, 35], [85, 50], [50, 15], [50, 3]], np.float64
)  # fmt: skip

LEVELS = (0.0, 0.3, 0.6, 0.9)
# Colour code (g/r, b/r) of each joint; (0.9, 0.9) is left out: the padding colour
# BORDER_RGB = (124, 116, 104) has ratios (0.94, 0.84) and must not read as a joint.
CODES = [(g, b) for g in LEVELS for b in LEVELS if (g, b) != (0.9, 0.9)][:K]


def figure_at(x0: float, y0: float, height: float = 150.0) -> np.ndarray:
  """(K, 2) joint positions of the figure with its frame's top-left at (x0, y0)."""
  return FIGURE * (height / 100.0) + np.array([x0, y0])


def render(joints: np.ndarray, width: int, height: int, sigma: float = 3.0) -> np.ndarray:
  """Black (H, W, 3) uint8 canvas with a colour-coded Gaussian blob at every joint."""
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
  red = np.zeros((height, width))
  ratio_g = np.zeros((height, width))
  ratio_b = np.zeros((height, width))
  for (x, y), (g, b) in zip(joints, CODES):
    blob = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    mine = blob > red
    red = np.where(mine, blob, red)
    ratio_g, ratio_b = np.where(mine, g, ratio_g), np.where(mine, b, ratio_b)
  r = 255.0 * red
  return np.round(np.stack([r, r * ratio_g, r * ratio_b], -1)).astype(np.uint8)


def find_joints(image: np.ndarray, min_red: float = 40.0):
  """Centroids (K, 2) in this image's pixels and whether each joint was seen (K,)."""
  img = image.astype(np.float64)
  r = img[..., 0]
  bright = r > min_red
  gi = np.clip(np.round(img[..., 1] / np.maximum(r, 1) / 0.3), 0, 3)
  bi = np.clip(np.round(img[..., 2] / np.maximum(r, 1) / 0.3), 0, 3)
  ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
  points, seen = np.zeros((K, 2)), np.zeros(K, bool)
  for k, (g, b) in enumerate(CODES):
    w = r * (bright & (gi == round(g / 0.3)) & (bi == round(b / 0.3)))
    if w.sum() > 3 * min_red:
      points[k] = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
      seen[k] = True
  return points, seen


def gaussian_maps(points_in: np.ndarray, seen: np.ndarray) -> np.ndarray:
  """(h, w, N) exact Gaussians (amplitude 1, the codec's sigma) at input-pixel points."""
  hm = np.asarray(CODEC.input_to_heatmap(jnp.asarray(points_in, jnp.float32)), np.float64)
  h, w = CODEC.heatmap_size
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
  maps = np.exp(
    -((xs[..., None] - hm[:, 0]) ** 2 + (ys[..., None] - hm[:, 1]) ** 2) / (2 * CODEC.sigma**2)
  )
  return (maps * seen).astype(np.float32)


class StubNet:
  """``heatmap_fn``: finds the coloured joints in each input; records its inputs. With
  ``box_head`` the 5 box maps mark the joints' extent grown by ``BOX_GROW`` input pixels
  per side (so the box head's box differs from the joints' extent)."""

  BOX_GROW = 4.0

  def __init__(self, box_head: bool = False):
    self.box_head = box_head
    self.inputs: list[np.ndarray] = []

  def __call__(self, images):
    images = np.asarray(images)
    assert images.dtype == np.uint8 and images.shape[1:] == (S, S, 3), images.shape
    out = []
    for image in images:
      self.inputs.append(image)
      points, seen = find_joints(image)
      maps = gaussian_maps(points, seen)
      if self.box_head:
        if seen.any():
          (x0, y0), (x1, y1) = (
            points[seen].min(0) - self.BOX_GROW,
            points[seen].max(0) + self.BOX_GROW,
          )
          corners = np.array(
            [[(x0 + x1) / 2, (y0 + y1) / 2], [x0, y0], [x1, y0], [x0, y1], [x1, y1]]
          )
          box_maps = gaussian_maps(corners, np.ones(5, bool))
        else:
          box_maps = np.zeros(maps.shape[:2] + (5,), np.float32)
        maps = np.concatenate([maps, box_maps], -1)
      out.append(maps)
    return np.stack(out)


def stub_predictor(**kwargs) -> predict.Predictor:
  net = StubNet(kwargs.pop("box_head", False))
  return predict.Predictor(
    net, input_size=S, codec=CODEC, keypoint_set=keypoint_sets.LSP, box_head=net.box_head,
    decoding="dark", **kwargs,
  )  # fmt: skip


# Subpixel placement: no joint sits on a pixel centre of the original image.
TRUTH = figure_at(700.37, 402.81)


@pytest.fixture(scope="module")
def photo():
  return render(TRUTH, 1200, 900)


def test_stub_finds_the_figure_exactly_at_full_resolution(photo):
  points, seen = find_joints(photo)
  assert seen.all()
  np.testing.assert_allclose(points, TRUTH, atol=0.05)


def test_two_passes_land_on_the_joints_in_original_pixels(photo):
  predictor = stub_predictor()
  first = predictor.first_pass(photo)
  assert first.person_found and first.visible.all() and first.passes == 1
  err1 = np.linalg.norm(first.keypoints - TRUTH, axis=1)
  assert err1.max() < 1.0, err1  # a half-pixel slip in the letterbox would be 2.3 px

  predictor.heatmap_fn.inputs.clear()
  both = predictor(photo)
  assert both.passes == 2 and both.person_found and both.visible.all()
  assert len(predictor.heatmap_fn.inputs) == 2  # letterbox, then the crop
  err2 = np.linalg.norm(both.keypoints - TRUTH, axis=1)
  assert err2.max() < 0.1, err2  # a half-pixel slip in the crop would be 0.37 px
  assert err2.mean() < 0.5 * err1.mean(), (err1.mean(), err2.mean())
  assert both.keypoints.shape == (K, 2) and both.scores.shape == (K,)
  assert np.all(both.scores > 0.9)

  # Box without a box head: the extent of the visible joints.
  np.testing.assert_allclose(both.box, [*TRUTH.min(0), *TRUTH.max(0)], atol=0.1)

  # The crop: the person (150 px tall, 105 px wide) x 1.25 fills the input, centred.
  crop = predictor.heatmap_fn.inputs[1]
  pts, _ = find_joints(crop)
  extent = pts.max(0) - pts.min(0)
  assert abs(extent.max() - S / 1.25) < 1.5, extent
  np.testing.assert_allclose((pts.max(0) + pts.min(0)) / 2, [(S - 1) / 2] * 2, atol=1.0)
  # Pass 1's input is the letterbox: 1200 x 900 -> 256 x 192 plus BORDER_RGB bands.
  letterbox = predictor.heatmap_fn.inputs[0]
  np.testing.assert_array_equal(letterbox[0, S // 2], transforms_border())
  np.testing.assert_array_equal(letterbox[S // 2, S // 2], (0, 0, 0))


def transforms_border():
  from unipose_jax import transforms

  return np.array(transforms.BORDER_RGB, np.uint8)


def test_crop_at_the_image_border_is_padded_and_still_exact():
  # Joints from x = 12.25 (right wrist) and down to y = 887.5 (ankles) of 900: all inside,
  # but the crop (187.5 px around the centre) reaches ~29 px past the left edge and ~12 px
  # past the bottom.
  truth = figure_at(-10.25, 745.0)
  image = render(truth, 1200, 900)
  predictor = stub_predictor()
  pred = predictor(image)
  assert pred.passes == 2
  crop = predictor.heatmap_fn.inputs[-1]
  border = transforms_border()
  assert np.all(crop[:, :5] == border), "the crop reaches past the left edge: BORDER_RGB there"
  assert np.all(crop[-5:, :] == border), "and past the bottom edge"
  err = np.linalg.norm(pred.keypoints - truth, axis=1)
  assert err.max() < 0.1, err


@pytest.mark.slow
def test_box_head_box_is_reported_from_the_second_pass(photo):
  predictor = stub_predictor(box_head=True)
  lo, hi = TRUTH.min(0), TRUTH.max(0)
  # Pass 1 (letterbox, 1200 px -> 256): the box is the extent grown by 4 x 1200/256 px.
  grow1 = StubNet.BOX_GROW * 1200 / S
  first = predictor.first_pass(photo)
  np.testing.assert_allclose(first.box, [*(lo - grow1), *(hi + grow1)], atol=1.5)
  # Pass 2 crops 1.25 x that box's longer side (the height); its box is grown by 4 x side/S.
  side = 1.25 * ((hi - lo).max() + 2 * grow1)
  grow2 = StubNet.BOX_GROW * side / S
  pred = predictor(photo)
  assert pred.passes == 2
  np.testing.assert_allclose(pred.box, [*(lo - grow2), *(hi + grow2)], atol=0.1)
  np.testing.assert_allclose(pred.keypoints, TRUTH, atol=0.1)


def test_box_from_points_is_the_mean_of_the_corner_sides():
  points = np.array([[[5, 5], [0, 1], [10, 3], [2, 9], [12, 11]]], np.float64)
  # predict uses evaluation's own function (codecs.box.box_from_points), on one image.
  np.testing.assert_array_equal(predict._box_of(points[0]), [1.0, 2.0, 11.0, 10.0])


def test_second_pass_off_and_threshold():
  image = render(TRUTH, 1200, 900)
  predictor = stub_predictor(second_pass=False)
  pred = predictor(image)
  assert pred.passes == 1 and len(predictor.heatmap_fn.inputs) == 1
  # A threshold above every score: nothing visible, no person, no second pass.
  strict = stub_predictor(score_threshold=1.5)
  pred = strict(image)
  assert not pred.person_found and pred.box is None and not pred.visible.any()
  assert len(strict.heatmap_fn.inputs) == 1


def test_no_person_found(tmp_path, capsys):
  blank = np.zeros((480, 640, 3), np.uint8)
  cv2.imwrite(str(tmp_path / "empty.png"), blank)
  predictor = stub_predictor()
  items = media.collect_inputs([str(tmp_path / "empty.png")])
  records = media.predict_all(items, predictor, str(tmp_path / "out"))["images"]
  assert len(predictor.heatmap_fn.inputs) == 1  # no second pass
  assert records[0]["person_found"] is False and records[0]["box"] is None
  assert records[0]["visible"] == [False] * K and len(records[0]["keypoints"]) == K
  saved = json.loads((tmp_path / "out" / "predictions.json").read_text())
  assert saved == records and saved[0]["input"] == str(tmp_path / "empty.png")
  line = [x for x in capsys.readouterr().out.splitlines() if "empty.png:" in x][0]
  assert "no person found" in line and "empty_pose.png" in line
  with Image.open(tmp_path / "out" / "empty_pose.png") as im:
    overlay = np.asarray(im.convert("RGB"))
  assert overlay.shape == blank.shape
  np.testing.assert_array_equal(  # the translucent banner ...
    overlay[2, -3], visualize.banner_blend(blank[2, -3], visualize.BANNER_COLOR)
  )
  assert (overlay[3:20, :200] == 255).all(-1).any()  # ... with white text on it
  assert not overlay[100:].any()  # nothing else drawn


def test_prediction_json_and_overlay_of_a_photo(tmp_path, photo):
  Image.fromarray(photo).save(tmp_path / "person.png")
  predictor = stub_predictor()
  records = media.predict_all(media.collect_inputs([str(tmp_path)]), predictor, str(tmp_path / "o"))
  rec = records["images"][0]
  assert rec["person_found"] is True and rec["passes"] == 2
  assert rec["joint_names"] == list(keypoint_sets.LSP.joint_names)
  assert rec["visible"] == [True] * K and np.all(np.array(rec["scores"]) > 0.9)
  np.testing.assert_allclose(rec["keypoints"], TRUTH, atol=0.1)
  np.testing.assert_allclose(rec["box"], [*TRUTH.min(0), *TRUTH.max(0)], atol=0.1)
  with Image.open(tmp_path / "o" / "person_pose.png") as im:
    overlay = np.asarray(im.convert("RGB"))
  neck = np.round(TRUTH[12]).astype(int)  # a centre joint: a PRED_COLOR dot
  np.testing.assert_array_equal(overlay[neck[1], neck[0]], visualize.PRED_COLOR)
  x0, y0, x1, y1 = np.round(rec["box"]).astype(int)  # the box's left side, below the wrist
  np.testing.assert_array_equal(overlay[y0 + (y1 - y0) * 4 // 5, x0], visualize.BOX_COLOR)
  assert not overlay[y0 + (y1 - y0) * 4 // 5, x0 - 20].any()


# ----------------------------------------------------------------------------- inputs


def test_bad_inputs_name_the_file(tmp_path):
  (tmp_path / "x.jpg").write_text("not a picture")
  (tmp_path / "empty").mkdir()
  (tmp_path / "bad.mp4").write_bytes(os.urandom(2048))
  (tmp_path / "notes.txt").write_text("hello")
  cases = {
    str(tmp_path / "missing.png"): "no such file or folder",
    str(tmp_path / "x.jpg"): "not a readable image",
    str(tmp_path / "empty"): "folder holds no image or video",
    str(tmp_path / "bad.mp4"): "not a readable video",
    str(tmp_path / "notes.txt"): "not an image or a video",
  }
  for path, fault in cases.items():
    with pytest.raises(media.PredictInputError) as e:
      media.collect_inputs([path])
    assert str(e.value) == f"bad input:\n  {path}: {fault}" or (
      str(e.value).startswith(f"bad input:\n  {path}: {fault}")
    ), str(e.value)
  # All at once: one message listing every one.
  with pytest.raises(media.PredictInputError, match="5 bad inputs") as e:
    media.collect_inputs(list(cases))
  for path in cases:
    assert path in str(e.value)


def _png_declaring(path, width: int, height: int) -> None:
  """A small valid PNG whose IHDR then claims ``width x height`` (a "pixel bomb" header)."""
  import struct
  import zlib

  cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
  data = bytearray(path.read_bytes())
  ihdr = 8 + 8  # signature, chunk length + type
  data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
  data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
  path.write_bytes(bytes(data))


def test_huge_images_links_and_loops_are_refused_in_one_line(tmp_path):
  _png_declaring(tmp_path / "bomb.png", 20000, 20000)
  with pytest.raises(media.PredictInputError) as e:
    media.collect_inputs([str(tmp_path / "bomb.png")])
  assert str(e.value) == (
    f"bad input:\n  {tmp_path / 'bomb.png'}: 20000x20000 = 400 MP is over the limit of 120 MP "
    "(--config.predict.max_pixels; raise it to read this file)"
  )
  with pytest.raises(media.PredictInputError, match="400 MP is over"):
    media.read_image(str(tmp_path / "bomb.png"))
  cv2.imwrite(str(tmp_path / "small.png"), np.zeros((100, 200, 3), np.uint8))
  assert media.read_image(str(tmp_path / "small.png")).shape == (100, 200, 3)
  with pytest.raises(
    media.PredictInputError, match=r"200x100 = 0\.02 MP is over the limit of 0\.01 MP"
  ):
    media.collect_inputs([str(tmp_path / "small.png")], max_pixels=10_000)
  write_video(tmp_path / "clip.mp4", [np.zeros((64, 96, 3), np.uint8)] * 2)
  with pytest.raises(media.PredictInputError, match=r"clip\.mp4: frames of 96x64 = 0\.00614 MP"):
    media.collect_inputs([str(tmp_path / "clip.mp4")], max_pixels=1000)
  os.symlink(tmp_path / "loop_b.jpg", tmp_path / "loop_a.jpg")
  os.symlink(tmp_path / "loop_a.jpg", tmp_path / "loop_b.jpg")
  os.symlink(tmp_path / "gone.jpg", tmp_path / "broken.jpg")
  with pytest.raises(media.PredictInputError) as e:
    media.collect_inputs([str(tmp_path / "loop_a.jpg"), str(tmp_path / "broken.jpg")])
  assert f"{tmp_path / 'loop_a.jpg'}: a loop of symbolic links" in str(e.value)
  assert f"{tmp_path / 'broken.jpg'}: a broken symbolic link (to {tmp_path / 'gone.jpg'})" in str(
    e.value
  )


@pytest.mark.slow
def test_bad_inputs_are_refused_before_jax_is_imported_and_lazy_package_import(tmp_path):
  (tmp_path / "x.jpg").write_text("not a picture")
  code = (
    "import sys\n"
    "import unipose_jax\n"
    "assert 'cv2' not in sys.modules and 'jax' not in sys.modules\n"
    "from unipose_jax import Predictor, predict\n"
    "assert Predictor is predict.Predictor\n"
    "assert not any(m in sys.modules for m in ('grain', 'unipose_jax.evaluate',"
    " 'unipose_jax.visualize')), 'the predictor needs neither evaluation nor drawing'\n"
    "from unipose_jax import media\n"
    f"try:\n  media.collect_inputs([{str(tmp_path / 'x.jpg')!r}])\n"
    "except media.PredictInputError as e:\n  print('refused:', e)\n"
    "assert 'jax' not in sys.modules, 'collect_inputs must not need JAX'\n"
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
  )
  assert f"refused: bad input:\n  {tmp_path / 'x.jpg'}: not a readable image" in out.stdout


def test_folders_are_sorted_and_names_unique(tmp_path):
  img = np.zeros((8, 8, 3), np.uint8)
  for sub, name in [("a", "x.jpg"), ("a", "b.png"), ("a", "x_2.png"), ("b", "x.png")]:
    (tmp_path / sub).mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / sub / name), img)
  (tmp_path / "a" / "readme.txt").write_text("skipped in a folder")
  items = media.collect_inputs(
    [str(tmp_path / "a"), str(tmp_path / "b" / "x.png"), str(tmp_path / "a" / "b.png")]
  )
  got = [(os.path.relpath(i.path, tmp_path), i.kind, i.name) for i in items]
  assert got == [
    ("a/b.png", "image", "b"),
    ("a/x.jpg", "image", "x"),
    ("a/x_2.png", "image", "x_2"),
    ("b/x.png", "image", "x_3"),  # x and x_2 are taken
  ]  # and a/b.png given again is used once


# ----------------------------------------------------------------------------- video


def write_video(path, frames, fps=10.0):
  h, w = frames[0].shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
  assert writer.isOpened()
  for frame in frames:
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  writer.release()


@pytest.mark.slow
def test_video_round_trip(tmp_path, capsys):
  truths = [figure_at(100.0 + 7.5 * i, 40.0 + 2.0 * i) for i in range(12)]
  frames = [render(t, 480, 272, sigma=5.0) for t in truths]
  write_video(tmp_path / "clip.mp4", frames)
  items = media.collect_inputs([str(tmp_path / "clip.mp4")])
  assert [(i.kind, i.name) for i in items] == [("video", "clip")]
  summary = media.predict_video(items[0], stub_predictor(), str(tmp_path / "out"))
  assert summary["frames"] == 12 and summary["fps"] == pytest.approx(10.0)
  cap = cv2.VideoCapture(str(tmp_path / "out" / "clip_pose.mp4"))
  n, size = 0, None
  while True:
    ok, frame = cap.read()
    if not ok:
      break
    n, size = n + 1, frame.shape
  cap.release()
  assert n == 12 and size == (272, 480, 3)
  assert cap_fps(tmp_path / "out" / "clip_pose.mp4") == pytest.approx(10.0)
  lines = (tmp_path / "out" / "clip_pose.jsonl").read_text().splitlines()
  assert len(lines) == 12
  for i, line in enumerate(lines):
    rec = json.loads(line)
    assert rec["frame"] == i and rec["time_s"] == pytest.approx(i / 10.0)
    assert rec["person_found"] and rec["passes"] == 2
    xy = np.array(rec["keypoints"])
    # mp4v is lossy (and subsamples colour), so the colour-coded stub is less exact here.
    assert np.abs(xy - truths[i]).max() < 2.0, (i, np.abs(xy - truths[i]).max())
  out = capsys.readouterr().out
  assert "clip.mp4: 12 frames in" in out and "frames/s" in out
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
    "clip_pose.jsonl",
    "clip_pose.mp4",
  ]


def test_a_full_disk_during_predict_is_one_line_and_leaves_nothing_half_written(
  tmp_path, monkeypatch, capsys
):
  for name in ("a", "b", "c"):
    cv2.imwrite(str(tmp_path / f"{name}.png"), np.zeros((40, 60, 3), np.uint8))
  items = media.collect_inputs([str(tmp_path / f"{n}.png") for n in "abc"])
  out = tmp_path / "out"
  fsync, calls = os.fsync, []

  def fills_up(fd):  # the second overlay meets a full disk
    calls.append(fd)
    if len(calls) == 2:
      raise OSError(28, "No space left on device")
    return fsync(fd)

  monkeypatch.setattr(os, "fsync", fills_up)
  with pytest.raises(OSError) as info:
    media.predict_all(items, stub_predictor(), str(out))
  assert str(info.value) == f"cannot write {out / 'b_pose.png'}: No space left on device"
  assert os.listdir(out) == ["a_pose.png"]  # whole; no predictions.json, no temporary file
  assert Image.open(out / "a_pose.png").size == (60, 40)


@pytest.mark.slow
def test_a_video_the_writer_could_not_finish_is_refused(tmp_path, monkeypatch):
  """OpenCV's video writer fails silently (a full disk): the written video is counted
  before it is renamed into place."""
  frames = [render(figure_at(10.0, 5.0, 60.0), 96, 80) for _ in range(3)]
  write_video(tmp_path / "clip.mp4", frames)
  (item,) = media.collect_inputs([str(tmp_path / "clip.mp4")])
  monkeypatch.setattr(cv2.VideoWriter, "write", lambda self, frame: None)  # frames lost
  with pytest.raises(OSError, match=r"clip_pose.mp4: the video written holds 0 of 3 frames"):
    media.predict_video(item, stub_predictor(second_pass=False), str(tmp_path / "out"))
  assert os.listdir(tmp_path / "out") == []


def cap_fps(path):
  cap = cv2.VideoCapture(str(path))
  fps = cap.get(cv2.CAP_PROP_FPS)
  cap.release()
  return fps


def test_progress_line():
  assert media._progress("v.mp4", 50, 200, 10.0) == "v.mp4: frame 50/200, 5.0 frames/s, ETA 30 s"
  assert media._progress("v.mp4", 5, 0, 1.0) == "v.mp4: frame 5, 5.0 frames/s"


# ----------------------------------------------------------------------------- a real network


@pytest.mark.slow
@pytest.mark.parametrize("box_head", [False, True])
def test_predictor_with_a_tiny_real_network(box_head):
  from conftest import tiny_network

  from configs import smoke
  from unipose_jax.models import normalize
  from unipose_jax.run import Run

  c = tiny_network(smoke.get_config())
  c.model.box_head = box_head
  model, codec = Run(c).model(), Run(c).codec
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)

  @jax.jit
  def heatmap_fn(images):
    return model.apply(variables, normalize(images), train=False)[..., 1:].astype(jnp.float32)

  predictor = predict.Predictor(
    heatmap_fn, input_size=32, codec=codec, keypoint_set=keypoint_sets.LSP, box_head=box_head,
    decoding="dark",
    score_threshold=-np.inf,  # random weights: accept every joint, so pass 2 runs
  )  # fmt: skip
  image = np.random.default_rng(0).integers(0, 256, (90, 140, 3), dtype=np.uint8)
  pred = predictor(image)
  assert pred.passes == 2 and pred.person_found and pred.visible.all()
  assert pred.keypoints.shape == (K, 2) and pred.scores.shape == (K,)
  assert np.isfinite(pred.keypoints).all() and np.isfinite(pred.scores).all()
  assert pred.box.shape == (4,)
  if not box_head:
    np.testing.assert_allclose(pred.box, [*pred.keypoints.min(0), *pred.keypoints.max(0)])
  again = predictor(image)
  np.testing.assert_array_equal(again.keypoints, pred.keypoints)
  json.dumps(pred.to_json())
  with pytest.raises(ValueError, match="uint8"):
    predictor(image.astype(np.float32))
