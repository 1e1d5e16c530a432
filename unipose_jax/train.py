"""Training: the train state, the optimiser, the data-parallel step and the loop.

The step is a pure module-level function. Two parallel forms run it:

* ``"jit"``: one ``jax.jit`` over a 1-D device mesh: the global batch is sharded
  along ``"data"``, the state replicated, and XLA inserts the collectives, so
  BatchNorm statistics and gradients are those of the global batch.
* ``"pmap"``: ``jax.pmap`` over the local devices with an explicit cross-device
  mean of the loss and gradients, and BatchNorm reducing its statistics over the
  same axis (``UniPose(bn_sync=...)``). The state stays stacked on the devices
  between steps; it is unstacked (on the devices) only to save or evaluate.

On the same global batch both give the update a single device computes (with
dropout off; the dropout masks of the two forms differ). That is ``model.bn_sync="global"``;
"local" and "group:N" give each device (group of N devices) its own BatchNorm statistics
(``parallel.batch_norm_sync``), and the running statistics are their average.

Batches travel as uint8 and are normalised inside the step; the next two global
batches are put on the mesh while a step runs (``distributed.prefetch_to_mesh``).
Nothing waits for the device between log, stop-check and checkpoint steps.

Stopping: SIGTERM/SIGINT set a flag (``preemption.PreemptionGuard``) that the processes
agree on every ``config.stop_check_every`` steps; the run then saves a checkpoint and
raises ``preemption.Preempted`` (``launch.py`` exits with 143).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from unipose_jax import (
  calibrate,
  checkpoints,
  distributed,
  evaluate,
  input_pipeline,
  losses,
  reports,
  run_config,
  skeleton,
  transforms,
)
from unipose_jax import run as run_lib
from unipose_jax.codecs import HeatmapCodec
from unipose_jax.codecs import box as box_lib
from unipose_jax.metric_writers import MetricWriter, ReportProgress
from unipose_jax.models import normalize
from unipose_jax.parallel import ParallelTrainer, batch_norm_sync
from unipose_jax.preemption import Preempted, PreemptionGuard


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data iterator.

  ``rng`` is a raw uint32 PRNG key (2,); the key of a step is ``fold_in(rng, step)``.
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


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int):
  """``(optax transformation, learning-rate schedule)`` of ``config.optimizer``."""
  if cfg.schedule == "step":
    lr = optax.exponential_decay(
      cfg.learning_rate, cfg.decay_every, cfg.decay_factor, staircase=True
    )  # x decay_factor at every multiple of decay_every (not a smooth decay)
  elif cfg.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(
      0.0, cfg.learning_rate, max(cfg.warmup_steps, 1), max(num_steps, cfg.warmup_steps + 1),
      end_value=cfg.learning_rate * 1e-2,
    )  # fmt: skip
  else:
    lr = optax.constant_schedule(cfg.learning_rate)
  tx = {
    "adam": lambda: optax.adam(lr),
    "adamw": lambda: optax.adamw(lr, weight_decay=cfg.weight_decay),
    "sgd": lambda: optax.sgd(lr, momentum=cfg.momentum or None),
  }[cfg.name]()
  if cfg.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, lr


def create_train_state(model, tx, seed: int, input_size: int, variables=None) -> TrainState:
  """Parameters (float32), batch statistics and optimiser state; ``variables`` (e.g.
  imported weights) replace the initialisation.

  Initialisation draws from an "rbg" key (it compiles several times faster than
  threefry for hundreds of tensors); the state's own key, for dropout, is a raw
  threefry key derived from the same seed.
  """
  if variables is None:
    dummy = jnp.zeros((1, input_size, input_size, 3), jnp.float32)
    init = jax.jit(functools.partial(model.init, train=False))
    variables = init(jax.random.key(seed, impl="rbg"), dummy)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables["params"],
    batch_stats=variables.get("batch_stats", {}),
    opt_state=tx.init(variables["params"]),
    rng=jax.random.fold_in(jax.random.PRNGKey(seed), 1),
  )


def initial_variables(config, model, tx) -> TrainState:
  """The state a new run starts from: random, a torchvision backbone, or an original
  UniPose checkpoint (``model.pretrained`` / ``model.init_from``)."""
  state = create_train_state(model, tx, config.seed, config.data.input_size)
  if not (config.model.pretrained or config.model.init_from):
    return state
  from unipose_jax import models  # noqa: PLC0415

  variables = jax.device_get(state.variables)
  if config.model.pretrained:
    variables = models.load_torchvision_resnet(config.model.pretrained, variables)
  if config.model.init_from:
    variables, report = models.load_original_unipose(config.model.init_from, variables)
    _log(f"initialised from {config.model.init_from}: {report}")
  return create_train_state(model, tx, config.seed, config.data.input_size, variables)


# ----------------------------------------------------------------------------- the step


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  model,
  tx,
  codec: HeatmapCodec,
  background_weight: float,
  box_weight: float = 0.0,
  box_margin: float = 0.0,
  axis_name: str | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step.

  batch: ``image`` (B, S, S, 3) uint8 RGB, ``keypoints`` (B, K, 2) input pixels,
  ``weights`` (B, K). Normalisation and targets happen here, on the device. With a box
  head (``model.box_head``) the 5 box points of the labeled joints' extent are encoded
  by the same codec and their MSE is added with ``box_weight``. With ``axis_name``
  (pmap) the loss, gradients and metrics are averaged over it.
  """
  step_rng = jax.random.fold_in(state.rng, state.step)
  if axis_name is not None:
    step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
  targets, target_weights = codec.encode(batch["keypoints"], batch["weights"])
  if model.box_head:
    points, point_weights = box_lib.box_targets(batch["keypoints"], batch["weights"], box_margin)
    box_targets, box_weights = codec.encode(points, point_weights)

  def loss_fn(params):
    heatmaps, mutated = model.apply(
      {"params": params, "batch_stats": state.batch_stats},
      normalize(batch["image"], model.dtype),
      train=True,
      rngs={"dropout": step_rng},
      mutable=["batch_stats"],
    )
    background, joints, box = skeleton.split_maps(heatmaps)
    pred = jnp.concatenate([background, joints], axis=-1)
    loss = losses.heatmap_mse(pred, targets, target_weights, background_weight)
    if model.box_head:
      loss += box_weight * losses.weighted_mse(box, box_targets, box_weights)
    return loss, mutated["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    loss = jax.lax.pmean(loss, axis_name)
    if not (model.bn_sync and model.bn_sync.all_devices):  # local/grouped BatchNorm
      batch_stats = jax.lax.pmean(batch_stats, axis_name)  # one set of running statistics
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    batch_stats=batch_stats,
    opt_state=opt_state,
  )
  return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


# ----------------------------------------------------------------------------- the loop


def build_trainer(config: ml_collections.ConfigDict, mesh):
  """Model, codec, optimiser, learning-rate schedule and parallel trainer of a config."""
  run = run_lib.Run(config)
  sync = batch_norm_sync(config.model.bn_sync, config.parallelism, mesh.devices.size)
  model = run.model(bn_sync=sync)
  tx, lr_fn = make_optimizer(config.optimizer, config.num_train_steps)
  step_fn = functools.partial(
    train_step, model=model, tx=tx, codec=run.codec,
    background_weight=config.loss.background_weight,
    box_weight=config.loss.box_weight, box_margin=config.model.box_margin,
  )  # fmt: skip
  return model, run.codec, tx, lr_fn, ParallelTrainer(config.parallelism, mesh, step_fn)


def make_train_iterator(config, mesh, shard_index: int | None = None, shard_count=None):
  """This process's share of the training data (shard ``jax.process_index()`` of
  ``jax.process_count()``); another shard's with ``shard_index``/``shard_count`` (tests)."""
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  d = config.data
  return input_pipeline.make_train_iterator(
    [run_lib.data_source(n, s, d.data_dir) for n, s in zip(d.train_sources, d.train_splits)],
    mixture_weights=list(d.mixture_weights),
    batch_size=distributed.per_process_batch_size(config.batch_size, mesh, shard_count),
    input_size=d.input_size,
    seed=config.seed,
    shard_index=shard_index,
    shard_count=shard_count,
    worker_count=d.worker_count,
    augment=transforms.AugmentConfig(**d.augment.to_dict()),
  )


def train_and_evaluate(config, workdir: str, stop_after: int | None = None, devices=None):
  """Train for ``config.num_train_steps`` (resuming from ``workdir``'s newest intact
  checkpoint), evaluate every ``eval_every`` steps and at the end, write the results.

  ``stop_after`` ends this invocation after that many steps, with a checkpoint (as a
  kill would). ``devices`` restricts the mesh. Returns the final evaluation summary
  (``{decoder: {metric: value}}``), {} after ``stop_after``; raises :class:`Preempted`
  after a stop signal, :class:`checkpoints.WorkdirLockedError` when another trainer
  holds the workdir, :class:`run_config.ConfigError` on a bad config.
  """
  run_config.validate(config)
  os.makedirs(workdir, exist_ok=True)
  lock = checkpoints.WorkdirLock(workdir).acquire() if distributed.is_primary() else None
  try:
    saved = run_config.load(workdir)
    if saved is not None:
      run_config.check_matches(config, saved, workdir)
    run = run_lib.Run(config, workdir)  # this config names the best-checkpoint metric
    if distributed.is_primary():
      run_config.save(run.resolved_config(), workdir)
    summary = _train(run, stop_after, distributed.data_mesh(devices))
    if distributed.is_primary():
      calibrate.after_training(run)  # person presence of a finished run
    return summary
  finally:
    if lock is not None:
      lock.release()


def _train(run: run_lib.Run, stop_after, mesh):
  config, workdir = run.config, run.workdir
  model, _, tx, lr_fn, trainer = build_trainer(config, mesh)
  state = distributed.replicate(initial_variables(config, model, tx), mesh)
  train_iter = make_train_iterator(config, mesh)
  ckpt = run.checkpointer(max_to_keep=config.keep_checkpoints)
  first_step = 0
  with contextlib.ExitStack() as stack:
    stack.callback(ckpt.close)  # waits for a pending asynchronous save
    if ckpt.all_steps():
      restored = ckpt.restore(target=state)
      state, first_step = restored.state, restored.step
      train_iter.set_state(restored.data_state)
      _log(f"resumed from {workdir} at step {first_step}")
    writer = MetricWriter(workdir, resume_step=first_step if first_step else None)
    stack.callback(writer.close)
    guard = stack.enter_context(PreemptionGuard())
    evaluator = evaluate.Evaluator.from_run(run, mesh, model)
    return _loop(
      trainer.place(state), first_step, config=config, workdir=workdir, trainer=trainer,
      batches=trainer.batches(train_iter), lr_fn=lr_fn, ckpt=ckpt, writer=writer,
      evaluator=evaluator, stop_after=stop_after, guard=guard,
    )  # fmt: skip


def _loop(
  state, first_step: int, *, config, workdir, trainer, batches, lr_fn, ckpt, writer, evaluator,
  stop_after, guard,
) -> dict:  # fmt: skip
  """The step loop of one invocation (the state lives on the devices throughout).

  Every ``log_every`` steps the mean loss and gradient norm since the last row and
  ``learning_rate`` (the schedule's rate of the last update, ``lr_fn(step - 1)``) go to
  the writer; evaluation, checkpoints and stop checks follow the config.
  """
  c, step, summary, metrics = config, first_step, {}, None
  total = c.num_train_steps
  progress = ReportProgress(
    num_train_steps=total, images_per_step=c.batch_size, every_steps=c.log_every, writer=writer
  )
  progress(first_step)
  while step < total:
    state, m = trainer.step(state, next(batches))
    metrics = m if metrics is None else metrics.merge(m)
    step += 1
    ckpt.check()  # a failed background save stops the run now
    if step % c.log_every == 0 or step == total:
      scalars = {k: float(v) for k, v in metrics.compute().items()}
      scalars["learning_rate"] = float(lr_fn(step - 1))
      metrics = None
      progress.extra = {"loss": scalars["loss"], "lr": scalars["learning_rate"]}
      writer.write_scalars(step, scalars)
    progress(step)
    signalled = (step % c.stop_check_every == 0 or step == total) and distributed.any_process(
      guard.should_stop
    )
    stop = signalled or (stop_after is not None and step - first_step >= stop_after)
    eval_now = step == total or (c.eval_every > 0 and step % c.eval_every == 0)
    canonical, eval_metrics = None, None
    if eval_now:
      canonical = trainer.canonical(state)
      summary = _evaluate(evaluator, writer, canonical, workdir, step, final=step == total)
      eval_metrics = _flat(summary)
    if eval_now or stop or step % c.checkpoint_every == 0:
      canonical = canonical or trainer.canonical(state)
      ckpt.save(step, canonical, batches.get_state(), metrics=eval_metrics)
    if stop:
      ckpt.wait()
      why = "a stop signal" if signalled else f"--stop_after={stop_after}"
      _log(f"stopped at step {step} by {why}; checkpoint saved in {workdir}")
      if signalled:
        raise Preempted(f"stopped at step {step}/{total} by a signal; resume with the same command")
      return {}
  return summary


#: Evaluation metrics logged to TensorBoard / metrics.jsonl and saved with a checkpoint.
SUMMARY = ("pck@0.2", "pck@0.1", "pck@0.05", "auc@0.2", "pckh@0.5", "box_iou", "box_iou>=0.5")


def _flat(summary: dict) -> dict[str, float]:
  """``{"<decoder>/<metric>": value}`` of the :data:`SUMMARY` metrics."""
  return {f"{dec}/{k}": v for dec, res in summary.items() for k, v in res.items() if k in SUMMARY}


def _evaluate(evaluator, writer, state, workdir: str, step: int, final: bool) -> dict:
  """Evaluate at ``step``: ``eval/step_<step>/`` (every file when ``final``, else the
  metrics), the scalars, and at the end the run's ``eval_metrics.json``."""
  result = evaluator.run(state.variables, examples=final)
  reports.write_eval(os.path.join(workdir, "eval", f"step_{step}"), result, all_files=final)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in _flat(result.summary).items()})
  if final:
    reports.write_final_summary(workdir, result.summary)
  return result.summary


def _log(msg: str) -> None:
  if distributed.is_primary():
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
