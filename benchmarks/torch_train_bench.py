"""The PyTorch baseline: training-step throughput of the original UniPose network in PyTorch.

The network is tests/torch_twin.py's ``UniPoseTwin`` (the original bmartacho/UniPose
architecture, NCHW), trained the way PyTorch users run it: on CUDA bfloat16
``torch.autocast``, ``channels_last`` memory format, ``cudnn.benchmark = True``; on the CPU
float32 (for a check, with a tiny net). One step: uint8 images (already on the device, as
a pinned-memory DataLoader would deliver them) normalised with the ImageNet mean/std,
forward, mean squared error against fixed target heatmaps (B, 15, h, w) (target encoding
is not timed; the JAX step encodes its targets on the device, a small share), backward,
optimiser step (``--optimizer adam`` as configs/default.py, lr 1e-4, or ``sgd`` momentum 0.9).

One JSON line per (dtype, batch): name, backbone, input_size, dtype, channels_last,
batch, step_s (median of --steps timed steps after --warmup untimed ones, which include
cuDNN's autotuning), images_per_s, params, device, torch version, and the baseline ratio
per_image_speedup_vs_batch<B0> of the same run. A batch that runs out of device memory
prints an ``oom`` line and ends that dtype's sweep.

Compare with benchmarks/train_bench.py (--config=unipose_lsp or dark_lsp_gpu, same batch
sizes and input size) on the same machine.

  python benchmarks/torch_train_bench.py --backbone_depth tiny --input_size 64 \\
      --batch_sizes 4,8 --steps 3                                   # CPU check
  python benchmarks/torch_train_bench.py --dtype bfloat16,float32   # CUDA: ResNet-101, 368
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch_twin  # noqa: E402
from hardware import cpu_model, parse_args  # noqa: E402

LAYERS = {"50": (3, 4, 6, 3), "101": (3, 4, 23, 3), "152": (3, 8, 36, 3)}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def describe(device: torch.device) -> str:
  host = f"{cpu_model()}, {os.cpu_count()} cores"
  if device.type == "cuda":
    name = torch.cuda.get_device_name(device)
    return f"gpu: {name} x{torch.cuda.device_count()} (host {host})"
  return f"cpu: {host}, {torch.get_num_threads()} torch threads"


def make_model(depth: str) -> tuple[nn.Module, str]:
  if depth == "tiny":  # as models.UniPoseTiny: one bottleneck per stage, narrow
    model = torch_twin.UniPoseTwin(
      layers=(1, 1, 1, 1), width=8, wasp_planes=16, low_planes=8, decoder_planes=16
    )
    return model, "resnet-tiny"
  return torch_twin.UniPoseTwin(layers=LAYERS[depth]), f"resnet{depth}"


def is_oom(e: BaseException) -> bool:
  return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def bench_one(a, batch: int, dtype: str, device: torch.device) -> dict:
  torch.manual_seed(0)
  model, backbone = make_model(a.backbone_depth)
  channels_last = device.type == "cuda" and not a.no_channels_last
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(device, memory_format=fmt).train()
  if a.compile:
    model = torch.compile(model)
  if a.optimizer == "adam":
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  else:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
  s = a.input_size
  gen = torch.Generator().manual_seed(0)
  images = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=gen).to(device)
  images = images.contiguous(memory_format=fmt)
  side = -(-s // 8)
  targets = torch.rand((batch, torch_twin.NUM_CLASSES + 1, side, side), generator=gen).to(device)
  mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
  inv_std = 1 / (torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255)
  autocast_dtype = torch.bfloat16 if dtype == "bfloat16" else None

  def step():
    opt.zero_grad(set_to_none=True)
    x = (images.float() - mean) * inv_std
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
      out = model(x)
    loss = nn.functional.mse_loss(out.float(), targets)
    loss.backward()
    opt.step()
    return loss

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize(device)

  for _ in range(a.warmup):
    step()
  sync()
  times = []
  for _ in range(a.steps):
    t0 = time.perf_counter()
    loss = step()
    sync()
    times.append(time.perf_counter() - t0)
  assert torch.isfinite(loss), f"loss {loss}"
  step_s = statistics.median(times)
  return {
    "name": "torch_train_step",
    "backbone": backbone,
    "input_size": s,
    "dtype": dtype,
    "autocast": autocast_dtype is not None,
    "channels_last": channels_last,
    "cudnn_benchmark": torch.backends.cudnn.benchmark,
    "compiled": a.compile,
    "optimizer": a.optimizer,
    "batch": batch,
    "step_s": round(step_s, 5),
    "images_per_s": round(batch / step_s, 2),
    "params": sum(p.numel() for p in model.parameters()),
    "device": describe(device),
    "torch": torch.__version__,
  }


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--backbone_depth", default="101", help="50, 101, 152 or 'tiny'")
  p.add_argument("--input_size", type=int, default=368)
  p.add_argument("--batch_sizes", default="16,32,64,128", help="swept in order until OOM")
  p.add_argument(
    "--dtype", default="", help="bfloat16,float32; default bfloat16 on CUDA, else float32"
  )
  p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
  p.add_argument("--steps", type=int, default=10, help="timed steps (median)")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN autotuning)")
  p.add_argument("--compile", action="store_true", help="torch.compile the model")
  p.add_argument("--no_channels_last", action="store_true")
  p.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is present")
  a = parse_args(p, argv, {
    "backbone_depth": "tiny", "input_size": 64, "batch_sizes": "2", "steps": 1, "warmup": 1,
    "cpu": True,
  })  # fmt: skip
  cuda = torch.cuda.is_available() and not a.cpu
  device = torch.device("cuda" if cuda else "cpu")
  torch.backends.cudnn.benchmark = True
  dtypes = a.dtype.split(",") if a.dtype else ["bfloat16" if cuda else "float32"]
  rows = []
  for dtype in dtypes:
    if dtype not in ("float32", "bfloat16"):
      raise SystemExit(f"--dtype: unknown {dtype!r}; use float32 and/or bfloat16")
    for batch in (int(b) for b in a.batch_sizes.split(",")):
      try:
        row = bench_one(a, batch, dtype, device)
      except Exception as e:  # noqa: BLE001 - only out-of-memory ends a sweep quietly
        if not is_oom(e):
          raise
        print(json.dumps({"name": "torch_train_step", "dtype": dtype, "batch": batch,
                          "oom": True, "error": str(e).splitlines()[0][:300],
                          "device": describe(device)}), flush=True)  # fmt: skip
        if cuda:
          torch.cuda.empty_cache()
        break
      first = next((r for r in rows if r["dtype"] == dtype), None)
      if first:
        row[f"per_image_speedup_vs_batch{first['batch']}"] = round(
          (first["step_s"] / first["batch"]) / (row["step_s"] / batch), 3
        )
      rows.append(row)
      print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
