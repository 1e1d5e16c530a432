"""``predict_video.VideoPredictor``: the state carried frame to frame and reset per video,
each frame cropped around the previous frame's person (the first by the two-pass search),
a lost person searched again. A stand-in network places fixed peaks in its input, so where
each frame's joints land in the frame follows from the crops alone (checked by hand)."""

from __future__ import annotations

import numpy as np

from configs import smoke_video
from unipose_jax import geometry, keypoint_sets, run
from unipose_jax.predict import Predictor
from unipose_jax.predict_video import VideoPredictor

K = 13
S = 64  # 8 x 8 heatmaps


def _maps(cells, n=1):
  """(n, 8, 8, K) with joint k's peak 1.0 at heatmap cell cells[k] = (x, y)."""
  m = np.zeros((n, 8, 8, K), np.float32)
  for k, (x, y) in enumerate(cells):
    m[:, y, x, k] = 1.0
  return m


CELLS = [(2 + k % 4, 2 + k // 4) for k in range(K)]  # x 2..5, y 2..5: a person mid-input


def _predictor(lost_at=()):
  c = smoke_video.get_config()
  c.data.input_size = S
  codec = run.build_codec(c)
  search = Predictor(
    lambda images: _maps(CELLS, len(images)), input_size=S, codec=codec,
    keypoint_set=keypoint_sets.PENN_ACTION, decoding="argmax", score_threshold=0.5,
  )  # fmt: skip
  seen = []

  def step_fn(images, state):
    assert images.shape == (1, S, S, 3)
    seen.append(state)
    heat = np.concatenate([np.zeros((1, 8, 8, 1), np.float32), _maps(CELLS)], -1)
    if len(seen) in lost_at:
      heat[..., 1:] = 0.0  # nobody: every score 0
    return heat, state + 1

  return VideoPredictor(step_fn, lambda: 0, search), seen, codec


def _expected(codec, affine):
  pts, _ = codec.decode(_maps(CELLS), decoding="argmax")
  return geometry.apply_affine_to_points(geometry.invert_affine(affine), np.asarray(pts)[0])


def test_the_crop_follows_the_person_and_the_state_is_carried():
  pred, seen, codec = _predictor(lost_at=(3,))
  frame = np.zeros((120, 160, 3), np.uint8)
  first = pred(frame)
  # Frame 1: the two-pass search's box, then the LSTM step on the crop around it.
  searched = pred.search(frame).box
  a1 = geometry.crop_affine(searched, 120, 160, S, pred.search.crop_margin)
  np.testing.assert_allclose(first.keypoints, _expected(codec, a1), atol=1e-6)
  assert first.passes == 2 and first.person_found
  second = pred(frame)  # frame 2: cropped around frame 1's joints
  a2 = geometry.crop_affine(first.box, 120, 160, S, pred.search.crop_margin)
  np.testing.assert_allclose(second.keypoints, _expected(codec, a2), atol=1e-6)
  assert second.passes == 1
  lost = pred(frame)  # frame 3: no joint visible, the track ends
  assert not lost.person_found and lost.box is None and not lost.visible.any()
  again = pred(frame)  # frame 4: searched again, a new state
  assert again.passes == 2
  assert seen == [0, 1, 2, 0]
  pred.reset()
  pred(frame)
  assert seen[-1] == 0
