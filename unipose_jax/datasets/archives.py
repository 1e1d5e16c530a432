"""Reading the Leeds Sports Pose archives (zip or extracted folder) and validating them.

Nothing here depends on TensorFlow or TFDS: this module turns the files as they are
distributed into plain numpy records, and every problem with the input becomes a
:class:`DatasetError` whose message names the offending file.

Sources. An archive ``<stem>`` (``lsp_dataset`` or ``lspet_dataset``) is looked up in a
folder ("manual dir") as, in this order,

* ``<stem>.zip`` -- the archive as distributed, or
* ``<stem>/`` -- its extracted folder.

Inside either, ``joints.mat`` and ``images/`` sit at the top (the layout of the
distributed zips) or one folder down (``<anything>/joints.mat``, e.g. a zip that was
re-packed with a top-level folder, or ``lsp_dataset/lsp_dataset/...``).

Annotations. ``joints.mat`` holds one array ``joints`` of (x, y, flag) per joint and
image; LSP stores it as ``(3, 14, N)``, LSP-extended as ``(14, 3, N)``. The x, y values
are MATLAB 1-based pixel coordinates; :func:`load_annotations` subtracts 1 so that
integer coordinates are pixel centres, 0-based (design.md section 5). Flags:

* LSP: ``0`` = visible, ``1`` = occluded; every joint has a real location, so every
  joint is *labeled*.
* LSP-extended: ``1`` = visible, ``0`` = not annotated; the coordinates of flag-0 joints
  may be meaningless (far outside the image), so only visible joints are *labeled*.

Coordinates that are not finite (NaN/inf) are an error for a labeled joint. For an
unlabeled joint they are replaced by 0 (after the offset), so stored keypoints are
always finite; finite but meaningless coordinates of unlabeled joints are kept as read.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import re
import zipfile
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.io
from PIL import Image

from unipose_jax import keypoint_sets

NUM_JOINTS = keypoint_sets.LSP.num_joints

# Guard against decompression bombs from a malicious archive without rejecting
# LSP-extended's largest images (about 1700 x 1150).
_MAX_IMAGE_PIXELS = 50_000_000


class DatasetError(ValueError):
  """Bad or missing dataset input; the message names the file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class ArchiveSpec:
  """How one of the distributed LSP archives is laid out.

  Attributes:
    stem: archive name without ``.zip`` (also the name of its extracted folder).
    image_name: format string of the image file name given the 1-based image id.
    joints_layout: ``"xyf_joint_image"`` for ``(3, 14, N)`` or ``"joint_xyf_image"``
      for ``(14, 3, N)``.
    visible_flag: value of the flag that marks a visible joint (0 or 1).
    only_visible_labeled: whether joints that are not visible are unlabeled.
    splits: split name -> inclusive range ``(first, last)`` of 1-based image ids; the
      archive must hold every image up to the last one. The one table of split sizes.
  """

  stem: str
  image_name: str
  joints_layout: str
  visible_flag: int
  only_visible_labeled: bool
  splits: tuple[tuple[str, tuple[int, int]], ...]

  @property
  def num_images(self) -> int:
    """Number of images the archive must hold."""
    return max(last for _, (_, last) in self.splits)

  @property
  def split_sizes(self) -> dict[str, int]:
    return {name: last - first + 1 for name, (first, last) in self.splits}

  @property
  def zip_name(self) -> str:
    return f"{self.stem}.zip"


LSP = ArchiveSpec(
  stem="lsp_dataset",
  image_name="im{:04d}.jpg",
  joints_layout="xyf_joint_image",
  visible_flag=0,
  only_visible_labeled=False,
  splits=(("train", (1, 1000)), ("test", (1001, 2000))),
)

LSP_EXTENDED = ArchiveSpec(
  stem="lspet_dataset",
  image_name="im{:05d}.jpg",
  joints_layout="joint_xyf_image",
  visible_flag=1,
  only_visible_labeled=True,
  splits=(("train", (1, 10000)),),
)


@dataclasses.dataclass(frozen=True)
class Annotations:
  """Validated annotations of one archive, image ``i`` (0-based) is image id ``i + 1``.

  Attributes:
    keypoints: ``(N, 14, 2)`` float32, (x, y) in original-image pixels, 0-based pixel
      centres (MATLAB value - 1); always finite.
    visible: ``(N, 14)`` bool, the joint is visible in the image.
    labeled: ``(N, 14)`` bool, the joint has a meaningful location (train on it,
      score it).
  """

  keypoints: np.ndarray
  visible: np.ndarray
  labeled: np.ndarray

  def __len__(self) -> int:
    return self.keypoints.shape[0]


def find_source(manual_dir: str | os.PathLike, spec: ArchiveSpec) -> pathlib.Path | None:
  """The archive ``<stem>.zip`` or folder ``<stem>/`` in ``manual_dir``, or None if absent."""
  folder = pathlib.Path(manual_dir)
  for candidate in (folder / spec.zip_name, folder / spec.stem):
    if candidate.is_file() and candidate.suffix == ".zip":
      return candidate
    if candidate.is_dir():
      return candidate
  return None


class ArchiveReader:
  """Read-only access to the files of one archive, zipped or extracted.

  Paths given to the methods are relative to the archive's root, the folder that
  holds ``joints.mat`` (for example ``"images/im0001.jpg"``). ``describe(path)``
  gives the name used in error messages, e.g. ``".../lsp_dataset.zip:images/im0001.jpg"``.
  """

  def __init__(self, source: str | os.PathLike):
    self.source = pathlib.Path(source)
    self._zip: zipfile.ZipFile | None = None
    if not self.source.exists():
      raise DatasetError(f"{self.source}: no such archive or folder")
    if self.source.is_dir():
      self._root = self._find_root_in_folder()
    else:
      try:
        self._zip = zipfile.ZipFile(self.source)
      except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"{self.source}: not a readable zip archive ({e})") from e
      self._members = {info.filename: info for info in self._zip.infolist() if not info.is_dir()}
      self._root = self._find_root_in_zip()

  # -- layout detection --------------------------------------------------------------

  def _find_root_in_folder(self) -> str:
    if (self.source / "joints.mat").is_file():
      return ""
    found = sorted(p.name for p in self.source.iterdir() if (p / "joints.mat").is_file())
    if len(found) == 1:
      return found[0] + "/"
    raise DatasetError(
      f"{self.source}: no joints.mat found in the folder or one level below it"
      + (f" (found several: {found})" if found else "")
    )

  def _find_root_in_zip(self) -> str:
    roots = sorted(
      name[: -len("joints.mat")]
      for name in self._members
      if name == "joints.mat" or (name.endswith("/joints.mat") and name.count("/") == 1)
    )
    if len(roots) == 1:
      return roots[0]
    raise DatasetError(
      f"{self.source}: expected one joints.mat at the top of the zip or one folder "
      f"below it, found {len(roots)}" + (f": {[r + 'joints.mat' for r in roots]}" if roots else "")
    )

  # -- file access -------------------------------------------------------------------

  def describe(self, path: str) -> str:
    """Human-readable name of ``path`` for messages."""
    if self._zip is not None:
      return f"{self.source}:{self._root}{path}"
    return str(self.source / (self._root + path))

  def exists(self, path: str) -> bool:
    if self._zip is not None:
      return (self._root + path) in self._members
    return (self.source / (self._root + path)).is_file()

  def read_bytes(self, path: str) -> bytes:
    """The bytes of ``path``; a missing or damaged member raises DatasetError."""
    if not self.exists(path):
      raise DatasetError(f"{self.describe(path)}: file is missing")
    try:
      if self._zip is not None:
        return self._zip.read(self._root + path)
      return (self.source / (self._root + path)).read_bytes()
    except (
      zipfile.BadZipFile,
      zlib.error,
      OSError,
      EOFError,
      ValueError,
      NotImplementedError,
    ) as e:
      raise DatasetError(f"{self.describe(path)}: cannot be read ({e})") from e

  def close(self) -> None:
    if self._zip is not None:
      self._zip.close()
      self._zip = None

  def __enter__(self) -> ArchiveReader:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def load_annotations(reader: ArchiveReader, spec: ArchiveSpec) -> Annotations:
  """Reads and validates ``joints.mat`` of an archive (see the module docstring).

  Raises:
    DatasetError naming ``joints.mat`` when it is unreadable, lacks ``joints``, has
    a shape other than the spec's layout for ``spec.num_images`` images, holds flags
    other than 0/1, or non-finite coordinates for a labeled joint.
  """
  path = "joints.mat"
  where = reader.describe(path)
  raw = reader.read_bytes(path)
  try:
    mat = scipy.io.loadmat(io.BytesIO(raw))
  except Exception as e:  # scipy raises ValueError, MatReadError, TypeError, ...
    raise DatasetError(f"{where}: not a readable MATLAB .mat file ({type(e).__name__}: {e})") from e
  if "joints" not in mat:
    keys = sorted(k for k in mat if not k.startswith("__"))
    raise DatasetError(f"{where}: has no variable 'joints' (variables found: {keys})")
  joints = np.asarray(mat["joints"])
  if not np.issubdtype(joints.dtype, np.number) or np.iscomplexobj(joints):
    raise DatasetError(f"{where}: 'joints' must hold real numbers, got dtype {joints.dtype}")
  n = spec.num_images
  if spec.joints_layout == "xyf_joint_image":
    expected = (3, NUM_JOINTS, n)
    if joints.shape == expected:
      per_image = np.transpose(joints, (2, 1, 0))  # (N, 14, 3)
  elif spec.joints_layout == "joint_xyf_image":
    expected = (NUM_JOINTS, 3, n)
    if joints.shape == expected:
      per_image = np.transpose(joints, (2, 0, 1))  # (N, 14, 3)
  else:  # pragma: no cover - programming error
    raise ValueError(f"unknown joints layout {spec.joints_layout!r}")
  if joints.shape != expected:
    raise DatasetError(
      f"{where}: 'joints' has shape {joints.shape}, expected {expected} "
      f"(x/y/flag, {NUM_JOINTS} joints, {n} images) for {spec.zip_name}"
    )
  per_image = per_image.astype(np.float64)
  xy, flags = per_image[..., :2], per_image[..., 2]

  bad_flags = ~np.isin(flags, (0.0, 1.0))
  if bad_flags.any():
    i, k = np.argwhere(bad_flags)[0]
    raise DatasetError(
      f"{where}: visibility flags must be 0 or 1, image {i + 1} joint {k} "
      f"({keypoint_sets.LSP.joint_names[k]}) has {flags[i, k]!r} ({int(bad_flags.sum())} bad flags)"
    )
  visible = flags == spec.visible_flag
  labeled = visible.copy() if spec.only_visible_labeled else np.ones_like(visible)

  finite = np.isfinite(xy).all(axis=-1)
  bad = labeled & ~finite
  if bad.any():
    i, k = np.argwhere(bad)[0]
    raise DatasetError(
      f"{where}: non-finite coordinates {xy[i, k].tolist()} for labeled joint {k} "
      f"({keypoint_sets.LSP.joint_names[k]}) of image {i + 1} ({int(bad.sum())} labeled joints "
      "with NaN/inf coordinates)"
    )
  keypoints = np.where(finite[..., None], xy - 1.0, 0.0).astype(np.float32)
  return Annotations(keypoints=keypoints, visible=visible, labeled=labeled)


def image_path(spec: ArchiveSpec, image_id: int) -> str:
  """Path of image ``image_id`` (1-based) inside the archive root."""
  return "images/" + spec.image_name.format(image_id)


_IMAGE_ID_RE = re.compile(r"(\d+)")


def image_id_from_name(name: str) -> int:
  """The number in an LSP image file name: ``"im0001.jpg" -> 1``."""
  match = _IMAGE_ID_RE.search(pathlib.PurePosixPath(name).name)
  if match is None:
    raise ValueError(f"no number in image name {name!r}")
  return int(match.group(1))


def validated_jpeg(data: bytes, where: str) -> tuple[bytes, tuple[int, int]]:
  """Checks that ``data`` is a complete, decodable image; returns JPEG bytes and (H, W).

  The bytes are returned unchanged when they are a JPEG in RGB or greyscale (which
  any decoder turns into ``(H, W, 3)`` RGB). Other modes (CMYK, palette, ...) are
  converted to RGB and re-encoded as JPEG, quality 95.

  Raises:
    DatasetError naming ``where`` if the data is empty, not an image, or truncated.
  """
  if not data:
    raise DatasetError(f"{where}: empty file, expected a JPEG image")
  try:
    with Image.open(io.BytesIO(data)) as im:
      if im.width * im.height > _MAX_IMAGE_PIXELS:
        raise DatasetError(f"{where}: image of {im.width}x{im.height} pixels is implausibly large")
      im.load()  # full decode: raises OSError on truncated data
      fmt, mode, size = im.format, im.mode, (im.height, im.width)
      if fmt == "JPEG" and mode in ("RGB", "L"):
        return data, size
      buffer = io.BytesIO()
      im.convert("RGB").save(buffer, format="JPEG", quality=95)
      return buffer.getvalue(), size
  except DatasetError:
    raise
  except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
    raise DatasetError(f"{where}: unreadable or truncated image ({type(e).__name__}: {e})") from e


@dataclasses.dataclass(frozen=True)
class Record:
  """One annotated image as read from an archive (before TFDS encoding).

  Attributes:
    image_id: 1-based number of the image (``im0001.jpg`` -> 1).
    jpeg: encoded JPEG bytes.
    image_shape: ``(H, W)`` of the image.
    keypoints: ``(14, 2)`` float32, 0-based pixel-centre (x, y).
    visible: ``(14,)`` bool.
    labeled: ``(14,)`` bool.
  """

  image_id: int
  jpeg: bytes
  image_shape: tuple[int, int]
  keypoints: np.ndarray
  visible: np.ndarray
  labeled: np.ndarray


def iter_records(
  reader: ArchiveReader,
  spec: ArchiveSpec,
  annotations: Annotations,
  image_ids: Sequence[int],
) -> Iterator[Record]:
  """Yields the validated :class:`Record` of each 1-based id in ``image_ids``, in order.

  Raises:
    DatasetError naming the image file if it is missing, unreadable or truncated,
    or if an id is outside ``1..len(annotations)``.
  """
  for image_id in image_ids:
    path = image_path(spec, image_id)
    if not 1 <= image_id <= len(annotations):
      raise DatasetError(
        f"{reader.describe(path)}: image id {image_id} has no annotation in "
        f"{reader.describe('joints.mat')} ({len(annotations)} images)"
      )
    jpeg, shape = validated_jpeg(reader.read_bytes(path), reader.describe(path))
    i = image_id - 1
    yield Record(
      image_id=image_id,
      jpeg=jpeg,
      image_shape=shape,
      keypoints=annotations.keypoints[i],
      visible=annotations.visible[i],
      labeled=annotations.labeled[i],
    )
