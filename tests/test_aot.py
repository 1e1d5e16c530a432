"""Ahead-of-time compilation (launch.py --mode=compile, unipose_jax.aot).

The fast tests need nothing beyond the base install: target names, the step-time model by
hand, HLO facts on a hand-written program, and the command line's one-line errors. Tests
marked ``aot`` compile a small UniPose for a TPU v5e:2x2 and a 2-GPU H100 node without
either (they need the ``[aot]`` extra, which README's test command installs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, tiny_network

from configs import smoke
from unipose_jax.aot import estimate, hlo, targets, topology

# ----------------------------------------------------------------------------- targets


def test_every_listed_target_parses_to_its_chip_count():
  listed = targets.listed()
  names = [t.name for t in listed]
  assert names[:3] == ["h100x8", "a100x8", "h200x8"]
  assert len(names) == 3 + 4 * 7 and len(set(names)) == len(names)
  for t in listed:
    assert targets.parse(t.name) == t
    if t.platform == "tpu":
      assert 4 <= t.num_chips <= 256
  assert targets.parse("v5e:16x16").num_chips == 256
  assert targets.parse("v4:4x8x8").num_chips == 256
  assert targets.parse("H100x2").topology == "1x1x2"
  for bad in ("h100x3", "v5e:3x3", "v7:2x2", "tpu", "h100"):
    with pytest.raises(targets.UnknownTargetError, match="--target=list prints them all"):
      targets.parse(bad)


def test_step_time_estimate_by_hand():
  chip = targets.CHIPS["h100"]
  colls = {"all-reduce": {"count": 10, "bytes": 1e8, "wire_bytes": 1.75e8}}
  est = estimate.step_time(
    chip, dtype="bfloat16", flops=989e9, hbm_bytes=3.35e9, collectives=colls,
    per_device_batch=8, num_chips=8,
  )  # fmt: skip
  assert est["flops_s"] == pytest.approx(1e-3)
  assert est["hbm_s"] == pytest.approx(1e-3)
  assert est["collective_bandwidth_s"] == pytest.approx(1.75e8 / 450e9)
  assert est["collective_latency_s"] == pytest.approx(10 * 10e-6)
  step = 1e-3 + 1.75e8 / 450e9 + 1e-4
  assert est["step_s"] == pytest.approx(step)
  assert est["images_per_s_per_chip"] == pytest.approx(8 / step)
  assert est["images_per_s_per_slice"] == pytest.approx(64 / step)
  # float32 runs at the TF32 rate on an H100, at a quarter of bf16 (assumed) on a TPU
  assert estimate.peak_flops(chip, "float32") == 494e12
  assert estimate.peak_flops(targets.CHIPS["v5e"], "float32") == pytest.approx(197e12 / 4)


# ----------------------------------------------------------------------------- HLO facts

HLO = """HloModule jit_step, entry_computation_layout={...}

%region_0 (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add = f32[] add(%a, %b)
}

ENTRY %main (p0: bf16[8,16,16,4], p1: bf16[3,3,4,8], p2: f32[3,3,4,8]) -> f32[8] {
  %p0 = bf16[8,16,16,4]{3,2,1,0} parameter(0)
  %p1 = bf16[3,3,4,8]{3,2,1,0} parameter(1)
  %p2 = f32[3,3,4,8]{3,2,1,0} parameter(2)
  %conv.1 = (bf16[8,16,16,8]{3,2,1,0}, u8[0]{0}) custom-call(%p0, %p1), window={size=3x3 pad=1_1x1_1}, custom_call_target="__cudnn$convForward", metadata={op_name="jit(step)/conv_a"}
  %cvt = f32[8,16,16,4]{3,2,1,0} fusion(%p0), kind=kLoop, calls=%region_0
  %conv.2 = f32[8,16,16,8]{3,2,1,0} convolution(%cvt, %p2), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(step)/conv_b"}
  %dotc = f32[8,2]{1,0} convolution(%p2, %p2), window={size=1}, metadata={op_name="jit(step)/bij,bkj->bki/dot_general"}
  %all-reduce-start = (f32[8]{0}, f32[8]{0}) all-reduce-start(%x, %y), channel_id=1, replica_groups={{0,1},{2,3}}, to_apply=%region_0
  %all-reduce-done = (f32[8]{0}, f32[8]{0}) all-reduce-done(%all-reduce-start)
  %ag = f32[64]{0} all-gather(%z), channel_id=2, replica_groups=[1,4]<=[4], dimensions={0}
  ROOT %ar2 = f32[8]{0} all-reduce(%w), channel_id=3, replica_groups=mesh['axis_0'=4,'axis_1'=1] {'axis_0'}, to_apply=%region_0
}
"""


def test_collectives_by_kind_with_bytes_and_groups():
  got = hlo.collectives(HLO, num_devices=4)
  assert set(got) == {"all-reduce", "all-gather"}
  ar = got["all-reduce"]
  assert ar["count"] == 2  # the -start counts, its -done does not
  assert ar["bytes"] == 2 * 8 * 4 + 8 * 4
  # ring all-reduce: 2 (n - 1) / n of the buffer, groups of 2 and of 4 devices
  assert ar["wire_bytes"] == pytest.approx(1.0 * 64 + 1.5 * 32)
  assert ar["by_dtype"] == {"f32": 96}
  ag = got["all-gather"]
  assert (ag["count"], ag["bytes"], ag["wire_bytes"]) == (1, 256, pytest.approx(0.75 * 256))


def test_convolutions_by_lowering_and_float32_ones():
  got = hlo.convolutions(HLO)
  assert got["by_lowering"] == {
    "__cudnn$convForward": 1,
    "convolution (XLA op)": 1,
    "convolution (XLA op) from dot_general": 1,
  }
  assert got["by_dtype"] == {"bf16": 1, "f32": 1}
  assert got["float32"] == ["jit(step)/conv_b"]


def test_kernel_io_bytes_count_each_top_level_op_once():
  conv1 = 8 * 16 * 16 * 8 * 2 + 8 * 16 * 16 * 4 * 2 + 3 * 3 * 4 * 8 * 2
  cvt = 8 * 16 * 16 * 4 * 4 + 8 * 16 * 16 * 4 * 2
  conv2 = 8 * 16 * 16 * 8 * 4 + 8 * 16 * 16 * 4 * 4 + 3 * 3 * 4 * 8 * 4
  ar = 2 * 8 * 4  # its operands %x, %y are not defined here: only the result counts
  dotc = 8 * 2 * 4 + 2 * 3 * 3 * 4 * 8 * 4
  ag, ar2 = 64 * 4, 8 * 4
  assert hlo.kernel_io_bytes(HLO) == conv1 + cvt + conv2 + dotc + ar + ag + ar2


# ----------------------------------------------------------------------------- the command line


def _launch(*args, timeout=600):
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  return subprocess.run(
    [sys.executable, str(REPO_ROOT / "launch.py"), "--mode=compile", *args],
    capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT,
  )  # fmt: skip


@pytest.mark.slow
def test_bad_targets_and_batches_are_one_line_and_exit_2():
  r = _launch("--config=configs/smoke.py", "--target=h100x3")
  assert r.returncode == 2, r.stderr
  assert r.stderr.strip().count("\n") == 0 and "unknown --target 'h100x3'" in r.stderr
  r = _launch("--config=configs/smoke.py", "--target=v5e:4x4", "--config.batch_size=24")
  assert r.returncode == 2, r.stderr
  assert r.stderr.strip() == (
    "error: batch_size=24 does not divide over the 16 devices of v5e:4x4: use a multiple of "
    "16 (e.g. --config.batch_size=16) or --per_device_batch"
  )
  r = _launch("--target=list")
  assert r.returncode == 0 and "v5e:16x16" in r.stdout and "h200x8" in r.stdout


def test_missing_extra_names_the_install_command(monkeypatch):
  monkeypatch.setattr(topology, "_plugin_present", lambda platform: False)
  with pytest.raises(topology.MissingExtraError, match=r"libtpu.*pip install -e '\.\[aot\]'"):
    topology.devices(targets.parse("v5e:2x2"))
  with pytest.raises(topology.MissingExtraError, match="jax-cuda13-plugin"):
    topology.devices(targets.parse("h100x2"))


# ----------------------------------------------------------------------------- real compiles


def _needs(platform):
  if not topology._plugin_present(platform):
    if os.environ.get("CI"):
      pytest.fail("CI must install the [aot] extra (README's test command does)")
    pytest.skip("the [aot] extra is not installed")
  topology.prepare_environment()


def _small_config(per_device: int, devices: int):
  c = tiny_network(smoke.get_config(), input_size=32)
  c.batch_size = c.eval_batch_size = per_device * devices
  return c


@pytest.mark.slow
@pytest.mark.aot
def test_tpu_v5e_report_fields_match_the_compiled_program():
  _needs("tpu")
  import numpy as np  # noqa: PLC0415
  from jax.sharding import Mesh  # noqa: PLC0415

  from unipose_jax.aot import programs  # noqa: PLC0415

  target = targets.parse("v5e:2x2")
  config = _small_config(2, 4)
  devices = topology.devices(target)
  assert [d.platform for d in devices] == ["tpu"] * 4
  mesh = Mesh(np.asarray(devices), ("data",))
  compiled, secs = programs.compile_timed(programs.lower_train(config, mesh))
  flops = programs.reference_flops(config, "train", 2)
  entry = programs.analyse(
    compiled, secs, target=target, step="train", parallelism="jit", config=config,
    per_device_batch=2, flops=flops,
  )  # fmt: skip
  mem = compiled.memory_analysis()
  assert entry["memory"]["argument"] == mem.argument_size_in_bytes
  assert entry["memory"]["temp"] == mem.temp_size_in_bytes
  assert entry["memory"]["device"] == 16 * 2**30 and entry["memory"]["fits"]
  # the replicated state (parameters, Adam's two moments, batch statistics) is an argument
  assert mem.argument_size_in_bytes > 3 * 4 * 150_000
  text = compiled.as_text()
  ops = re.findall(r"= \S+(?: \S+)* (all-reduce(?:-start)?)\(", text)
  assert entry["collectives"]["all-reduce"]["count"] == len(ops) > 0
  convs = len(re.findall(r" convolution\(", text))
  assert entry["convolutions"]["by_lowering"] == {"convolution (XLA op)": convs}
  # TPU's own cost analysis counts convolutions: it agrees with the lowered program's FLOPs
  tpu_flops = entry["compiled_cost_analysis"]["flops"]
  assert tpu_flops == pytest.approx(flops, rel=0.25)
  assert entry["estimate"]["step_s"] > 0 and entry["gflop_per_image"] == flops / 2 / 1e9


@pytest.mark.slow
@pytest.mark.aot
def test_gpu_h100_report_from_the_command_line(tmp_path):
  _needs("cuda")
  out = tmp_path / "report.json"
  r = _launch(
    "--config=configs/smoke.py", "--target=h100x2", "--config.data.input_size=32",
    "--config.model.backbone_width=8", "--per_device_batch=2", "--batch_search=false",
    f"--output={out}",
  )  # fmt: skip
  assert r.returncode == 0, r.stderr[-2000:]
  report = json.loads(out.read_text())
  assert report["target"] == "h100x2" and report["device"]["count"] == 2
  by = {(p["step"], p["parallelism"]): p for p in report["programs"]}
  assert set(by) == {("train", "jit"), ("train", "pmap"), ("eval", "jit")}
  train = by[("train", "jit")]
  assert train["global_batch"] == 4 and train["memory"]["fits"]
  assert train["memory"]["usable"] == int(81559 * 2**20 * 0.75)
  # the GPU lowers every convolution to cuDNN; the BatchNorm statistics and the gradients
  # are all-reduced over the two GPUs
  lowering = train["convolutions"]["by_lowering"]
  assert lowering and all(k.startswith("__cudnn$conv") for k in lowering)
  assert train["collectives"]["all-reduce"]["count"] > 0
  assert train["gflop_per_image"] > 0 and report["findings"] == []
  assert "train jit" in r.stdout and "ESTIMATE" in r.stdout


@pytest.mark.slow
def test_reference_flops_are_one_devices_share_in_every_bn_sync_mode():
  from unipose_jax.aot import programs  # noqa: PLC0415

  flops = {}
  for mode in ("global", "local", "group:4"):
    c = _small_config(2, 8)
    c.model.bn_sync = mode
    flops[mode] = programs.reference_flops(c, "train", 2)
  assert flops["group:4"] == flops["local"]
  # per-device statistics change the arithmetic of BatchNorm only, not the convolutions
  assert flops["local"] == pytest.approx(flops["global"], rel=0.01)
  double = programs.reference_flops(_small_config(4, 8), "train", 4)
  assert 1.8 < double / flops["global"] < 2.0  # the optimiser update is not per image


@pytest.mark.slow  # importing unipose_jax.aot.report takes ~3 s on a loaded 2-core machine
def test_an_evaluation_step_the_evaluator_refuses_is_skipped_and_said(monkeypatch):
  # An evaluation step the evaluator will not build for the run (a set whose protocol it
  # does not run) must not cost the report its training step: the entry says why.
  from unipose_jax import run_config  # noqa: PLC0415
  from unipose_jax.aot import programs, report  # noqa: PLC0415

  def refuse(config, mesh):
    raise run_config.ConfigError("keypoint set 'x' has no torso and head joints")

  monkeypatch.setattr(programs, "lower_eval", refuse)
  logged = []
  session = type("S", (), {})()
  session.config, session.n, session.log, session.mesh = _small_config(2, 4), 4, logged.append, None
  entry = report._Session.eval(session)
  assert entry == {
    "step": "eval", "parallelism": "jit", "per_device_batch": 2,
    "skipped": "the evaluation step does not build: keypoint set 'x' has no torso and head joints",
  }  # fmt: skip
  assert logged[-1] == "  evaluation step skipped: keypoint set 'x' has no torso and head joints"
  assert report.findings(session.config, [entry]) == []
