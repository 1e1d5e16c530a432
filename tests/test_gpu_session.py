"""The DARK ablation phase of benchmarks/gpu_session.sh, dry-run on the CPU.

The phase a lent GPU runs (results/gpu_plan.md) with the smoke network, the small synthetic
set and a 4-step schedule instead of configs/lsp_fast_gpu.py: both trainings, their
evaluations, the packing under $OUT and the release folder, exactly as on the device.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest
from conftest import REPO_ROOT, SMALL

from unipose_jax import release

pytestmark = pytest.mark.slow

PACKED = {
  "command.txt", "config.json", "eval_metrics.json", "metrics.jsonl", "predictions.csv",
  "train.log", "validation_curve.csv", "validation_curve.png",
}  # fmt: skip
DECODERS = {"argmax", "shift", "upsample", "dark"}


def _members(path):
  with tarfile.open(path) as tar:
    return {os.path.basename(m.name): tar.extractfile(m).read() for m in tar if m.isfile()}


def test_the_ablation_phase_dry_run(small_data_dir, tmp_path):
  state, out = tmp_path / "state", tmp_path / "out"
  overrides = [
    f"--config.data.data_dir={small_data_dir}",  # after the phase's own data_dir: wins
    f"--config.data.train_sources=('{SMALL}',)", f"--config.data.eval_source={SMALL}",
    "--config.data.input_size=32", "--config.batch_size=4", "--config.eval_batch_size=8",
    "--config.num_train_steps=4", "--config.log_every=1", "--config.checkpoint_every=2",
    "--config.eval_every=2", "--config.predict.presence_negatives=8",
  ]  # fmt: skip
  env = dict(os.environ, GPU_STATE=str(state), OUT=str(out), PY=sys.executable,
             PYTHONPATH=str(REPO_ROOT),
             XLA_FLAGS="--xla_force_host_platform_device_count=2")  # as conftest.launch  # fmt: skip
  r = subprocess.run(
    ["bash", "benchmarks/gpu_session.sh", "ablation", "-", "500", "configs/smoke.py", *overrides],
    cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=560,
  )  # fmt: skip
  log = (out / "session.log").read_text() if (out / "session.log").exists() else ""
  assert r.returncode == 0, r.stdout + r.stderr
  train_logs = "".join(p.read_text()[-3000:] for p in sorted(state.glob("train_*.log")))
  assert "train unbiased rc=0" in log and "train quantized rc=0" in log, log + train_logs
  assert "release rc=0" in log, log

  # What comes back from the device: at most 8 files, none deeper than 2 folders, <= 16 MiB.
  returned = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
  assert sorted(os.path.relpath(p, out).split(os.sep)[0] for p in returned if "release" not in p) \
    == ["quantized.tgz", "session.log", "unbiased.tgz"]  # fmt: skip
  assert len(returned) <= 8 and all(os.path.getsize(p) <= 16 * 2**20 for p in returned)

  packs = {enc: _members(out / f"{enc}.tgz") for enc in ("unbiased", "quantized")}
  configs = {}
  for enc, files in packs.items():
    assert set(files) == PACKED, enc
    metrics = json.loads(files["eval_metrics.json"])
    assert set(metrics) == DECODERS  # every decoder evaluated
    configs[enc] = json.loads(files["config.json"])
    assert configs[enc]["flip_test"] is True and configs[enc]["codec"]["encoding"] == enc
    rows = list(csv.DictReader(io.StringIO(files["validation_curve.csv"].decode())))
    assert [(int(r["step"]), r["decoder"]) for r in rows] == [
      (s, d) for s in (2, 4) for d in sorted(DECODERS, key=list(metrics).index)
    ]
    last = {r["decoder"]: float(r["pck@0.2"]) for r in rows if r["step"] == "4"}
    assert last == {d: metrics[d]["pck@0.2"] for d in DECODERS}  # the final evaluation
    predictions = list(csv.DictReader(io.StringIO(files["predictions.csv"].decode())))
    assert len(predictions) > 0
    assert files["validation_curve.png"][:4] == b"\x89PNG"
  # Same seed, data, schedule: the configs differ in the encoding and the calibration alone.
  a, b = configs["unbiased"], configs["quantized"]
  diff = sorted(
    k for k in set(a) | set(b)
    if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True)
  )  # fmt: skip
  assert diff == ["calibrate_presence", "codec", "predict"], diff
  assert {k: v for k, v in a["codec"].items() if k != "encoding"} == {
    k: v for k, v in b["codec"].items() if k != "encoding"
  }
  assert a["seed"] == b["seed"] and a["num_train_steps"] == b["num_train_steps"] == 4

  manifest = release.read_manifest(str(out / "release"))
  assert manifest["params_dtype"] == "bfloat16" and manifest["checkpoint_step"] in (2, 4)
  assert json.loads((out / "release" / "config.json").read_text())["predict"]["presence_score"]
  variables, step = release.load_release(str(out / "release"))
  assert step == manifest["checkpoint_step"] and set(variables) == {"params", "batch_stats"}
