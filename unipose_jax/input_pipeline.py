"""grain input pipeline: read, augment (one affine, one warp), batch.

Two loaders, both returning grain ``DatasetIterator`` s whose ``get_state()`` /
``set_state()`` round-trip through JSON (checkpoint them next to the model):

* :func:`make_train_iterator` -- mixes sources by weight, shuffles, repeats,
  augments (:func:`unipose_jax.transforms.transform_train`) and batches;
  deterministic from ``seed``; each process reads only its shard.
* :func:`make_eval_iterator` -- one pass in order over a letterboxed source,
  padded with ``valid=False`` copies so every batch is full and every process
  runs the same number of batches.

Batches are dicts of numpy arrays with a leading batch dim ``B`` (the
per-process batch)::

    image           uint8   (B, H_in, W_in, 3) RGB (normalised on the device: models.normalize)
    keypoints       float32 (B, K, 2)    input pixels (after the affine)
    weights         float32 (B, K)       1 = labeled and inside the input
    affine          float32 (B, 2, 3)    original -> input pixels
    inverse_affine  float32 (B, 2, 3)    input -> original pixels
    image_id        int32   (B,)
  evaluation batches also:
    keypoints_orig  float32 (B, K, 2)    annotation, original pixels
    labeled, visible bool   (B, K)
    valid           bool    (B,)         False on padding entries
    source_index    int32   (B,)         the record's position in the evaluated source

Pipeline shape (training)::

    per source: source[shard_index::shard_count] -> shuffle -> repeat
    -> mix(weights) -> random_map(transform_train) -> batch(B, drop_remainder)
    -> to_iter_dataset(threads) -> mp_prefetch(worker_count)

Batching happens on the ``MapDataset`` (index-based) side, so the content and
order of batches do not depend on ``worker_count`` or thread count: worker ``w``
of ``n`` computes batches ``w, w+n, ...`` and grain interleaves them back in
order. A saved state, however, is only valid for the same ``worker_count``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from unipose_jax.transforms import AugmentConfig, transform_eval, transform_train

Batch = dict[str, np.ndarray]


def _derive_seed(*entropy: int) -> int:
  """A seed in [0, 2**32) derived from integers (grain wants 32-bit seeds)."""
  return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])


def _ensure_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app mark the defaults parsed."""
  from absl import flags  # grain depends on absl

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _read_options(read_threads: int, prefetch_batches: int) -> grain.ReadOptions:
  return grain.ReadOptions(
    num_threads=max(read_threads, 1), prefetch_buffer_size=max(prefetch_batches, 1)
  )


def _finish_iterator(
  ds: grain.MapDataset, *, worker_count: int, read_threads: int, prefetch_batches: int
) -> grain.DatasetIterator:
  if worker_count < 0:
    raise ValueError(f"worker_count must be >= 0, got {worker_count}")
  it_ds = ds.to_iter_dataset(_read_options(read_threads, prefetch_batches))
  if worker_count > 0:
    _ensure_absl_flags_parsed()
    it_ds = it_ds.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=max(prefetch_batches, 1)
      )
    )
  return iter(it_ds)


def make_train_dataset(
  sources: Sequence[Any],
  mixture_weights: Sequence[float] | None,
  batch_size: int,
  input_size: int | tuple[int, int],
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
  augment: AugmentConfig = AugmentConfig(),
  num_epochs: int | None = None,
  flip_permutation: Sequence[int] | None = None,
  crop: str = "joints",
) -> grain.MapDataset:
  """The training pipeline as a ``grain.MapDataset`` of batches (see :func:`make_train_iterator`)."""
  if not sources:
    raise ValueError("need at least one source")
  if mixture_weights is None:
    mixture_weights = [1.0] * len(sources)
  if len(mixture_weights) != len(sources):
    raise ValueError(f"{len(sources)} sources but {len(mixture_weights)} mixture weights")
  if any(not (w > 0 and math.isfinite(w)) for w in mixture_weights):
    raise ValueError(f"mixture weights must be positive, got {list(mixture_weights)}")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if num_epochs is not None and num_epochs <= 0:
    raise ValueError(f"num_epochs must be positive or None, got {num_epochs}")
  parts = []
  for i, src in enumerate(sources):
    if len(src) < shard_count:
      raise ValueError(f"source {i} has {len(src)} records, fewer than shard_count={shard_count}")
    ds = grain.MapDataset.source(src)[shard_index::shard_count]
    ds = ds.shuffle(seed=_derive_seed(seed, 0, i)).repeat(num_epochs)
    parts.append(ds)
  ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, list(mixture_weights))
  if augment.flip_prob > 0 and flip_permutation is None:
    raise ValueError("flip augmentation needs the keypoint set's flip permutation")
  fn = functools.partial(
    transform_train,
    cfg=augment,
    input_size=input_size,
    flip_permutation=flip_permutation,
    crop=crop,
  )
  ds = ds.random_map(fn, seed=_derive_seed(seed, 1, shard_index))
  return ds.batch(batch_size, drop_remainder=True)


def make_train_iterator(
  sources: Sequence[Any],
  mixture_weights: Sequence[float] | None,
  batch_size: int,
  input_size: int | tuple[int, int],
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
  worker_count: int = 0,
  augment: AugmentConfig = AugmentConfig(),
  num_epochs: int | None = None,
  *,
  flip_permutation: Sequence[int] | None = None,
  crop: str = "joints",
  read_threads: int = 2,
  prefetch_batches: int = 2,
) -> grain.DatasetIterator:
  """Training batches: mixed, shuffled, augmented, repeated, sharded.

  Args:
    sources: random-access sources (``len`` + ``__getitem__``) of records
      (see :mod:`unipose_jax.transforms`), e.g. LSP train and LSP-extended train.
      They must be picklable when ``worker_count > 0``.
    mixture_weights: relative share of each source in the stream (``None`` =
      equal). grain's mix interleaves deterministically in these proportions.
    batch_size: per-process batch; incomplete batches are dropped.
    input_size: ``S`` (a square input) or ``(H_in, W_in)`` (``geometry.input_hw``).
    seed: everything random (shuffles, augmentation) derives from it.
    shard_index, shard_count: this process's shard (``jax.process_index()``,
      ``jax.process_count()``); each source is strided,
      ``source[shard_index::shard_count]``, so shards are disjoint and cover it.
    worker_count: grain worker processes (0 = in this process, with
      ``read_threads`` threads).
    augment: augmentation ranges.
    flip_permutation: the keypoint set's ``(K,)`` flip permutation (needed when
      ``augment.flip_prob > 0``; a set without flip pairs trains with flips off).
    crop: what the crop centres on, ``"joints"`` (the labeled joints' box) or ``"box"``
      (the example's person region, ``transforms.person_region``).
    num_epochs: ``None`` repeats forever; ``n`` repeats each source ``n``
      times and ends when the first source (relative to its weight) runs out
      (with one source: exactly ``n`` passes minus the dropped remainder).
      Each epoch is reshuffled and re-augmented.
    read_threads: threads per process computing batches.
    prefetch_batches: batches buffered per thread pool / worker.

  Returns:
    A grain ``DatasetIterator`` of batch dicts (module docstring). Its
    ``get_state()`` is JSON-serialisable; ``set_state(state)`` on a fresh
    iterator built with the same arguments resumes with identical batches.
  """
  ds = make_train_dataset(
    sources, mixture_weights, batch_size, input_size, seed, shard_index, shard_count, augment,
    num_epochs, flip_permutation, crop,
  )  # fmt: skip
  return _finish_iterator(
    ds, worker_count=worker_count, read_threads=read_threads, prefetch_batches=prefetch_batches
  )


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def eval_shard_range(num_records: int, shard_index: int, shard_count: int) -> tuple[int, int]:
  """Contiguous shard ``[start, stop)`` of ``num_records`` for one process.

  Sizes differ by at most one (``start = floor(i N / P)``); shards are disjoint
  and cover ``range(N)``.
  """
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
  return (shard_index * num_records) // shard_count, (
    (shard_index + 1) * num_records
  ) // shard_count


def num_eval_batches(num_records: int, batch_size: int, shard_count: int = 1) -> int:
  """Batches each process runs in one evaluation pass (the same for all processes)."""
  per_process = -(-num_records // shard_count)  # ceil: the largest shard
  return -(-per_process // batch_size)


class _PaddedShard:
  """Records ``[start, stop)`` of a source, then copies marked ``valid=False`` up to ``length``;
  each record carries its position in the source as ``source_index``."""

  def __init__(self, source: Any, start: int, stop: int, length: int):
    if len(source) == 0:
      raise ValueError("cannot evaluate an empty source")
    self._source, self._start, self._stop, self._length = source, start, stop, length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < self._length:
      raise IndexError(index)
    real = self._start + index
    valid = real < self._stop
    if not valid:  # pad with a copy of the shard's last record (or the source's first)
      real = self._stop - 1 if self._stop > self._start else 0
    record = dict(self._source[real])
    record["valid"] = valid
    record["source_index"] = real
    return record


def make_eval_dataset(
  source: Any,
  batch_size: int,
  input_size: int | tuple[int, int],
  shard_index: int = 0,
  shard_count: int = 1,
  crop: str = "whole",
  margin: float = 1.25,
) -> grain.MapDataset:
  """The evaluation pipeline as a ``grain.MapDataset`` of batches (see :func:`make_eval_iterator`)."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  n = len(source)
  start, stop = eval_shard_range(n, shard_index, shard_count)
  length = num_eval_batches(n, batch_size, shard_count) * batch_size
  ds = grain.MapDataset.source(_PaddedShard(source, start, stop, length))
  ds = ds.map(functools.partial(transform_eval, input_size=input_size, crop=crop, margin=margin))
  return ds.batch(batch_size, drop_remainder=False)


def make_eval_iterator(
  source: Any,
  batch_size: int,
  input_size: int | tuple[int, int],
  shard_index: int = 0,
  shard_count: int = 1,
  worker_count: int = 0,
  *,
  crop: str = "whole",
  margin: float = 1.25,
  read_threads: int = 2,
  prefetch_batches: int = 2,
) -> grain.DatasetIterator:
  """One in-order pass of evaluation batches: whole images letterboxed (``crop="whole"``)
  or the person's square crop, ``margin`` x its region (``"box"``, ``transforms.eval_affine``).

  Process ``i`` of ``P`` reads the contiguous block :func:`eval_shard_range`
  of the source, so every record is in exactly one process's shard. Each
  process pads its own block, with copies of its last record marked
  ``valid=False``, to :func:`num_eval_batches` full batches of ``batch_size``
  -- the same count in every process, so collective steps stay in lockstep.
  Metrics must count only ``valid`` entries.

  Returns:
    A grain ``DatasetIterator`` of batch dicts (module docstring).
  """
  ds = make_eval_dataset(source, batch_size, input_size, shard_index, shard_count, crop, margin)
  return _finish_iterator(
    ds, worker_count=worker_count, read_threads=read_threads, prefetch_batches=prefetch_batches
  )
