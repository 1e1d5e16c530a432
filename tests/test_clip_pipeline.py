"""Clip sampling for UniPose-LSTM (``unipose_jax.clip_pipeline``) on an in-memory fake source.

Each fake frame's image is a constant colour that encodes its video and frame number, so a
batch shows which frames it holds; keypoints move with the frame, so one affine per clip is
checked by mapping every frame's annotation with the clip's affine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from unipose_jax.clip_pipeline import ClipError, index_videos, make_clip_train_iterator
from unipose_jax.geometry import apply_affine_to_points, is_flipping
from unipose_jax.transforms import AugmentConfig

K = 4
FLIP = (1, 0, 3, 2)  # pairs (0, 1), (2, 3)
LENGTHS = {"v07": 7, "v05": 5, "v09": 9}
H, W, S, T = 40, 56, 32, 3


def _keypoints(video: int, frame: int) -> np.ndarray:
  base = np.array([[20.0, 10.0], [34.0, 10.0], [22.0, 30.0], [32.0, 31.0]])
  return (base + [frame * 0.5 + video, frame * 0.25]).astype(np.float32)


def _source():
  records = []
  for v, (vid, n) in enumerate(sorted(LENGTHS.items())):
    for f in range(1, n + 1):
      image = np.empty((H, W, 3), np.uint8)
      image[:] = (40 * v + 10, 20 * f, 7)
      records.append(dict(
        image=image, keypoints=_keypoints(v, f), visible=np.array([1, 1, 0, 1], bool),
        labeled=np.ones(K, bool), box=np.array([0, 0, W, H], np.float32), video_id=vid, frame=f,
      ))  # fmt: skip
  order = np.random.default_rng(0).permutation(len(records))  # any order
  return [records[i] for i in order]


def _iterator(source, seed=0, batch=2, augment=AugmentConfig(rotation_deg=30.0), **kw):
  return make_clip_train_iterator(
    source, T, batch, S, seed, flip_permutation=FLIP, augment=augment, read_threads=1, **kw
  )


def test_index_sorts_frames_and_refuses_short_videos_in_one_line():
  source = _source()
  index = index_videos(source, T)
  assert index.videos == ("v05", "v07", "v09") and len(index.runs) == 3
  for pos, indices in index.runs:
    frames = [source[i]["frame"] for i in indices]
    assert frames == list(range(1, LENGTHS[index.videos[pos]] + 1))
    assert {source[i]["video_id"] for i in indices} == {index.videos[pos]}
  with pytest.raises(ClipError) as e:
    index_videos(source, 6)
  msg = str(e.value)
  assert "\n" not in msg and "'v05' (5)" in msg and "clip_length=6" in msg
  assert index_videos(source, 6, skip_short=True).skipped == ("v05",)
  gappy = [r for r in source if not (r["video_id"] == "v09" and r["frame"] == 5)]
  runs = index_videos(gappy, 4, skip_short=True).runs  # v09: frames 1-4 and 6-9
  assert sorted(len(r) for _, r in runs) == [4, 4, 5, 7]  # v09 twice, v05, v07
  with pytest.raises(ClipError, match="no video of the source has 10 consecutive frames"):
    index_videos(source, 10, skip_short=True)
  images = [{k: v for k, v in r.items() if k not in ("video_id", "frame")} for r in source]
  with pytest.raises(ClipError, match=r"no 'video_id' and 'frame' \(keys: box, image, .*"
                     "need a video dataset such as penn_action, not an image dataset"):  # fmt: skip
    index_videos(images, T)


def test_batches_are_clips_of_one_video_with_one_augmentation():
  source = _source()
  lookup = {(r["video_id"], r["frame"]): r for r in source}
  index = index_videos(source, T)
  it = _iterator(source, augment=AugmentConfig(rotation_deg=30.0, flip_prob=0.5))
  flips = 0
  for _ in range(6):
    b = next(it)
    assert b["image"].shape == (2, T, S, S, 3) and b["image"].dtype == np.uint8
    assert b["keypoints"].shape == (2, T, K, 2) and b["weights"].shape == (2, T, K)
    assert b["visible"].shape == (2, T, K) and b["affine"].shape == (2, 2, 3)
    assert b["frame"].shape == (2, T) and b["video"].shape == (2,)
    for j in range(2):
      vid, frames = index.videos[b["video"][j]], b["frame"][j]
      assert np.all(np.diff(frames) == 1) and 1 <= frames[0] <= LENGTHS[vid] - T + 1
      centre = b["image"][j, :, S // 2, S // 2]  # the colour says video and frame
      v = sorted(LENGTHS).index(vid)
      np.testing.assert_array_equal(centre, [(40 * v + 10, 20 * f, 7) for f in frames])
      flipped = is_flipping(b["affine"][j])
      flips += flipped
      perm = np.array(FLIP) if flipped else np.arange(K)
      for t, f in enumerate(frames):  # ONE affine maps every frame's annotation
        ref = apply_affine_to_points(
          b["affine"][j].astype(np.float64), lookup[(vid, f)]["keypoints"]
        )
        np.testing.assert_allclose(b["keypoints"][j, t], ref[perm], atol=1e-3)
        np.testing.assert_array_equal(b["visible"][j, t], np.array([1, 1, 0, 1], bool)[perm])
  assert 0 < flips < 12  # both cases were drawn


def test_resumes_exactly_from_its_state_and_is_deterministic():
  source = _source()
  it = _iterator(source, seed=3)
  for _ in range(4):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  rest = [next(it) for _ in range(3)]
  again = _iterator(source, seed=3)
  again.set_state(state)
  for a, b in zip(rest, [next(again) for _ in range(3)]):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  first3, first4 = next(_iterator(source, seed=3)), next(_iterator(source, seed=4))
  assert not np.array_equal(first3["affine"], first4["affine"])  # the seed decides


def test_a_flip_without_a_permutation_is_refused():
  source = _source()
  it = make_clip_train_iterator(
    source, T, 3, S, 0, flip_permutation=None, augment=AugmentConfig(flip_prob=1.0),
    read_threads=1,
  )  # fmt: skip
  with pytest.raises(ClipError, match="flip needs the keypoint set's flip permutation of 4"):
    next(it)
