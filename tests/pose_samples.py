"""Helpers of the MPII, COCO and Penn Action builder tests: where the real samples are
(never copied into the repository; tests skip with a reason when they are absent), stand-in
JPEGs at an annotated size, and tiny files in each dataset's own format."""

from __future__ import annotations

import json
import os
import pathlib

import cv2
import numpy as np
import pytest
import scipy.io

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def samples_dir() -> pathlib.Path:
  """``$UNIPOSE_SAMPLES_DIR``, else ``../shared/data/samples`` of the repository (or of the
  folder holding its worktree)."""
  env = os.environ.get("UNIPOSE_SAMPLES_DIR")
  if env:
    return pathlib.Path(env)
  for parent in (REPO_ROOT.parent, REPO_ROOT.parents[1]):
    candidate = parent / "shared" / "data" / "samples"
    if candidate.is_dir():
      return candidate
  return REPO_ROOT.parent / "shared" / "data" / "samples"


def sample(*parts: str) -> pathlib.Path:
  """A path of the real samples, or a skip naming it."""
  path = samples_dir().joinpath(*parts)
  if not path.exists():
    pytest.skip(f"real sample not found: {path} (set UNIPOSE_SAMPLES_DIR)")
  return path


def write_jpeg(path: pathlib.Path, height: int, width: int, value: int = 0) -> None:
  """A stand-in JPEG of ``height`` x ``width`` (a flat colour with a ramp: fast to write)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  image = np.empty((height, width, 3), np.uint8)
  image[...] = ((np.arange(width)[None, :, None] + value) % 256).astype(np.uint8)
  assert cv2.imwrite(os.fspath(path), image, [cv2.IMWRITE_JPEG_QUALITY, 50])


def write_json(path: pathlib.Path, data) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data))


def write_mat(path: pathlib.Path, variables: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  scipy.io.savemat(os.fspath(path), variables)


def silent(_line: str) -> None:
  pass
