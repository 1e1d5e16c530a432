"""The one table of datasets: names, keypoint sets, unknown names, the derived LSP box,
and ``launch.py --mode=prepare`` with an unknown or missing dataset."""

from __future__ import annotations

import dataclasses

import fake_lsp
import numpy as np
import pytest
from conftest import launch
from pose_samples import silent

from unipose_jax import datasets, keypoint_sets
from unipose_jax.datasets import archives, features
from unipose_jax.datasets.lsp import Lsp


def test_table_rows():
  assert datasets.DEFAULT_PREPARE == ("lsp", "lsp_extended", "synthetic")
  sets = {n: datasets.keypoint_set(n, "/nonexistent") for n in datasets.DATASETS}
  assert sets == {
    "lsp": keypoint_sets.LSP,
    "lsp_extended": keypoint_sets.LSP,
    "synthetic": keypoint_sets.LSP,
    "synthetic/small": keypoint_sets.LSP,
    "mpii": keypoint_sets.MPII,
    "coco": keypoint_sets.COCO,
    "penn_action": keypoint_sets.PENN_ACTION,
  }
  evals = {n: e.eval_split for n, e in datasets.DATASETS.items()}
  assert evals == {
    "lsp": "test", "lsp_extended": None, "synthetic": "test", "synthetic/small": "test",
    "mpii": "validation", "coco": "validation", "penn_action": "test",
  }  # fmt: skip
  assert datasets.DATASETS["lsp"].split_sizes == {"train": 1000, "test": 1000}
  assert datasets.DATASETS["synthetic/small"].split_sizes == {"train": 128, "test": 32}
  assert datasets.DATASETS["mpii"].split_sizes == {"train": 22246, "validation": 2958}
  row = datasets.entry("coco_format/ap10k")
  assert (row.name, row.config, row.eval_split, row.keypoint_set) == (
    "coco_format/ap10k",
    "ap10k",
    "validation",
    None,
  )
  for name, row in datasets.DATASETS.items():
    assert row.name == name
    assert bool(row.download) == (not name.startswith("synthetic"))


@pytest.mark.parametrize("name", ["mpi", "coco_format", "coco_format/", "lsp/small", "penn"])
def test_unknown_name_is_one_line_listing_the_known_ones(name):
  with pytest.raises(datasets.DatasetError) as info:
    datasets.check_names(["lsp", name])
  msg = str(info.value)
  assert msg.startswith(f"unknown dataset {name!r}") and "\n" not in msg
  assert msg.endswith(
    "known: lsp, lsp_extended, synthetic, synthetic/small, mpii, coco, penn_action, coco_format/NAME"
  )
  with pytest.raises(datasets.DatasetError, match="unknown dataset"):
    datasets.keypoint_set(name, "/nonexistent")


def test_features_for_any_k():
  spec = features.pose_features(5, extras=("head_box", "annotation_id"))
  assert spec["keypoints"].shape == (5, 2) and spec["visible"].shape == (5,)
  assert spec["box"].shape == (4,) and spec["head_box"].shape == (4,)
  assert spec["annotation_id"].np_dtype == np.int64
  assert "box" not in features.pose_features(14, box=False)
  kp = np.array([[3, 4], [9, -2], [100, 100]], np.float32)
  np.testing.assert_array_equal(features.labeled_extent(kp, [True, True, False]), [3, -2, 9, 4])
  assert np.isnan(features.labeled_extent(kp, [False] * 3)).all()


def test_lsp_box_is_the_extent_of_its_labeled_joints(tmp_path, monkeypatch):
  """LSP's stored examples are unchanged (version 1.0.0, no box stored); the box is
  derived on reading, so datasets prepared before boxes existed read as they are."""
  monkeypatch.setattr(
    Lsp, "SPEC", dataclasses.replace(archives.LSP, splits=(("train", (1, 2)), ("test", (3, 4))))
  )
  fake = fake_lsp.make_fake_archive(tmp_path, "lsp", 4)
  datasets.prepare("lsp", manual_dir=tmp_path, data_dir=tmp_path / "tfds", log=silent)
  assert (tmp_path / "tfds" / "lsp" / "1.0.0").is_dir()
  assert "box" not in datasets.builder("lsp", tmp_path / "tfds").info.features
  example = datasets.data_source("lsp", "test", tmp_path / "tfds")[1]
  xy = fake.xy[3] - 1
  np.testing.assert_allclose(example["box"], [*xy.min(0), *xy.max(0)], atol=1e-4)
  assert example["box"].dtype == np.float32


@pytest.mark.slow
def test_launch_prepare_unknown_and_missing(tmp_path):
  r = launch("--mode=prepare", "--datasets=lsp,mpi", f"--data_dir={tmp_path / 'tfds'}")
  assert r.returncode == 2, r.stderr
  assert r.stderr.strip().splitlines() == [
    "error: unknown dataset 'mpi'; known: lsp, lsp_extended, synthetic, synthetic/small, mpii, coco, "
    "penn_action, coco_format/NAME"
  ]
  manual = tmp_path / "manual"
  manual.mkdir()
  r = launch(
    "--mode=prepare", "--datasets=mpii", f"--manual_dir={manual}", f"--data_dir={tmp_path / 'tfds'}"
  )
  assert r.returncode == 1, r.stderr
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in r.stderr
  assert lines[0].startswith(
    f"error: not prepared: mpii (archives not found in {manual}): mpii: {manual / 'mpii' / 'images'} "
    "not found; get the MPII"
  )
  assert str(manual / "mpii" / "annotations") in lines[0] and "mpii_annotations.tar" in lines[0]
  assert f"--manual_dir={manual} --data_dir={tmp_path / 'tfds'} --datasets=mpii" in lines[0]
