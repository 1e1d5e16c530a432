"""Images without a person, made from nothing new: the negatives of presence calibration.

Person presence (:mod:`unipose_jax.presence`) is calibrated on images that show a person
(the evaluation set) and on images that do not. The latter are built here, from random
numbers and from the evaluation set's own pixels, so no new data is needed. Kinds
(:data:`KINDS`):

* ``flat``: one uniform colour;
* ``noise``: i.i.d. pixel noise: uniform colour, uniform grey or Gaussian around a
  random colour;
* ``texture``: smoothed noise at a random scale, sine gratings, checkerboards, linear
  gradients between two colours;
* ``synthetic_background``: the synthetic set's backgrounds without their figure
  (:func:`datasets.synthetic.render_background`);
* ``background_crop``: the part of an evaluation image away from its annotated person
  (:func:`background_crop`).

Every image is ``(H, W, 3)`` uint8 RGB; generated ones take their ``(H, W)`` from a list
of sizes (the positives' sizes), so that letterboxing pads them as it pads the images
with a person. Everything is deterministic given the generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import cv2
import numpy as np

from unipose_jax.datasets import synthetic

KINDS: tuple[str, ...] = ("flat", "noise", "texture", "synthetic_background", "background_crop")

#: A background crop keeps this share of the person box's longer side clear on each side
#: of the box of the annotated joints (the head and the limbs reach past the joints).
CROP_CLEARANCE = 0.15
#: A background crop's shorter side is at least this many pixels ...
MIN_CROP_SIDE = 24
#: ... and its longer side at most this times the shorter one.
MAX_CROP_ASPECT = 2.0


def flat(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """One random colour everywhere."""
  colour = rng.integers(0, 256, size=3)
  return np.broadcast_to(colour.astype(np.uint8), (height, width, 3)).copy()


def noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """Pixel noise, independent per pixel: uniform colour, uniform grey, or Gaussian
  (sigma 10-60) around a random colour."""
  kind = rng.integers(3)
  if kind == 0:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
  if kind == 1:
    grey = rng.integers(0, 256, size=(height, width, 1), dtype=np.uint8)
    return np.repeat(grey, 3, axis=2)
  mean = rng.uniform(30, 225, size=3)
  values = rng.normal(mean, rng.uniform(10, 60), size=(height, width, 3))
  return np.clip(values, 0, 255).astype(np.uint8)


def _blend(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Values ``t`` (H, W) in [0, 1] -> colours between two random colours, uint8."""
  a, b = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
  return np.clip(a + t[..., None] * (b - a), 0, 255).astype(np.uint8)


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A random texture: smoothed noise (blur sigma 1-15 px), a sine grating (period 4-40
  px, any direction), a checkerboard (cells 3-30 px) or a linear gradient."""
  kind = rng.integers(4)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
  if kind == 0:
    field = rng.normal(size=(height, width))
    field = cv2.GaussianBlur(field, (0, 0), float(rng.uniform(1.0, 15.0)))
    t = (field - field.min()) / max(float(np.ptp(field)), 1e-12)
  elif kind == 1:
    angle, period = rng.uniform(0, np.pi), rng.uniform(4.0, 40.0)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
  elif kind == 2:
    cell = rng.uniform(3.0, 30.0)
    t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float64)
  else:
    angle = rng.uniform(0, 2 * np.pi)
    proj = xx * np.cos(angle) + yy * np.sin(angle)
    t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-12)
  return _blend(t, rng)


def synthetic_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """The synthetic set's background and noise, no figure, cut to ``height x width``."""
  side = max(height, width)
  image = synthetic.render_background(rng, side)
  y0 = int(rng.integers(0, side - height + 1))
  x0 = int(rng.integers(0, side - width + 1))
  return image[y0 : y0 + height, x0 : x0 + width]


GENERATORS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
  "flat": flat,
  "noise": noise,
  "texture": texture,
  "synthetic_background": synthetic_background,
}


def background_crop(
  image: np.ndarray, keypoints: np.ndarray, labeled: np.ndarray, rng: np.random.Generator
) -> np.ndarray | None:
  """The part of ``image`` away from its annotated person, or None when too little is.

  The person's box is the extent of the labeled joints ``keypoints`` (K, 2) (x, y
  original pixels) grown by :data:`CROP_CLEARANCE` of its longer side on every side. Of
  the four strips of the image beside that box (left of it, right of it, above, below;
  each the full height or width) the largest is taken; its shorter side must be at least
  :data:`MIN_CROP_SIDE` px, and a part of it at most :data:`MAX_CROP_ASPECT` times as
  long as wide is cut at a random place along it.

  Args:
    image: ``(H, W, 3)`` uint8; keypoints: ``(K, 2)``; labeled: ``(K,)`` bool.
  Returns:
    ``(h, w, 3)`` uint8 (a copy), or None.
  """
  h, w = image.shape[:2]
  labeled = np.asarray(labeled, bool)
  if not labeled.any():
    return None
  pts = np.asarray(keypoints, np.float64)[labeled]
  lo, hi = pts.min(0), pts.max(0)
  clear = CROP_CLEARANCE * float(np.max(hi - lo))
  x0, y0 = int(np.floor(lo[0] - clear)), int(np.floor(lo[1] - clear))
  x1, y1 = int(np.ceil(hi[0] + clear)) + 1, int(np.ceil(hi[1] + clear)) + 1
  # Strips as (top, bottom, left, right) pixel ranges, end exclusive.
  strips = [(0, h, 0, min(x0, w)), (0, h, max(x1, 0), w), (0, min(y0, h), 0, w)]
  strips.append((max(y1, 0), h, 0, w))
  sizes = [(max(b - t, 0), max(r - left, 0)) for t, b, left, r in strips]
  best = int(np.argmax([sh * sw for sh, sw in sizes]))
  (sh, sw), (top, _, left, _) = sizes[best], strips[best]
  if min(sh, sw) < MIN_CROP_SIDE:
    return None
  long_max = int(MAX_CROP_ASPECT * min(sh, sw))
  if sh > long_max:
    top += int(rng.integers(0, sh - long_max + 1))
    sh = long_max
  if sw > long_max:
    left += int(rng.integers(0, sw - long_max + 1))
    sw = long_max
  return image[top : top + sh, left : left + sw].copy()


def generate(
  rng: np.random.Generator, kind: str, sizes: Sequence[tuple[int, int]], count: int
) -> list[np.ndarray]:
  """``count`` images of a generated ``kind`` (a key of :data:`GENERATORS`), the ``(H, W)``
  of each drawn from ``sizes``."""
  if kind not in GENERATORS:
    raise ValueError(f"unknown negative kind {kind!r}; generated kinds: {', '.join(GENERATORS)}")
  if not len(sizes):
    raise ValueError("sizes is empty: need at least one (H, W)")
  picks = rng.integers(0, len(sizes), size=count)
  return [GENERATORS[kind](rng, *map(int, sizes[i])) for i in picks]


def background_crops(
  rng: np.random.Generator, records: Iterable[dict], count: int
) -> list[np.ndarray]:
  """Up to ``count`` :func:`background_crop` s of ``records`` (dicts with ``image``,
  ``keypoints``, ``labeled``), in order; records without room give none."""
  out = []
  for record in records:
    if len(out) >= count:
      break
    crop = background_crop(record["image"], record["keypoints"], record["labeled"], rng)
    if crop is not None:
      out.append(crop)
  return out
