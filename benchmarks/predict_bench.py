"""Speed of prediction on photos and videos: one pass vs two passes, and video frames/s.

The network of ``--config`` (default ``lsp_cpu``: ResNet-18 at 128 px) with random
weights runs through :class:`unipose_jax.predict.Predictor` exactly as
``launch.py --mode=predict`` runs it (``inference.predict_heatmaps`` jitted, the
config's ``flip_test`` and decoder). Random weights give random scores, so the score
threshold is set to ``-inf`` here: every joint is visible and the second pass always
runs (on real photos it runs whenever a person is found).

Prints one JSON object per line:

  predict_image  pass "1" and "1+2": median_s per image (of --repeats calls after a
                 warm-up that compiles), images_per_s; the "1+2" line carries the
                 baseline ratio ``two_pass_over_one_pass`` (its median over pass 1's,
                 same run, same image)
  predict_video  a synthetic --frames-frame mp4v video of --width x --height through
                 ``media.predict_video`` (decode, two passes, drawing, encoding,
                 JSON lines): frames_per_s, and ``frames_per_s_over_two_pass_bound``,
                 its frames/s over 1 / (two-pass median): the share of the time that
                 is the network and its geometry

with config, input_size, image size, device (``hardware.describe_device``), threads.

Examples::

    python benchmarks/predict_bench.py                       # lsp_cpu network, 640x480
    python benchmarks/predict_bench.py --config smoke --repeats 3 --frames 8   # quick
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cv2  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from hardware import describe_device, parse_args  # noqa: E402

from unipose_jax import geometry, inference, media, predict  # noqa: E402
from unipose_jax.run import Run  # noqa: E402


def _sig(value: float, digits: int = 4) -> float:
  return float(f"{value:.{digits}g}")


def build_predictor(config, seed: int = 0) -> predict.Predictor:
  """The Predictor of ``Predictor.from_run``, on randomly initialised variables."""
  run = Run(config)
  model = run.model()
  height, width = geometry.input_hw(config.data.input_size)
  variables = model.init(jax.random.key(seed), jnp.zeros((1, height, width, 3)), train=False)
  heatmaps = inference.heatmap_fn(
    model, variables, flip_test=run.flip_test, flip_permutation=run.flip_permutation
  )
  settings = {**run.predictor_settings(), "score_threshold": -np.inf, "second_pass": True}
  return predict.Predictor(heatmaps, **settings)


def timed(fn, repeats: int) -> float:
  fn()  # warm-up: compiles
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def synthetic_video(path: str, frames: int, width: int, height: int, fps: float = 25.0) -> None:
  """A bright disc moving over a noisy background (mp4v)."""
  rng = np.random.default_rng(0)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
  for i in range(frames):
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    centre = (int(width * (0.2 + 0.6 * i / max(frames - 1, 1))), height // 2)
    cv2.circle(frame, centre, height // 6, (255, 255, 255), -1)
    writer.write(frame)
  writer.release()


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--config", default="lsp_cpu", help="a module of configs/ (lsp_cpu, smoke, ...)")
  p.add_argument("--width", type=int, default=640)
  p.add_argument("--height", type=int, default=480)
  p.add_argument("--repeats", type=int, default=9)
  p.add_argument("--frames", type=int, default=48)
  args = parse_args(p, argv, {
    "config": "smoke", "width": 96, "height": 64, "repeats": 1, "frames": 2,
  })  # fmt: skip

  config = importlib.import_module(f"configs.{args.config}").get_config()
  predictor = build_predictor(config)
  common = {
    "config": args.config,
    "input_size": config.data.input_size,
    "flip_test": bool(config.flip_test),
    "image": f"{args.width}x{args.height}",
    "device": describe_device(),
    "threads": os.cpu_count(),
  }
  image = np.random.default_rng(1).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
  one = timed(lambda: predictor.first_pass(image), args.repeats)
  two = timed(lambda: predictor(image), args.repeats)
  assert predictor(image).passes == 2
  for passes, median in (("1", one), ("1+2", two)):
    row = {"name": "predict_image", "passes": passes, "median_s": _sig(median)}
    row["images_per_s"] = _sig(1.0 / median)
    if passes == "1+2":
      row["two_pass_over_one_pass"] = _sig(two / one, 3)
    print(json.dumps({**row, **common, "repeats": args.repeats}), flush=True)

  with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "synthetic.mp4")
    synthetic_video(src, args.frames, args.width, args.height)
    (item,) = media.collect_inputs([src])
    with contextlib.redirect_stdout(sys.stderr):  # its progress lines: stdout is JSON only
      out = media.predict_video(item, predictor, os.path.join(tmp, "out"))
  rate = out["frames"] / out["seconds"]
  row = {
    "name": "predict_video",
    "frames": out["frames"],
    "seconds": _sig(out["seconds"]),
    "frames_per_s": _sig(rate),
    "frames_per_s_over_two_pass_bound": _sig(rate * two, 3),
  }
  print(json.dumps({**row, **common}), flush=True)


if __name__ == "__main__":
  main()
