"""Pictures for inspection: skeleton overlays, heatmap grids, PCK curves.

NumPy in, PNG out. Images are ``uint8`` RGB ``(H, W, 3)``; keypoints are
``(x, y)`` pixels with integer coordinates at pixel centres (design section 5),
in the frame of the image they are drawn on; which joints they are (names, sides,
limbs) is the keypoint set's (``keypoint_set=``, a ``keypoint_sets.KeypointSet``), given
to every function that draws a skeleton. Drawing uses OpenCV (sub-pixel,
anti-aliased); the PCK curve uses matplotlib through ``matplotlib.figure.Figure``
and the Agg canvas (pyplot and the global backend are never touched). Every
``save_*`` function writes atomically (``files.atomic_write``): a reader, or a
killed process, never sees a half-written file.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image

from unipose_jax import files
from unipose_jax.keypoint_sets import KeypointSet

PathLike = str | os.PathLike

#: Default colours (RGB): annotations green, predictions red.
GT_COLOR: tuple[int, int, int] = (40, 200, 40)
PRED_COLOR: tuple[int, int, int] = (230, 40, 40)
#: The predicted person box (amber) and the "no person found" band (dark red).
BOX_COLOR: tuple[int, int, int] = (255, 190, 0)
BANNER_COLOR: tuple[int, int, int] = (150, 0, 0)
#: Background of the overlay's "n/K joints, mean score s" banner (white text on it).
LABEL_COLOR: tuple[int, int, int] = (40, 40, 40)
#: Opacity of those bands: the photo shows through (a head at the top stays visible).
BANNER_ALPHA: float = 0.6

_SHIFT = 4  # cv2 fixed-point bits: coordinates are drawn with 1/16 px precision.
_MAX_COORD = 1.0e4  # coordinates are clipped to +-this before drawing (cv2 overflows on huge ones).
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TITLE_HEIGHT = 22


def _check_color(color: Sequence[int]) -> tuple[int, int, int]:
  c = tuple(int(v) for v in color)
  if len(c) != 3 or any(v < 0 or v > 255 for v in c):
    raise ValueError(f"color must be three ints in [0, 255] (RGB), got {color}")
  return c  # type: ignore[return-value]


def left_color(color: Sequence[int]) -> tuple[int, int, int]:
  """Shade used for the person's left side: ``color`` blended 55% towards white
  (towards black for light colours, luminance >= 140), so left and right differ."""
  r, g, b = _check_color(color)
  luminance = 0.299 * r + 0.587 * g + 0.114 * b
  target = 0.0 if luminance >= 140 else 255.0
  return tuple(int(round(v + 0.55 * (target - v))) for v in (r, g, b))  # type: ignore[return-value]


def joint_colors(color: Sequence[int], keypoint_set: KeypointSet) -> np.ndarray:
  """``(K, 3)`` uint8 RGB colour of each joint of ``keypoint_set``: ``color`` for
  right-side and centre joints (LSP's neck, head top), :func:`left_color` for left-side
  joints (``KeypointSet.is_left``)."""
  base, left = _check_color(color), left_color(color)
  return np.array(
    [left if keypoint_set.is_left(k) else base for k in range(keypoint_set.num_joints)], np.uint8
  )


def _rgb(color: np.ndarray) -> tuple[int, int, int]:
  return tuple(int(v) for v in color)  # type: ignore[return-value]


def _limb_color(a: int, b: int, colors: np.ndarray, kset: KeypointSet) -> tuple[int, int, int]:
  """Left shade when both ends are left joints; otherwise the right/centre colour."""
  return _rgb(colors[b if kset.is_left(a) and not kset.is_left(b) else a])


def _check_image(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
    raise ValueError(f"image must be uint8 of shape (H, W, 3), got {image.dtype} {image.shape}")
  return image


def _check_keypoints(keypoints: Any, kset: KeypointSet, name: str = "keypoints") -> np.ndarray:
  kp = np.asarray(keypoints, np.float64)
  k = kset.num_joints
  if kp.shape != (k, 2):
    raise ValueError(
      f"{name} must have shape ({k}, 2) as (x, y) (keypoint set {kset.name!r}), got {kp.shape}"
    )
  return kp


def _joint_visible(keypoints: np.ndarray, mask: Any | None) -> np.ndarray:
  visible = np.all(np.isfinite(keypoints), axis=-1)
  if mask is not None:
    mask = np.asarray(mask)
    if mask.shape != (keypoints.shape[0],):
      raise ValueError(f"mask must have shape ({keypoints.shape[0]},), got {mask.shape}")
    visible &= mask.astype(bool)
  return visible


def _fixed(point: np.ndarray) -> tuple[int, int]:
  p = np.clip(point, -_MAX_COORD, _MAX_COORD) * (1 << _SHIFT)
  return int(round(float(p[0]))), int(round(float(p[1])))


def _default_sizes(image: np.ndarray) -> tuple[int, int]:
  short = min(image.shape[:2])
  return max(2, int(round(short / 60))), max(1, int(round(short / 120)))


# ---------------------------------------------------------------------------
# Drawing.


def draw_skeleton(
  image: np.ndarray, keypoints: Any, color: Sequence[int] = PRED_COLOR,
  mask: Any | None = None, *, keypoint_set: KeypointSet, radius: int | None = None,
  thickness: int | None = None,
) -> np.ndarray:  # fmt: skip
  """A copy of ``image`` (``(H, W, 3)`` uint8, not modified) with the skeleton drawn on it:
  the limbs of ``keypoint_set`` (``KeypointSet.limbs``) as lines, then each joint as a
  filled dot on its keypoint.

  Args:
    keypoints: ``(K, 2)`` ``(x, y)`` in this image's pixels, in ``keypoint_set``'s order.
    color: RGB of the right side and centre; the left side is in :func:`left_color` of it.
    mask: optional ``(K,)``; joints where it is False (and non-finite joints) are not
      drawn, nor any limb touching them.
    radius, thickness: dot radius and limb width in pixels; by default they grow with the
      image: ``max(2, round(min(H, W) / 60))`` and ``max(1, round(min(H, W) / 120))``.
  """
  out = _check_image(image).copy()
  kp = _check_keypoints(keypoints, keypoint_set)
  visible = _joint_visible(kp, mask)
  colors = joint_colors(color, keypoint_set)
  default_radius, default_thickness = _default_sizes(out)
  radius = default_radius if radius is None else int(radius)
  thickness = default_thickness if thickness is None else int(thickness)
  if radius < 1 or thickness < 1:
    raise ValueError(f"radius and thickness must be >= 1, got {radius}, {thickness}")
  for a, b in keypoint_set.limbs:
    if visible[a] and visible[b]:
      c = _limb_color(a, b, colors, keypoint_set)
      cv2.line(out, _fixed(kp[a]), _fixed(kp[b]), c, thickness, cv2.LINE_AA, _SHIFT)
  for k in np.flatnonzero(visible):
    cv2.circle(out, _fixed(kp[k]), radius << _SHIFT, _rgb(colors[k]), -1, cv2.LINE_AA, _SHIFT)
  return out


def _text(image, text: str, origin, scale: float, color, width: int = 1) -> None:
  text = text.encode("ascii", "replace").decode("ascii")  # Hershey fonts are ASCII only
  cv2.putText(image, text, origin, _FONT, scale, color, width, cv2.LINE_AA)


def _put_label(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.4) -> None:
  """White text on a black box fitted to it, baseline-left at ``origin`` (in place).

  Drawn once: an outline made of a second, thicker copy of the text is wider than the text
  (Hershey glyphs advance by their thickness) and the two copies drift apart.
  """
  (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
  x, y = origin
  image[max(0, y - h - 2) : y + base, max(0, x - 2) : x + w + 2] = 0
  _text(image, text, origin, scale, (255, 255, 255))


def banner_layout(width: int, height: int, text: str) -> tuple[float, int, list[str], int, int]:
  """``(scale, thickness, lines, line height, band height)`` of a banner across the top.

  The font grows with ``min(height, width)`` (scale 0.4 up to 600 px, then in proportion)
  and shrinks, down to 0.35 (about 8 px capitals), so that the text fits the width with a
  6 px margin each side; what still does not fit is wrapped at spaces onto more lines.
  """
  scale = max(0.4, min(height, width) / 600)
  thickness = max(1, int(round(1.5 * scale)))
  room = max(1, width - 12)
  w = cv2.getTextSize(text, _FONT, scale, thickness)[0][0]
  if w > room:
    scale = max(0.35, scale * room / w)
    thickness = max(1, int(round(1.5 * scale)))
  lines: list[str] = []
  for word in text.split(" "):
    joined = f"{lines[-1]} {word}" if lines else word
    if lines and cv2.getTextSize(joined, _FONT, scale, thickness)[0][0] > room:
      lines.append(word)
    else:
      lines[-1:] = [joined]
  (_, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
  line_height = h + base + max(3, h // 3)
  band = min(height, max(12, line_height * len(lines) + max(3, h // 3)))
  return scale, thickness, lines, line_height, band


def banner_blend(under: np.ndarray, color: Sequence[int]) -> np.ndarray:
  """uint8 pixels ``under`` (any shape ``(..., 3)``) seen through a banner of ``color``:
  ``round((1 - a) * under + a * color)``, ``a`` = :data:`BANNER_ALPHA`."""
  mixed = np.asarray(under, np.float32) * (1.0 - BANNER_ALPHA)
  return np.round(mixed + np.asarray(color, np.float32) * BANNER_ALPHA).astype(np.uint8)


def _banner(image: np.ndarray, text: str, color: tuple[int, int, int]) -> None:
  """A translucent ``color`` band across the top (:func:`banner_blend`: the photo shows
  through) with ``text`` on it in white, each line once (in place)."""
  scale, thickness, lines, line_height, band = banner_layout(image.shape[1], image.shape[0], text)
  image[:band] = banner_blend(image[:band], color)
  base = cv2.getTextSize(text, _FONT, scale, thickness)[1]
  for i, line in enumerate(lines):
    _text(image, line, (6, (i + 1) * line_height - base), scale, (255, 255, 255), thickness)


def _title_bar(width: int, title: str) -> np.ndarray:
  bar = np.full((_TITLE_HEIGHT, width, 3), 255, np.uint8)
  _text(bar, title, (4, 16), 0.45, (0, 0, 0))
  return bar


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
  """Resize with half-pixel centres (cv2's convention, the one of section 5)."""
  if (image.shape[1], image.shape[0]) == (width, height):
    return image.copy()
  shrinking = width < image.shape[1] or height < image.shape[0]
  return cv2.resize(
    image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
  )


def scaled_size(height: int, width: int, size: int) -> tuple[int, int]:
  """``(H', W')`` of an ``(height, width)`` image scaled so its longer side is ``size``."""
  if size < 1:
    raise ValueError(f"size must be >= 1, got {size}")
  s = size / max(height, width)
  return max(1, int(round(height * s))), max(1, int(round(width * s)))


def _scale_keypoints(kp: np.ndarray, sx: float, sy: float) -> np.ndarray:
  # Pixel-centre convention: x' = (x + 0.5) * sx - 0.5.
  return (kp + 0.5) * np.array([sx, sy]) - 0.5


def save_png(path: PathLike, image: np.ndarray) -> pathlib.Path:
  """Atomically write a ``(H, W, 3)`` uint8 RGB array as a PNG; returns the path."""
  image = _check_image(image)
  return files.atomic_write(path, lambda f: Image.fromarray(image, "RGB").save(f, format="PNG"))


# ---------------------------------------------------------------------------
# Figures.


def render_prediction(
  image: np.ndarray, pred: Any, gt: Any | None = None, title: str | None = None, *,
  keypoint_set: KeypointSet, box: Any | None = None, size: int = 300,
  pred_mask: Any | None = None, gt_mask: Any | None = None, gap: int = 4,
) -> np.ndarray:  # fmt: skip
  """The picture :func:`save_prediction_png` writes, as an array.

  The image is rescaled so that its longer side is ``size`` pixels (LSP images are
  small); keypoints and ``box`` (``(4,)`` x0, y0, x1, y1), given in ``image``'s pixels,
  are mapped with the pixel-centre convention. Panels left to right: the annotation
  (green, only when ``gt`` is given), then the prediction (red, with the box in
  :data:`BOX_COLOR`), separated by ``gap`` white columns; a white title bar of 22 px on
  top when ``title`` is given. Output shape: ``(H' + 22 * bool(title), n * W' + (n - 1)
  * gap, 3)`` with ``(H', W') = scaled_size(H, W, size)`` and ``n`` panels.
  """
  image = _check_image(image)
  kset = keypoint_set
  pred = _check_keypoints(pred, kset, "pred")
  h, w = image.shape[:2]
  new_h, new_w = scaled_size(h, w, size)
  big = _resize(image, new_w, new_h)
  sx, sy = new_w / w, new_h / h
  panels = []
  if gt is not None:
    gt = _check_keypoints(gt, kset, "gt")
    panel = draw_skeleton(big, _scale_keypoints(gt, sx, sy), GT_COLOR, gt_mask, keypoint_set=kset)
    _put_label(panel, "annotation", (4, 14))
    panels.append(panel)
  panel = draw_skeleton(
    big, _scale_keypoints(pred, sx, sy), PRED_COLOR, pred_mask, keypoint_set=kset
  )
  if box is not None:
    corners = _scale_keypoints(_check_box(box).reshape(2, 2), sx, sy)
    _draw_box(panel, corners.reshape(4), max(2, _default_sizes(panel)[1]))
  _put_label(panel, "prediction", (4, 14))
  panels.append(panel)
  spacer = np.full((new_h, gap, 3), 255, np.uint8)
  out = np.concatenate([a for panel in panels for a in (spacer, panel)][1:], axis=1)
  if title:
    out = np.concatenate([_title_bar(out.shape[1], title), out], axis=0)
  return out


def save_prediction_png(
  path: PathLike, image: np.ndarray, pred: Any, gt: Any | None = None,
  title: str | None = None, *, keypoint_set: KeypointSet, box: Any | None = None,
  **kwargs: Any,
) -> pathlib.Path:  # fmt: skip
  """Write annotation and prediction skeletons (and the predicted ``box``) side by side;
  ``kwargs``: ``size``, ``pred_mask``, ``gt_mask``, ``gap`` of :func:`render_prediction`."""
  return save_png(
    path, render_prediction(image, pred, gt, title, keypoint_set=keypoint_set, box=box, **kwargs)
  )


def _check_box(box: Any) -> np.ndarray:
  b = np.asarray(box, np.float64)
  if b.shape != (4,):
    raise ValueError(f"box must have shape (4,) as (x0, y0, x1, y1), got {b.shape}")
  return b


def _draw_box(image: np.ndarray, box: np.ndarray, thickness: int) -> None:
  """Rectangle through the pixel centres ``(x0, y0)``, ``(x1, y1)`` (in place; skipped if
  not finite)."""
  if np.all(np.isfinite(box)):
    p0, p1 = _fixed(box[:2]), _fixed(box[2:])
    cv2.rectangle(image, p0, p1, BOX_COLOR, thickness, cv2.LINE_AA, _SHIFT)


def draw_prediction(
  image: np.ndarray, keypoints: Any, visible: Any, box: Any | None = None,
  person_found: bool = True, scores: Any | None = None, *, keypoint_set: KeypointSet,
) -> np.ndarray:  # fmt: skip
  """A copy of ``image`` (``(H, W, 3)`` uint8 RGB, not modified) with one person's
  prediction drawn on it: predict's overlay. Sizes grow with ``min(H, W)``.

  Args:
    keypoints: ``(K, 2)`` ``(x, y)`` in this image's pixels.
    visible: ``(K,)`` bool; only these joints, and limbs between two of them, are drawn.
    box: optional ``(4,)`` ``x0, y0, x1, y1`` (pixel centres), a :data:`BOX_COLOR` rectangle.
    person_found: False draws a translucent :data:`BANNER_COLOR` band across the top
      saying "no person found" (over anything else).
    scores: optional ``(K,)``: a translucent :data:`LABEL_COLOR` band across the top saying
      "n/K joints, mean score s" (visible joints).
  """
  out = draw_skeleton(
    image, keypoints, PRED_COLOR, np.asarray(visible, bool), keypoint_set=keypoint_set
  )
  if box is not None:
    _draw_box(out, _check_box(box), max(2, _default_sizes(out)[1]))
  if not person_found:
    _banner(out, "no person found", BANNER_COLOR)
  elif scores is not None:
    vis = np.asarray(visible, bool)
    mean = float(np.mean(np.asarray(scores, np.float64)[vis])) if vis.any() else 0.0
    _banner(out, f"{int(vis.sum())}/{vis.size} joints, mean score {mean:.2f}", LABEL_COLOR)
  return out


def heatmap_channel_names(
  num_channels: int, joint_names: Sequence[str] | None = None
) -> tuple[str, ...]:
  """Tile labels: the keypoint set's ``joint_names`` for ``K`` channels, led by
  ``'background'`` for ``K + 1``, followed by the box points for ``K + 5``;
  ``'channel i'`` otherwise (or without names)."""
  from unipose_jax.skeleton import BOX_POINT_NAMES  # noqa: PLC0415

  names = tuple(joint_names or ())
  k = len(names)
  if k and num_channels == k:
    return names
  if k and num_channels == k + 1:
    return ("background",) + names
  if k and num_channels == k + len(BOX_POINT_NAMES):
    return names + BOX_POINT_NAMES
  return tuple(f"channel {i}" for i in range(num_channels))


def render_heatmap_panel(
  image: np.ndarray, heatmaps: Any, *, keypoints: Any | None = None,
  keypoint_set: KeypointSet | None = None, names: Sequence[str] | None = None,
  tile_size: int = 128, columns: int = 5, vmax: float | None = 1.0, alpha: float = 0.5,
  title: str | None = None,
) -> np.ndarray:  # fmt: skip
  """The grid :func:`save_heatmap_panel` writes, as an array.

  Tiles, row-major: the image itself (with the skeleton of ``keypoints`` if given), then
  one per heatmap channel: the heatmap resized to the image (half-pixel centres, so a
  heatmap at stride s lines up with an input of s times its size), clipped to ``[0,
  vmax]`` (``vmax=None``: each channel's own maximum), coloured with the JET map and
  blended over the image with weight ``alpha``. With ``keypoints`` (``(K, 2)``, image
  pixels; they need ``keypoint_set``) joint k's tile also gets a white ring at keypoint k
  (channel k + 1 when there is a background channel 0). Tiles are labelled ``names``,
  else :func:`heatmap_channel_names` of ``keypoint_set``'s joints. Each tile is
  ``scaled_size(H, W, tile_size)``; the grid has ``min(columns, n_tiles)`` columns and a
  22 px title bar when ``title``.
  """
  image = _check_image(image)
  maps = np.asarray(heatmaps, np.float32)
  if maps.ndim != 3 or maps.shape[-1] == 0:
    raise ValueError(f"heatmaps must have shape (h, w, C), got {maps.shape}")
  num_channels = maps.shape[-1]
  joint_names = keypoint_set.joint_names if keypoint_set is not None else None
  names = heatmap_channel_names(num_channels, joint_names) if names is None else tuple(names)
  if len(names) != num_channels:
    raise ValueError(f"{len(names)} names for {num_channels} heatmap channels")
  if columns < 1:
    raise ValueError(f"columns must be >= 1, got {columns}")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  th, tw = scaled_size(*image.shape[:2], tile_size)
  sx, sy = tw / image.shape[1], th / image.shape[0]
  base = _resize(image, tw, th)
  if keypoints is not None and keypoint_set is None:
    raise ValueError("keypoints on a heatmap panel need their keypoint_set")
  k = keypoint_set.num_joints if keypoint_set is not None else -1
  first_joint_channel = 1 if num_channels == k + 1 else 0
  kp = None
  if keypoints is not None:
    kp = _scale_keypoints(_check_keypoints(keypoints, keypoint_set), sx, sy)
  tiles = [
    draw_skeleton(base, kp, PRED_COLOR, keypoint_set=keypoint_set) if kp is not None
    else base.copy()
  ]  # fmt: skip
  _put_label(tiles[0], "image", (3, 12), 0.35)
  for c in range(num_channels):
    m = np.nan_to_num(maps[..., c], nan=0.0)
    top = float(m.max()) if vmax is None else float(vmax)
    top = top if top > 0 else 1.0
    m = cv2.resize(np.clip(m, 0.0, top) / top, (tw, th), interpolation=cv2.INTER_LINEAR)
    m8 = np.clip(np.round(m * 255.0), 0, 255).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(m8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    tile = np.round((1.0 - alpha) * base + alpha * colored).astype(np.uint8)
    joint = c - first_joint_channel
    if kp is not None and 0 <= joint < k and np.all(np.isfinite(kp[joint])):
      cv2.circle(tile, _fixed(kp[joint]), 5 << _SHIFT, (255, 255, 255), 1, cv2.LINE_AA, _SHIFT)
    _put_label(tile, names[c], (3, 12), 0.35)
    tiles.append(tile)
  columns = min(columns, len(tiles))
  rows = math.ceil(len(tiles) / columns)
  grid = np.full((rows * th, columns * tw, 3), 255, np.uint8)
  for i, tile in enumerate(tiles):
    r, c = divmod(i, columns)
    grid[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
  if title:
    grid = np.concatenate([_title_bar(grid.shape[1], title), grid], axis=0)
  return grid


def save_heatmap_panel(
  path: PathLike, image: np.ndarray, heatmaps: Any, **kwargs: Any
) -> pathlib.Path:
  """Write :func:`render_heatmap_panel` ``(image, heatmaps, **kwargs)`` as a PNG.

  ``image`` ``(H, W, 3)`` uint8 is the network input the heatmaps ``(h, w, K)`` or
  ``(h, w, K + 1)`` (channel 0 background) belong to.
  """
  return save_png(path, render_heatmap_panel(image, heatmaps, **kwargs))
