"""The training and evaluation steps, lowered and compiled for a target's devices.

The programs are the ones ``train`` and ``evaluate`` run: the training step of
``train.build_trainer`` (``ParallelTrainer.lower``: replicated state, the global batch
sharded over a 1-D mesh of every device for ``jit``; stacked state and split batch for
``pmap``), and the jitted ``evaluate.eval_step`` with replicated variables. Only the
arguments are abstract (``jax.ShapeDtypeStruct``): nothing is allocated or run.

:func:`analyse` turns one compiled program into the report's plain numbers.
"""

from __future__ import annotations

import copy
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from unipose_jax import distributed, evaluate, geometry, train
from unipose_jax import run as run_lib
from unipose_jax.aot import estimate, hlo
from unipose_jax.aot.targets import Target


def with_batch(config, parallelism: str, batch_size: int, eval_batch_size: int | None = None):
  """A copy of ``config`` with another parallel form and global batch sizes."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.parallelism = parallelism
    c.batch_size = batch_size
    if eval_batch_size is not None:
      c.eval_batch_size = eval_batch_size
  return c


def train_batch(batch: int, size, num_joints: int) -> dict[str, jax.ShapeDtypeStruct]:
  """The training batch's arrays (``input_pipeline``'s keys the step reads), ``K`` joints
  (the run's keypoint set's)."""
  return {
    "image": jax.ShapeDtypeStruct((batch, *geometry.input_hw(size, "input_size"), 3), jnp.uint8),
    "keypoints": jax.ShapeDtypeStruct((batch, num_joints, 2), jnp.float32),
    "weights": jax.ShapeDtypeStruct((batch, num_joints), jnp.float32),
  }


def eval_batch(batch: int, size, keypoint_set) -> dict[str, jax.ShapeDtypeStruct]:
  """The evaluation batch's arrays as the devices get them (``evaluate.device_keys``: the
  protocol's fields too, e.g. MPII's head boxes), ``K`` joints of ``keypoint_set``."""
  k, f32, b = keypoint_set.num_joints, jnp.float32, jnp.bool_
  shapes = {
    "image": ((batch, *geometry.input_hw(size, "input_size"), 3), jnp.uint8),
    "inverse_affine": ((batch, 2, 3), f32),
    "keypoints_orig": ((batch, k, 2), f32),
    "labeled": ((batch, k), b),
    "visible": ((batch, k), b),
    "valid": ((batch,), b),
    "box": ((batch, 4), f32),
    "head_box": ((batch, 4), f32),
  }
  return {key: jax.ShapeDtypeStruct(*shapes[key]) for key in evaluate.device_keys(keypoint_set)}


def lower_train(config, mesh: Mesh):
  """The training step of ``config`` (its parallel form and global batch) over ``mesh``."""
  run = run_lib.Run(config)
  model, _, tx, _, trainer = train.build_trainer(run, mesh)
  size = geometry.input_hw(config.data.input_size)
  if run.is_video:  # UniPose-LSTM: clips of T frames, unrolled by the scan
    from unipose_jax import train_video  # noqa: PLC0415

    state = jax.eval_shape(
      lambda: train_video.create_video_train_state(model, tx, config.seed, size)
    )
    t = config.data.clip_length
    batch = {
      k: jax.ShapeDtypeStruct((v.shape[0], t) + v.shape[1:], v.dtype)
      for k, v in train_batch(config.batch_size, size, run.num_joints).items()
    }
    return trainer.lower(state, batch)
  state = jax.eval_shape(lambda: train.create_train_state(model, tx, config.seed, size))
  return trainer.lower(state, train_batch(config.batch_size, size, run.num_joints))


def lower_eval(config, mesh: Mesh):
  """The jitted evaluation step (every configured decoder, flip test as configured)."""
  run = run_lib.Run(config)
  model = run.model()
  size = geometry.input_hw(config.data.input_size)
  if run.is_video:
    return _lower_video_eval(run, model, config, mesh)
  variables = jax.eval_shape(
    functools.partial(model.init, train=False), jax.random.key(0),
    jax.ShapeDtypeStruct((1, *size, 3), jnp.float32),
  )  # fmt: skip
  repl, data = distributed.replicated(mesh), distributed.batch_sharded(mesh)
  variables = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl), variables
  )
  batch = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=data),
    eval_batch(config.eval_batch_size, size, run.keypoint_set),
  )
  return jax.jit(evaluate.eval_step_of(run, model)).lower(variables, batch)


def _lower_video_eval(run, model, config, mesh: Mesh):
  """The video evaluation's jitted step: one frame of ``eval_batch_size`` videos and the
  LSTM state (``evaluate_video.video_eval_step``)."""
  from unipose_jax import evaluate_video  # noqa: PLC0415
  from unipose_jax.models.unipose_lstm import initial_state  # noqa: PLC0415

  size, k, g = config.data.input_size, run.num_joints, config.eval_batch_size
  repl, data = distributed.replicated(mesh), distributed.batch_sharded(mesh)
  variables = jax.eval_shape(
    functools.partial(model.init, train=False), jax.random.key(0),
    jax.ShapeDtypeStruct((1, 1, size, size, 3), jnp.float32),
  )  # fmt: skip
  variables = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl), variables
  )
  state = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=data),
    jax.eval_shape(lambda: initial_state(g, size, size, k)),
  )
  shapes = {
    "image": ((g, size, size, 3), jnp.uint8), "inverse_affine": ((g, 2, 3), jnp.float32),
    "keypoints_orig": ((g, k, 2), jnp.float32), "visible": ((g, k), jnp.bool_),
    "box": ((g, 4), jnp.float32), "valid": ((g,), jnp.bool_),
  }  # fmt: skip
  frames = {n: jax.ShapeDtypeStruct(sh, dt, sharding=data) for n, (sh, dt) in shapes.items()}
  step = functools.partial(
    evaluate_video.video_eval_step, model=model, codec=run.codec, decodings=run.eval_decodings
  )
  return jax.jit(step).lower(variables, state, frames)


def reference_flops(config, step: str, per_device_batch: int) -> float:
  """FLOPs of one device's share of a step: the same step lowered for ONE local CPU device
  at the per-device batch (XLA's cost analysis of the lowered program; the optimiser
  update, done by every device, counted once)."""
  one = distributed.data_mesh(jax.local_devices(backend="cpu")[:1])
  if config.model.bn_sync.startswith("group"):  # one device's share: its group's work
    config = copy.deepcopy(config)
    config.model.bn_sync = "local"
  if step == "train":
    lowered = lower_train(with_batch(config, "jit", per_device_batch), one)
  else:
    lowered = lower_eval(with_batch(config, "jit", config.batch_size, per_device_batch), one)
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, list | tuple) else cost
  return float(cost["flops"])


def compile_timed(lowered) -> tuple[Any, float]:
  start = time.perf_counter()
  compiled = lowered.compile()
  return compiled, time.perf_counter() - start


def memory(compiled, target: Target) -> dict[str, Any]:
  """Per-device memory of a compiled program (bytes) against the device's."""
  m = compiled.memory_analysis()
  total = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
  total += m.temp_size_in_bytes + m.generated_code_size_in_bytes
  peak = int(getattr(m, "peak_memory_in_bytes", 0) or 0)
  chip = target.chip
  usable = int(chip.hbm_bytes * chip.usable_fraction)
  used = max(total, peak)
  return {
    "argument": m.argument_size_in_bytes,
    "output": m.output_size_in_bytes,
    "alias": m.alias_size_in_bytes,
    "temp": m.temp_size_in_bytes,
    "generated_code": m.generated_code_size_in_bytes,
    "total": total,
    "peak": peak,
    "device": chip.hbm_bytes,
    "usable": usable,
    "fits": used <= usable,
  }


def _compiled_cost(compiled) -> dict[str, float]:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 - a backend without a cost model
    return {}
  cost = cost[0] if isinstance(cost, list | tuple) and cost else cost
  if not cost:
    return {}
  keys = {"flops": "flops", "bytes accessed": "bytes_accessed", "optimal_seconds": "optimal_s"}
  return {new: float(cost[old]) for old, new in keys.items() if old in cost}


def analyse(compiled, compile_s: float, *, target: Target, step: str, parallelism: str,
            config, per_device_batch: int, flops: float) -> dict[str, Any]:  # fmt: skip
  """The report entry of one compiled program."""
  text = compiled.as_text()
  colls = hlo.collectives(text, target.num_chips)
  convs = hlo.convolutions(text)
  io_bytes = hlo.kernel_io_bytes(text)
  dtype = config.model.dtype
  return {
    "step": step,
    "parallelism": parallelism,
    "per_device_batch": per_device_batch,
    "global_batch": per_device_batch * target.num_chips,
    "compile_s": round(compile_s, 1),
    "memory": memory(compiled, target),
    "flops_per_device": flops,
    "gflop_per_image": flops / per_device_batch / 1e9,
    "hbm_bytes_per_device": io_bytes,
    "compiled_cost_analysis": _compiled_cost(compiled),
    "collectives": colls,
    "collectives_total": {
      "count": sum(c["count"] for c in colls.values()),
      "bytes": sum(c["bytes"] for c in colls.values()),
    },
    "convolutions": convs,
    "estimate": estimate.step_time(
      target.chip,
      dtype=dtype,
      flops=flops,
      hbm_bytes=io_bytes,
      collectives=colls,
      per_device_batch=per_device_batch,
      num_chips=target.num_chips,
    ),  # fmt: skip
  }
