"""Geometry (unipose_jax.geometry) on hand-worked cases, and the channel layout
(skeleton.split_maps): one box of joints for the pipeline, the box head and prediction."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from unipose_jax import geometry, keypoint_sets, skeleton
from unipose_jax.codecs import box as box_lib

K = keypoint_sets.LSP.num_joints


def _joints():
  """Two people: the first has joints at x in {10, 40, 25}, y in {20, 5, 65} (and a NaN
  and a far-away joint outside the mask), the second one joint only."""
  kp = np.full((2, K, 2), 1000.0)
  mask = np.zeros((2, K), bool)
  kp[0, 0], kp[0, 5], kp[0, 12] = (10, 20), (40, 5), (25, 65)
  mask[0, [0, 5, 12]] = True
  kp[0, 3] = np.nan
  mask[0, 3] = True  # masked in but not finite: never counts
  kp[1, 4] = (50, 50)
  mask[1, 4] = True
  return kp, mask


def test_joint_extent_by_hand_in_numpy_and_jax():
  kp, mask = _joints()
  box, count = geometry.joint_extent(kp, mask)
  np.testing.assert_array_equal(box[0], [10, 5, 40, 65])
  np.testing.assert_array_equal(box[1], [50, 50, 50, 50])
  np.testing.assert_array_equal(count, [3, 1])
  # Width 30, height 60: a margin of 0.1 adds 3 px left and right, 6 px top and bottom.
  grown, _ = geometry.joint_extent(kp, mask, margin=0.1)
  np.testing.assert_allclose(grown[0], [7, -1, 43, 71])
  jbox, jcount = geometry.joint_extent(jnp.asarray(kp, jnp.float32), mask, 0.1, xp=jnp)
  np.testing.assert_allclose(np.asarray(jbox), grown, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(jcount), [3, 1])
  none, zero = geometry.joint_extent(kp[0], np.zeros(K, bool))
  assert zero == 0 and none.tolist() == [np.inf, np.inf, -np.inf, -np.inf]


def test_one_extent_behind_the_pipeline_box_head_and_prediction():
  kp, mask = _joints()
  # The box head's targets and evaluation's annotation box: >= 2 joints make a box.
  box, has_box = box_lib.box_from_keypoints(kp.astype(np.float32), mask, 0.1)
  np.testing.assert_allclose(np.asarray(box[0]), [7, -1, 43, 71], atol=1e-5)
  assert np.asarray(has_box).tolist() == [True, False]
  # The input pipeline's person-centred crop: centre and longer side, else the image.
  centre, extent = geometry.person_box(kp[0], mask[0] & np.isfinite(kp[0]).all(1), 100, 80)
  np.testing.assert_array_equal(centre, [25, 35])
  assert extent == 60
  centre, extent = geometry.person_box(kp[1], mask[1], 100, 80)  # one joint: no extent
  np.testing.assert_array_equal(centre, [39.5, 49.5])
  assert extent == 100


def test_crop_affine_maps_the_square_around_the_box_onto_the_input():
  # Box 100 x 40 at centre (80, 40), margin 1.5: side 150 (over 0.1 x 640), so the input's
  # pixel area [-0.5, 63.5] covers [5, 155] x [-35, 115] of the original.
  a = geometry.crop_affine(np.array([30, 20, 130, 60]), 480, 640, 64, 1.5)
  corners = geometry.apply_affine_to_points(a, np.array([[5.0, -35.0], [155.0, 115.0], [80, 40]]))
  np.testing.assert_allclose(corners, [[-0.5, -0.5], [63.5, 63.5], [31.5, 31.5]], atol=1e-12)
  # A tiny box: the side is at least MIN_CROP_FRACTION of the image's longer side.
  a = geometry.crop_affine(np.array([5, 5, 5, 5]), 480, 640, 64, 1.25)
  assert a[0, 0] == pytest.approx(64 / (geometry.MIN_CROP_FRACTION * 640))


def test_split_maps_follows_the_channel_layout():
  maps = np.arange(2 * 3 * 3 * (K + 6)).reshape(2, 3, 3, K + 6)
  bg, joints, box = skeleton.split_maps(maps, num_joints=K)
  assert bg.shape == (2, 3, 3, 1) and joints.shape == (2, 3, 3, K) and box.shape == (2, 3, 3, 5)
  np.testing.assert_array_equal(np.concatenate([bg, joints, box], -1), maps)
  assert skeleton.num_maps(K, True) == K + 6 and skeleton.num_maps(K, False) == K + 1
  bg, joints, box = skeleton.split_maps(maps[..., : K + 1], num_joints=K)
  assert box is None and joints.shape[-1] == K
  points = np.arange((K + 5) * 2).reshape(K + 5, 2)
  none, kp, box_points = skeleton.split_maps(points, background=False, num_joints=K, axis=-2)
  assert none is None and kp.shape == (K, 2) and box_points.shape == (5, 2)
  np.testing.assert_array_equal(box_points, points[K:])
  _, joints, box = skeleton.split_maps(jnp.zeros((1, 2, 2, K + 6)), num_joints=K)  # JAX arrays too
  assert joints.shape == (1, 2, 2, K) and box.shape == (1, 2, 2, 5)
  with pytest.raises(
    ValueError, match=r"expected 1 \+ 14 \(\+ 5 box\) channels on axis -1, got 17"
  ):
    skeleton.split_maps(np.zeros((1, 2, 2, 17)), num_joints=K)
  # Any K (here Penn Action's 13): the layout is K + 1 (+ 5), nothing assumes LSP's 14.
  bg, joints, box = skeleton.split_maps(np.zeros((1, 2, 2, 19)), num_joints=13)
  assert bg.shape[-1] == 1 and joints.shape[-1] == 13 and box.shape[-1] == 5
  with pytest.raises(TypeError, match="num_joints"):
    skeleton.split_maps(maps)  # no default K
  with pytest.raises(TypeError, match="num_joints"):
    skeleton.num_maps()


def test_flip_channels_appends_the_box_points_after_the_joints():
  perm = np.array([1, 0, 2])  # 3 joints, 0 and 1 a left/right pair
  np.testing.assert_array_equal(skeleton.flip_channels(perm, 3), [1, 0, 2])
  np.testing.assert_array_equal(skeleton.flip_channels(perm, 8), [1, 0, 2, 3, 5, 4, 7, 6])
  with pytest.raises(ValueError, match=r"expected 3 \(\+ 5 box\) channels, got 4"):
    skeleton.flip_channels(perm, 4)
