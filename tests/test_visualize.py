"""Skeleton drawing lands on the keypoints; PNGs are valid, sized as documented, atomic, deterministic."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from unipose_jax import charts, keypoint_sets, visualize

LSP = keypoint_sets.LSP

# A standing person in a 100 x 100 frame: joints well apart, (x, y) pixels.
PERSON = np.array(
  [
    [30, 95],
    [32, 75],
    [35, 55],  # right ankle, knee, hip
    [65, 55],
    [68, 75],
    [70, 95],  # left hip, knee, ankle
    [15, 50],
    [20, 35],
    [35, 20],  # right wrist, elbow, shoulder
    [65, 20],
    [80, 35],
    [85, 50],  # left shoulder, elbow, wrist
    [50, 15],
    [50, 3],  # neck, head top
  ],
  np.float64,
)


def _read(path):
  with Image.open(path) as im:
    assert im.format == "PNG"
    return np.asarray(im.convert("RGB"))


def test_joint_pixels_have_joint_colours():
  black = np.zeros((100, 100, 3), np.uint8)
  out = visualize.draw_skeleton(black, PERSON, (200, 0, 0), keypoint_set=LSP)
  assert out.shape == black.shape and out.dtype == np.uint8
  assert not black.any(), "input must not be modified"
  colors = visualize.joint_colors((200, 0, 0), LSP)
  for k, (x, y) in enumerate(PERSON.astype(int)):
    np.testing.assert_array_equal(out[y, x], colors[k], err_msg=keypoint_sets.LSP.joint_names[k])
  # Left and right are distinguishable; centre joints use the base colour.
  assert tuple(colors[9]) != tuple(colors[8])
  assert tuple(colors[9]) == visualize.left_color((200, 0, 0))
  assert tuple(colors[12]) == (200, 0, 0)
  assert np.abs(colors[9].astype(int) - colors[8].astype(int)).max() >= 100
  # Something was drawn along a limb (midpoint of right shin), nothing in an empty corner.
  assert out[85, 31].any()
  assert not out[5, 95].any()


def test_subpixel_keypoint_lands_on_its_pixel_centre():
  black = np.zeros((60, 60, 3), np.uint8)
  kp = np.full((keypoint_sets.LSP.num_joints, 2), np.nan)
  kp[0] = (10.4, 20.6)  # pixel centre convention: column 10, row 21
  out = visualize.draw_skeleton(black, kp, (0, 0, 255), radius=1, keypoint_set=LSP)
  np.testing.assert_array_equal(out[21, 10], (0, 0, 255))
  assert not out[40:, 40:].any()  # NaN joints (and their limbs) are skipped


def test_mask_hides_joints_and_their_limbs():
  black = np.zeros((100, 100, 3), np.uint8)
  mask = np.ones(keypoint_sets.LSP.num_joints, bool)
  mask[13] = False  # head top
  out = visualize.draw_skeleton(black, PERSON, (200, 0, 0), mask, keypoint_set=LSP)
  assert not out[3, 50].any()
  assert not out[9, 50].any()  # on the neck-head limb, which is hidden too
  assert out[15, 50].any()


def test_draw_skeleton_bad_input():
  with pytest.raises(ValueError, match="uint8"):
    visualize.draw_skeleton(np.zeros((10, 10, 3)), PERSON, keypoint_set=LSP)
  with pytest.raises(ValueError, match="keypoints"):
    visualize.draw_skeleton(np.zeros((10, 10, 3), np.uint8), PERSON[:5], keypoint_set=LSP)
  with pytest.raises(ValueError, match="mask"):
    visualize.draw_skeleton(
      np.zeros((10, 10, 3), np.uint8), PERSON, mask=np.ones(3, bool), keypoint_set=LSP
    )


def test_prediction_png_size_and_placement(tmp_path):
  image = np.full((150, 60, 3), 90, np.uint8)  # a small, LSP-like portrait image
  gt = np.tile(np.array([[30.0, 75.0]]), (keypoint_sets.LSP.num_joints, 1))
  gt[:, 1] += np.arange(keypoint_sets.LSP.num_joints) * 5 - 35
  pred = gt.copy()
  path = visualize.save_prediction_png(
    tmp_path / "p.png", image, pred, gt, title="img 1001", keypoint_set=LSP
  )
  out = _read(path)
  new_h, new_w = visualize.scaled_size(150, 60, 300)
  assert (new_h, new_w) == (300, 120)
  assert out.shape == (22 + 300, 2 * 120 + 4, 3)
  # Joint 0 at (30, 40) maps to x' = 30.5 * 2 - 0.5 = 60.5, y' = 40.5 * 2 - 0.5 = 80.5.
  x, y = 60, 80
  np.testing.assert_array_equal(out[22 + y, x], visualize.GT_COLOR)
  np.testing.assert_array_equal(out[22 + y, 120 + 4 + x], visualize.PRED_COLOR)
  # Without gt and title: one panel of the scaled size.
  single = _read(visualize.save_prediction_png(tmp_path / "q.png", image, pred, keypoint_set=LSP))
  assert single.shape == (300, 120, 3)


def test_prediction_png_uses_pixel_centre_scaling(tmp_path):
  # A 10 x 10 image is scaled 30x. Pixel centre (2, 3) maps to
  # ((2 + 0.5) * 30 - 0.5, (3 + 0.5) * 30 - 0.5) = (74.5, 104.5), not (60, 90).
  image = np.zeros((10, 10, 3), np.uint8)
  kp = np.zeros((keypoint_sets.LSP.num_joints, 2))
  kp[0] = (2, 3)
  only_first = np.arange(keypoint_sets.LSP.num_joints) == 0
  out = _read(
    visualize.save_prediction_png(
      tmp_path / "p.png", image, kp, pred_mask=only_first, keypoint_set=LSP
    )
  )
  assert out.shape == (300, 300, 3)
  np.testing.assert_array_equal(out[104, 74], visualize.PRED_COLOR)
  np.testing.assert_array_equal(out[105, 75], visualize.PRED_COLOR)
  assert not out[90, 60].any()


def test_heatmap_panel_alignment_and_size(tmp_path):
  image = np.zeros((64, 64, 3), np.uint8)
  heatmaps = np.zeros((16, 16, keypoint_sets.LSP.num_joints + 1), np.float32)  # stride 4
  heatmaps[10, 3, 1] = 1.0  # right ankle peak at heatmap (x=3, y=10) -> input (13.5, 41.5)
  path = visualize.save_heatmap_panel(
    tmp_path / "h.png", image, heatmaps, tile_size=64, columns=5, alpha=1.0, keypoint_set=LSP
  )
  out = _read(path)
  # 1 image tile + 15 channels = 16 tiles -> 4 rows of 5.
  assert out.shape == (4 * 64, 5 * 64, 3)
  tile = out[0:64, 2 * 64 : 3 * 64]  # channel 1 is tile index 2
  hot, cold = tile[41, 13], tile[60, 60]
  assert hot[0] > 200 and hot[2] < 60, hot  # red/orange end of JET
  assert cold[2] > 100 and cold[0] < 60, cold  # blue end of JET
  # The hottest pixel is next to the mapped peak.
  red = tile[20:, :].astype(int)[..., 0] - tile[20:, :].astype(int)[..., 2]
  row, col = np.unravel_index(np.argmax(red), red.shape)
  assert abs(row + 20 - 41.5) <= 1 and abs(col - 13.5) <= 1


def test_heatmap_panel_bad_input(tmp_path):
  image = np.zeros((64, 64, 3), np.uint8)
  with pytest.raises(ValueError, match="heatmaps"):
    visualize.save_heatmap_panel(tmp_path / "h.png", image, np.zeros((16, 16)), keypoint_set=LSP)
  with pytest.raises(ValueError, match="names"):
    visualize.save_heatmap_panel(
      tmp_path / "h.png", image, np.zeros((16, 16, 3)), names=["a"], keypoint_set=LSP
    )
  assert not list(tmp_path.iterdir())


def test_pck_curve_png(tmp_path):
  t = np.linspace(0, 0.2, 41)
  curves = {"dark": (t, np.clip(t * 6, 0, 1)), "argmax": (t, np.clip(t * 4, 0, 0.8))}
  a = charts.save_pck_curve(tmp_path / "a.png", curves, dpi=50)
  b = charts.save_pck_curve(tmp_path / "b.png", curves, dpi=50)
  assert _read(a).shape == (225, 375, 3)  # figsize (7.5, 4.5) * 50 dpi
  assert a.read_bytes() == b.read_bytes()  # deterministic
  with pytest.raises(ValueError, match="empty"):
    charts.save_pck_curve(tmp_path / "c.png", {})
  with pytest.raises(ValueError, match="dark"):
    charts.save_pck_curve(tmp_path / "c.png", {"dark": (t, t[:-1])})


def test_pck_curve_legend_is_off_the_data_and_gives_the_end_values():
  """The legend lies right of the axes (it used to sit on the curves' right ends)."""
  t = np.linspace(0, 0.2, 41)
  curves = {"dark": (t, np.clip(t * 6, 0, 1)), "argmax": (t, np.clip(t * 4, 0, 0.8))}
  fig = charts.pck_curve_figure(curves)
  renderer = fig.canvas.get_renderer()
  (ax,) = fig.axes
  legend, plot = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
  assert legend.x0 >= plot.x1 and legend.x1 <= fig.bbox.x1  # beside the axes, inside the PNG
  assert [t.get_text() for t in ax.get_legend().get_texts()] == [
    "dark  100.0 % at 0.2",
    "argmax  80.0 % at 0.2",
  ]


def test_prediction_png_is_deterministic(tmp_path):
  image = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
  a = visualize.save_prediction_png(
    tmp_path / "a.png", image, PERSON, PERSON + 2.3, title="x", keypoint_set=LSP
  )
  b = visualize.save_prediction_png(
    tmp_path / "b.png", image, PERSON, PERSON + 2.3, title="x", keypoint_set=LSP
  )
  assert a.read_bytes() == b.read_bytes()


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
  image = np.zeros((40, 40, 3), np.uint8)
  target = tmp_path / "out.png"
  visualize.save_png(target, image)
  before = target.read_bytes()

  def broken_save(self, fp, *args, **kwargs):
    fp.write(b"\x89PNG half")  # a partial write, then a crash
    raise RuntimeError("killed mid-write")

  monkeypatch.setattr(Image.Image, "save", broken_save)
  with pytest.raises(RuntimeError, match="mid-write"):
    visualize.save_png(target, np.full((40, 40, 3), 255, np.uint8))
  assert target.read_bytes() == before
  assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
  assert oct(os.stat(target).st_mode & 0o777) == oct(0o644)


@pytest.mark.slow
def test_no_pyplot_and_no_global_backend_change(tmp_path):
  code = (
    "import sys, numpy as np, matplotlib\n"
    "from unipose_jax import charts\n"
    f"charts.save_pck_curve({str(tmp_path / 'c.png')!r}, {{'a': ([0, 0.2], [0, 1])}}, dpi=20)\n"
    "assert 'matplotlib.pyplot' not in sys.modules\n"
  )
  subprocess.run(
    [sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__))
  )


def test_draw_prediction_visible_joints_box_and_banner():
  black = np.zeros((100, 100, 3), np.uint8)
  visible = np.ones(keypoint_sets.LSP.num_joints, bool)
  visible[[0, 13]] = False  # right ankle, head top
  box = np.array([10.0, -5.0, 90.0, 99.0])  # the top side is above the image
  out = visualize.draw_prediction(black, PERSON, visible, box=box, keypoint_set=LSP)
  assert not black.any()
  assert not out[95, 30].any() and not out[85, 31].any()  # hidden ankle and its shin
  assert not out[3, 50].any() and not out[9, 50].any()  # hidden head top and its limb
  np.testing.assert_array_equal(out[55, 35], visualize.joint_colors(visualize.PRED_COLOR, LSP)[2])
  np.testing.assert_array_equal(out[70, 10], visualize.BOX_COLOR)  # left side of the box
  np.testing.assert_array_equal(out[99, 60], visualize.BOX_COLOR)  # bottom side
  assert not out[70, 5].any() and not out[70, 95].any()  # outside it
  found = visualize.draw_prediction(black, PERSON, visible, keypoint_set=LSP)
  assert not found[:14, 70:].any()  # no banner when a person is found
  lost = visualize.draw_prediction(
    black, PERSON, np.zeros(14, bool), person_found=False, keypoint_set=LSP
  )
  np.testing.assert_array_equal(
    lost[1, 98], visualize.banner_blend(black[1, 98], visualize.BANNER_COLOR)
  )
  assert (lost[:14] >= 200).all(-1).any()  # white text on the band
  assert not lost[20:].any()  # no joint drawn
  labelled = visualize.draw_prediction(
    black, PERSON, visible, scores=np.full(14, 0.5), keypoint_set=LSP
  )
  assert (labelled[:14, :60] >= 200).all(-1).any() and not (found[:14, :60] >= 200).all(-1).any()
  np.testing.assert_array_equal(
    labelled[1, 98], visualize.banner_blend(black[1, 98], visualize.LABEL_COLOR)
  )


def test_the_banner_lets_a_head_at_the_top_show_through():
  """A head at the very top of a photo stays visible under the "no person found" band:
  away from the text, each pixel is the photo blended with the band's colour."""
  photo = np.zeros((120, 160, 3), np.uint8)
  photo[:30] = (20, 20, 200)  # sky
  photo[2:30, 120:150] = (230, 190, 150)  # a head touching the top edge, right of the text
  out = visualize.draw_prediction(
    photo, PERSON, np.zeros(14, bool), person_found=False, keypoint_set=LSP
  )
  head, sky = out[10, 135].astype(int), out[10, 100].astype(int)
  np.testing.assert_array_equal(
    out[10, 135], visualize.banner_blend(photo[10, 135], visualize.BANNER_COLOR)
  )
  assert np.abs(head - sky).sum() > 150  # the head still stands out from the sky
  assert out[10, 135, 1] > 60  # its skin tone shows through (the band has no green)


@pytest.mark.parametrize("height, width", [(512, 512), (100, 100), (2000, 3000), (400, 60)])
@pytest.mark.parametrize("found", [True, False])
def test_overlay_banner_is_drawn_once_inside_the_image(monkeypatch, height, width, found):
  """Each line of the banner is one putText call whose text box lies inside the image and
  inside the band (the old banner drew a black and a white copy of different widths)."""
  calls = []
  real = visualize.cv2.putText

  def put_text(img, text, org, font, scale, color, thickness, *args):
    calls.append((text, org, scale, thickness))
    return real(img, text, org, font, scale, color, thickness, *args)

  monkeypatch.setattr(visualize.cv2, "putText", put_text)
  image = np.zeros((height, width, 3), np.uint8)
  visible = np.ones(keypoint_sets.LSP.num_joints, bool)
  visible[:2] = False
  scores = np.full(keypoint_sets.LSP.num_joints, 0.28)
  out = visualize.draw_prediction(
    image, PERSON, visible, person_found=found, scores=scores, keypoint_set=LSP
  )
  text = "12/14 joints, mean score 0.28" if found else "no person found"
  assert " ".join(c[0] for c in calls) == text  # every word once, nothing drawn twice
  if width >= 200:
    assert len(calls) == 1  # one line where it fits
  band_color = visualize.LABEL_COLOR if found else visualize.BANNER_COLOR
  under = visualize.draw_prediction(image, PERSON, visible, keypoint_set=LSP)[:, -1]  # skeleton
  band = int(np.argmin((out[:, -1] == visualize.banner_blend(under, band_color)).all(-1)))
  assert band >= 12
  for line, (x, y), scale, thickness in calls:
    (w, h), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    assert 0 <= x and x + w <= width and 0 <= y - h and y + base <= band, (line, x, y, w, h)
    assert scale >= 0.35 and h >= 7  # legible: capitals at least 7 px tall
  if height >= 512:
    assert calls[0][2] >= min(height, width) / 600 * 0.99  # grows with the image


def test_prediction_png_draws_the_box_scaled(tmp_path):
  image = np.zeros((50, 50, 3), np.uint8)  # scaled 6x to 300
  kp = np.full((keypoint_sets.LSP.num_joints, 2), 25.0)
  box = np.array([5.0, 10.0, 40.0, 45.0])  # x0 -> (5.5 * 6 - 0.5) = 32.5
  out = _read(
    visualize.save_prediction_png(
      tmp_path / "p.png", image, kp, box=box, title="t", keypoint_set=LSP
    )
  )
  assert out.shape == (22 + 300, 300, 3)
  np.testing.assert_array_equal(out[22 + 150, 32], visualize.BOX_COLOR)
  assert not out[22 + 150, 20].any()
  plain = _read(
    visualize.save_prediction_png(tmp_path / "q.png", image, kp, title="t", keypoint_set=LSP)
  )
  assert not plain[22 + 150, 32].any()
  with pytest.raises(ValueError, match="box"):
    visualize.save_prediction_png(tmp_path / "r.png", image, kp, box=[1, 2, 3], keypoint_set=LSP)
