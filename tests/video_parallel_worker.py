"""Run by tests/test_video_training.py with 8 fake CPU devices: one clip step of the tiny
video config on 8 devices (jit data parallel, and pmap) against the same step on one device,
and a bfloat16 step. Prints one JSON line."""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
from conftest import tiny_network

from configs import smoke_video
from unipose_jax import distributed, keypoint_sets, train_video
from unipose_jax import run as run_lib


def _config(parallelism="jit", dtype="float32"):
  c = tiny_network(smoke_video.get_config(), input_size=32)
  c.model.wasp_dropout = 0.0
  c.model.decoder_dropout = (0.0, 0.0)
  c.parallelism, c.model.dtype, c.batch_size = parallelism, dtype, 8
  c.data.clip_length = 2
  # Plain SGD at a constant, large rate: the update is the gradient itself (a warm-up's
  # first rate is 0, and Adam's g / |g| would magnify the rounding of tiny gradients).
  c.optimizer.name, c.optimizer.schedule, c.optimizer.learning_rate = "sgd", "constant", 1.0
  c.optimizer.momentum = 0.0
  return c


def _step(config, devices, batch):
  mesh = distributed.data_mesh(devices)
  run = run_lib.Run(config)
  run.keypoint_set = keypoint_sets.PENN_ACTION  # no dataset needed
  model, _, tx, _, trainer = train_video.build_video_trainer(run, mesh)
  state = train_video.create_video_train_state(model, tx, 0, 32)
  state = trainer.place(distributed.replicate(state, mesh))
  state, metrics = trainer.step(state, batch)
  state = jax.device_get(trainer.canonical(state))
  return state, float(metrics.compute()["loss"])


def _state(config):
  run = run_lib.Run(config)
  run.keypoint_set = keypoint_sets.PENN_ACTION
  model = run.model()
  tx = train_video.build_video_trainer(run, distributed.data_mesh(jax.devices()[:1]))[2]
  return train_video.create_video_train_state(model, tx, 0, 32)


def main():
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.integers(0, 256, (8, 2, 32, 32, 3), dtype=np.uint8),
    "keypoints": rng.uniform(2, 30, (8, 2, 13, 2)).astype(np.float32),
    "weights": np.ones((8, 2, 13), np.float32),
  }
  one, loss1 = _step(_config(), jax.devices()[:1], batch)
  init = _state(_config())
  out = {"loss_1": loss1}
  for form in ("jit", "pmap"):
    many, loss8 = _step(_config(form), jax.devices(), batch)
    diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), many.params, one.params)
    out[f"loss_8_{form}"] = loss8
    out[f"max_param_diff_{form}"] = max(jax.tree.leaves(diff))
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), one.params, init.params)
  out["max_param_change"] = max(jax.tree.leaves(moved))
  _, out["loss_bf16"] = _step(_config(dtype="bfloat16"), jax.devices(), batch)
  print(json.dumps(out))


if __name__ == "__main__":
  sys.exit(main())
