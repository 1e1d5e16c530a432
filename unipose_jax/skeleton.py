"""The 14-joint Leeds Sports Pose skeleton.

Joint order is the one of LSP's ``joints.mat`` (and LSP-extended): index ``k`` of
every ``(..., 14, 2)`` keypoint array in this project is ``JOINT_NAMES[k]``.
"Right" and "left" are the person's own right and left.
"""

from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
  "right_ankle",
  "right_knee",
  "right_hip",
  "left_hip",
  "left_knee",
  "left_ankle",
  "right_wrist",
  "right_elbow",
  "right_shoulder",
  "left_shoulder",
  "left_elbow",
  "left_wrist",
  "neck",
  "head_top",
)
NUM_JOINTS: int = len(JOINT_NAMES)

#: Left/right pairs swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9))

#: Torso used by LSP's person-centric PCK: left shoulder to right hip.
TORSO: tuple[int, int] = (9, 2)

#: Head segment used by PCKh on LSP (no head box exists): neck to head top.
HEAD: tuple[int, int] = (12, 13)

#: Bones drawn for a skeleton overlay, as (joint a, joint b).
LIMBS: tuple[tuple[int, int], ...] = (
  (0, 1),
  (1, 2),  # right leg
  (5, 4),
  (4, 3),  # left leg
  (2, 3),  # hips
  (6, 7),
  (7, 8),  # right arm
  (11, 10),
  (10, 9),  # left arm
  (8, 9),  # shoulders
  (8, 12),
  (9, 12),  # shoulders to neck
  (12, 13),  # neck to head top
  (2, 8),
  (3, 9),  # torso sides
)


def _build_flip_permutation() -> np.ndarray:
  perm = np.arange(NUM_JOINTS)
  for a, b in FLIP_PAIRS:
    perm[a], perm[b] = b, a
  return perm


#: ``keypoints[..., FLIP_PERMUTATION, :]`` relabels joints after a horizontal flip.
FLIP_PERMUTATION: np.ndarray = _build_flip_permutation()
FLIP_PERMUTATION.setflags(write=False)


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


def is_left(joint: int) -> bool:
  """Whether joint index ``joint`` is on the person's left side."""
  return JOINT_NAMES[joint].startswith("left_")


# ----------------------------------------------------------------------------- channel layout
# The network's output channels, in order: the background map, the NUM_JOINTS joint maps
# and, with UniPose's box head, the NUM_BOX_POINTS box maps. The one owner of that layout.


def num_maps(num_joints: int = NUM_JOINTS, box_head: bool = False) -> int:
  """Output channels: background + ``num_joints`` joints (+ the 5 box points)."""
  return num_joints + 1 + (NUM_BOX_POINTS if box_head else 0)


def split_maps(maps, *, background: bool = True, num_joints: int = NUM_JOINTS, axis: int = -1):
  """Splits ``maps`` along the channel ``axis`` by the layout above.

  Works on NumPy and JAX arrays alike (slicing only): on heatmaps ``(..., h, w, C)`` and,
  with ``axis=-2``, on decoded points ``(..., C, 2)``.

  Args:
    maps: the channels; with ``background=False`` channel 0 (background) is already gone.
    background: whether ``maps`` starts with the background channel.
    num_joints: ``K``.
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
