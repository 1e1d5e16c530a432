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
