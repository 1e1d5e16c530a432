"""Training: the train state, the optimiser, the data-parallel step and the loop.

The step is a pure module-level function. Two parallel forms run it:

* ``"jit"``: one ``jax.jit`` over a 1-D device mesh: the global batch is sharded
  along ``"data"``, the state replicated, and XLA inserts the collectives, so
  BatchNorm statistics and gradients are those of the global batch.
* ``"pmap"``: ``jax.pmap`` over the local devices with an explicit cross-device
  mean of the loss and gradients, and BatchNorm reducing its statistics over the
  same axis (``UniPose(bn_axis_name=...)``).

On the same global batch both give the update a single device computes (with
dropout off; the dropout masks of the two forms differ).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from unipose_jax import checkpoints, distributed, evaluate, input_pipeline, losses, transforms
from unipose_jax.codecs import HeatmapCodec
from unipose_jax.metric_writers import MetricWriter, Progress
from unipose_jax.models import normalize

PMAP_AXIS = "batch"


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data iterator.

  ``rng`` is a raw uint32 PRNG key (2,); the key of a step is ``fold_in(rng, step)``,
  so it never has to be advanced or saved separately.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array

  @property
  def variables(self) -> dict[str, Any]:
    return {"params": self.params, "batch_stats": self.batch_stats}


# ----------------------------------------------------------------------------- optimiser


def make_schedule(
  learning_rate: float,
  schedule: str,
  num_steps: int,
  decay_every: int,
  decay_factor: float,
  warmup_steps: int,
) -> optax.Schedule:
  """Learning rate per step: "step" (x decay_factor every decay_every), "cosine", "constant"."""
  if schedule == "step":
    return optax.exponential_decay(
      learning_rate, transition_steps=decay_every, decay_rate=decay_factor, staircase=True
    )
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
      0.0,
      learning_rate,
      warmup_steps=max(warmup_steps, 1),
      decay_steps=max(num_steps, warmup_steps + 1),
      end_value=learning_rate * 1e-2,
    )
  if schedule == "constant":
    return optax.constant_schedule(learning_rate)
  raise ValueError(
    f"unknown optimizer.schedule {schedule!r}; expected 'step', 'cosine' or 'constant'"
  )


def make_optimizer(
  cfg: ml_collections.ConfigDict, num_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation and its learning-rate schedule from ``config.optimizer``."""
  lr = make_schedule(
    cfg.learning_rate, cfg.schedule, num_steps, cfg.decay_every, cfg.decay_factor, cfg.warmup_steps
  )
  if cfg.name == "adam":
    tx = optax.adam(lr)
  elif cfg.name == "adamw":
    tx = optax.adamw(lr, weight_decay=cfg.weight_decay)
  elif cfg.name == "sgd":
    tx = optax.sgd(lr, momentum=cfg.momentum or None, nesterov=False)
  else:
    raise ValueError(f"unknown optimizer.name {cfg.name!r}; expected 'adam', 'adamw' or 'sgd'")
  if cfg.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, lr


def create_train_state(
  model, tx: optax.GradientTransformation, seed: int, input_size: int
) -> TrainState:
  """Initialise parameters (float32), batch statistics and optimiser state.

  Initialisation draws from an "rbg" key (its generator compiles several times faster
  than threefry for a network of hundreds of parameter tensors); the state's own key,
  used for dropout, is a raw threefry key derived from the same seed.
  """
  init_rng = jax.random.key(seed, impl="rbg")
  state_rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
  dummy = jnp.zeros((1, input_size, input_size, 3), jnp.float32)
  variables = jax.jit(functools.partial(model.init, train=False))(init_rng, dummy)
  params = variables["params"]
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get("batch_stats", {}),
    opt_state=tx.init(params),
    rng=state_rng,
  )


# ----------------------------------------------------------------------------- the step


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  model,
  tx,
  codec: HeatmapCodec,
  background_weight: float,
  axis_name: str | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on ``batch``.

  batch: ``image`` (B, S, S, 3) float32 normalised RGB, ``keypoints`` (B, K, 2) input
  pixels, ``weights`` (B, K). Targets are encoded here, on the device.
  With ``axis_name`` (pmap) the loss, gradients and metrics are averaged over it.
  """
  step_rng = jax.random.fold_in(state.rng, state.step)
  if axis_name is not None:
    step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
  targets, target_weights = codec.encode(batch["keypoints"], batch["weights"])

  def loss_fn(params):
    heatmaps, mutated = model.apply(
      {"params": params, "batch_stats": state.batch_stats},
      normalize(batch["image"], model.dtype),
      train=True,
      rngs={"dropout": step_rng},
      mutable=["batch_stats"],
    )
    loss = losses.heatmap_mse(
      heatmaps, targets, target_weights, background_weight=background_weight
    )
    return loss, mutated["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    loss = jax.lax.pmean(loss, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


class ParallelTrainer:
  """Runs ``train_step`` over every device in the configured form ("jit" or "pmap").

  ``step(state, local_batch)`` takes the canonical (replicated, global) state and this
  process's numpy batch; ``place(state)`` puts a host state where ``step`` wants it.
  For "pmap" the state is kept stacked over local devices between steps and
  ``canonical(state)`` returns the unstacked one for checkpoints and evaluation.
  """

  def __init__(self, parallelism: str, mesh, step_fn: Callable):
    if parallelism not in ("jit", "pmap"):
      raise ValueError(f"unknown parallelism {parallelism!r}; expected 'jit' or 'pmap'")
    if parallelism == "pmap" and jax.process_count() > 1:
      raise ValueError(
        f"parallelism='pmap' runs on one process only (this run has {jax.process_count()}); "
        "use the default parallelism='jit', whose mesh spans the devices of every process"
      )
    self.parallelism = parallelism
    self.mesh = mesh
    if parallelism == "jit":
      repl = distributed.replicated(mesh)
      self._step = jax.jit(step_fn, out_shardings=(repl, repl), donate_argnums=(0,))
    else:
      self._step = jax.pmap(
        functools.partial(step_fn, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS, donate_argnums=(0,)
      )

  def place(self, state: TrainState) -> TrainState:
    if self.parallelism == "jit":
      return distributed.replicate(state, self.mesh)
    # Stacked over local devices, placed as pmap places its own outputs (so the
    # first and later steps share one compilation).
    devices = jax.local_devices()
    stacked = NamedSharding(Mesh(np.asarray(devices), (PMAP_AXIS,)), PartitionSpec(PMAP_AXIS))
    return jax.tree.map(
      lambda x: jax.device_put(
        np.broadcast_to(np.asarray(x), (len(devices),) + np.shape(x)), stacked
      ),
      jax.device_get(state),
    )

  def canonical(self, state: TrainState) -> TrainState:
    if self.parallelism == "jit":
      return state
    return distributed.replicate(jax.tree.map(lambda x: x[0], state), self.mesh)

  def step(self, state: TrainState, local_batch: dict[str, np.ndarray]):
    if self.parallelism == "jit":
      return self._step(state, distributed.global_batch(local_batch, self.mesh))
    n = jax.local_device_count()
    split = jax.tree.map(lambda x: np.asarray(x).reshape((n, -1) + np.shape(x)[1:]), local_batch)
    state, metrics = self._step(state, split)
    return state, jax.tree.map(lambda x: x[0], metrics)


# ----------------------------------------------------------------------------- the loop

TRAIN_KEYS = ("image", "keypoints", "weights")


def build_trainer(config: ml_collections.ConfigDict, mesh, pmap_axis: bool | None = None):
  """Model, codec, optimiser and parallel trainer of a config (no data, no state)."""
  parallel = config.parallelism
  model = evaluate.build_model(config.model, bn_axis_name=PMAP_AXIS if parallel == "pmap" else None)
  codec = evaluate.build_codec(config)
  tx, lr_fn = make_optimizer(config.optimizer, config.num_train_steps)
  step_fn = functools.partial(
    train_step, model=model, tx=tx, codec=codec, background_weight=config.loss.background_weight
  )
  return model, codec, tx, lr_fn, ParallelTrainer(parallel, mesh, step_fn)


def make_train_iterator(
  config: ml_collections.ConfigDict,
  mesh,
  shard_index: int | None = None,
  shard_count: int | None = None,
):
  """This process's share of the training data: shard ``jax.process_index()`` of
  ``jax.process_count()``, ``batch_size / process_count`` examples a batch.

  ``shard_index`` / ``shard_count`` build another shard's iterator instead (tests build
  every shard in one process to reproduce a multi-process run's global batches).
  """
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  d = config.data
  if not (len(d.train_sources) == len(d.train_splits) == len(d.mixture_weights)):
    raise ValueError(
      "config.data.train_sources, train_splits and mixture_weights must have "
      f"the same length, got {d.train_sources}, {d.train_splits}, {d.mixture_weights}"
    )
  sources = [
    evaluate.load_source(name, split, d.data_dir)
    for name, split in zip(d.train_sources, d.train_splits)
  ]
  return input_pipeline.make_train_iterator(
    sources,
    mixture_weights=list(d.mixture_weights),
    batch_size=distributed.per_process_batch_size(config.batch_size, mesh, shard_count),
    input_size=d.input_size,
    seed=config.seed,
    shard_index=shard_index,
    shard_count=shard_count,
    worker_count=d.worker_count,
    augment=transforms.AugmentConfig(**d.augment.to_dict()),
  )


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  stop_after: int | None = None,
  devices: list[jax.Device] | None = None,
) -> dict[str, Any]:
  """Train for ``config.num_train_steps`` (resuming from ``workdir`` if it holds a
  checkpoint), evaluate every ``eval_every`` steps and at the end, and write the results.

  ``stop_after`` ends the run after that many steps of this invocation, as a kill
  would (the checkpoint of the last step is saved); used by tests and by pre-emption.
  ``devices`` restricts the mesh (default: every device of every process).
  Returns the final evaluation summary (``{decoder: {metric: value}}``), or {} when stopped early.
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = distributed.data_mesh(devices)
  model, codec, tx, lr_fn, trainer = build_trainer(config, mesh)
  host_state = create_train_state(model, tx, config.seed, config.data.input_size)
  if config.model.pretrained:
    from unipose_jax.models import load_torchvision_resnet  # pylint: disable=g-import-not-at-top

    variables = load_torchvision_resnet(config.model.pretrained, host_state.variables)
    host_state = host_state.replace(
      params=variables["params"], batch_stats=variables["batch_stats"]
    )
  state = distributed.replicate(host_state, mesh)
  train_iter = make_train_iterator(config, mesh)
  ckpt = checkpoints.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    max_to_keep=config.keep_checkpoints,
    best_metric=f"{config.codec.decoding}/pck@0.2",
  )
  writer = MetricWriter(workdir)
  try:
    return _train_loop(
      config,
      workdir,
      mesh,
      model,
      codec,
      lr_fn,
      trainer,
      state,
      train_iter,
      ckpt,
      writer,
      stop_after,
    )
  finally:
    ckpt.close()  # waits for a pending asynchronous save
    writer.close()


def _train_loop(
  config, workdir, mesh, model, codec, lr_fn, trainer, state, train_iter, ckpt, writer, stop_after
):
  first_step = 0
  if ckpt.latest_step() is not None:
    state, data_state, _ = ckpt.restore(target_state=state)
    train_iter.set_state(data_state)
    first_step = int(jax.device_get(state.step))
    _log(f"resumed from {workdir} at step {first_step}")
  state = trainer.place(state)

  total = config.num_train_steps
  progress = Progress(total, config.batch_size, first_step=first_step, every=config.log_every)
  evaluator = evaluate.Evaluator(config, model, codec, mesh)
  summary: dict[str, Any] = {}
  step = first_step
  with checkpoints.PreemptionGuard() as guard:
    while step < total:
      local = next(train_iter)
      state, metrics = trainer.step(state, {k: local[k] for k in TRAIN_KEYS})
      step += 1
      if step % config.log_every == 0 or step == total:
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        scalars["learning_rate"] = float(lr_fn(step - 1))
        scalars["images_per_s"] = progress.rate(step)
        progress.update(step, {"loss": scalars["loss"]}, force=True)
        writer.write_scalars(step, scalars)
      eval_now = step == total or (config.eval_every > 0 and step % config.eval_every == 0)
      stopped_by_signal = guard.should_stop_any_process()
      stop_now = stopped_by_signal or (stop_after is not None and step - first_step >= stop_after)
      eval_metrics = None
      if eval_now:
        final = step == total
        summary = evaluator.run(
          trainer.canonical(state).variables,
          os.path.join(workdir, "eval", f"step_{step}"),
          write_files=final,
        )
        eval_metrics = {
          f"{dec}/{k}": v
          for dec, res in summary.items()
          for k, v in res.items()
          if k in SUMMARY_METRICS
        }
        writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
        if final:
          evaluate.write_final_summary(workdir, summary)
      if eval_now or stop_now or step % config.checkpoint_every == 0:
        ckpt.save(
          step, trainer.canonical(state), train_iter.get_state(), metrics=eval_metrics, force=True
        )
      if stop_now:
        why = "a stop signal" if stopped_by_signal else f"--stop_after={stop_after}"
        _log(f"stopped at step {step} by {why}; checkpoint saved in {workdir}")
        return {}
  return summary


SUMMARY_METRICS = ("pck@0.2", "pck@0.1", "pck@0.05", "auc@0.2", "pckh@0.5")


def _log(msg: str) -> None:
  if distributed.is_primary():
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
