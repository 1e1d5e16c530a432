"""UniPose's single-stage person box: box <-> its five points, training targets, decoding.

The box head of UniPose predicts five extra maps after the ``K + 1`` joint maps, one
Gaussian each at the person box's centre and its four corners, in the order of
:data:`unipose_jax.skeleton.BOX_POINT_NAMES`: centre, top-left, top-right, bottom-left,
bottom-right. The box is the extent (min/max) of the labeled joints, optionally grown by
a margin. Here the five points are ordinary keypoints: they go through the same
:class:`~unipose_jax.codecs.HeatmapCodec` as the joints (so unbiased encoding and every
decoder apply to them), and :func:`box_from_points` turns the five decoded points back
into a box.

Conventions: a box is ``(x0, y0, x1, y1)`` with ``x0 <= x1`` and ``y0 <= y1``, in the
same pixel frame as the keypoints it comes from (0-based, integer coordinates are pixel
centres, x then y). "Top" is the smaller y. The box is continuous: the extent of joints
at x = 10 and x = 30 is ``x0 = 10, x1 = 30`` (width 20), not rounded to a grid.

Every function is pure jax.numpy, batch-first and jit-able; ``margin`` is a static
python number.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax.numpy as jnp

from unipose_jax import geometry, skeleton

#: A box needs at least this many labeled joints (one joint has no extent).
MIN_BOX_JOINTS: int = 2

Array = Any


def _check_margin(margin) -> None:
  """Concrete margins must be finite and >= 0 (a traced one is taken as is)."""
  if isinstance(margin, bool) or (
    isinstance(margin, numbers.Real) and not (math.isfinite(margin) and margin >= 0)
  ):
    raise ValueError(
      f"box margin (config model.box_margin) must be a finite number >= 0, got {margin!r}"
    )


def _check_points(keypoints: Array, name: str) -> jnp.ndarray:
  keypoints = jnp.asarray(keypoints, jnp.float32)
  if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
    raise ValueError(f"{name} must have shape (B, K, 2), got {keypoints.shape}")
  return keypoints


def box_from_keypoints(
  keypoints: Array, labeled: Array, margin: float = 0.0
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The person box of each image: the extent of its labeled joints, grown by ``margin``
  (``geometry.joint_extent``, the project's one definition of the box of joints).

  Args:
    keypoints: ``(B, K, 2)`` ``(x, y)`` joints in any pixel frame; unlabeled joints may
      hold anything (NaN included), they are ignored.
    labeled: ``(B, K)`` bool (or numbers, nonzero = labeled). A labeled joint with a
      non-finite coordinate is ignored as well.
    margin: the box grows by ``margin * width`` on the left and on the right and by
      ``margin * height`` at the top and at the bottom (0: the joints' extent, as in the
      original UniPose). Finite and >= 0.

  Returns:
    ``box`` ``(B, 4)`` float32 ``(x0, y0, x1, y1)`` in the frame of ``keypoints``, and
    ``has_box`` ``(B,)`` bool: False where fewer than :data:`MIN_BOX_JOINTS` joints
    count, and the box is then all zeros.
  """
  _check_margin(margin)
  keypoints = _check_points(keypoints, "keypoints")
  labeled = jnp.asarray(labeled)
  if labeled.shape != keypoints.shape[:2]:
    raise ValueError(f"labeled must have shape (B, K) = {keypoints.shape[:2]}, got {labeled.shape}")
  box, count = geometry.joint_extent(keypoints, labeled, margin, xp=jnp)
  has_box = count >= MIN_BOX_JOINTS
  return jnp.where(has_box[:, None], box, 0.0), has_box


def box_points(box: Array) -> jnp.ndarray:
  """``(B, 4)`` boxes ``(x0, y0, x1, y1)`` -> ``(B, 5, 2)`` points in the skeleton's box
  order: centre, top-left ``(x0, y0)``, top-right ``(x1, y0)``, bottom-left ``(x0, y1)``,
  bottom-right ``(x1, y1)``."""
  box = jnp.asarray(box, jnp.float32)
  if box.ndim != 2 or box.shape[-1] != 4:
    raise ValueError(f"box must have shape (B, 4) as (x0, y0, x1, y1), got {box.shape}")
  x0, y0, x1, y1 = (box[:, i] for i in range(4))
  pts = [(0.5 * (x0 + x1), 0.5 * (y0 + y1)), (x0, y0), (x1, y0), (x0, y1), (x1, y1)]
  return jnp.stack([jnp.stack(p, axis=-1) for p in pts], axis=1)


def box_targets(
  keypoints: Array, weights: Array, margin: float = 0.0
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Training targets of the box head, as five extra keypoints.

  Args:
    keypoints: ``(B, K, 2)`` joints in network-input pixels (the codec's input frame).
    weights: ``(B, K)`` joint weights; a joint counts when its weight is ``> 0``.
    margin: as in :func:`box_from_keypoints`.

  Returns:
    ``points`` ``(B, 5, 2)`` float32 (the :func:`box_points` of the box, same frame as
    ``keypoints``) and ``point_weights`` ``(B, 5)`` float32: 1 where the image has a
    box (>= :data:`MIN_BOX_JOINTS` joints with weight > 0), else 0 (points then 0).
    Encode them with the joints' ``HeatmapCodec``; it also zeroes the weight of a corner
    that lies far outside the map.
  """
  weights = jnp.asarray(weights, jnp.float32)
  box, has_box = box_from_keypoints(keypoints, weights > 0, margin)
  point_weights = jnp.broadcast_to(
    has_box[:, None].astype(jnp.float32), (box.shape[0], skeleton.NUM_BOX_POINTS)
  )
  return box_points(box), point_weights


def box_from_points(points: Array) -> jnp.ndarray:
  """The box ``(B, 4)`` ``(x0, y0, x1, y1)`` from five decoded points ``(B, 5, 2)``.

  Each side is the mean of the two corners on it (the centre is not used: it adds no
  information about the extent and is the point most often blurred by the body):

    x0 = (TL.x + BL.x) / 2,   x1 = (TR.x + BR.x) / 2,
    y0 = (TL.y + TR.y) / 2,   y1 = (BL.y + BR.y) / 2,

  then each pair is sorted so that ``x0 <= x1`` and ``y0 <= y1`` (corners predicted on
  the wrong sides still give a valid box). Exact inverse of :func:`box_points` for any
  ordered box; same frame as ``points``.
  """
  points = _check_points(points, "box points")
  if points.shape[1] != skeleton.NUM_BOX_POINTS:
    raise ValueError(
      f"box points must have shape (B, {skeleton.NUM_BOX_POINTS}, 2) "
      f"({', '.join(skeleton.BOX_POINT_NAMES)}), got {points.shape}"
    )
  tl, tr, bl, br = points[:, 1], points[:, 2], points[:, 3], points[:, 4]
  xa = 0.5 * (tl[:, 0] + bl[:, 0])
  xb = 0.5 * (tr[:, 0] + br[:, 0])
  ya = 0.5 * (tl[:, 1] + tr[:, 1])
  yb = 0.5 * (bl[:, 1] + br[:, 1])
  return jnp.stack(
    [jnp.minimum(xa, xb), jnp.minimum(ya, yb), jnp.maximum(xa, xb), jnp.maximum(ya, yb)],
    axis=-1,
  )
