"""Clips for UniPose-LSTM: T consecutive frames of one video, one augmentation per clip.

The source is random access (``len`` + ``__getitem__``) over FRAMES, each a record as
:mod:`unipose_jax.transforms` describes (``image`` uint8 (H, W, 3) RGB, ``keypoints``
(K, 2) original pixels, ``visible``, ``labeled``) plus ``video_id`` (any hashable scalar)
and ``frame`` (int, consecutive within a video); other keys (``box``) are ignored. Records
may come in any order: :func:`index_videos` sorts each video's frames.

An epoch is one clip per run of at least T consecutive frames (a video, unless its frame
numbers have gaps), in shuffled order, as the original trains (one random window per video
per pass). Per clip, from the pipeline's per-element generator: the start frame, then ONE
affine (:func:`transforms.train_affine` on the box of the clip's labeled joints over all
its frames, so the person stays in view in every frame), the same flip and warp for every
frame. Batches (dicts of numpy arrays, leading dims (B, T) where per frame)::

    image           uint8   (B, T, H_in, W_in, 3) RGB
    keypoints       float32 (B, T, K, 2)    input pixels (relabelled after a flip)
    weights         float32 (B, T, K)       1 = labeled and inside the input
    visible         bool    (B, T, K)       (relabelled after a flip)
    affine          float32 (B, 2, 3)       original -> input pixels, every frame of the clip
    inverse_affine  float32 (B, 2, 3)
    video           int32   (B,)            position of the clip's video in ``VideoIndex.videos``
    frame           int32   (B, T)          the frames' numbers

The iterator is a grain ``DatasetIterator``, like the image pipeline's: deterministic from
``seed``, sharded by process, ``get_state()`` JSON-serialisable and ``set_state()`` resuming
with identical batches (for the same ``worker_count``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any

import grain
import numpy as np

from unipose_jax.geometry import input_hw, is_flipping
from unipose_jax.input_pipeline import _derive_seed, _finish_iterator
from unipose_jax.transforms import (
  AugmentConfig,
  _finish,
  check_record,
  train_affine,
  warp_image,
)


class ClipError(ValueError):
  """A source that cannot give clips of the requested length (the message says why)."""


@dataclasses.dataclass(frozen=True)
class VideoIndex:
  """Where the clips of a source are.

  Attributes:
    videos: the distinct ``video_id`` s, sorted.
    runs: per run of >= T consecutive frames, ``(video position, record indices in frame
      order)``.
    skipped: ``video_id`` s left out for having no T consecutive frames (``skip_short``).
    clip_length: T.
  """

  videos: tuple[Hashable, ...]
  runs: tuple[tuple[int, tuple[int, ...]], ...]
  skipped: tuple[Hashable, ...]
  clip_length: int


def _scalar(value: Any) -> Any:
  a = np.asarray(value)
  if a.ndim != 0:
    raise ClipError(f"video_id / frame must be scalars, got shape {a.shape}")
  v = a.item()
  return v.decode() if isinstance(v, bytes) else v


def index_videos(
  source: Any,
  clip_length: int,
  *,
  metadata: Sequence[tuple[Hashable, int]] | None = None,
  skip_short: bool = False,
) -> VideoIndex:
  """Groups a frame source into videos and runs of consecutive frames.

  Args:
    source: random-access frames (module docstring).
    clip_length: T >= 1.
    metadata: ``(video_id, frame)`` of every record, in source order, when the source
      can give them without decoding images; otherwise every record is read once.
    skip_short: leave out videos without T consecutive frames (listed in ``skipped``)
      instead of refusing the source.

  Raises:
    ClipError: records without ``video_id``/``frame`` (an image dataset), T < 1, a frame number that appears twice in a video, a video shorter than
      T (without ``skip_short``), or no clip at all: one line, naming the videos.
  """
  t = int(clip_length)
  if t < 1:
    raise ClipError(f"clip_length must be >= 1, got {clip_length}")
  if metadata is None:
    if len(source) and not {"video_id", "frame"} <= set(source[0]):
      raise ClipError(
        "the source's records have no 'video_id' and 'frame' (keys: "
        f"{', '.join(sorted(source[0]))}): clips need a video dataset such as penn_action, "
        "not an image dataset"
      )
    metadata = [(source[i]["video_id"], source[i]["frame"]) for i in range(len(source))]
  if len(metadata) != len(source):
    raise ClipError(f"metadata has {len(metadata)} entries, the source {len(source)} records")
  by_video: dict[Hashable, list[tuple[int, int]]] = {}
  for i, (vid, frame) in enumerate(metadata):
    by_video.setdefault(_scalar(vid), []).append((int(_scalar(frame)), i))
  videos = tuple(sorted(by_video, key=lambda v: (str(type(v)), v)))
  runs, short = [], []
  for pos, vid in enumerate(videos):
    frames = sorted(by_video[vid])
    numbers = np.array([f for f, _ in frames])
    dup = numbers[1:][np.diff(numbers) == 0]
    if dup.size:
      raise ClipError(f"video {vid!r}: frame {int(dup[0])} appears more than once")
    cuts = np.flatnonzero(np.diff(numbers) != 1) + 1
    found = False
    for run in np.split(np.arange(len(frames)), cuts):
      if len(run) >= t:
        runs.append((pos, tuple(frames[j][1] for j in run)))
        found = True
    if not found:
      short.append((vid, int(max(len(r) for r in np.split(np.arange(len(frames)), cuts)))))
  if short and not skip_short:
    shown = ", ".join(f"{v!r} ({n})" for v, n in short[:5])
    more = f" and {len(short) - 5} more" if len(short) > 5 else ""
    raise ClipError(
      f"{len(short)} video(s) have fewer than clip_length={t} consecutive frames: "
      f"{shown}{more} (longest run in brackets); use a shorter clip or skip_short=True"
    )
  if not runs:
    raise ClipError(f"no video of the source has {t} consecutive frames")
  return VideoIndex(videos, tuple(runs), tuple(v for v, _ in short), t)


def transform_clip(
  records: Sequence[dict[str, Any]],
  rng: np.random.Generator,
  *,
  cfg: AugmentConfig,
  input_size: int | tuple[int, int],
  flip_permutation: np.ndarray | None,
) -> dict[str, np.ndarray]:
  """One augmentation for a clip's T records (same size frames): the keys of the module
  docstring without the batch dim (and without ``video``/``frame``)."""
  checked = [check_record(r) for r in records]
  sizes = {c[0].shape[:2] for c in checked}
  if len(sizes) != 1:
    raise ClipError(f"the frames of a clip differ in size: {sorted(sizes)}")
  (h, w), k = sizes.pop(), checked[0][1].shape[0]
  kp_all = np.concatenate([c[1] for c in checked])
  labeled_all = np.concatenate([c[2] for c in checked])
  affine = train_affine(kp_all, labeled_all, h, w, rng, cfg, input_size)
  perm = None
  if is_flipping(affine):
    if flip_permutation is None or len(flip_permutation) != k:
      raise ClipError(
        f"a flip needs the keypoint set's flip permutation of {k} joints (or augment.flip_prob = 0)"
      )
    perm = np.asarray(flip_permutation)
  frames = []
  for image, kp, labeled, visible in checked:
    if perm is not None:
      kp, labeled, visible = kp[perm], labeled[perm], visible[perm]
    out = _finish(warp_image(image, affine, input_size), affine, kp, labeled, input_size)
    out["visible"] = visible
    frames.append(out)
  stacked = {key: np.stack([f[key] for f in frames]) for key in ("image", "keypoints", "weights")}
  stacked["visible"] = np.stack([f["visible"] for f in frames])
  stacked["affine"] = frames[0]["affine"]
  stacked["inverse_affine"] = frames[0]["inverse_affine"]
  return stacked


class _Runs:
  """The runs of a :class:`VideoIndex` as a random-access source of (video, indices)."""

  def __init__(self, index: VideoIndex):
    self._runs = index.runs

  def __len__(self) -> int:
    return len(self._runs)

  def __getitem__(self, i: int) -> tuple[int, tuple[int, ...]]:
    return self._runs[i]


@dataclasses.dataclass(frozen=True)
class _ClipReader:
  """Draws a window of a run, reads its T frames and augments them (picklable)."""

  source: Any
  clip_length: int
  cfg: AugmentConfig
  input_size: int | tuple[int, int]
  flip_permutation: tuple[int, ...] | None

  def __call__(self, run: tuple[int, tuple[int, ...]], rng: np.random.Generator):
    video, indices = run
    start = int(rng.integers(0, len(indices) - self.clip_length + 1))
    records = [self.source[i] for i in indices[start : start + self.clip_length]]
    perm = None if self.flip_permutation is None else np.asarray(self.flip_permutation)
    out = transform_clip(
      records, rng, cfg=self.cfg, input_size=self.input_size, flip_permutation=perm
    )
    out["video"] = np.int32(video)
    out["frame"] = np.array([int(_scalar(r["frame"])) for r in records], np.int32)
    return out


def make_clip_train_dataset(
  source: Any,
  clip_length: int,
  batch_size: int,
  input_size: int | tuple[int, int],
  seed: int,
  *,
  flip_permutation: Sequence[int] | None,
  shard_index: int = 0,
  shard_count: int = 1,
  augment: AugmentConfig = AugmentConfig(),
  num_epochs: int | None = None,
  index: VideoIndex | None = None,
) -> grain.MapDataset:
  """Clip batches as a ``grain.MapDataset`` (see :func:`make_clip_train_iterator`)."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
  index = index if index is not None else index_videos(source, clip_length)
  if index.clip_length != clip_length:
    raise ClipError(f"the index is for clips of {index.clip_length} frames, not {clip_length}")
  if len(index.runs) < shard_count:
    raise ClipError(f"{len(index.runs)} clips per epoch, fewer than shard_count={shard_count}")
  ds = grain.MapDataset.source(_Runs(index))[shard_index::shard_count]
  ds = ds.shuffle(seed=_derive_seed(seed, 0, 0)).repeat(num_epochs)
  perm = None if flip_permutation is None else tuple(int(p) for p in flip_permutation)
  reader = _ClipReader(source, int(clip_length), augment, input_hw(input_size, "input_size"), perm)
  ds = ds.random_map(reader, seed=_derive_seed(seed, 1, shard_index))
  return ds.batch(batch_size, drop_remainder=True)


def make_clip_train_iterator(
  source: Any,
  clip_length: int,
  batch_size: int,
  input_size: int | tuple[int, int],
  seed: int,
  *,
  flip_permutation: Sequence[int] | None,
  shard_index: int = 0,
  shard_count: int = 1,
  worker_count: int = 0,
  augment: AugmentConfig = AugmentConfig(),
  num_epochs: int | None = None,
  index: VideoIndex | None = None,
  read_threads: int = 2,
  prefetch_batches: int = 2,
) -> grain.DatasetIterator:
  """Training clips (module docstring): shuffled runs, one random window and augmentation
  per clip, repeated (``num_epochs`` None = forever), sharded, batched (incomplete batches
  dropped). ``flip_permutation``: the keypoint set's (``KeypointSet.flip_permutation()``),
  None when it has no left/right pairs (then ``augment.flip_prob`` must be 0)."""
  ds = make_clip_train_dataset(
    source, clip_length, batch_size, input_size, seed, flip_permutation=flip_permutation,
    shard_index=shard_index, shard_count=shard_count, augment=augment, num_epochs=num_epochs,
    index=index,
  )  # fmt: skip
  return _finish_iterator(
    ds, worker_count=worker_count, read_threads=read_threads, prefetch_batches=prefetch_batches
  )


__all__ = [
  "ClipError",
  "VideoIndex",
  "index_videos",
  "make_clip_train_dataset",
  "make_clip_train_iterator",
  "transform_clip",
]
