"""CPU inference of UniPose: JAX (jit) vs onnxruntime (the exported file) vs the PyTorch twin.

The same random weights (the PyTorch twin of ``tests/test_model_parity_torch.py``,
randomised with its BatchNorm statistics, mapped onto the Flax variables)
run in all three; every path starts from the same uint8 (B, S, S, 3) RGB batch
and ends with float32 heatmaps, normalising inside:

  jax          ``jax.jit`` of normalise + ``model.apply(train=False)``, float32,
               variables passed as arguments (as in evaluation)
  onnxruntime  the file of ``unipose_jax.export.export_onnx`` run by
               ``unipose_jax.deploy.onnx_runner`` (ORT_ENABLE_ALL, intra-op threads = cores)
  torch        the twin in eval mode under ``torch.inference_mode`` (threads = cores)

Prints one JSON object per line and (path, batch): name, path, batch, input_size,
median_s (of --repeats timed calls after one warm-up), per_image_s,
images_per_s, speedup_vs_torch (torch's median over this path's, same batch),
max_rel_diff_vs_torch (``max |out - torch| / max |torch|``), device, threads,
repeats; then one summary line per batch with the fastest project path.

Measured choices (2-core AMD EPYC, jax 0.10.2, onnxruntime 1.31): onnxruntime is
fastest with ORT_ENABLE_ALL (its NCHWc convolution layout; BASIC and EXTENDED are
~1.35x slower) and one intra-op thread per core; spinning made no difference.
JAX trails PyTorch on the CPU because XLA:CPU runs every convolution as a
YNNPACK fusion (``__ynn_fusion`` in the optimised HLO) that is 1.1-1.7x slower
than PyTorch's oneDNN convolution at these shapes and 2-3x slower at the large
dilations of layer4 and WASP (8, 18), where oneDNN skips the taps that fall into
the padding; BatchNorm and ReLU stay separate elementwise passes. The XLA flags
``--xla_cpu_use_onednn``, ``--xla_cpu_use_xnnpack``,
``--xla_cpu_experimental_{xnn,ynn,onednn}_fusion_type=individual_convolution`` and
``--xla_cpu_multi_thread_eigen=false`` changed nothing measurable, and closing
over the variables as compile-time constants helps only when BatchNorm is the
identity (untrained statistics). For CPU inference use the exported file.

Example: ``python benchmarks/infer_bench.py`` (ResNet-101, 368 px, batch 1 and 8);
``python benchmarks/infer_bench.py --depth tiny --input_size 64 --repeats 2`` (smoke test).
Needs the ``torch`` and ``onnx`` extras and the test extra's pytest (the twin lives in tests/).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from hardware import describe_device, parse_args  # noqa: E402

from tests import torch_twin as twin_lib  # noqa: E402
from unipose_jax.deploy import onnx_runner  # noqa: E402
from unipose_jax.export import export_onnx  # noqa: E402
from unipose_jax.models import (  # noqa: E402
  IMAGENET_MEAN,
  IMAGENET_STD,
  UniPose,
  load_original_unipose,
  normalize,
)

THREADS = os.cpu_count() or 1
torch.set_num_threads(THREADS)  # the twin's module sets 1 for the parity tests

#: depth -> (torch block, Flax block name, stage sizes, width, (wasp, low, decoder) widths)
SPECS = {
  "101": (twin_lib.Bottleneck, "Bottleneck", (3, 4, 23, 3), 64, (256, 48, 256)),
  "50": (twin_lib.Bottleneck, "Bottleneck", (3, 4, 6, 3), 64, (256, 48, 256)),
  "tiny": (twin_lib.Bottleneck, "Bottleneck", (1, 1, 1, 1), 8, (16, 8, 16)),
}


from unipose_jax import keypoint_sets  # noqa: E402

#: K of the LSP configs these benchmarks time.
LSP_K = keypoint_sets.LSP.num_joints


def build(depth: str, input_size: int, seed: int = 0):
  """The twin (eval mode), the Flax module and its variables holding the twin's weights."""
  import functools

  from unipose_jax.models import BasicBlock, Bottleneck, ResNet  # noqa: PLC0415

  block_t, block_f, layers, width, (wasp, low, dec) = SPECS[depth]
  twin = twin_lib.UniPoseTwin(
    LSP_K, block=block_t, layers=layers, width=width, output_stride=16, wasp_planes=wasp,
    low_planes=low, decoder_planes=dec,
  )  # fmt: skip
  twin_lib.randomise_(twin, seed)
  model = UniPose(
    num_joints=LSP_K,
    backbone=functools.partial(
      ResNet,
      stage_sizes=layers,
      block_cls={"Bottleneck": Bottleneck, "BasicBlock": BasicBlock}[block_f],
    ),
    backbone_width=width,
    wasp_features=wasp,
    low_level_features=low,
    decoder_features=dec,
  )
  abstract = jax.eval_shape(
    lambda x: model.init(jax.random.key(0), x, train=False),
    jax.ShapeDtypeStruct((1, input_size, input_size, 3), jnp.float32),
  )
  variables, _ = load_original_unipose(twin.state_dict(), abstract)  # the twin's weights
  return twin, model, variables


def _sig(value: float, digits: int = 4) -> float:
  return float(f"{value:.{digits}g}")


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
  out = fn()  # warm-up (and compilation for JAX)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times), out


def runners(twin, model, variables, onnx_path):
  @jax.jit
  def jax_fwd(v, images):
    return model.apply(v, normalize(images), train=False)

  ort_run = onnx_runner(onnx_path, threads=THREADS)
  t_mean = torch.tensor(np.asarray(IMAGENET_MEAN) * 255.0, dtype=torch.float32).view(1, 3, 1, 1)
  t_inv = torch.tensor(1.0 / (np.asarray(IMAGENET_STD) * 255.0), dtype=torch.float32)
  t_inv = t_inv.view(1, 3, 1, 1)

  def torch_fwd(images):
    with torch.inference_mode():
      x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
      return twin((x - t_mean) * t_inv).permute(0, 2, 3, 1).numpy()

  return {
    "jax": lambda images: np.asarray(jax_fwd(variables, images)),
    "onnxruntime": ort_run,
    "torch": torch_fwd,
  }


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--depth", default="101", choices=sorted(SPECS))
  p.add_argument("--input_size", type=int, default=368)
  p.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--paths", default="jax,onnxruntime,torch")
  args = parse_args(p, argv, {"depth": "tiny", "input_size": 64, "batch": "1", "repeats": 1})
  paths = args.paths.split(",")
  twin, model, variables = build(args.depth, args.input_size)
  device = describe_device()
  with tempfile.TemporaryDirectory() as tmp:
    onnx_path = export_onnx(model, variables, pathlib.Path(tmp) / "unipose.onnx", args.input_size)
    run = runners(twin, model, variables, onnx_path)
    for batch in (int(b) for b in args.batch.split(",")):
      images = np.random.default_rng(batch).integers(
        0, 256, (batch, args.input_size, args.input_size, 3), dtype=np.uint8
      )
      results = {name: timed(lambda r=run[name]: r(images), args.repeats) for name in paths}
      ref = results.get("torch", (None, None))[1]
      for name, (median, out) in results.items():
        row = {
          "name": f"infer_unipose_resnet{args.depth}",
          "path": name,
          "batch": batch,
          "input_size": args.input_size,
          "median_s": _sig(median),
          "per_image_s": _sig(median / batch),
          "images_per_s": _sig(batch / median),
        }
        if ref is not None:
          row["speedup_vs_torch"] = _sig(results["torch"][0] / median)
          row["max_rel_diff_vs_torch"] = _sig(np.abs(out - ref).max() / np.abs(ref).max(), 3)
        row.update(device=device, threads=THREADS, repeats=args.repeats)
        print(json.dumps(row), flush=True)
      project = {k: v[0] for k, v in results.items() if k != "torch"}
      if project and ref is not None:
        best = min(project, key=project.get)
        summary = {
          "name": f"infer_unipose_resnet{args.depth}_summary",
          "batch": batch,
          "fastest_project_path": best,
          "speedup_vs_torch": _sig(results["torch"][0] / project[best]),
          "device": device,
        }
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  main()
