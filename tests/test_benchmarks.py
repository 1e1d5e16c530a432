"""Every benchmark under benchmarks/ runs in its tiny mode (``--tiny``) and prints the JSON
lines its docstring promises: the names, the baseline ratio of the same run, the device.
The numbers of a tiny run measure nothing; only their presence and sanity are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def bench(name: str, *args: str) -> list[dict]:
  """The JSON lines of ``benchmarks/<name>.py --tiny *args`` (2 fake CPU devices)."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  r = subprocess.run(
    [sys.executable, str(REPO_ROOT / "benchmarks" / f"{name}.py"), "--tiny", *args],
    cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=480,
  )  # fmt: skip
  assert r.returncode == 0, r.stdout + r.stderr
  lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
  assert lines, r.stdout + r.stderr
  for line in lines:
    assert line.get("device", "").startswith(("cpu: ", "gpu: ", "tpu: ")) or "skipped" in line
  return lines


def by_name(lines: list[dict]) -> dict[str, list[dict]]:
  out: dict[str, list[dict]] = {}
  for line in lines:
    out.setdefault(line["name"], []).append(line)
  return out


def test_codec_bench():
  names = by_name(bench("codec_bench"))
  for decoding in ("argmax", "shift", "upsample", "dark"):
    rows = names[f"decode_{decoding}"]
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:  # the JAX codec against the NumPy reference, in the same run
      assert r["speedup"] == pytest.approx(r["reference_s"] / r["jax_s"], rel=0.05, abs=0.1)
      assert r["max_abs_diff_px"] < 1e-3
  for encoding in ("unbiased", "quantized"):
    assert all(r["max_abs_diff"] < 1e-5 for r in names[f"encode_{encoding}"])
  (step,) = names["eval_step_decode_dark"]
  assert "skipped" in step  # GPU only


def test_model_bench():
  (line,) = bench("model_bench")
  assert line["backbone"] == "resnet-tiny" and line["params"] == 151_575
  assert line["output_shape"] == [2, 8, 8, 15]
  assert line["fwd_bwd_over_fwd"] == pytest.approx(line["fwd_bwd_s"] / line["fwd_s"], rel=0.05)
  assert 0 <= line["dark_share"] < 1 and line["mfu_fwd_bwd"] is None  # no peak for a CPU


def test_train_bench():
  (line,) = bench("train_bench")
  assert line["name"] == "train_step/smoke" and line["devices"] == 2 and line["batch"] == 8
  assert line["images_per_s"] == pytest.approx(8 / line["step_s"], rel=0.05)
  assert line["flops_per_step"] > 0 and line["mfu"] is None


def test_predict_bench():
  names = by_name(bench("predict_bench"))
  one, both = names["predict_image"]
  assert (one["passes"], both["passes"]) == ("1", "1+2")
  assert both["two_pass_over_one_pass"] == pytest.approx(
    both["median_s"] / one["median_s"], rel=0.05
  )
  (video,) = names["predict_video"]
  assert video["frames"] == 2 and video["frames_per_s"] > 0


def test_input_bench(small_data_dir):
  names = by_name(bench("input_bench", f"--data_dir={small_data_dir}"))
  (read,) = names["read_only"]
  assert read["sources"] == ["synthetic/small"] and read["records"] == [128]
  (pipe,) = names["pipeline"]
  assert pipe["workers"] == 0 and pipe["image_dtype"] == "uint8"
  assert pipe["ratio_vs_read_only"] == pytest.approx(
    pipe["images_per_s"] / read["images_per_s"], rel=0.05
  )
  assert pipe["ratio_vs_step"] == pytest.approx(pipe["images_per_s"] / 1000.0, rel=0.05)
  (summary,) = names["summary"]
  assert summary["best_workers"] == 0 and summary["keeps_up"] == (pipe["ratio_vs_step"] >= 1.2)


def test_infer_bench():
  pytest.importorskip("torch")
  pytest.importorskip("onnxruntime")
  lines = bench("infer_bench")
  paths = {r["path"]: r for r in lines if "path" in r}
  assert set(paths) == {"jax", "onnxruntime", "torch"}
  for r in paths.values():  # the same random weights in all three
    assert r["max_rel_diff_vs_torch"] < 1e-3, r
  assert paths["torch"]["speedup_vs_torch"] == pytest.approx(1.0)


def test_torch_train_bench():
  pytest.importorskip("torch")
  (line,) = bench("torch_train_bench")
  assert line["batch"] == 2 and line["images_per_s"] == pytest.approx(2 / line["step_s"], rel=0.05)
  assert line["device"].startswith("cpu: ")


def test_video_bench():
  names = by_name(bench("video_bench"))
  (single,) = names["video_bench/tiny"][:1]
  video = names["video_bench/tiny"][1]
  assert (single["path"], video["path"]) == ("single_frame", "video")
  for r in (single, video):
    assert r["videos"] == 2 and r["input_size"] == 64 and r["frames"] == 3
    assert r["frames_per_s"] == pytest.approx(2 / r["median_s"], rel=1e-6)
  assert video["ratio_vs_single_frame"] == pytest.approx(
    single["frames_per_s"] / video["frames_per_s"], rel=1e-6
  )
  (summary,) = names["video_bench/tiny/summary"]
  assert summary["temporal_stage_cost"] == pytest.approx(video["ratio_vs_single_frame"] - 1)
