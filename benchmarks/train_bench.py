"""Training-step throughput of a configuration, per compute dtype and global batch size.

The step is train's own (``train.build_trainer``: uint8 images normalised on the device,
targets encoded on the device, loss, gradients, optimiser update; the state donated),
jitted over every device of a 1-D mesh as a training run does. Batch sizes are swept in
the order given; a batch that does not fit (XLA ``RESOURCE_EXHAUSTED`` / out of memory)
prints an ``oom`` line and ends the sweep of that dtype.

One JSON line per (dtype, batch): name, config, backbone, input_size, dtype, batch,
devices, step_s (median of --steps timed steps after compilation), images_per_s,
compile_s, flops_per_step (XLA cost analysis of the compiled program: the work of one
device under SPMD partitioning, i.e. the whole step on one device), mfu (flops_per_step /
step_s / peak FLOP/s of one device; null on the CPU, or for a device without a known peak
unless --peak_tflops is given), peak_tflops and its source, and baseline ratios of the same
run: speedup_vs_float32 (float32 step time at this batch over this dtype's) and
per_image_speedup_vs_batch<B0> (per-image time at the first batch size over this one's).

Peaks (dense, per device; hardware.PEAK_FLOPS, from NVIDIA's H100 SXM / A100 and Google's TPU
data sheets): H100/H200 989 TFLOP/s bfloat16, 494 TF32, 67 FP32. float32 steps are rated
against TF32 (XLA:GPU's default for float32 convolutions and matmuls on Ampere and newer)
in ``mfu`` and against plain FP32 in ``mfu_vs_fp32``.

The input pipeline's rate against the step is measured by benchmarks/input_bench.py.

  python benchmarks/train_bench.py --config=smoke --input_size=64 --batch_sizes=8,16 \\
      --dtype=float32,bfloat16 --steps=2                       # a quick CPU check
  python benchmarks/train_bench.py --config=dark_lsp_gpu --dtype=bfloat16,float32 \\
      --batch_sizes=16,32,64,128                               # on the GPU
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from hardware import describe_device, flops_of, is_oom, parse_args, peak_flops  # noqa: E402

from unipose_jax import (  # noqa: E402
  distributed,
  geometry,
  keypoint_sets,  # noqa: E402
  train,
)

#: K of the LSP configs these benchmarks time.
LSP_K = keypoint_sets.LSP.num_joints


def peaks_for(dtype: str, peak_tflops: float | None) -> tuple[dict[str, float] | None, str]:
  """``({kind: FLOP/s of one device}, source)``; the first kind is the one ``mfu`` uses."""
  if peak_tflops:
    return {dtype: peak_tflops * 1e12}, "--peak_tflops"
  if jax.devices()[0].platform == "cpu":
    return None, "none (CPU)"
  peaks = peak_flops(dtype)
  return peaks, "benchmarks/hardware.py PEAK_FLOPS (vendor data sheets, dense)" if peaks else (
    "unknown device kind"
  )


def uint8_batch(n: int, size, seed: int = 0) -> dict[str, np.ndarray]:
  """A random training batch of ``n`` images at ``size`` (``S`` or ``(H, W)``)."""
  rng = np.random.default_rng(seed)
  return {
    "image": rng.integers(0, 256, (n, *geometry.input_hw(size), 3), dtype=np.uint8),
    "keypoints": rng.uniform(4, min(geometry.input_hw(size)) - 5, (n, LSP_K, 2)).astype(np.float32),
    "weights": (rng.uniform(size=(n, LSP_K)) > 0.1).astype(np.float32),
  }


def make_config(a, batch: int, dtype: str):
  config = importlib.import_module(f"configs.{a.config}").get_config()
  config.batch_size, config.model.dtype = batch, dtype
  if a.backbone_depth:
    config.model.backbone_depth = a.backbone_depth
  if a.input_size:
    config.data.input_size = a.input_size
  return config


def bench_case(a, batch: int, dtype: str) -> dict:
  config = make_config(a, batch, dtype)
  mesh = distributed.data_mesh()
  model, _, tx, _, trainer = train.build_trainer(config, mesh)
  size = config.data.input_size
  state = trainer.place(
    distributed.replicate(train.create_train_state(model, tx, config.seed, size), mesh)
  )
  gbatch = distributed.global_batch(uint8_batch(batch, size), mesh)
  t0 = time.perf_counter()
  lowered = trainer._step.lower(state, gbatch)  # pylint: disable=protected-access
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  flops = flops_of(lowered)
  state, m = compiled(state, gbatch)  # first run (allocation)
  jax.block_until_ready(m)
  times = []
  for _ in range(a.steps):
    t0 = time.perf_counter()
    state, m = compiled(state, gbatch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  row = {
    "name": f"train_step/{a.config}",
    "config": f"configs/{a.config}.py",
    "backbone": f"resnet{config.model.backbone_depth}",
    "input_size": size,
    "dtype": dtype,
    "batch": batch,
    "devices": jax.device_count(),
    "step_s": round(step_s, 5),
    "images_per_s": round(batch / step_s, 2),
    "compile_s": round(compile_s, 2),
    "flops_per_step": flops,
    "mfu": None,
    "device": describe_device(),
  }
  peaks, source = peaks_for(dtype, a.peak_tflops)
  row["peak_source"] = source
  if peaks and flops:
    row["peak_tflops"] = {k: v / 1e12 for k, v in peaks.items()}
    row["mfu"] = round(flops / step_s / next(iter(peaks.values())), 4)
    if "float32" in peaks and len(peaks) > 1:
      row["mfu_vs_fp32"] = round(flops / step_s / peaks["float32"], 4)
  return row


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="lsp_cpu", help="configs/<name>.py")
  p.add_argument("--dtype", default="float32", help="float32 and/or bfloat16, comma separated")
  p.add_argument("--batch_sizes", default="16,32,64,128", help="global batches, swept in order")
  p.add_argument("--steps", type=int, default=5, help="timed steps per case (median)")
  p.add_argument("--backbone_depth", type=int, default=0, help="override model.backbone_depth")
  p.add_argument("--input_size", type=int, default=0, help="override data.input_size")
  p.add_argument("--peak_tflops", type=float, default=0.0, help="peak of one device (TFLOP/s)")
  a = parse_args(p, argv, {
    "config": "smoke", "input_size": 32, "batch_sizes": "8", "steps": 1,
  })  # fmt: skip
  batches = [int(b) for b in a.batch_sizes.split(",")]
  rows = []
  for dtype in a.dtype.split(","):
    for batch in batches:
      try:
        row = bench_case(a, batch, dtype)
      except Exception as e:  # noqa: BLE001 - only out-of-memory ends a sweep quietly
        if not is_oom(e):
          raise
        print(json.dumps({"name": f"train_step/{a.config}", "dtype": dtype, "batch": batch,
                          "oom": True, "error": str(e).splitlines()[0][:300],
                          "device": describe_device()}), flush=True)  # fmt: skip
        break
      f32 = next((r for r in rows if r["dtype"] == "float32" and r["batch"] == batch), None)
      if f32 and dtype != "float32":
        row["speedup_vs_float32"] = round(f32["step_s"] / row["step_s"], 3)
      first = next((r for r in rows if r["dtype"] == dtype), None)
      if first:
        row[f"per_image_speedup_vs_batch{first['batch']}"] = round(
          (first["step_s"] / first["batch"]) / (row["step_s"] / batch), 3
        )
      rows.append(row)
      print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
