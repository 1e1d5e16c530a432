"""Training: the train state, the optimiser, the data-parallel step, and what the loop
(``train_loop.py``) runs.

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
raises ``preemption.Preempted`` (``launch.py`` exits with 143 after SIGTERM, 130 after
SIGINT). A weights file (``model.init_from`` / ``pretrained``) only initialises a new run:
a run that resumes says in one line that it does not read it.
"""

from __future__ import annotations

import contextlib
import functools
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
  files,
  geometry,
  input_pipeline,
  keypoint_sets,
  losses,
  preemption,
  run_config,
  skeleton,
  train_loop,
  train_video,
)
from unipose_jax import run as run_lib
from unipose_jax.codecs import HeatmapCodec
from unipose_jax.codecs import box as box_lib
from unipose_jax.metric_writers import MetricWriter
from unipose_jax.models import normalize
from unipose_jax.parallel import ParallelTrainer, apply_gradients, batch_norm_sync
from unipose_jax.preemption import Preempted, PreemptionGuard  # noqa: F401 (the API)
from unipose_jax.train_loop import NonFiniteError  # noqa: F401 (the API)


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
  if cfg.schedule == "step" and tuple(cfg.decay_steps):
    lr = optax.piecewise_constant_schedule(
      cfg.learning_rate, {int(s): cfg.decay_factor for s in cfg.decay_steps}
    )  # x decay_factor from each listed step on (optax: the step itself has the new rate)
  elif cfg.schedule == "step":
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


def create_train_state(model, tx, seed: int, input_size, variables=None) -> TrainState:
  """Parameters (float32), batch statistics and optimiser state; ``variables`` (e.g.
  imported weights) replace the initialisation. ``input_size``: ``S`` or ``(H, W)``.

  Initialisation draws from an "rbg" key (it compiles several times faster than
  threefry for hundreds of tensors); the state's own key, for dropout, is a raw
  threefry key derived from the same seed.
  """
  if variables is None:
    dummy = jnp.zeros((1, *geometry.input_hw(input_size, "input_size"), 3), jnp.float32)
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

  batch: ``image`` (B, H_in, W_in, 3) uint8 RGB, ``keypoints`` (B, K, 2) input pixels,
  ``weights`` (B, K). Normalisation and targets happen here, on the device. With a box
  head (``model.box_head``) the 5 box points of the labeled joints' extent are encoded
  by the same codec and their MSE is added with ``box_weight``. With ``axis_name``
  (pmap) the loss, gradients and metrics are averaged over it.
  """
  step_rng = jax.random.fold_in(state.rng, state.step)
  if axis_name is not None:
    step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
  targets, target_weights = codec.encode(batch["keypoints"], batch["weights"])
  num_joints = batch["keypoints"].shape[1]
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
    background, joints, box = skeleton.split_maps(heatmaps, num_joints=num_joints)
    pred = jnp.concatenate([background, joints], axis=-1)
    loss = losses.heatmap_mse(pred, targets, target_weights, background_weight)
    if model.box_head:
      loss += box_weight * losses.weighted_mse(box, box_targets, box_weights)
    return loss, mutated["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return apply_gradients(state, tx, model, loss, batch_stats, grads, axis_name)


# ----------------------------------------------------------------------------- the loop


def _as_run(run_or_config) -> run_lib.Run:
  return run_or_config if isinstance(run_or_config, run_lib.Run) else run_lib.Run(run_or_config)


def build_trainer(run: run_lib.Run | ml_collections.ConfigDict, mesh):
  """Model, codec, optimiser, learning-rate schedule and parallel trainer of a run (or of
  a config: its own ``Run``)."""
  run = _as_run(run)
  if train_video.is_video(run.config):
    return train_video.build_video_trainer(run, mesh)
  config = run.config
  sync = batch_norm_sync(config.model.bn_sync, config.parallelism, mesh.devices.size)
  model = run.model(bn_sync=sync)
  tx, lr_fn = make_optimizer(config.optimizer, config.num_train_steps)
  step_fn = functools.partial(
    train_step, model=model, tx=tx, codec=run.codec,
    background_weight=config.loss.background_weight,
    box_weight=config.loss.box_weight, box_margin=config.model.box_margin,
  )  # fmt: skip
  return model, run.codec, tx, lr_fn, ParallelTrainer(config.parallelism, mesh, step_fn)


def make_train_iterator(run, mesh, shard_index: int | None = None, shard_count=None):
  """This process's share of the training data of a run (or of a config: its own ``Run``)
  (shard ``jax.process_index()`` of ``jax.process_count()``); another shard's with
  ``shard_index``/``shard_count`` (tests). Flips relabel joints by the run's keypoint
  set; a set without flip pairs trains without flips (said once)."""
  run = _as_run(run)
  if train_video.is_video(run.config):
    return train_video.make_clip_iterator(run, mesh, shard_index, shard_count)
  config = run.config
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  d = config.data
  augment = run.augment_config()
  return input_pipeline.make_train_iterator(
    run.train_sources,
    mixture_weights=list(d.mixture_weights),
    batch_size=distributed.per_process_batch_size(config.batch_size, mesh, shard_count),
    input_size=d.input_size,
    seed=config.seed,
    shard_index=shard_index,
    shard_count=shard_count,
    worker_count=d.worker_count,
    augment=augment,
    flip_permutation=run.flip_permutation,
    crop=run.train_crop,
  )


def train_and_evaluate(config, workdir: str, stop_after: int | None = None, devices=None):
  """Train for ``config.num_train_steps`` (resuming from ``workdir``'s newest intact
  checkpoint), evaluate every ``eval_every`` steps and at the end, write the results.

  ``stop_after`` ends this invocation after that many steps, with a checkpoint (as a
  kill would). ``devices`` restricts the mesh. Returns the final evaluation summary
  (``{decoder: {metric: value}}``), {} after ``stop_after``; raises :class:`Preempted`
  after a stop signal, :class:`checkpoints.WorkdirLockedError` when another trainer
  holds the workdir, :class:`run_config.ConfigError` on a bad config,
  :class:`NonFiniteError` when the loss stops being finite, and
  :class:`evaluate.EvaluationError` when training finished but its final evaluation failed.
  """
  return train_run(run_lib.Run(config, workdir), stop_after=stop_after, devices=devices)


def train_run(run: run_lib.Run, stop_after: int | None = None, devices=None):
  """:func:`train_and_evaluate` of a ``run.Run`` (the command's one ``Run``: its model,
  codec, keypoint set and data sources serve training, evaluation and calibration)."""
  config, workdir = run.config, run.workdir
  run_config.validate(config)
  files.check_writable(workdir, "the work directory")
  lock = checkpoints.WorkdirLock(workdir).acquire() if distributed.is_primary() else None
  try:
    saved = run_config.load(workdir)
    if saved is not None:
      run_config.check_matches(config, saved, workdir)
      _check_same_set(run, saved, workdir)
    # This config names the best-checkpoint metric; the saved run's keypoint set is kept.
    run.saved = None
    finished = calibrate.finished_note(run, saved)
    if finished is not None:  # evaluated and calibrated: no 25 s calibration again
      _log(finished)
      return {}
    if distributed.is_primary():
      run_config.save(run.resolved_config(), workdir)
    summary = _train(run, stop_after, distributed.data_mesh(devices))
    if distributed.is_primary() and not train_video.is_video(config):
      calibrate.after_training(run)  # person presence of a finished run (images only)
    return summary
  finally:
    if lock is not None:
      lock.release()


def _check_same_set(run: run_lib.Run, saved, workdir: str) -> None:
  """A resumed run keeps its keypoint set: refuse training sources (or ``data.flip_pairs``)
  that resolve to another one (a run saved before sets is LSP)."""
  theirs = run_config.stored_keypoint_set(saved) or keypoint_sets.LSP
  if run_config.stored_keypoint_set(run.config) is None:
    run.config = ml_collections.ConfigDict(run.config.to_dict())
    run.config[run_config.KEYPOINTS_SECTION] = run_config.keypoint_section(theirs)
  ours = run_lib.resolve_keypoint_set(run.config)
  if (ours.joint_names, ours.flip_pairs) != (theirs.joint_names, theirs.flip_pairs):
    raise run_config.ConfigError(
      f"the run in {workdir} trained on keypoint set {theirs.name!r} ({theirs.num_joints} "
      f"joints), this config's data.train_sources / data.flip_pairs give {ours.name!r} "
      f"({ours.num_joints} joints); a new set needs a new --workdir"
    )


def _train(run: run_lib.Run, stop_after, mesh):
  config, workdir = run.config, run.workdir
  model, _, tx, lr_fn, trainer = build_trainer(run, mesh)
  with contextlib.ExitStack() as stack:
    guard = preemption.active() or stack.enter_context(PreemptionGuard())
    stack.enter_context(guard.deferring())  # until the checkpoint below is committed
    ckpt = run.checkpointer(max_to_keep=config.keep_checkpoints)
    stack.callback(ckpt.close)  # waits for a pending asynchronous save
    state, data_state, first_step = _initial_state(run, model, tx, mesh, ckpt)
    train_iter = make_train_iterator(run, mesh)
    if first_step:
      train_iter.set_state(data_state)
      _log(f"resumed from {workdir} at step {first_step}")
    writer = MetricWriter(workdir, resume_step=first_step if first_step else None)
    stack.callback(writer.close)
    if train_video.is_video(config):
      from unipose_jax import evaluate_video  # noqa: PLC0415

      evaluator = evaluate_video.VideoEvaluator.from_run(run, mesh, model)
    else:
      evaluator = evaluate.Evaluator.from_run(run, mesh, model)
    guard.check("training, before its first step; nothing new to save")
    return train_loop.run(
      trainer.place(state), first_step, config=config, workdir=workdir, trainer=trainer,
      batches=trainer.batches(train_iter), lr_fn=lr_fn, ckpt=ckpt, writer=writer,
      evaluator=evaluator, stop_after=stop_after, guard=guard,
    )  # fmt: skip


def _initial_state(run, model, tx, mesh, ckpt):
  """``(state, None, 0)`` of a new run (``model.pretrained`` / ``init_from`` applied), or
  ``(state, data_state, step)`` restored from the newest intact checkpoint; a weights
  file named by the config is then not read, and one line says so."""
  config = run.config
  video = train_video.is_video(config)
  if not ckpt.all_steps():
    first = (
      train_video.initial_video_state(run, model, tx)
      if video
      else initial_variables(config, model, tx)
    )
    return distributed.replicate(first, mesh), None, 0
  create = train_video.create_video_train_state if video else create_train_state
  template = create(model, tx, config.seed, config.data.input_size)
  restored = ckpt.restore(target=distributed.replicate(template, mesh))
  for key in ("init_from", "pretrained"):
    if config.model[key]:
      _log(
        f"note: --config.model.{key}={config.model[key]} is not used: the run resumes from "
        f"checkpoint {restored.step} (it only initialises a new run; use a new --workdir)"
      )
  return restored.state, restored.data_state, restored.step


def _log(msg: str) -> None:
  if distributed.is_primary():
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
