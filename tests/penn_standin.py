"""Stand-in Penn Action for the video tests: tiny label files in the release's format
(``scipy.io.savemat``, as ``labels/NNNN.mat``) with stand-in frames of their dimensions,
prepared into a ``penn_action`` TFDS dataset. The joints move a little from frame to frame
(a person walking right), so that clips and videos have something to follow."""

from __future__ import annotations

import pathlib

import numpy as np
from pose_samples import write_jpeg, write_mat

K = 13


def labels(rng, n: int, h: int, w: int, train: int) -> dict:
  """One video's labels (1-based MATLAB pixels, as the release stores them)."""
  base_x = rng.uniform(w * 0.3, w * 0.5, size=K)
  base_y = rng.uniform(h * 0.2, h * 0.8, size=K)
  drift = np.arange(n)[:, None] * 1.5
  x = np.clip(base_x[None] + drift + rng.normal(0, 0.5, (n, K)), 1, w)
  y = np.clip(base_y[None] + rng.normal(0, 0.5, (n, K)), 1, h)
  vis = (rng.random((n, K)) > 0.15).astype(np.uint8)
  bbox = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)
  return {
    "x": x, "y": y, "visibility": vis, "bbox": bbox, "dimensions": np.array([[h, w, n]], np.uint16),
    "nframes": np.array([[n]], np.uint8), "train": np.array([[train]], np.int32),
    "action": np.array(["jumping_jacks"]), "pose": np.array(["front"]),
  }  # fmt: skip


def write_release(manual_dir: pathlib.Path, videos: dict[int, tuple[int, int]], *,
                  size=(48, 64), seed: int = 0) -> pathlib.Path:  # fmt: skip
  """``{video_id: (frames, train flag 1 | -1)}`` as ``manual_dir/Penn_Action/{labels,frames}``;
  frames of ``size`` (H, W) whose ramp shifts with the frame number."""
  rng = np.random.default_rng(seed)
  root = pathlib.Path(manual_dir) / "Penn_Action"
  h, w = size
  for vid, (n, train) in videos.items():
    write_mat(root / "labels" / f"{vid:04d}.mat", labels(rng, n, h, w, train))
    for f in range(1, n + 1):
      write_jpeg(root / "frames" / f"{vid:04d}" / f"{f:06d}.jpg", h, w, value=3 * f)
  return root


#: The suite's stand-in: 4 training videos of 6..8 frames, 2 test videos of 5 and 7.
VIDEOS = {1: (6, 1), 2: (8, 1), 3: (7, 1), 4: (6, 1), 5: (5, -1), 6: (7, -1)}


def prepare(manual_dir: pathlib.Path, data_dir: pathlib.Path, videos=VIDEOS) -> str:
  """Write the stand-in release and build ``penn_action`` from it into ``data_dir``."""
  from unipose_jax import datasets  # noqa: PLC0415

  write_release(manual_dir, videos)
  status = datasets.prepare(["penn_action"], manual_dir=str(manual_dir), data_dir=str(data_dir))
  assert status["penn_action"] in ("built", "exists"), status
  return str(data_dir)
