"""The network's channel layout: the background map, the ``K`` joint maps and, with
UniPose's box head, the 5 box points. The one owner of that layout.

``K`` and what the joints are (names, flip pairs, limbs, metric normalisers) belong to the
run's keypoint set (:mod:`unipose_jax.keypoint_sets`, ``Run.keypoint_set``); nothing here
knows any dataset, so every function takes ``num_joints``.
"""

from __future__ import annotations

import numpy as np

#: The person box's five points (UniPose's box head, after the K + 1 joint maps): the
#: centre and the corners of the extent of the labeled joints.
BOX_POINT_NAMES: tuple[str, ...] = (
  "box_centre",
  "box_top_left",
  "box_top_right",
  "box_bottom_left",
  "box_bottom_right",
)
NUM_BOX_POINTS: int = len(BOX_POINT_NAMES)

#: ``points[..., BOX_FLIP_PERMUTATION, :]`` relabels box points after a horizontal flip.
BOX_FLIP_PERMUTATION: np.ndarray = np.array([0, 2, 1, 4, 3])
BOX_FLIP_PERMUTATION.setflags(write=False)


# ----------------------------------------------------------------------------- channel layout
# The network's output channels, in order: the background map, the K joint maps and, with
# UniPose's box head, the NUM_BOX_POINTS box maps.


def num_maps(num_joints: int, box_head: bool = False) -> int:
  """Output channels: background + ``num_joints`` joints (+ the 5 box points)."""
  return num_joints + 1 + (NUM_BOX_POINTS if box_head else 0)


def flip_channels(flip_permutation, num_channels: int) -> np.ndarray:
  """``(N,)`` int: the channel permutation a horizontal flip applies to ``N`` point maps
  (background dropped): the joints' ``flip_permutation`` ``(K,)`` (the keypoint set's),
  then, when ``N == K + 5``, the box points' :data:`BOX_FLIP_PERMUTATION` after them."""
  perm = [int(i) for i in flip_permutation]
  k = len(perm)
  if num_channels not in (k, k + NUM_BOX_POINTS):
    raise ValueError(f"expected {k} (+ {NUM_BOX_POINTS} box) channels, got {num_channels}")
  if num_channels > k:
    perm += [k + int(i) for i in BOX_FLIP_PERMUTATION]
  return np.asarray(perm)


def split_maps(maps, *, num_joints: int, background: bool = True, axis: int = -1):
  """Splits ``maps`` along the channel ``axis`` by the layout above.

  Works on NumPy and JAX arrays alike (slicing only): on heatmaps ``(..., h, w, C)`` and,
  with ``axis=-2``, on decoded points ``(..., C, 2)``.

  Args:
    maps: the channels; with ``background=False`` channel 0 (background) is already gone.
    num_joints: ``K``, the run's keypoint set's (required: no set is assumed).
    background: whether ``maps`` starts with the background channel.
    axis: the channel axis.

  Returns:
    ``(background, joints, box)``: the background channel kept as an axis of size 1 (None
    when ``background=False``), the ``K`` joint channels, and the 5 box channels or None
    when there are none.

  Raises:
    ValueError: when the channel count is neither ``K`` nor ``K + 5`` (after the
      background).
  """
  n = maps.shape[axis]
  first = 1 if background else 0
  if n - first not in (num_joints, num_joints + NUM_BOX_POINTS):
    raise ValueError(
      f"expected {first} + {num_joints} (+ {NUM_BOX_POINTS} box) channels on axis {axis}, "
      f"got {n} (shape {tuple(maps.shape)})"
    )
  axis = axis % maps.ndim

  def take(start: int, stop: int):
    return maps[(slice(None),) * axis + (slice(start, stop),)]

  bg = take(0, 1) if background else None
  joints = take(first, first + num_joints)
  box = take(first + num_joints, n) if n - first > num_joints else None
  return bg, joints, box
