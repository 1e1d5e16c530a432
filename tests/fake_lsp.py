"""Builds small fake LSP / LSP-extended archives for tests (no real data involved).

The fakes have the layout of the distributed archives (``images/imNNNN.jpg``,
``joints.mat``, ``README.txt``), zipped or as a folder, optionally under one extra
top-level folder. Images are tiny random JPEGs; ``joints`` is random, in the file's
own layout and MATLAB 1-based convention.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import zipfile

import numpy as np
import scipy.io
from PIL import Image

NUM_JOINTS = 14

KINDS = {
  # stem, image name format, joints layout
  "lsp": ("lsp_dataset", "im{:04d}.jpg", "xyf_joint_image"),
  "lsp_extended": ("lspet_dataset", "im{:05d}.jpg", "joint_xyf_image"),
}


@dataclasses.dataclass
class FakeArchive:
  """What was written: ``path`` (zip file or folder), the per-image data and the raw mat."""

  path: pathlib.Path
  jpegs: dict[int, bytes]  # image id -> bytes as written
  shapes: dict[int, tuple[int, int]]  # image id -> (H, W)
  xy: np.ndarray  # (N, 14, 2) MATLAB 1-based coordinates as written
  flags: np.ndarray  # (N, 14) flags as written
  joints: np.ndarray  # the array saved as `joints`, in the file's layout


def jpeg_bytes(rng: np.random.Generator, height: int, width: int, mode: str = "RGB") -> bytes:
  channels = {"RGB": 3, "L": 1, "CMYK": 4}[mode]
  pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
  image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def to_layout(xy: np.ndarray, flags: np.ndarray, layout: str) -> np.ndarray:
  """(N, 14, 2) + (N, 14) -> the `joints` array of the given layout."""
  per_image = np.concatenate([xy, flags[..., None]], axis=-1)  # (N, 14, 3)
  if layout == "xyf_joint_image":
    return np.transpose(per_image, (2, 1, 0))  # (3, 14, N)
  return np.transpose(per_image, (1, 2, 0))  # (14, 3, N)


def make_fake_archive(
  folder: pathlib.Path,
  kind: str = "lsp",
  num_images: int = 8,
  *,
  as_zip: bool = True,
  top_level: str | None = None,
  seed: int = 0,
  xy: np.ndarray | None = None,
  flags: np.ndarray | None = None,
  joints: np.ndarray | None = None,
  mat_variables: dict | None = None,
  mat_bytes: bytes | None = None,
  image_overrides: dict[int, bytes] | None = None,
  missing_images: tuple[int, ...] = (),
  same_image: bool = False,
) -> FakeArchive:
  """Writes a fake ``<stem>.zip`` (or ``<stem>/``) into ``folder``.

  Args:
    kind: ``"lsp"`` or ``"lsp_extended"`` (name pattern and joints layout).
    num_images: number of images and of annotation columns.
    as_zip: write a zip; otherwise an extracted folder.
    top_level: put everything under this extra folder inside the archive.
    xy, flags: ``(N, 14, 2)`` / ``(N, 14)`` annotations to write (random otherwise;
      random flags are 0/1).
    joints: the ``joints`` array to save as is (overrides xy/flags).
    mat_variables: the variables of joints.mat (overrides everything above).
    mat_bytes: raw bytes of joints.mat (overrides everything above).
    image_overrides: image id -> raw bytes to write instead of a JPEG.
    missing_images: image ids not written.
    same_image: reuse one tiny JPEG for every image (fast for thousands).
  """
  stem, name_format, layout = KINDS[kind]
  rng = np.random.default_rng(seed)
  shared = jpeg_bytes(rng, 3, 2) if same_image else None
  jpegs, shapes = {}, {}
  for image_id in range(1, num_images + 1):
    if same_image:
      jpegs[image_id], shapes[image_id] = shared, (3, 2)
    else:
      h, w = int(rng.integers(8, 24)), int(rng.integers(8, 24))
      jpegs[image_id], shapes[image_id] = jpeg_bytes(rng, h, w), (h, w)
  for image_id, data in (image_overrides or {}).items():
    jpegs[image_id] = data
  if xy is None:
    xy = rng.uniform(1.0, 20.0, size=(num_images, NUM_JOINTS, 2))
  if flags is None:
    flags = rng.integers(0, 2, size=(num_images, NUM_JOINTS)).astype(np.float64)
  if joints is None:
    joints = to_layout(np.asarray(xy, np.float64), np.asarray(flags, np.float64), layout)
  if mat_bytes is None:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, mat_variables if mat_variables is not None else {"joints": joints})
    mat_bytes = buffer.getvalue()

  files = {"joints.mat": mat_bytes, "README.txt": b"fake archive for tests\n"}
  for image_id, data in jpegs.items():
    if image_id not in missing_images:
      files["images/" + name_format.format(image_id)] = data
  prefix = f"{top_level}/" if top_level else ""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  if as_zip:
    path = folder / f"{stem}.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
      zf.writestr(prefix + "images/", b"")
      for name, data in files.items():
        zf.writestr(prefix + name, data)
  else:
    path = folder / stem
    for name, data in files.items():
      target = path / (prefix + name)
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(data)
  return FakeArchive(
    path=path, jpegs=jpegs, shapes=shapes, xy=np.asarray(xy), flags=np.asarray(flags), joints=joints
  )
