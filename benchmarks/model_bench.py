"""Speed of the UniPose network: forward and forward+backward, per batch size and dtype.

Prints one JSON object per line and configuration, with fields

  name, backbone, output_stride, input_size, batch, dtype, params, output_shape,
  device, compile_fwd_s, compile_fwd_bwd_s, fwd_s, fwd_bwd_s (medians over
  --repeats runs after compilation), fwd_bwd_over_fwd (ratio of the two),
  per_image_fwd_bwd_s, gflops_fwd, gflops_fwd_bwd (XLA cost analysis), and
  baseline ratios measured in the same run:
    per_image_speedup_vs_batch<B0>: per-image fwd+bwd time at the first batch
        size of --batch divided by the one of this line;
    fwd_bwd_speedup_vs_float32: float32 fwd+bwd time over this dtype's (when
        float32 is among --dtype).
    dark_share: the share of an evaluation step (uint8 images normalised,
        forward, background dropped, DARK decoding to input pixels) spent in the
        decoding: 1 - eval_forward_s / eval_dark_s.
images_per_s_fwd and images_per_s_train (forward, forward+backward), and
mfu_fwd_bwd: XLA's cost analysis of the compiled forward+backward over its time
over the dense peak of the device for the dtype (benchmarks/hardware.py: H100/H200
989 TFLOP/s bfloat16, 494 TF32, 67 FP32, NVIDIA data sheet; float32 is rated
against TF32, the default precision of XLA:GPU convolutions and matmuls, and also
against plain FP32 as mfu_fwd_bwd_vs_float32); null on the CPU; --peak_tflops
overrides. Batch sizes are swept in order; a batch that runs out of device memory
prints an ``oom`` line and ends that dtype's sweep.

Examples::

    python benchmarks/model_bench.py --batch_sizes 1,8    # ResNet-101, 368 px, float32, on a CPU
    python benchmarks/model_bench.py --dtype bfloat16,float32 --repeats 10   # 16..128 on a GPU
    python benchmarks/model_bench.py --backbone_depth tiny --input_size 64 --batch_sizes 2,4 \
        --dtype float32,bfloat16 --repeats 2                               # quick CPU check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hardware import describe_device, flops_of, is_oom, parse_args, peak_flops  # noqa: E402

from unipose_jax import (
  inference,  # noqa: E402
  keypoint_sets,  # noqa: E402
)
from unipose_jax.codecs import HeatmapCodec  # noqa: E402
from unipose_jax.models import UniPose, UniPoseTiny, heatmap_size  # noqa: E402

#: K of the LSP configs these benchmarks time.
LSP_K = keypoint_sets.LSP.num_joints


def random_variables(model, input_shape, seed=0):
  """Variables filled with numpy normals (skips compiling the RNG-heavy init; timing does not depend on values)."""
  abstract = jax.eval_shape(
    lambda x: model.init(jax.random.key(0), x, train=False),
    jax.ShapeDtypeStruct(input_shape, jnp.float32),
  )
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      value = rng.standard_normal(leaf.shape, dtype=np.float32) * np.sqrt(
        2.0 / np.prod(leaf.shape[:-1])
      )
    elif name in ("var", "scale"):
      value = np.ones(leaf.shape, np.float32)
    else:
      value = np.zeros(leaf.shape, np.float32)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def timed(fn, args, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def make_model(depth: str, output_stride: int, dtype):
  if depth == "tiny":
    return UniPoseTiny(num_joints=LSP_K, output_stride=output_stride, dtype=dtype), "resnet-tiny"
  return UniPose(
    num_joints=LSP_K, backbone_depth=int(depth), output_stride=output_stride, dtype=dtype
  ), f"resnet{depth}"


def dark_share_of_eval(model, variables, input_size, batch, repeats) -> dict:
  """Times of an evaluation step with and without DARK decoding, and the decoding's share.

  Both take uint8 images (B, S, S, 3), normalise them and run the network in inference mode;
  one returns the heatmaps (background dropped), the other decodes them with DARK
  (sigma 3, the default kernel) to keypoints (B, K, 2) in input pixels.
  """
  side = heatmap_size(input_size)
  codec = HeatmapCodec(
    input_size=(input_size, input_size), heatmap_size=(side, side), sigma=3.0,
    encoding="unbiased", decoding="dark",
  )  # fmt: skip

  def heatmaps(v, images):  # the evaluation's forward pass
    return inference.predict_heatmaps(v, images, model=model, flip_test=False)

  fwd = jax.jit(heatmaps)
  fwd_dark = jax.jit(lambda v, images: codec.decode(heatmaps(v, images)))
  images = jnp.asarray(
    np.random.default_rng(0).integers(0, 256, (batch, input_size, input_size, 3), np.uint8)
  )
  jax.block_until_ready(fwd(variables, images))
  jax.block_until_ready(fwd_dark(variables, images))
  t_fwd = timed(fwd, (variables, images), repeats)
  t_dark = timed(fwd_dark, (variables, images), repeats)
  return {
    "eval_forward_s": round(t_fwd, 5),
    "eval_dark_s": round(t_dark, 5),
    "dark_share": round(max(0.0, 1.0 - t_fwd / t_dark), 4),
  }


def bench_one(depth, output_stride, input_size, batch, dtype_name, repeats, peak_tflops=0.0):
  dtype = jnp.dtype(dtype_name)
  model, backbone = make_model(depth, output_stride, dtype)
  shape = (batch, input_size, input_size, 3)
  variables = random_variables(model, shape)
  params, stats = variables["params"], variables["batch_stats"]
  x = jax.random.normal(jax.random.key(0), shape, jnp.float32)

  fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))

  def loss_fn(params, stats, x, rng):
    out, updates = model.apply(
      {"params": params, "batch_stats": stats},
      x,
      train=True,
      rngs={"dropout": rng},
      mutable=["batch_stats"],
    )
    return jnp.mean(out**2), updates["batch_stats"]

  fwd_bwd = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  rng = jax.random.key(1)

  t = time.perf_counter()
  fwd_l = fwd.lower(variables, x)
  fwd_c = fwd_l.compile()
  compile_fwd = time.perf_counter() - t
  t = time.perf_counter()
  fwd_bwd_l = fwd_bwd.lower(params, stats, x, rng)
  fwd_bwd_c = fwd_bwd_l.compile()
  compile_fwd_bwd = time.perf_counter() - t

  out = fwd_c(variables, x)
  jax.block_until_ready(fwd_bwd_c(params, stats, x, rng))  # warm-up
  fwd_s = timed(fwd_c, (variables, x), repeats)
  fwd_bwd_s = timed(fwd_bwd_c, (params, stats, x, rng), repeats)

  row = {
    "name": f"unipose_{backbone}_os{output_stride}",
    "backbone": backbone,
    "output_stride": output_stride,
    "input_size": input_size,
    "batch": batch,
    "dtype": dtype_name,
    "params": int(sum(p.size for p in jax.tree.leaves(params))),
    "output_shape": list(out.shape),
    "device": describe_device(),
    "repeats": repeats,
    "compile_fwd_s": round(compile_fwd, 2),
    "compile_fwd_bwd_s": round(compile_fwd_bwd, 2),
    "fwd_s": round(fwd_s, 4),
    "fwd_bwd_s": round(fwd_bwd_s, 4),
    "fwd_bwd_over_fwd": round(fwd_bwd_s / fwd_s, 3),
    "per_image_fwd_bwd_s": round(fwd_bwd_s / batch, 4),
  }
  f_fwd, f_fb = flops_of(fwd_l), flops_of(fwd_bwd_l)
  if f_fwd is not None and f_fb is not None:
    row["gflops_fwd"] = round(f_fwd / 1e9, 2)
    row["gflops_fwd_bwd"] = round(f_fb / 1e9, 2)
  row.update(dark_share_of_eval(model, variables, input_size, batch, repeats))
  row["images_per_s_fwd"] = round(batch / fwd_s, 2)
  row["images_per_s_train"] = round(batch / fwd_bwd_s, 2)
  row["mfu_fwd_bwd"] = None
  if peak_tflops:
    peaks = {dtype_name: peak_tflops * 1e12}
  elif jax.devices()[0].platform == "cpu":
    peaks = None
  else:
    peaks = peak_flops(dtype_name)
  if peaks and f_fb is not None:
    row["peak_tflops"] = {k: v / 1e12 for k, v in peaks.items()}
    for kind, peak in peaks.items():
      row[f"mfu_fwd_bwd_vs_{kind}"] = round(f_fb / fwd_bwd_s / peak, 4)
    row["mfu_fwd_bwd"] = row[f"mfu_fwd_bwd_vs_{next(iter(peaks))}"]
  return row


def dark_share_row(args, batch: int, dtype_name: str) -> dict:
  """One line with the evaluation step's DARK share alone (``--dark_share_only``)."""
  model, backbone = make_model(args.backbone_depth, args.output_stride, jnp.dtype(dtype_name))
  shape = (batch, args.input_size, args.input_size, 3)
  variables = random_variables(model, shape)
  return {
    "name": f"eval_step/unipose_{backbone}_os{args.output_stride}",
    "backbone": backbone,
    "input_size": args.input_size,
    "batch": batch,
    "dtype": dtype_name,
    "device": describe_device(),
    "repeats": args.repeats,
    **dark_share_of_eval(model, variables, args.input_size, batch, args.repeats),
  }


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    "--backbone_depth", "--depth", default="101", help="ResNet depth (18/34/50/101/152) or 'tiny'"
  )
  p.add_argument("--output_stride", type=int, default=16)
  p.add_argument("--input_size", type=int, default=368)
  p.add_argument(
    "--batch_sizes", "--batch", default="16,32,64,128",
    help="comma-separated batch sizes, swept in order until out of memory; the first is the "
    "baseline",
  )  # fmt: skip
  p.add_argument("--dtype", default="float32", help="comma-separated: float32, bfloat16")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--peak_tflops", type=float, default=0.0, help="peak of one device (TFLOP/s)")
  p.add_argument(
    "--dark_share_only", action="store_true",
    help="only the evaluation step with and without DARK decoding (two compilations, not four)",
  )  # fmt: skip
  args = parse_args(p, argv, {
    "backbone_depth": "tiny", "input_size": 64, "batch_sizes": "2", "repeats": 1,
  })  # fmt: skip
  batches = [int(b) for b in args.batch_sizes.split(",")]
  dtypes = [d.strip() for d in args.dtype.split(",")]

  if args.dark_share_only:
    for dtype_name in dtypes:
      for batch in batches:
        print(json.dumps(dark_share_row(args, batch, dtype_name)), flush=True)
    return
  rows = []
  for dtype_name in dtypes:
    for batch in batches:
      try:
        row = bench_one(
          args.backbone_depth, args.output_stride, args.input_size, batch, dtype_name,
          args.repeats, args.peak_tflops,
        )  # fmt: skip
      except Exception as e:  # noqa: BLE001 - only out-of-memory ends a sweep quietly
        if not is_oom(e):
          raise
        print(json.dumps({"name": "unipose", "dtype": dtype_name, "batch": batch, "oom": True,
                          "error": str(e).splitlines()[0][:300],
                          "device": describe_device()}), flush=True)  # fmt: skip
        break
      base = next((r for r in rows if r["dtype"] == dtype_name), None)
      if base is not None:
        row[f"per_image_speedup_vs_batch{base['batch']}"] = round(
          base["per_image_fwd_bwd_s"] / row["per_image_fwd_bwd_s"], 3
        )
      f32 = next((r for r in rows if r["dtype"] == "float32" and r["batch"] == batch), None)
      if f32 is not None and dtype_name != "float32":
        row["fwd_bwd_speedup_vs_float32"] = round(f32["fwd_bwd_s"] / row["fwd_bwd_s"], 3)
      rows.append(row)
      print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
