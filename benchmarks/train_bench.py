"""Training-step throughput of a configuration, against the input pipeline feeding it.

Prints one JSON line per case: name, config, batch, dtype, input_size, step_s (median
of timed steps after compilation), images_per_s, device, flops_per_step (XLA cost
analysis), mfu (on accelerators with a known peak), pipeline_images_per_s (the
training input pipeline on LSP-sized random images, same machine) and
pipeline_ratio = pipeline_images_per_s / images_per_s (>= 1: the pipeline keeps up).

  python benchmarks/train_bench.py                       # CPU: lsp_cpu and ResNet-101 at batch 8
  python benchmarks/train_bench.py --cases=unipose_lsp --batch=32,64 --dtype=bfloat16
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
from hardware import describe_device, peak_flops  # noqa: E402

from unipose_jax import distributed, input_pipeline, train  # noqa: E402


def random_batch(n: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {
    "image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
    "keypoints": rng.uniform(4, size - 5, size=(n, 14, 2)).astype(np.float32),
    "weights": np.ones((n, 14), np.float32),
  }


def pipeline_rate(batch: int, size: int, n_batches: int, workers: int) -> float:
  """Images/s of the training pipeline on LSP-like records (random 160x100 images)."""
  rng = np.random.default_rng(0)
  records = [
    {
      "image": rng.integers(0, 255, (160, 100, 3), dtype=np.uint8),
      "keypoints": rng.uniform(10, 90, (14, 2)).astype(np.float32),
      "labeled": np.ones(14, bool),
      "visible": np.ones(14, bool),
      "image_id": i,
    }
    for i in range(256)
  ]
  it = input_pipeline.make_train_iterator(
    [records], [1.0], batch_size=batch, input_size=size, seed=0, worker_count=workers
  )
  next(it)
  t0 = time.perf_counter()
  for _ in range(n_batches):
    next(it)
  return n_batches * batch / (time.perf_counter() - t0)


def bench_case(config_name: str, batch: int, dtype: str, steps: int, workers: int) -> dict:
  config = importlib.import_module(f"configs.{config_name}").get_config()
  config.batch_size = batch
  config.model.dtype = dtype
  mesh = distributed.data_mesh()
  model, _, tx, _, trainer = train.build_trainer(config, mesh)
  size = config.data.input_size
  state = trainer.place(
    distributed.replicate(train.create_train_state(model, tx, config.seed, size), mesh)
  )
  local = random_batch(batch, size)
  lowered = trainer._step.lower(state, distributed.global_batch(local, mesh))  # pylint: disable=protected-access
  cost = lowered.compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  state, m = trainer.step(state, local)  # compile + first step
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = trainer.step(state, local)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  ips = batch / step_s
  pipe = pipeline_rate(batch, size, max(4, min(40, int(400 // batch))), workers)
  out = {
    "name": f"train_step/{config_name}",
    "config": f"configs/{config_name}.py",
    "batch": batch,
    "dtype": dtype,
    "input_size": size,
    "backbone": f"resnet{config.model.backbone_depth}",
    "step_s": round(step_s, 5),
    "images_per_s": round(ips, 2),
    "flops_per_step": flops,
    "device": describe_device(),
    "pipeline_images_per_s": round(pipe, 1),
    "pipeline_ratio": round(pipe / ips, 3),
  }
  peaks = peak_flops(dtype)  # float32: rated against the TF32 peak, XLA:GPU's default
  if peaks and flops == flops:
    out["mfu"] = round(flops / step_s / (next(iter(peaks.values())) * jax.device_count()), 4)
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--cases", default="lsp_cpu,unipose_lsp", help="config names, comma separated")
  p.add_argument("--batch", default="8", help="global batch sizes, comma separated")
  p.add_argument("--dtype", default="float32", help="float32 and/or bfloat16, comma separated")
  p.add_argument("--steps", type=int, default=3, help="timed steps per case (median)")
  p.add_argument("--workers", type=int, default=0, help="input pipeline worker processes")
  a = p.parse_args()
  for name in a.cases.split(","):
    for batch in (int(b) for b in a.batch.split(",")):
      for dtype in a.dtype.split(","):
        print(json.dumps(bench_case(name, batch, dtype, a.steps, a.workers)), flush=True)


if __name__ == "__main__":
  main()
