"""Tests of unipose_jax.datasets: archive reading, TFDS builders, prepare/data_source.

Fake archives are built by the tests (tests/fake_lsp.py). To keep them tiny, most tests
shrink the builders' image count and split boundaries (class attribute ``SPEC``,
monkeypatched); one test builds a full-count 2000-image fake LSP to check
the real boundaries 1-1000 / 1001-2000, and the real archives (``real_lsp_dir``) are
checked against an independent read of the zips.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import time
import zipfile

import fake_lsp
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from unipose_jax import datasets, keypoint_sets
from unipose_jax.datasets import archives, synthetic
from unipose_jax.datasets.lsp import Lsp, LspExtended

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

SMALL_LSP = dataclasses.replace(archives.LSP, splits=(("train", (1, 5)), ("test", (6, 8))))
SMALL_LSPET = dataclasses.replace(archives.LSP_EXTENDED, splits=(("train", (1, 6)),))


@pytest.fixture
def small_builders(monkeypatch):
  """LSP with 8 images (train 1-5, test 6-8), LSP-extended with 6."""
  monkeypatch.setattr(Lsp, "SPEC", SMALL_LSP)
  monkeypatch.setattr(LspExtended, "SPEC", SMALL_LSPET)


def _decode(jpeg: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(jpeg)) as im:
    return np.asarray(im.convert("RGB"))


def _silent(_msg: str) -> None:
  pass


# -- archive reading -------------------------------------------------------------------


@pytest.mark.parametrize(
  "as_zip, top_level",
  [(True, None), (True, "lsp_dataset"), (False, None), (False, "lsp_dataset")],
  ids=["zip", "zip-with-top-folder", "folder", "folder-nested"],
)
def test_reader_layouts_offset_and_lsp_flags(tmp_path, as_zip, top_level):
  fake = fake_lsp.make_fake_archive(tmp_path, "lsp", 8, as_zip=as_zip, top_level=top_level)
  assert archives.find_source(tmp_path, SMALL_LSP) == fake.path
  with archives.ArchiveReader(fake.path) as reader:
    ann = archives.load_annotations(reader, SMALL_LSP)
    records = list(archives.iter_records(reader, SMALL_LSP, ann, [1, 7, 8]))
  # MATLAB 1-based -> 0-based pixel centres: exactly minus one.
  np.testing.assert_allclose(ann.keypoints, fake.xy - 1.0, rtol=0, atol=1e-5)
  assert ann.keypoints.dtype == np.float32 and ann.keypoints.shape == (8, 14, 2)
  # LSP: flag 0 = visible, every joint labeled.
  np.testing.assert_array_equal(ann.visible, fake.flags == 0)
  assert ann.labeled.all()
  assert [r.image_id for r in records] == [1, 7, 8]
  for r in records:
    assert r.jpeg == fake.jpegs[r.image_id]
    assert r.image_shape == fake.shapes[r.image_id]
    np.testing.assert_allclose(r.keypoints, fake.xy[r.image_id - 1] - 1.0, atol=1e-5)


def test_lsp_extended_flags_and_unlabeled_garbage(tmp_path):
  rng = np.random.default_rng(1)
  xy = rng.uniform(1, 20, size=(6, 14, 2))
  flags = np.ones((6, 14))
  flags[0, 0] = 0  # unlabeled, coordinates meaningless (far outside)
  xy[0, 0] = (-322.0, 782.0)
  flags[1, 3] = 0  # unlabeled with NaN coordinates: stored as 0, never NaN
  xy[1, 3] = np.nan
  fake = fake_lsp.make_fake_archive(tmp_path, "lsp_extended", 6, xy=xy, flags=flags)
  assert fake.joints.shape == (14, 3, 6)
  with archives.ArchiveReader(fake.path) as reader:
    ann = archives.load_annotations(reader, SMALL_LSPET)
  np.testing.assert_array_equal(ann.visible, flags == 1)
  np.testing.assert_array_equal(ann.labeled, flags == 1)
  np.testing.assert_array_equal(ann.keypoints[0, 0], [-323.0, 781.0])  # kept as read, minus 1
  np.testing.assert_array_equal(ann.keypoints[1, 3], [0.0, 0.0])
  assert np.isfinite(ann.keypoints).all()
  mask = flags == 1
  np.testing.assert_allclose(ann.keypoints[mask], xy[mask] - 1.0, atol=1e-5)


def test_image_id_from_name():
  assert archives.image_id_from_name("images/im0001.jpg") == 1
  assert archives.image_id_from_name("im10000.jpg") == 10000


def test_non_rgb_jpegs_decode_to_rgb(tmp_path):
  rng = np.random.default_rng(0)
  grey = fake_lsp.jpeg_bytes(rng, 9, 7, "L")
  cmyk = fake_lsp.jpeg_bytes(rng, 6, 5, "CMYK")
  data, shape = archives.validated_jpeg(grey, "grey.jpg")
  assert data == grey and shape == (9, 7)  # greyscale kept as is, decoders expand it
  data, shape = archives.validated_jpeg(cmyk, "cmyk.jpg")
  assert shape == (6, 5)
  with Image.open(io.BytesIO(data)) as im:
    assert (im.format, im.mode) == ("JPEG", "RGB")


# -- bad input: every error names the file and the problem ------------------------------


def _lsp_error(tmp_path, **fake_kwargs) -> str:
  fake_lsp.make_fake_archive(tmp_path, "lsp", 8, **fake_kwargs)
  with pytest.raises(archives.DatasetError) as info:
    source = archives.find_source(tmp_path, SMALL_LSP)
    with archives.ArchiveReader(source) as reader:
      ann = archives.load_annotations(reader, SMALL_LSP)
      list(archives.iter_records(reader, SMALL_LSP, ann, range(1, 9)))
  return str(info.value)


def test_error_truncated_jpeg(tmp_path):
  good = fake_lsp.jpeg_bytes(np.random.default_rng(0), 16, 16)
  msg = _lsp_error(tmp_path, image_overrides={3: good[: len(good) // 2]})
  assert "lsp_dataset.zip:images/im0003.jpg" in msg and "truncated" in msg


def test_error_unreadable_and_empty_image(tmp_path):
  msg = _lsp_error(tmp_path, image_overrides={2: b"this is not a jpeg"})
  assert "images/im0002.jpg" in msg and "unreadable" in msg
  msg = _lsp_error(tmp_path / "b", image_overrides={5: b""}, as_zip=False)
  assert str(tmp_path / "b" / "lsp_dataset" / "images" / "im0005.jpg") in msg and "empty" in msg


def test_error_missing_image(tmp_path):
  msg = _lsp_error(tmp_path, missing_images=(4,))
  assert "images/im0004.jpg" in msg and "missing" in msg


def test_error_joints_mat_without_joints(tmp_path):
  msg = _lsp_error(tmp_path, mat_variables={"pose": np.zeros((3, 14, 8))})
  assert "joints.mat" in msg and "no variable 'joints'" in msg and "pose" in msg


def test_error_joints_mat_not_a_mat_file(tmp_path):
  msg = _lsp_error(tmp_path, mat_bytes=b"garbage, not MATLAB")
  assert "lsp_dataset.zip:joints.mat" in msg and "not a readable MATLAB" in msg


@pytest.mark.parametrize(
  "shape",
  [(14, 3, 8), (3, 14, 7), (3, 14), (2, 14, 8)],
  ids=["lspet-layout", "count", "2d", "no-flag"],
)
def test_error_joints_wrong_shape(tmp_path, shape):
  msg = _lsp_error(tmp_path, joints=np.ones(shape))
  assert "joints.mat" in msg and str(shape) in msg and "(3, 14, 8)" in msg


def test_error_nan_coordinates_of_labeled_joint(tmp_path):
  xy = np.full((8, 14, 2), 5.0)
  xy[6, 12, 1] = np.nan  # image 7, neck
  msg = _lsp_error(tmp_path, xy=xy)
  assert "joints.mat" in msg and "image 7" in msg and "neck" in msg and "non-finite" in msg


def test_error_bad_flag(tmp_path):
  flags = np.zeros((8, 14))
  flags[2, 1] = 2.0
  msg = _lsp_error(tmp_path, flags=flags)
  assert "joints.mat" in msg and "flags must be 0 or 1" in msg and "image 3" in msg


def test_error_corrupt_and_truncated_zip(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "lsp_dataset.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
  with pytest.raises(archives.DatasetError, match=r"a/lsp_dataset\.zip: not a readable zip"):
    archives.ArchiveReader(tmp_path / "a" / "lsp_dataset.zip")
  fake = fake_lsp.make_fake_archive(tmp_path / "b", "lsp", 8)
  data = fake.path.read_bytes()
  fake.path.write_bytes(data[: len(data) // 2])  # an interrupted download
  with pytest.raises(archives.DatasetError, match=r"b/lsp_dataset\.zip: not a readable zip"):
    archives.ArchiveReader(fake.path)


def test_error_damaged_zip_member(tmp_path):
  """A bit flipped inside a stored member fails its CRC check; the message names it."""
  fake = fake_lsp.make_fake_archive(tmp_path, "lsp", 8)
  with zipfile.ZipFile(fake.path) as zf:
    info = zf.getinfo("images/im0002.jpg")
  data = bytearray(fake.path.read_bytes())
  start = info.header_offset + 30 + len(info.filename) + len(info.extra)
  data[start + info.compress_size // 2] ^= 0xFF
  fake.path.write_bytes(bytes(data))
  with pytest.raises(archives.DatasetError, match=r"images/im0002\.jpg"):
    with archives.ArchiveReader(fake.path) as reader:
      ann = archives.load_annotations(reader, SMALL_LSP)
      list(archives.iter_records(reader, SMALL_LSP, ann, range(1, 9)))


def test_error_zip_without_joints_mat(tmp_path):
  path = tmp_path / "lsp_dataset.zip"
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("images/im0001.jpg", b"x")
  with pytest.raises(archives.DatasetError, match=r"lsp_dataset\.zip: expected one joints\.mat"):
    archives.ArchiveReader(path)


def test_missing_archive_is_skipped_with_instructions(tmp_path):
  lines: list[str] = []
  statuses = datasets.prepare(
    ["lsp", "lsp_extended"], manual_dir=tmp_path, data_dir=tmp_path / "tfds", log=lines.append
  )
  assert statuses == {"lsp": "missing", "lsp_extended": "missing"}
  text = "\n".join(lines)
  assert "lsp_dataset.zip" in text and "lspet_dataset.zip" in text and str(tmp_path) in text
  assert "sam.johnson.io/research/lsp.html" in text and "data/" in text
  assert not datasets.is_prepared("lsp", tmp_path / "tfds")
  # Used directly, the builder fails with the same explanation.
  with pytest.raises(archives.DatasetError, match="lsp_dataset.zip"):
    datasets.builder("lsp", tmp_path / "tfds").download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(tmp_path))
    )


# -- builders, prepare, data_source -----------------------------------------------------


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_build_and_read_lsp(tmp_path, small_builders, as_zip):
  fake = fake_lsp.make_fake_archive(tmp_path / "manual", "lsp", 8, as_zip=as_zip)
  statuses = datasets.prepare(
    "lsp", manual_dir=tmp_path / "manual", data_dir=tmp_path / "tfds", log=_silent
  )
  assert statuses == {"lsp": "built"}
  assert datasets.is_prepared("lsp", tmp_path / "tfds")
  assert list((tmp_path / "tfds" / "lsp" / "1.0.0").glob("*.array_record-*"))
  for split, (first, last) in SMALL_LSP.splits:
    source = datasets.data_source("lsp", split, tmp_path / "tfds")
    assert len(source) == last - first + 1
    for index, example in enumerate(source):
      image_id = first + index  # stored in image-id order
      assert set(example) == {"image", "keypoints", "visible", "labeled", "image_id", "box"}
      assert example["image_id"].dtype == np.int32 and example["image_id"] == image_id
      image = example["image"]
      assert image.dtype == np.uint8 and image.shape == (*fake.shapes[image_id], 3)
      reference = _decode(fake.jpegs[image_id]).astype(int)
      assert np.abs(image.astype(int) - reference).max() <= 3
      assert example["keypoints"].dtype == np.float32 and example["keypoints"].shape == (14, 2)
      np.testing.assert_allclose(example["keypoints"], fake.xy[image_id - 1] - 1.0, atol=1e-5)
      np.testing.assert_array_equal(example["visible"], fake.flags[image_id - 1] == 0)
      assert example["labeled"].dtype == bool and example["labeled"].all()
  batch = source.__getitems__([2, 0])
  assert [int(e["image_id"]) for e in batch] == [8, 6]
  assert source[-1]["image_id"] == 8
  with pytest.raises(IndexError):
    source[3]


def test_build_and_read_lsp_extended(tmp_path, small_builders):
  flags = np.ones((6, 14))
  flags[2, [0, 5, 13]] = 0
  fake = fake_lsp.make_fake_archive(tmp_path, "lsp_extended", 6, flags=flags)
  assert datasets.prepare(
    "lsp_extended", manual_dir=tmp_path, data_dir=tmp_path / "tfds", log=_silent
  ) == {"lsp_extended": "built"}
  source = datasets.data_source("lsp_extended", "train", tmp_path / "tfds")
  assert len(source) == 6
  example = source[2]
  assert example["image_id"] == 3
  np.testing.assert_array_equal(example["visible"], flags[2] == 1)
  np.testing.assert_array_equal(example["labeled"], flags[2] == 1)
  np.testing.assert_allclose(example["keypoints"], fake.xy[2] - 1.0, atol=1e-5)
  with pytest.raises(ValueError, match="no split 'test'"):
    datasets.data_source("lsp_extended", "test", tmp_path / "tfds")


def test_full_count_fake_uses_real_split_boundaries(tmp_path):
  """2000 one-pixel-ish images: train = im0001-im1000, test = im1001-im2000."""
  fake = fake_lsp.make_fake_archive(tmp_path, "lsp", 2000, same_image=True)
  assert datasets.prepare("lsp", manual_dir=tmp_path, data_dir=tmp_path / "tfds", log=_silent) == {
    "lsp": "built"
  }
  train = datasets.data_source("lsp", "train", tmp_path / "tfds")
  test = datasets.data_source("lsp", "test", tmp_path / "tfds")
  assert (len(train), len(test)) == (1000, 1000)
  assert [int(train[i]["image_id"]) for i in (0, 999)] == [1, 1000]
  assert [int(test[i]["image_id"]) for i in (0, 999)] == [1001, 2000]
  np.testing.assert_allclose(test[0]["keypoints"], fake.xy[1000] - 1.0, atol=1e-5)


def test_wrong_image_count_is_an_error(tmp_path):
  """The real builder expects 2000 annotated images; an 8-image archive is refused."""
  fake_lsp.make_fake_archive(tmp_path, "lsp", 8)
  with pytest.raises(archives.DatasetError, match=r"joints\.mat.*\(3, 14, 8\).*\(3, 14, 2000\)"):
    datasets.prepare("lsp", manual_dir=tmp_path, data_dir=tmp_path / "tfds", log=_silent)
  assert not datasets.is_prepared("lsp", tmp_path / "tfds")


def test_prepare_twice_reuses(tmp_path, small_builders):
  fake_lsp.make_fake_archive(tmp_path / "manual", "lsp", 8)
  data_dir = tmp_path / "tfds"
  assert datasets.prepare(
    ["lsp"], manual_dir=tmp_path / "manual", data_dir=data_dir, log=_silent
  ) == {"lsp": "built"}
  files = sorted((data_dir / "lsp" / "1.0.0").iterdir())
  stamps = {p: p.stat().st_mtime_ns for p in files}
  time.sleep(0.01)
  # The archives are not even needed any more.
  (tmp_path / "manual" / "lsp_dataset.zip").unlink()
  lines: list[str] = []
  assert datasets.prepare(
    ["lsp"], manual_dir=tmp_path / "manual", data_dir=data_dir, log=lines.append
  ) == {"lsp": "exists"}
  assert "already prepared" in lines[0]
  assert sorted((data_dir / "lsp" / "1.0.0").iterdir()) == files
  assert {p: p.stat().st_mtime_ns for p in files} == stamps
  assert len(datasets.data_source("lsp", "test", data_dir)) == 3


class _Boom(RuntimeError):
  pass


def test_interrupted_build_leaves_nothing_that_looks_complete(
  tmp_path, small_builders, monkeypatch
):
  fake_lsp.make_fake_archive(tmp_path / "manual", "lsp", 8)
  data_dir = tmp_path / "tfds"
  calls = {"n": 0}
  real = archives.validated_jpeg

  def failing(data, where):
    calls["n"] += 1
    if calls["n"] == 7:  # train (5 images) written, in the middle of test
      raise _Boom("simulated crash")
    return real(data, where)

  monkeypatch.setattr(archives, "validated_jpeg", failing)
  with pytest.raises(_Boom):
    datasets.prepare("lsp", manual_dir=tmp_path / "manual", data_dir=data_dir, log=_silent)
  assert calls["n"] == 7
  assert not datasets.is_prepared("lsp", data_dir)
  assert not (data_dir / "lsp" / "1.0.0").exists()
  assert not list((data_dir / "lsp").glob("*incomplete*"))  # TFDS removed its temporary dir
  with pytest.raises(archives.DatasetError, match=r"(?s)not prepared.*unipose-jax --mode=prepare"):
    datasets.data_source("lsp", "train", data_dir)
  monkeypatch.setattr(archives, "validated_jpeg", real)
  assert datasets.prepare(
    "lsp", manual_dir=tmp_path / "manual", data_dir=data_dir, log=_silent
  ) == {"lsp": "built"}
  assert len(datasets.data_source("lsp", "train", data_dir)) == 5


def test_failure_of_one_dataset_does_not_stop_the_others(tmp_path, small_builders):
  (tmp_path / "lsp_dataset.zip").write_bytes(b"corrupt")
  lines: list[str] = []
  with pytest.raises(archives.DatasetError, match=r"\[lsp\].*lsp_dataset\.zip: not a readable zip"):
    datasets.prepare(
      ["lsp", "synthetic/small"], manual_dir=tmp_path, data_dir=tmp_path / "tfds", log=lines.append
    )
  assert not datasets.is_prepared("lsp", tmp_path / "tfds")
  assert datasets.is_prepared("synthetic/small", tmp_path / "tfds")
  assert any("FAILED" in line and "lsp_dataset.zip" in line for line in lines)


_SUBPROCESS_PRELUDE = """
import importlib.abc, sys

class _HideTensorFlow(importlib.abc.MetaPathFinder):
    # Wraps every finder so that `tensorflow` looks uninstalled, even where it is.
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None
    def invalidate_caches(self):
        if hasattr(self.inner, "invalidate_caches"):
            self.inner.invalidate_caches()

sys.meta_path[:] = [_HideTensorFlow(f) for f in sys.meta_path]
try:
    import tensorflow
except ImportError:
    pass
else:
    raise SystemExit("tensorflow is importable")

import dataclasses
from unipose_jax import datasets
from unipose_jax.datasets import archives
from unipose_jax.datasets.lsp import Lsp
Lsp.SPEC = dataclasses.replace(archives.LSP, splits=(("train", (1, 5)), ("test", (6, 8))))
manual_dir, data_dir = sys.argv[1], sys.argv[2]
"""


def _run_python(script: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(
    os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
  )
  return subprocess.run(
    [sys.executable, "-c", _SUBPROCESS_PRELUDE + textwrap.dedent(script), *args],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )


@pytest.mark.slow
def test_build_and_read_without_tensorflow(tmp_path):
  fake = fake_lsp.make_fake_archive(tmp_path / "manual", "lsp", 8)
  result = _run_python(
    """
        statuses = datasets.prepare(["lsp", "synthetic/small"], manual_dir=manual_dir, data_dir=data_dir,
                                    log=lambda m: None)
        assert statuses == {"lsp": "built", "synthetic/small": "built"}, statuses
        example = datasets.data_source("lsp", "test", data_dir)[0]
        small = datasets.data_source("synthetic/small", "train", data_dir)[0]
        assert "tensorflow" not in sys.modules
        print("OK", int(example["image_id"]), example["image"].shape, small["image"].shape,
              example["keypoints"][0].tolist())
        """,
    str(tmp_path / "manual"),
    str(tmp_path / "tfds"),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  ok = [line for line in result.stdout.splitlines() if line.startswith("OK")]
  h, w = fake.shapes[6]
  x, y = fake.xy[5, 0] - 1.0
  assert ok and ok[0].startswith(f"OK 6 ({h}, {w}, 3) (64, 64, 3)")
  assert np.allclose(eval(ok[0].split(")", 2)[2]), [x, y], atol=1e-4)


@pytest.mark.slow
def test_killed_build_is_not_prepared_and_rebuilds(tmp_path, small_builders):
  """A build killed with SIGKILL mid-way leaves only TFDS's `incomplete.*` folder."""
  fake_lsp.make_fake_archive(tmp_path / "manual", "lsp", 8)
  data_dir = tmp_path / "tfds"
  result = _run_python(
    """
        import os, signal
        real = archives.validated_jpeg
        calls = []
        def dying(data, where):
            calls.append(where)
            if len(calls) == 7:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(data, where)
        archives.validated_jpeg = dying
        datasets.prepare("lsp", manual_dir=manual_dir, data_dir=data_dir, log=lambda m: None)
        """,
    str(tmp_path / "manual"),
    str(data_dir),
  )
  assert result.returncode == -9, (result.returncode, result.stderr[-2000:])
  leftovers = list((data_dir / "lsp").glob("incomplete*"))
  assert leftovers, "expected TFDS's temporary folder to survive a SIGKILL"
  assert not (data_dir / "lsp" / "1.0.0").exists()
  assert not datasets.is_prepared("lsp", data_dir)
  with pytest.raises(archives.DatasetError, match="not prepared"):
    datasets.data_source("lsp", "test", data_dir)
  lines: list[str] = []
  assert datasets.prepare(
    "lsp", manual_dir=tmp_path / "manual", data_dir=data_dir, log=lines.append
  ) == {"lsp": "built"}
  assert any(str(leftovers[0]) in line and "interrupted build" in line for line in lines)
  assert [len(datasets.data_source("lsp", s, data_dir)) for s in ("train", "test")] == [5, 3]


def test_data_source_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown dataset 'cocoa'; known: lsp, .*mpii"):
    datasets.data_source("cocoa", "train", tmp_path)
  with pytest.raises(archives.DatasetError) as info:
    datasets.data_source("synthetic", "train", tmp_path)
  assert "not prepared" in str(info.value) and "unipose-jax --mode=prepare" in str(info.value)
  assert str(tmp_path) in str(info.value)


# -- synthetic ---------------------------------------------------------------------------


def test_synthetic_examples_deterministic_and_in_bounds():
  config = synthetic.SyntheticConfig(name="t", image_size=96, seed=3)
  a = synthetic.make_example(config, "train", 5)
  b = synthetic.make_example(config, "train", 5)
  c = synthetic.make_example(config, "test", 5)
  d = synthetic.make_example(dataclasses.replace(config, seed=4), "train", 5)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["keypoints"], c["keypoints"])
  assert not np.array_equal(a["keypoints"], d["keypoints"])
  assert a["image"].shape == (96, 96, 3) and a["image"].dtype == np.uint8
  assert a["keypoints"].shape == (14, 2) and a["keypoints"].dtype == np.float32
  assert a["visible"].all() and a["labeled"].all() and a["image_id"] == 6
  for i in range(50):
    kp = synthetic.make_example(config, "train", i)["keypoints"]
    assert (kp >= 0).all() and (kp <= 95).all()
    # Front-facing figure: seen along the pelvis->neck axis, the right shoulder is
    # always on the image's left of the axis (negative cross product, y down).
    neck, r_sh, l_sh = kp[keypoint_sets.LSP.head[0]], kp[8], kp[9]
    up = neck - (kp[2] + kp[3]) / 2
    cross = lambda u, v: u[0] * v[1] - u[1] * v[0]  # noqa: E731
    assert cross(up, r_sh - neck) < 0 < cross(up, l_sh - neck)


def test_synthetic_body_parts_have_their_colours():
  """Midpoints of the limbs show the limb's colour (so the joints can be learned)."""
  config = synthetic.SyntheticConfig(name="t", image_size=128)
  limbs = {
    "thigh": [(2, 1), (3, 4)],
    "shin": [(1, 0), (4, 5)],
    "upper_arm": [(8, 7), (9, 10)],
    "forearm": [(7, 6), (10, 11)],
  }
  hits = total = 0
  for i in range(40):
    ex = synthetic.make_example(config, "train", i)
    for part, pairs in limbs.items():
      colour = np.asarray(synthetic.COLOURS[part], float)
      for a, b in pairs:
        x, y = np.round((ex["keypoints"][a] + ex["keypoints"][b]) / 2).astype(int)
        total += 1
        hits += np.abs(ex["image"][y, x].astype(float) - colour).max() < 60
  assert hits / total > 0.8, (hits, total)


def test_synthetic_build_and_read(tmp_path, caplog):
  t0 = time.perf_counter()
  assert datasets.prepare("synthetic/small", data_dir=tmp_path, log=_silent) == {
    "synthetic/small": "built"
  }
  assert time.perf_counter() - t0 < 30
  small = synthetic.Synthetic.builder_configs["small"]
  assert {
    s: len(datasets.data_source("synthetic/small", s, tmp_path)) for s in ("train", "test")
  } == {"train": 128, "test": 32}
  assert not [r for r in caplog.records if "dataset_info.json" in r.getMessage()]  # muted
  source = datasets.data_source("synthetic/small", "test", tmp_path)
  example = source[7]
  expected = synthetic.make_example(small, "test", 7)
  assert example["image"].shape == (64, 64, 3) and int(example["image_id"]) == 8
  np.testing.assert_array_equal(example["keypoints"], expected["keypoints"])
  # Stored as JPEG (quality 95): equal to the decoded encoding, close to the drawing.
  reference = _decode(synthetic.encode_jpeg(expected["image"])).astype(int)
  assert np.abs(example["image"].astype(int) - reference).max() <= 3
  assert np.abs(example["image"].astype(int) - expected["image"]).mean() < 12
  assert example["visible"].all() and example["labeled"].all()
  restored = pickle.loads(pickle.dumps(source))
  assert len(restored) == 32
  np.testing.assert_array_equal(restored[7]["image"], example["image"])


def _damage(path: pathlib.Path, how: str) -> None:
  data = bytearray(path.read_bytes())
  if how == "bit_flip":  # one bit inside the first chunk's data (the file's end is padding)
    data[200] ^= 0x10
  elif how == "truncated":
    data = data[: len(data) // 2]
  else:
    data = b""
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["bit_flip", "truncated", "empty"])
def test_damaged_prepared_dataset_is_named_and_prepare_rebuilds_it(tmp_path, how):
  datasets.prepare("synthetic/small", data_dir=tmp_path, log=_silent)
  before = [e["image"] for e in datasets.data_source("synthetic/small", "test", tmp_path)]
  shard = next(tmp_path.glob("synthetic/small/*/synthetic-test.array_record-*"))
  _damage(shard, how)
  with pytest.raises(datasets.DatasetError) as e:
    source = datasets.data_source("synthetic/small", "test", tmp_path)
    for i in range(len(source)):
      source[i]
  message = str(e.value)
  assert "'synthetic/small' is damaged" in message and str(shard) in message, message
  assert "--mode=prepare" in message and len(message.splitlines()) == 1, message
  with pytest.raises(datasets.DatasetError, match=shard.name):  # a batch read names it too
    datasets.data_source("synthetic/small", "test", tmp_path).__getitems__(range(32))

  lines = []
  assert datasets.prepare("synthetic/small", data_dir=tmp_path, log=lines.append) == {
    "synthetic/small": "built"
  }
  assert any("is damaged" in line and shard.name in line for line in lines), lines
  after = [e["image"] for e in datasets.data_source("synthetic/small", "test", tmp_path)]
  assert len(after) == 32 and all(np.array_equal(a, b) for a, b in zip(before, after))
  # Intact now: the next prepare reads every file back and reuses it.
  assert datasets.prepare("synthetic/small", data_dir=tmp_path, log=_silent) == {
    "synthetic/small": "exists"
  }


def test_damaged_dataset_without_its_archive_is_kept(tmp_path, small_builders):
  fake_lsp.make_fake_archive(tmp_path / "manual", "lsp", 8)
  datasets.prepare("lsp", manual_dir=tmp_path / "manual", data_dir=tmp_path / "tfds", log=_silent)
  shard = next((tmp_path / "tfds").glob("lsp/*/lsp-test.array_record-*"))
  _damage(shard, "truncated")
  lines = []
  status = datasets.prepare(
    "lsp", manual_dir=tmp_path / "empty", data_dir=tmp_path / "tfds", log=lines.append
  )
  assert status == {"lsp": "missing"} and shard.exists()  # not deleted without a way to rebuild
  assert any("is damaged" in line for line in lines), lines


# -- the real archives --------------------------------------------------------------------


def _real_joints(zip_path: pathlib.Path) -> np.ndarray:
  with zipfile.ZipFile(zip_path) as zf:
    return scipy.io.loadmat(io.BytesIO(zf.read("joints.mat")))["joints"]


def _real_image(zip_path: pathlib.Path, name: str) -> np.ndarray:
  with zipfile.ZipFile(zip_path) as zf:
    return _decode(zf.read(name))


@pytest.fixture(scope="module")
def real_lsp_tfds(real_lsp_dir, tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("real_tfds")
  t0 = time.perf_counter()
  assert datasets.prepare("lsp", manual_dir=real_lsp_dir, data_dir=data_dir, log=_silent) == {
    "lsp": "built"
  }
  print(f"real LSP built in {time.perf_counter() - t0:.1f} s")
  return data_dir


def test_real_data_tests_look_in_data_then_shared_data(tmp_path):
  """README puts the archives in data/: the real-data tests look there first, then in
  ../shared/data; $UNIPOSE_LSP_DIR, when set, is the only place."""
  from conftest import LSP_ARCHIVES, lsp_archive_dir

  root, shared = tmp_path / "repo", tmp_path / "shared" / "data"
  for folder in (root / "data", shared):
    folder.mkdir(parents=True)
  assert lsp_archive_dir(root, {}) is None
  for name in LSP_ARCHIVES:
    (shared / name).write_bytes(b"")
  assert lsp_archive_dir(root, {}) == shared
  (root / "data" / LSP_ARCHIVES[0]).write_bytes(b"")  # one archive alone is not enough
  assert lsp_archive_dir(root, {}) == shared
  (root / "data" / LSP_ARCHIVES[1]).write_bytes(b"")
  assert lsp_archive_dir(root, {}) == root / "data"
  assert lsp_archive_dir(root, {"UNIPOSE_LSP_DIR": str(tmp_path / "elsewhere")}) is None


@pytest.mark.real_data
def test_real_lsp(real_lsp_dir, real_lsp_tfds):
  zip_path = real_lsp_dir / "lsp_dataset.zip"
  joints = _real_joints(zip_path)  # (3, 14, 2000), MATLAB 1-based
  assert joints.shape == (3, 14, 2000)
  train = datasets.data_source("lsp", "train", real_lsp_tfds)
  test = datasets.data_source("lsp", "test", real_lsp_tfds)
  assert (
    (len(train), len(test)) == (1000, 1000) == tuple(datasets.DATASETS["lsp"].split_sizes.values())
  )
  first = train[0]
  assert int(first["image_id"]) == 1
  np.testing.assert_array_equal(first["image"], _real_image(zip_path, "images/im0001.jpg"))
  assert first["image"].shape == (160, 70, 3)
  np.testing.assert_allclose(first["keypoints"][0], joints[:2, 0, 0] - 1, atol=1e-4)
  np.testing.assert_allclose(first["keypoints"][0], [28.746459, 142.345440], atol=1e-4)
  for source, offset in ((train, 0), (test, 1000)):
    for index in (0, 1, 500, 999):
      example = source[index]
      i = offset + index
      assert int(example["image_id"]) == i + 1
      np.testing.assert_allclose(example["keypoints"], joints[:2, :, i].T - 1, atol=1e-4)
      np.testing.assert_array_equal(example["visible"], joints[2, :, i] == 0)
      assert example["labeled"].all()
  last = test[999]
  np.testing.assert_array_equal(last["image"], _real_image(zip_path, "images/im2000.jpg"))


@pytest.mark.real_data
@pytest.mark.slow
def test_real_lsp_extended(real_lsp_dir, tmp_path):
  zip_path = real_lsp_dir / "lspet_dataset.zip"
  t0 = time.perf_counter()
  assert datasets.prepare(
    "lsp_extended", manual_dir=real_lsp_dir, data_dir=tmp_path / "tfds", log=_silent
  ) == {"lsp_extended": "built"}
  print(f"real LSP-extended built in {time.perf_counter() - t0:.1f} s")
  joints = _real_joints(zip_path)  # (14, 3, 10000)
  assert joints.shape == (14, 3, 10000)
  train = datasets.data_source("lsp_extended", "train", tmp_path / "tfds")
  assert len(train) == 10000 == datasets.DATASETS["lsp_extended"].split_sizes["train"]
  for index in (0, 4321, 9999):
    example = train[index]
    assert int(example["image_id"]) == index + 1
    visible = joints[:, 2, index] == 1
    np.testing.assert_array_equal(example["visible"], visible)
    np.testing.assert_array_equal(example["labeled"], visible)
    np.testing.assert_allclose(
      example["keypoints"][visible], joints[visible, :2, index] - 1, atol=1e-4
    )
  first = train[0]
  np.testing.assert_array_equal(first["image"], _real_image(zip_path, "images/im00001.jpg"))
  np.testing.assert_allclose(first["keypoints"][1], [25.030943, 85.410225], atol=1e-4)
  assert not first["labeled"][0]  # im00001's right ankle is unannotated (flag 0)
