"""Frames per second of UniPose-LSTM streaming a video against the per-frame model, in one run.

Both from the same random variables of one ``UniPoseLSTM`` (configs/unipose_lstm_penn.py:
ResNet-101, output stride 16, video WASP, 368 px; ``--tiny``: configs/smoke_video.py's tiny
network at 64 px), G videos at once (``--videos``), float32:

  video         ``jax.jit`` of normalise + ``UniPoseLSTM.step`` on one frame of each video,
                the LSTM state carried from call to call (what evaluation and prediction run)
  single_frame  ``jax.jit`` of normalise + the trunk alone (the per-frame network:
                backbone, WASP, decoder; its K + 1 maps), the same frames

Prints one JSON object per line and path: name, path, videos, input_size, frames (timed
steps after one warm-up step), median_s (per step), frames_per_s (videos / median_s),
ratio_vs_single_frame (single_frame's frames/s over this path's: the temporal stage's
cost), device; then a summary line. Example: ``python benchmarks/video_bench.py``
(paper's model) or ``python benchmarks/video_bench.py --tiny`` (smoke test).
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from hardware import describe_device, parse_args  # noqa: E402

from unipose_jax import keypoint_sets, run, train_video  # noqa: E402
from unipose_jax.models import UniPoseLSTM, normalize  # noqa: E402
from unipose_jax.models.unipose_lstm import initial_state  # noqa: E402


def _config(name: str):
  if name == "tiny":
    from configs import smoke_video  # noqa: PLC0415

    return smoke_video.get_config()
  from configs import unipose_lstm_penn  # noqa: PLC0415

  return unipose_lstm_penn.get_config()


def _time(fn, frames: int) -> list[float]:
  times = []
  for _ in range(frames):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="paper", choices=["paper", "tiny"])
  parser.add_argument("--input_size", type=int, default=368)
  parser.add_argument("--videos", type=int, default=1)
  parser.add_argument("--frames", type=int, default=20)
  args = parse_args(parser, argv, {"model": "tiny", "input_size": 64, "frames": 3, "videos": 2})
  config = _config(args.model)
  k = keypoint_sets.PENN_ACTION.num_joints
  model = run.build_video_model(config, k)
  s, g = args.input_size, args.videos
  variables = train_video.init_variables(model, 0, s)
  rng = np.random.default_rng(0)
  frames = jnp.asarray(rng.integers(0, 256, (g, s, s, 3), dtype=np.uint8))

  step = jax.jit(lambda v, x, st: model.apply(v, normalize(x), st, method=UniPoseLSTM.step))
  trunk = jax.jit(
    lambda v, x: model.apply(v, normalize(x), False, method=lambda m, x, t: m._trunk_maps(x, t))
  )
  state = [initial_state(g, s, s, k)]

  def video():
    heat, state[0] = step(variables, frames, state[0])
    return heat

  device = describe_device()
  rows = {}
  for path, fn in (("single_frame", lambda: trunk(variables, frames)), ("video", video)):
    jax.block_until_ready(fn())  # compile + warm-up
    median = statistics.median(_time(fn, args.frames))
    rows[path] = {
      "name": f"video_bench/{args.model}", "path": path, "videos": g, "input_size": s,
      "frames": args.frames, "median_s": median, "frames_per_s": g / median, "device": device,
    }  # fmt: skip
  for row in rows.values():
    row["ratio_vs_single_frame"] = rows["single_frame"]["frames_per_s"] / row["frames_per_s"]
    print(json.dumps(row), flush=True)
  print(json.dumps({
    "name": f"video_bench/{args.model}/summary", "device": device,
    "temporal_stage_cost": rows["video"]["ratio_vs_single_frame"] - 1.0,
  }), flush=True)  # fmt: skip


if __name__ == "__main__":
  main()
