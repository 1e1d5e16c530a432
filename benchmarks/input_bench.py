"""Throughput of the training input pipeline on LSP (train split), on the CPU.

Prints one JSON object per line:

* ``stage_*`` lines: single-threaded cost per image of each stage (read = record
  fetch incl. JPEG decode, warp = affine + cv2.warpAffine to S x S uint8 +
  keypoints, stack = batching uint8 images, normalise = uint8 -> float32
  ImageNet on the batch), ``ms_per_image``.
* ``read_only``: the baseline -- records read and decoded, no augmentation, one thread.
* ``train`` lines: the full pipeline (``make_train_iterator``) for each
  ``workers`` in (0, 1, 2) and ``normalize_in_workers`` in (True, False), with
  ``images_per_s`` and ``ratio_vs_read_only`` / ``ratio_vs_workers0``.

Every line has ``name, workers, batch, input_size, images_per_s, device``.
The machine's cores may be shared with other jobs: timings are noisy.

Usage::

    python benchmarks/input_bench.py [--data_dir DIR] [--archive_dir ../shared/data]
        [--batch 8] [--input_size 368] [--batches 40]

The LSP archive is prepared with ``unipose_jax.datasets.prepare`` into
``--data_dir`` (default: a folder under the system temp dir, reused between
runs); if that module cannot be used, a small reader of ``lsp_dataset.zip``
(scipy.io.loadmat + PIL) stands in.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import tempfile
import time
import zipfile

import numpy as np
from hardware import describe_device

REPO = pathlib.Path(__file__).resolve().parents[1]


class ZipLspSource:
  """Fallback reader of lsp_dataset.zip: train = images 1-1000 (records as the datasets module's)."""

  def __init__(self, archive: str, split: str = "train"):
    import scipy.io

    self.archive = archive
    self.split = split
    with zipfile.ZipFile(archive) as z:
      names = z.namelist()
      mat = next(n for n in names if n.endswith("joints.mat"))
      joints = scipy.io.loadmat(io.BytesIO(z.read(mat)))["joints"]  # (3, 14, 2000)
    self._prefix = mat[: -len("joints.mat")]
    ids = np.arange(1, 1001) if split == "train" else np.arange(1001, 2001)
    self._ids = ids
    self._kp = np.transpose(joints[:2], (2, 1, 0))[ids - 1].astype(np.float32) - 1.0
    self._visible = joints[2].T[ids - 1] == 0
    self._zip = None

  def __len__(self):
    return len(self._ids)

  def __getitem__(self, i):
    from PIL import Image

    if self._zip is None:
      self._zip = zipfile.ZipFile(self.archive)
    iid = int(self._ids[i])
    data = self._zip.read(f"{self._prefix}images/im{iid:04d}.jpg")
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return {
      "image": image,
      "keypoints": self._kp[i],
      "visible": self._visible[i],
      "labeled": np.ones(14, bool),
      "image_id": np.int32(iid),
    }

  def __getstate__(self):
    return {"archive": self.archive, "split": self.split}

  def __setstate__(self, state):
    self.__init__(state["archive"], state["split"])


def lsp_train_source(archive_dir: str, data_dir: str):
  try:
    from unipose_jax import datasets

    datasets.prepare(["lsp"], manual_dir=archive_dir, data_dir=data_dir, log=lambda s: None)
    return datasets.data_source(
      "lsp", "train", data_dir
    ), "unipose_jax.datasets (TFDS array_record)"
  except Exception as e:  # noqa: BLE001 - fall back to the zip reader, say why
    print(
      json.dumps({"note": f"datasets module unusable ({type(e).__name__}: {e}); using zip reader"})
    )
    return ZipLspSource(os.path.join(archive_dir, "lsp_dataset.zip")), "zip reader (PIL)"


def per_stage(source, input_size: int, batch: int, n: int) -> dict[str, float]:
  """Single-threaded seconds per image of each stage."""
  from unipose_jax import transforms as tr

  cfg = tr.AugmentConfig()
  t = {"read": 0.0, "warp": 0.0, "stack": 0.0, "normalise": 0.0}
  images = []
  for i in range(n):
    t0 = time.perf_counter()
    rec = source[i % len(source)]
    t1 = time.perf_counter()
    out = tr.transform_train(
      rec, np.random.default_rng(i), cfg=cfg, input_size=input_size, normalize=False
    )
    t["read"] += t1 - t0
    t["warp"] += time.perf_counter() - t1
    images.append(out["image"])
    if len(images) == batch:  # as the pipeline: stack uint8, normalise the batch
      t2 = time.perf_counter()
      stacked = np.stack(images)
      t3 = time.perf_counter()
      tr.normalize_image(stacked)
      t["stack"] += t3 - t2
      t["normalise"] += time.perf_counter() - t3
      images = []
  return {k: v / n for k, v in t.items()}


def read_only_rate(source, n: int) -> float:
  t0 = time.perf_counter()
  for i in range(n):
    source[(7 * i) % len(source)]
  return n / (time.perf_counter() - t0)


def pipeline_rate(
  source,
  workers: int,
  batch: int,
  input_size: int,
  batches: int,
  normalize_in_workers: bool,
  warmup: int = 5,
) -> float:
  from unipose_jax import input_pipeline as ip

  it = ip.make_train_iterator(
    [source],
    None,
    batch,
    input_size,
    seed=0,
    worker_count=workers,
    normalize_in_workers=normalize_in_workers,
  )
  try:
    for _ in range(warmup):  # worker start-up, first buffers
      next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
      b = next(it)
      assert b["image"].dtype == np.float32
    return batches * batch / (time.perf_counter() - t0)
  finally:
    if hasattr(it, "close"):
      it.close()


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--archive_dir", default=str(REPO.parent / "shared" / "data"))
  p.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "unipose_bench_tfds"))
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--input_size", type=int, default=368)
  p.add_argument("--batches", type=int, default=40)
  p.add_argument("--workers", default="0,1,2")
  args = p.parse_args()

  dev = describe_device(accelerator=False)
  source, reader = lsp_train_source(args.archive_dir, args.data_dir)
  common = {"batch": args.batch, "input_size": args.input_size, "device": dev}

  stages = per_stage(source, args.input_size, args.batch, 200)
  total = sum(stages.values())
  for k, v in stages.items():
    print(
      json.dumps(
        {
          "name": f"stage_{k}",
          "workers": 0,
          **common,
          "ms_per_image": round(1e3 * v, 3),
          "share": round(v / total, 3),
          "images_per_s": round(1 / v, 1),
        }
      )
    )
  print(
    json.dumps(
      {
        "name": "stage_total_single_thread",
        "workers": 0,
        **common,
        "ms_per_image": round(1e3 * total, 3),
        "images_per_s": round(1 / total, 1),
      }
    )
  )

  base = read_only_rate(source, 400)
  print(
    json.dumps(
      {
        "name": "read_only",
        "workers": 0,
        **common,
        "images_per_s": round(base, 1),
        "reader": reader,
        "note": "baseline: record read + JPEG decode, no augmentation",
      }
    )
  )

  w0 = None
  for normalize_in_workers in (True, False):
    for workers in [int(w) for w in args.workers.split(",")]:
      rate = pipeline_rate(
        source, workers, args.batch, args.input_size, args.batches, normalize_in_workers
      )
      if workers == 0 and normalize_in_workers:
        w0 = rate
      print(
        json.dumps(
          {
            "name": "train",
            "workers": workers,
            **common,
            "normalize_in_workers": normalize_in_workers,
            "images_per_s": round(rate, 1),
            "ratio_vs_read_only": round(rate / base, 3),
            "ratio_vs_workers0": round(rate / w0, 3) if w0 else None,
          }
        ),
        flush=True,
      )


if __name__ == "__main__":
  main()
