"""Tests of unipose_jax.transforms and unipose_jax.input_pipeline (synthetic in-memory sources)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from unipose_jax import geometry as geo
from unipose_jax import input_pipeline as ip
from unipose_jax import keypoint_sets
from unipose_jax import transforms as tr

K = keypoint_sets.LSP.num_joints
PERM = keypoint_sets.LSP.flip_permutation


def take(iterator, n: int) -> list:
  """The next ``n`` batches of an iterator."""
  return [next(iterator) for _ in range(n)]


def _person_keypoints(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """(K, 2) plausible-ish joints spread over the central part of the image."""
  x = rng.uniform(0.25 * width, 0.75 * width, K)
  y = rng.uniform(0.15 * height, 0.85 * height, K)
  return np.stack([x, y], 1).astype(np.float32)


def _record(i: int, height: int = 40, width: int = 30, seed: int = 0) -> dict:
  rng = np.random.default_rng([seed, i])
  return {
    "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
    "keypoints": _person_keypoints(rng, height, width),
    "visible": rng.random(K) < 0.8,
    "labeled": np.ones(K, bool),
    "image_id": np.int32(i),
  }


def _source(n: int, offset: int = 0, **kw) -> list[dict]:
  return [_record(offset + i, **kw) for i in range(n)]


def _blob_image(
  height: int, width: int, centre: np.ndarray, sigma: float = 1.5, amplitude: float = 120.0
) -> np.ndarray:
  """Background = warp border colour, plus one Gaussian dot at ``centre`` (x, y)."""
  yy, xx = np.mgrid[0:height, 0:width]
  g = amplitude * np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
  img = np.asarray(tr.BORDER_RGB)[None, None, :] + g[..., None]
  return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _centroid(image: np.ndarray) -> np.ndarray:
  """Intensity centroid (x, y) of ``image - border colour`` (uint8 (H, W, 3))."""
  m = np.clip(image.astype(np.float64) - np.asarray(tr.BORDER_RGB), 0, None).sum(-1)
  yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
  return np.array([(m * xx).sum(), (m * yy).sum()]) / m.sum()


# ------------------------------------------------------------------------------------------------
# Affine algebra and the cv2 sampling convention
# ------------------------------------------------------------------------------------------------


def test_invert_compose_apply_agree_with_homogeneous_matrices():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(2, 2, 3))
  pts = rng.normal(size=(5, 2)) * 10
  a3 = np.vstack([a, [0, 0, 1]])
  b3 = np.vstack([b, [0, 0, 1]])
  np.testing.assert_allclose(geo.compose_affines(a, b), (a3 @ b3)[:2], atol=1e-12)
  np.testing.assert_allclose(geo.invert_affine(a), np.linalg.inv(a3)[:2], atol=1e-10)
  homo = np.hstack([pts, np.ones((5, 1))])
  np.testing.assert_allclose(geo.apply_affine_to_points(a, pts), homo @ a.T, atol=1e-12)
  # batched inverse
  batch = rng.normal(size=(4, 2, 3))
  inv = geo.invert_affine(batch)
  for i in range(4):
    np.testing.assert_allclose(geo.compose_affines(batch[i], inv[i]), np.eye(3)[:2], atol=1e-10)
  with pytest.raises(ValueError, match="singular"):
    geo.invert_affine(np.zeros((2, 3)))


def test_cv2_warp_uses_pixel_centre_convention():
  """Output pixel A @ (j, i) takes exactly the value of source pixel (j, i)."""
  rng = np.random.default_rng(2)
  src = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
  a = np.array([[2.0, 0.0, 3.0], [0.0, 2.0, 1.0]])
  out = tr.warp_image(src, a, 64)
  for j, i in [(0, 0), (5, 4), (29, 19), (13, 7)]:
    x, y = geo.apply_affine_to_points(a, np.array([[j, i]], float))[0]
    np.testing.assert_array_equal(out[int(y), int(x)], src[i, j])
  # half-way between two source centres is their average (bilinear)
  np.testing.assert_allclose(
    out[1 + 2 * 4, 3 + 2 * 5 + 1].astype(float), (src[4, 5].astype(float) + src[4, 6]) / 2, atol=1.0
  )


# ------------------------------------------------------------------------------------------------
# Training transform geometry
# ------------------------------------------------------------------------------------------------

GEOM_CFG = tr.AugmentConfig(
  margin=1.25,
  scale_range=(0.8, 1.2),
  rotation_deg=40.0,
  rotation_prob=1.0,
  flip_prob=0.5,
  translate_frac=0.05,
)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_train_transform_moves_painted_dots_to_their_keypoints(seed):
  """A dot painted at joint j of the original lands at keypoints[j] (or [FLIP_PERMUTATION[j]])."""
  height, width, size = 90, 70, 72
  kp = _person_keypoints(np.random.default_rng(100 + seed), height, width)
  flips = []
  for j in range(K):
    rec = {
      "image": _blob_image(height, width, kp[j]),
      "keypoints": kp,
      "visible": np.ones(K, bool),
      "labeled": np.ones(K, bool),
      "image_id": np.int32(7),
    }
    out = tr.transform_train(
      rec, np.random.default_rng(seed), cfg=GEOM_CFG, input_size=size, flip_permutation=PERM
    )
    flipped = geo.is_flipping(out["affine"])
    flips.append(flipped)
    k = PERM[j] if flipped else j
    expected = out["keypoints"][k]
    if np.all((expected > 4) & (expected < size - 5)):
      found = _centroid(out["image"])
      assert np.linalg.norm(found - expected) < 0.3, (j, k, found, expected)
    # inverse affine takes the output keypoint back to the painted original
    back = geo.apply_affine_to_points(out["inverse_affine"], expected[None])[0]
    np.testing.assert_allclose(back, kp[j], atol=1e-3)
  assert len(set(flips)) == 1  # same rng -> same affine for every painted image


def test_geometry_seeds_cover_flip_and_no_flip():
  """The parametrised dot test above exercises both branches of the flip."""
  flips = {
    geo.is_flipping(
      tr.train_affine(
        np.zeros((K, 2)) + [[30, 40]],
        np.ones(K, bool),
        90,
        70,
        np.random.default_rng(s),
        GEOM_CFG,
        72,
      )
    )
    for s in range(6)
  }
  assert flips == {True, False}


def test_flip_relabels_left_and_right():
  """After a flip the joint that appears on the image's left/right swaps names, not just x."""
  cfg = tr.AugmentConfig(
    scale_range=(1, 1), rotation_deg=0, rotation_prob=0, flip_prob=1.0, translate_frac=0
  )
  rec = _record(0, 60, 50)
  out = tr.transform_train(
    rec, np.random.default_rng(0), cfg=cfg, input_size=64, flip_permutation=PERM
  )
  plain = tr.transform_train(rec, np.random.default_rng(0), cfg=tr.NO_AUGMENT, input_size=64)
  # flipped keypoint k is the mirror (about the input centre) of unflipped keypoint PERM[k]
  mirrored = plain["keypoints"].copy()
  mirrored[:, 0] = 63 - mirrored[:, 0]
  np.testing.assert_allclose(out["keypoints"], mirrored[PERM], atol=1e-3)
  # and the image is the mirror image
  diff = np.abs(out["image"].astype(int) - plain["image"][:, ::-1].astype(int))
  assert diff.max() <= 1


def test_no_augment_crop_centres_the_person_box_with_margin():
  rec = _record(3, 80, 60)
  size = 100
  out = tr.transform_train(rec, np.random.default_rng(0), cfg=tr.NO_AUGMENT, input_size=size)
  kp = out["keypoints"]
  lo, hi = kp.min(0), kp.max(0)
  np.testing.assert_allclose((lo + hi) / 2, [(size - 1) / 2] * 2, atol=1e-3)
  assert math.isclose(float(np.max(hi - lo)), size / 1.25, rel_tol=1e-5)


def test_augmentation_ranges_and_flip_rate():
  cfg = tr.AugmentConfig()
  kp = np.array([[10.0, 10.0], [50.0, 90.0]] + [[30.0, 50.0]] * (K - 2))
  base = 368 / (1.25 * 80.0)
  zooms, angles, flips = [], [], []
  for s in range(400):
    a = tr.train_affine(kp, np.ones(K, bool), 100, 60, np.random.default_rng(s), cfg, 368)
    det = np.linalg.det(a[:, :2])
    zooms.append(math.sqrt(abs(det)) / base)
    flips.append(det < 0)
    lin = a[:, :2] * ([[-1], [1]] if det < 0 else 1)
    angles.append(math.degrees(math.atan2(lin[1, 0], lin[0, 0])))
    centre_out = geo.apply_affine_to_points(a, np.array([[30.0, 50.0]]))[0]
    assert np.all(np.abs(centre_out - 183.5) <= 0.05 * 368 + 1e-6)
  zooms, angles = np.array(zooms), np.array(angles)
  assert zooms.min() >= 0.7 - 1e-9 and zooms.max() <= 1.3 + 1e-9 and zooms.std() > 0.1
  assert np.abs(angles).max() <= 40 + 1e-6
  assert 0.5 < np.mean(np.abs(angles) > 1e-9) < 0.7  # rotation_prob 0.6
  assert 0.4 < np.mean(flips) < 0.6


# ------------------------------------------------------------------------------------------------
# Weights and bad input
# ------------------------------------------------------------------------------------------------


def test_weights_zero_for_unlabeled_and_off_input_joints():
  rec = _record(5, 80, 60)
  rec["labeled"] = rec["labeled"].copy()
  rec["labeled"][[0, 13]] = False
  rec["keypoints"] = rec["keypoints"].copy()
  rec["keypoints"][0] = np.nan  # unlabeled NaN is fine
  rec["keypoints"][13] = [-500.0, 900.0]  # unlabeled junk far away
  cfg = tr.AugmentConfig(
    scale_range=(1.8, 1.8), rotation_deg=0, rotation_prob=0, flip_prob=0, translate_frac=0
  )
  out = tr.transform_train(
    rec, np.random.default_rng(0), cfg=cfg, input_size=64, flip_permutation=PERM
  )
  kp, w = out["keypoints"], out["weights"]
  assert np.all(np.isfinite(kp))
  assert w[0] == 0 and w[13] == 0
  # zoom 1.8: the labeled box is 1.8 * 64 / 1.25 = 92 px wide -> its extremes fall off the input
  labeled = rec["labeled"]
  assert np.any((w == 0) & labeled) and np.any(w == 1)
  inside = np.all((kp >= 0) & (kp <= 63), axis=1)
  np.testing.assert_array_equal(w, (inside & labeled).astype(np.float32))
  # eval: a labeled joint outside the original image is outside the letterbox too
  rec2 = _record(6, 50, 50)
  rec2["keypoints"] = rec2["keypoints"].copy()
  rec2["keypoints"][4] = [-30.0, 10.0]
  ev = tr.transform_eval(rec2, input_size=64)
  assert ev["weights"][4] == 0 and ev["weights"].sum() == K - 1


def test_nan_on_labeled_joint_raises_naming_image():
  rec = _record(0)
  rec["keypoints"] = rec["keypoints"].copy()
  rec["keypoints"][9, 1] = np.nan
  rec["image_id"] = np.int32(4242)
  with pytest.raises(ValueError, match=r"4242: non-finite keypoints on labeled joints \['9'\]"):
    tr.transform_train(rec, np.random.default_rng(0), flip_permutation=PERM)
  with pytest.raises(ValueError, match=r"4242.*\['left_shoulder'\]"):  # the set's names
    tr.check_record(rec, keypoint_sets.LSP.joint_names)
  with pytest.raises(ValueError, match="4242"):
    tr.transform_eval(rec)
  bad = _record(1)
  bad["image"] = bad["image"].astype(np.float32)
  with pytest.raises(ValueError, match="uint8"):
    tr.transform_eval(bad)


# ------------------------------------------------------------------------------------------------
# Evaluation letterbox and normalisation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(50, 100), (120, 57), (64, 64)])
def test_letterbox_round_trip_and_placement(hw):
  height, width = hw
  size = 64
  a = geo.letterbox_affine(height, width, size)
  inv = geo.invert_affine(a)
  np.testing.assert_allclose(geo.compose_affines(a, inv), np.eye(3)[:2], atol=1e-12)
  pts = np.random.default_rng(0).uniform(0, [width - 1, height - 1], (20, 2))
  np.testing.assert_allclose(
    geo.apply_affine_to_points(inv, geo.apply_affine_to_points(a, pts)), pts, atol=1e-3
  )
  # the image area [-0.5, W-0.5] x [-0.5, H-0.5] maps to a centred box touching two borders
  corners = geo.apply_affine_to_points(a, np.array([[-0.5, -0.5], [width - 0.5, height - 0.5]]))
  r = size / max(height, width)
  np.testing.assert_allclose(corners[1] - corners[0], [r * width, r * height], atol=1e-9)
  np.testing.assert_allclose((corners[0] + corners[1]) / 2, [(size - 1) / 2] * 2, atol=1e-9)
  # white image -> white exactly where the box is (away from its 1-pixel antialiased edge)
  out = tr.warp_image(np.full((height, width, 3), 255, np.uint8), a, size)
  rows = out[:, size // 2, 0]
  top, bottom = corners[0][1] + 0.5, corners[1][1] - 0.5
  inside = (np.arange(size) >= math.ceil(top)) & (np.arange(size) <= math.floor(bottom))
  assert np.all(rows[inside] >= 254)
  far = (np.arange(size) < top - 1) | (np.arange(size) > bottom + 1)
  assert np.all(rows[far] == round(tr.BORDER_RGB[0]))


def test_eval_transform_keypoints_return_to_original():
  rec = _record(9, 73, 41)
  out = tr.transform_eval(rec, input_size=96)
  back = geo.apply_affine_to_points(out["inverse_affine"], out["keypoints"])
  np.testing.assert_allclose(back, rec["keypoints"], atol=1e-3)
  np.testing.assert_array_equal(out["keypoints_orig"], rec["keypoints"])
  np.testing.assert_allclose(
    geo.compose_affines(out["affine"], out["inverse_affine"]), np.eye(3)[:2], atol=1e-5
  )
  np.testing.assert_array_equal(out["visible"], rec["visible"])
  assert out["image"].shape == (96, 96, 3) and out["image"].dtype == np.uint8


# ------------------------------------------------------------------------------------------------
# Loaders
# ------------------------------------------------------------------------------------------------

TRAIN_KEYS = {"image", "keypoints", "weights", "affine", "inverse_affine", "image_id"}
EVAL_KEYS = TRAIN_KEYS | {"keypoints_orig", "labeled", "visible", "valid", "source_index"}


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_train_batch_format_and_determinism():
  src = _source(12)
  it = ip.make_train_iterator([src], None, 4, 32, seed=3, flip_permutation=PERM)
  b = next(it)
  assert set(b) == TRAIN_KEYS
  assert b["image"].shape == (4, 32, 32, 3) and b["image"].dtype == np.uint8
  assert b["keypoints"].shape == (4, K, 2) and b["keypoints"].dtype == np.float32
  assert b["weights"].shape == (4, K) and b["affine"].shape == (4, 2, 3)
  assert b["inverse_affine"].shape == (4, 2, 3) and b["image_id"].dtype == np.int32
  # each row is the per-record transform of the record it names
  for a, inv in zip(b["affine"], b["inverse_affine"]):
    np.testing.assert_allclose(geo.compose_affines(a, inv), np.eye(3)[:2], atol=1e-4)
  _assert_batches_equal(
    take(ip.make_train_iterator([src], None, 4, 32, seed=3, flip_permutation=PERM), 3),
    [b] + take(it, 2),
  )
  other = take(ip.make_train_iterator([src], None, 4, 32, seed=4, flip_permutation=PERM), 1)[0]
  assert not np.array_equal(other["image"], b["image"])


def test_train_resume_from_json_state_in_process():
  src = _source(10)
  kw = dict(
    sources=[src], mixture_weights=None, batch_size=3, input_size=24, seed=0, flip_permutation=PERM
  )
  it = ip.make_train_iterator(**kw)
  take(it, 5)  # crosses an epoch boundary (10 records / 3 per batch)
  state = json.loads(json.dumps(it.get_state()))
  expected = take(it, 4)
  resumed = ip.make_train_iterator(**kw)
  resumed.set_state(state)
  _assert_batches_equal(take(resumed, 4), expected)


@pytest.mark.slow
def test_train_resume_with_workers_and_worker_count_independence():
  src = _source(10)
  kw = dict(
    sources=[src], mixture_weights=None, batch_size=2, input_size=24, seed=1, flip_permutation=PERM
  )
  reference = take(ip.make_train_iterator(**kw), 5)
  it = ip.make_train_iterator(**kw, worker_count=2)
  try:
    first = take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    rest = take(it, 2)
  finally:
    it.close()
  _assert_batches_equal(first + rest, reference)  # same data as worker_count=0
  resumed = ip.make_train_iterator(**kw, worker_count=2)
  try:
    resumed.set_state(state)
    _assert_batches_equal(take(resumed, 2), rest)
  finally:
    resumed.close()


def test_train_shards_are_disjoint_and_cover_the_source():
  src = _source(11)
  seen = []
  for shard in range(3):
    it = ip.make_train_iterator(
      [src],
      None,
      1,
      16,
      seed=0,
      shard_index=shard,
      shard_count=3,
      num_epochs=1,
      flip_permutation=PERM,
    )
    ids = [int(b["image_id"][0]) for b in it]
    assert len(ids) == len(set(ids))
    seen.append(set(ids))
  assert sum(len(s) for s in seen) == 11
  assert set().union(*seen) == set(range(11))
  with pytest.raises(ValueError, match="shard"):
    ip.make_train_iterator(
      [src], None, 1, 16, seed=0, shard_index=3, shard_count=3, flip_permutation=PERM
    )


def test_train_epochs_reshuffle():
  src = _source(8)
  ids = [
    int(i)
    for b in ip.make_train_iterator([src], None, 4, 16, seed=0, num_epochs=2, flip_permutation=PERM)
    for i in b["image_id"]
  ]
  assert sorted(ids[:8]) == list(range(8)) and sorted(ids[8:]) == list(range(8))
  assert ids[:8] != ids[8:]


def test_mixture_follows_weights():
  # tiny images: only ids are of interest
  a = _source(40, offset=0, height=8, width=8)
  b = _source(40, offset=1000, height=8, width=8)
  it = ip.make_train_iterator([a, b], [3.0, 1.0], 8, 8, seed=0, flip_permutation=PERM)
  ids = np.concatenate([x["image_id"] for x in take(it, 30)])
  frac_a = np.mean(ids < 1000)
  assert abs(frac_a - 0.75) < 0.03, frac_a
  # repeated forever: more draws from `a` than it has records
  assert np.sum(ids < 1000) > 40
  with pytest.raises(ValueError, match="weights"):
    ip.make_train_iterator([a, b], [1.0], 8, 8, seed=0)


@pytest.mark.parametrize("n, batch, shards", [(23, 4, 3), (5, 4, 1), (2, 3, 4)])
def test_eval_counts_every_image_exactly_once(n, batch, shards):
  src = _source(n, height=12, width=9)
  valid_ids = []
  counts = []
  for shard in range(shards):
    start, stop = ip.eval_shard_range(n, shard, shards)
    batches = list(ip.make_eval_iterator(src, batch, 16, shard, shards))
    counts.append(len(batches))
    for b in batches:
      assert set(b) == EVAL_KEYS
      assert b["image"].shape[0] == batch and b["valid"].dtype == np.bool_
    ids = np.concatenate([b["image_id"][b["valid"]] for b in batches]).tolist()
    assert ids == list(range(start, stop))  # in order, contiguous
    where = np.concatenate([b["source_index"][b["valid"]] for b in batches]).tolist()
    assert [src[i]["image_id"] for i in where] == ids  # the record each entry came from
    valid_ids += ids
  assert sorted(valid_ids) == list(range(n))
  assert len(set(counts)) == 1 and counts[0] == ip.num_eval_batches(n, batch, shards)
  assert counts[0] == math.ceil(math.ceil(n / shards) / batch)


@pytest.mark.slow
def test_eval_with_worker_keeps_order():
  src = _source(7, height=12, width=9)
  plain = list(ip.make_eval_iterator(src, 2, 16))
  it = ip.make_eval_iterator(src, 2, 16, worker_count=2)
  try:
    _assert_batches_equal(list(it), plain)
  finally:
    it.close()
  # the letterboxed keypoints go back to the annotation
  for b in plain:
    back = geo.apply_affine_to_points(b["inverse_affine"], b["keypoints"])
    np.testing.assert_allclose(back, b["keypoints_orig"], atol=1e-3)


@pytest.mark.real_data
def test_real_lsp_batches(real_lsp_dir, tmp_path):
  """Real LSP through both loaders: people centred, annotations recovered through the letterbox."""
  from unipose_jax import datasets

  data_dir = tmp_path / "tfds"
  datasets.prepare(["lsp"], manual_dir=real_lsp_dir, data_dir=data_dir, log=lambda s: None)
  train = datasets.data_source("lsp", "train", data_dir)
  b = next(ip.make_train_iterator([train], None, 8, 368, seed=0, augment=tr.NO_AUGMENT))
  assert b["image"].shape == (8, 368, 368, 3) and np.all(np.isfinite(b["image"]))
  np.testing.assert_array_equal(b["weights"], 1.0)  # LSP labels all joints; no augmentation
  centres = (b["keypoints"].min(1) + b["keypoints"].max(1)) / 2
  np.testing.assert_allclose(centres, 183.5, atol=1e-3)
  test = datasets.data_source("lsp", "test", data_dir)
  e = next(ip.make_eval_iterator(test, 4, 368))
  assert e["image_id"].tolist() == [1001, 1002, 1003, 1004] and e["valid"].all()
  for i in range(4):
    np.testing.assert_allclose(e["keypoints_orig"][i], test[i]["keypoints"])
    back = geo.apply_affine_to_points(e["inverse_affine"][i], e["keypoints"][i])
    np.testing.assert_allclose(back, test[i]["keypoints"], atol=1e-3)


def test_border_is_the_imagenet_mean_and_normalises_to_about_zero():
  from unipose_jax.models import IMAGENET_MEAN, normalize

  assert tr.BORDER_RGB == tuple(float(round(255 * m)) for m in IMAGENET_MEAN)
  assert float(np.abs(normalize(np.array(tr.BORDER_RGB, np.uint8))).max()) < 0.01
