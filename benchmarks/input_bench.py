"""Can this machine's CPUs feed the training step? The real training input pipeline against it.

The pipeline is the one training runs (``input_pipeline.make_train_iterator`` with the
sources, mixture weights, input size and augmentation of ``--pipeline_config``, default
configs/dark_lsp_gpu.py: LSP train + LSP-extended train at 368 x 368) over the prepared
datasets in ``--data_dir``, for each grain worker count of ``--workers`` (capped at
``os.cpu_count()``). The step is the training step of ``--step_config`` (default
configs/lsp_cpu.py, the network a CPU trains; on an accelerator pass
``--step_config=dark_lsp_gpu``) at its own input size and ``--step_batch``.

One JSON object per line, every line with ``name`` and ``device`` (benchmarks/hardware.py):

* ``read_only`` -- the baseline: records read and JPEG-decoded, no augmentation, one thread;
* ``train_step`` -- images/s of the jitted step (median of timed steps after compilation),
  uint8 batches already on the device (as prefetch_to_mesh delivers them);
* ``pipeline`` -- per worker count: images_per_s (batches for ``--seconds`` after a warm-up),
  ``image_dtype`` (uint8: images are normalised on the device), ratio_vs_read_only,
  ratio_vs_workers0, and ``ratio_vs_step`` = pipeline images/s / step images/s with
  ``keeps_up`` = ratio_vs_step >= 1.2 (the margin for augmentation-heavy batches and jitter);
* ``summary`` -- the fastest worker count, its ratio and whether it keeps up.

The pipeline and the step are timed one after the other, not concurrently: on a CPU-only
machine a training run's step and workers share the cores, so the CPU ratio is an upper
bound there; on an accelerator host the step does not use the CPU cores.

  python benchmarks/input_bench.py --data_dir=/work/tfds --workers=0,1,2 --seconds=10
  python benchmarks/input_bench.py --train_sources=lsp --skip_step   # LSP alone prepared
  python benchmarks/input_bench.py --data_dir=data/tfds --step_config=dark_lsp_gpu \\
      --step_batch=64 --step_dtype=bfloat16            # on the GPU host
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from hardware import describe_device, parse_args  # noqa: E402

KEEPS_UP = 1.2


from unipose_jax import geometry, keypoint_sets  # noqa: E402

#: K of the LSP configs these benchmarks time.
LSP_K = keypoint_sets.LSP.num_joints


def load_config(name: str):
  return importlib.import_module(f"configs.{name}").get_config()


def sources_of(config, data_dir: str) -> list:
  """The config's training sources, prepared in ``data_dir``; exits with a message if not."""
  from unipose_jax import datasets  # noqa: PLC0415

  d = config.data
  missing = [n for n in d.train_sources if not datasets.is_prepared(n, data_dir)]
  if missing:
    print(
      json.dumps(
        {
          "name": "skipped",
          "reason": f"datasets {missing} are not prepared in {data_dir!r}; run "
          f"`python launch.py --mode=prepare --data_dir={data_dir}` (or pass --data_dir)",
        }
      ),
      flush=True,
    )
    sys.exit(0)
  return [datasets.data_source(n, s, data_dir) for n, s in zip(d.train_sources, d.train_splits)]


def read_only_rate(sources: list, n: int) -> float:
  t0 = time.perf_counter()
  for i in range(n):
    src = sources[i % len(sources)]
    src[(7919 * i) % len(src)]
  return n / (time.perf_counter() - t0)


def pipeline_rate(config, sources, workers: int, batch: int, seconds: float, warmup: int):
  """(images/s, image dtype) of the training iterator train.make_train_iterator builds."""
  from unipose_jax import input_pipeline  # noqa: PLC0415
  from unipose_jax.run import Run  # noqa: PLC0415

  d = config.data
  run = Run(config)  # the run's keypoint set: its flips, as training runs them
  it = input_pipeline.make_train_iterator(
    sources,
    mixture_weights=list(d.mixture_weights),
    batch_size=batch,
    input_size=d.input_size,
    seed=config.seed,
    worker_count=workers,
    augment=run.augment_config(),
    flip_permutation=run.flip_permutation,
  )
  try:
    for _ in range(warmup):  # worker start-up, first buffers
      b = next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
      b = next(it)
      n += 1
    return n * batch / (time.perf_counter() - t0), str(b["image"].dtype)
  finally:
    if hasattr(it, "close"):
      it.close()


def step_rate(config_name: str, batch: int, dtype: str, steps: int) -> dict:
  """Images/s of train's jitted step for a config, on every local device."""
  import jax  # noqa: PLC0415

  from unipose_jax import distributed, train  # noqa: PLC0415

  config = load_config(config_name)
  config.batch_size, config.model.dtype = batch, dtype
  mesh = distributed.data_mesh()
  model, _, tx, _, trainer = train.build_trainer(config, mesh)
  size = config.data.input_size
  state = trainer.place(
    distributed.replicate(train.create_train_state(model, tx, config.seed, size), mesh)
  )
  rng = np.random.default_rng(0)
  local = {
    "image": rng.integers(0, 256, (batch, *geometry.input_hw(size), 3), dtype=np.uint8),
    "keypoints": rng.uniform(4, min(geometry.input_hw(size)) - 5, (batch, LSP_K, 2)).astype(
      np.float32
    ),
    "weights": np.ones((batch, LSP_K), np.float32),
  }
  batches = trainer.batches(iter([local] * (steps + 2)), size=2)
  state, m = trainer.step(state, next(batches))  # compilation
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = trainer.step(state, next(batches))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  return {
    "config": f"configs/{config_name}.py",
    "batch": batch,
    "dtype": dtype,
    "input_size": size,
    "backbone": f"resnet{config.model.backbone_depth}",
    "step_s": round(step_s, 4),
    "images_per_s": round(batch / step_s, 1),
    "device": describe_device(),
  }


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data_dir", default="data/tfds", help="where --mode=prepare wrote the data")
  p.add_argument("--pipeline_config", default="dark_lsp_gpu", help="configs/<name>.py: data")
  p.add_argument(
    "--train_sources",
    default="",
    help="e.g. 'lsp': only these of the config's sources (train "
    "split, equal weights), when the others are not prepared",
  )
  p.add_argument("--batch", type=int, default=16, help="pipeline batch (per process)")
  p.add_argument("--workers", default="0,1,2,4,8,16", help="grain worker counts")
  p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per worker count")
  p.add_argument("--warmup", type=int, default=3, help="batches before timing")
  p.add_argument("--step_config", default="lsp_cpu", help="configs/<name>.py: the step")
  p.add_argument("--step_batch", type=int, default=0, help="0: the step config's batch_size")
  p.add_argument("--step_dtype", default="", help="'': the step config's model.dtype")
  p.add_argument("--step_steps", type=int, default=5, help="timed steps (median)")
  p.add_argument("--skip_step", action="store_true", help="pipeline only")
  p.add_argument(
    "--step_rate", type=float, default=0.0,
    help="images/s of the step measured elsewhere in the same run (train_bench): used for "
    "ratio_vs_step instead of compiling the step again",
  )  # fmt: skip
  a = parse_args(p, argv, {
    "pipeline_config": "smoke", "train_sources": "synthetic/small", "batch": 4, "workers": "0",
    "seconds": 0.2, "warmup": 1, "step_rate": 1000.0,  # train_bench's tiny mode compiles steps
  })  # fmt: skip

  pipe_cfg = load_config(a.pipeline_config)
  if a.train_sources:
    names = tuple(a.train_sources.split(","))
    pipe_cfg.data.train_sources, pipe_cfg.data.train_splits = names, ("train",) * len(names)
    pipe_cfg.data.mixture_weights = (1.0,) * len(names)
  sources = sources_of(pipe_cfg, a.data_dir)
  host = describe_device(accelerator=False)
  common = {
    "config": f"configs/{a.pipeline_config}.py",
    "sources": list(pipe_cfg.data.train_sources),
    "mixture_weights": list(pipe_cfg.data.mixture_weights),
    "records": [len(s) for s in sources],
    "batch": a.batch,
    "input_size": pipe_cfg.data.input_size,
    "device": host,
  }
  base = read_only_rate(sources, 300)
  print(json.dumps({"name": "read_only", **common, "images_per_s": round(base, 1)}), flush=True)

  step = None
  if a.step_rate:
    step = {"config": "--step_rate", "images_per_s": a.step_rate}
    print(json.dumps({"name": "train_step", **step, "device": host}), flush=True)
  elif not a.skip_step:
    step_cfg = load_config(a.step_config)
    step = step_rate(
      a.step_config,
      a.step_batch or step_cfg.batch_size,
      a.step_dtype or step_cfg.model.dtype,
      a.step_steps,
    )
    print(json.dumps({"name": "train_step", **step}), flush=True)

  counts = [int(w) for w in a.workers.split(",")]
  capped = sorted({min(w, os.cpu_count() or 1) for w in counts})
  rows, w0 = [], None
  for workers in capped:
    rate, dtype = pipeline_rate(pipe_cfg, sources, workers, a.batch, a.seconds, a.warmup)
    w0 = rate if workers == 0 else w0
    row = {
      "name": "pipeline",
      "workers": workers,
      **common,
      "images_per_s": round(rate, 1),
      "image_dtype": dtype,
      "ratio_vs_read_only": round(rate / base, 3),
      "ratio_vs_workers0": round(rate / w0, 3) if w0 else None,
    }
    if step:
      row["ratio_vs_step"] = round(rate / step["images_per_s"], 3)
      row["keeps_up"] = row["ratio_vs_step"] >= KEEPS_UP
    rows.append(row)
    print(json.dumps(row), flush=True)

  best = max(rows, key=lambda r: r["images_per_s"])
  summary = {
    "name": "summary",
    "device": host,
    "best_workers": best["workers"],
    "pipeline_images_per_s": best["images_per_s"],
    "workers_capped_at": os.cpu_count(),
  }
  if step:
    summary.update(
      step_config=step["config"],
      step_images_per_s=step["images_per_s"],
      ratio_vs_step=best["ratio_vs_step"],
      keeps_up=best["keeps_up"],
      threshold=KEEPS_UP,
    )
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  main()
