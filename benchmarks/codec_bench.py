"""Heatmap codec speed: jitted JAX codec vs the plain NumPy loop reference.

Prints one JSON object per line:

  {"name": "decode_dark", "batch": 64, "joints": 14, "heatmap_size": [46, 46],
   "jax_s": ..., "reference_s": ..., "speedup": reference_s / jax_s,
   "max_abs_diff_px": ..., "jax_repeats": ..., "reference_repeats": ..., "device": ...}

for every decoding and encoding at each batch size. Times are medians of
several calls after compilation (``block_until_ready``); the reference (in
``tests/dark_reference.py``, float64, one map at a time) runs fewer times at
large batches to stay bounded. ``max_abs_diff_px`` is the largest difference
between the two results (input pixels for decoding, heatmap values for
encoding). On a GPU a last, optional section times UniPose's forward pass with
and without DARK decoding in one jitted eval step (skipped when the model is
not importable).

Run: ``python benchmarks/codec_bench.py [--batches 1,64,512] [--repeats 20]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import dark_reference as ref  # noqa: E402
from hardware import describe_device, parse_args  # noqa: E402

from unipose_jax import keypoint_sets  # noqa: E402
from unipose_jax.codecs import DECODINGS, ENCODINGS, HeatmapCodec  # noqa: E402

#: K of the LSP configs these benchmarks time.
LSP_K = keypoint_sets.LSP.num_joints


def median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def realistic_inputs(codec: HeatmapCodec, batch: int, joints: int, seed: int = 0):
  """Keypoints (input px), weights, and noisy heatmaps like a trained network's output."""
  rng = np.random.default_rng(seed)
  h, w = codec.heatmap_size
  hm_xy = rng.uniform(-0.5, [w - 0.5, h - 0.5], size=(batch, joints, 2)).astype(np.float32)
  keypoints = np.asarray(codec.heatmap_to_input(hm_xy))
  weights = (rng.uniform(size=(batch, joints)) > 0.1).astype(np.float32)
  heat, _ = codec.encode(keypoints, np.ones((batch, joints), np.float32))
  heat = np.asarray(heat) * rng.uniform(0.4, 1.0, (batch, 1, 1, joints))
  heat = (heat + rng.normal(0.0, 0.03, heat.shape)).astype(np.float32)
  return keypoints, weights, heat


def bench_codec(codec: HeatmapCodec, batches, joints: int, repeats: int, device: str):
  for batch in batches:
    keypoints, weights, heat = realistic_inputs(codec, batch, joints)
    ref_repeats = 3 if batch <= 64 else 1
    common = dict(batch=batch, joints=joints, heatmap_size=list(codec.heatmap_size), device=device)
    rows = []
    for decoding in DECODINGS:
      fn = jax.jit(functools.partial(codec.decode, decoding=decoding))
      heat_dev = jax.device_put(heat)
      got = np.asarray(jax.block_until_ready(fn(heat_dev))[0])  # compile
      jax_s = median_time(lambda: fn(heat_dev), repeats)
      want = None

      def run_ref():
        nonlocal want
        want = ref.decode_reference(heat, codec.input_size, decoding, codec.sigma)[0]

      ref_s = median_time(run_ref, ref_repeats)
      rows.append((f"decode_{decoding}", jax_s, ref_s, float(np.abs(got - want).max())))
    for encoding in ENCODINGS:
      fn = jax.jit(functools.partial(codec.encode, encoding=encoding))
      kp_dev, wt_dev = jax.device_put(keypoints), jax.device_put(weights)
      got = np.asarray(jax.block_until_ready(fn(kp_dev, wt_dev))[0])
      jax_s = median_time(lambda: fn(kp_dev, wt_dev), repeats)
      want = None

      def run_ref():
        nonlocal want
        want = ref.encode_reference(
          keypoints, weights, codec.input_size, codec.heatmap_size, codec.sigma, encoding
        )[0]

      ref_s = median_time(run_ref, ref_repeats)
      rows.append((f"encode_{encoding}", jax_s, ref_s, float(np.abs(got - want).max())))
    for name, jax_s, ref_s, diff in rows:
      print(
        json.dumps(
          dict(
            name=name,
            **common,
            jax_s=round(jax_s, 7),
            reference_s=round(ref_s, 5),
            speedup=round(ref_s / jax_s, 1),
            max_abs_diff_px=diff if name.startswith("decode") else None,
            max_abs_diff=diff if name.startswith("encode") else None,
            jax_repeats=repeats,
            reference_repeats=ref_repeats,
          )
        ),
        flush=True,
      )


def bench_eval_step(codec: HeatmapCodec, batch: int, repeats: int, device: str):
  """OPTIONAL (GPU only): DARK decoding inside a jitted eval step vs the model forward alone."""
  common = dict(
    name="eval_step_decode_dark",
    batch=batch,
    joints=LSP_K,
    heatmap_size=list(codec.heatmap_size),
    device=device,
  )
  if jax.default_backend() == "cpu":
    print(
      json.dumps(
        dict(**common, skipped="no accelerator: the model forward would take minutes on CPU")
      )
    )
    return
  try:
    from unipose_jax.models import UniPose
  except Exception as err:  # the model package is developed separately
    print(json.dumps(dict(**common, skipped=f"unipose_jax.models unavailable: {err!r}")))
    return
  from unipose_jax import inference

  model = UniPose(num_joints=LSP_K)
  images = jnp.zeros((batch, *codec.input_size, 3), jnp.uint8)
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=False))(
    images[:1].astype(jnp.float32)
  )

  @jax.jit
  def forward(v, x):  # the evaluation's forward pass: normalise, network, joint maps
    return inference.predict_heatmaps(v, x, model=model, flip_test=False)

  @jax.jit
  def forward_decode(v, x):
    return codec.decode(forward(v, x), "dark")

  for fn in (forward, forward_decode):
    jax.block_until_ready(fn(variables, images))
  fwd_s = median_time(lambda: forward(variables, images), repeats)
  both_s = median_time(lambda: forward_decode(variables, images), repeats)
  print(
    json.dumps(
      dict(
        **common,
        forward_s=round(fwd_s, 6),
        forward_decode_s=round(both_s, 6),
        decode_overhead_ratio=round((both_s - fwd_s) / fwd_s, 4),
      )
    ),
    flush=True,
  )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="1,64,512", help="comma-separated batch sizes")
  parser.add_argument("--joints", type=int, default=LSP_K)
  parser.add_argument("--repeats", type=int, default=20, help="timed calls of the jitted codec")
  parser.add_argument(
    "--eval-batch", type=int, default=64, help="batch of the optional GPU eval-step section"
  )
  args = parse_args(parser, argv, {"batches": "1,2", "repeats": 1, "eval_batch": 2})
  codec = HeatmapCodec(input_size=(368, 368), heatmap_size=(46, 46), sigma=3.0)
  device = describe_device()
  bench_codec(codec, [int(b) for b in args.batches.split(",")], args.joints, args.repeats, device)
  bench_eval_step(codec, args.eval_batch, args.repeats, device)


if __name__ == "__main__":
  main()
