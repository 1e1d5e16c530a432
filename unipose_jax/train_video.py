"""Training UniPose-LSTM (``model.arch="unipose_lstm"``) on clips: what ``train.py`` runs
instead of its image parts for a video config.

* Data: :func:`make_clip_iterator`, clips of ``data.clip_length`` (T) consecutive frames of
  the run's one training source (a video dataset such as ``penn_action``), one
  augmentation per clip (``clip_pipeline``); batches ``image`` (B, T, S, S, 3) uint8,
  ``keypoints`` (B, T, K, 2) input pixels, ``weights`` (B, T, K). The source's
  ``(video_id, frame)`` come from its cheap metadata read (``PoseDataSource.metadata``:
  no image is decoded) when it has one. The iterator's state is checkpointed and resumed
  exactly, as the image pipeline's.
* The step: :func:`clip_train_step`, the loss the SUM over the T frames of the per-frame
  heatmap MSE (``losses.heatmap_mse`` of each frame's (B, h, w, K + 1) maps), the clip
  unrolled by the model's ``nn.scan``. Same parallel forms (jit / pmap) and dtypes as images.
* Initialisation (:func:`initial_video_state`): random, or ``model.init_from``:
  a ``.pth`` of the original UniPose-LSTM (``models.load_original_unipose_lstm``), or the
  work directory of a single-frame run (``model.arch="unipose"``), whose trained network
  becomes the trunk (the natural recipe: train per frame, then the LSTM); the recurrent
  stage starts random. A video run's folder is refused there (it is not a trunk).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unipose_jax import checkpoints, clip_pipeline, distributed, losses, run_config
from unipose_jax.codecs import HeatmapCodec
from unipose_jax.models import normalize
from unipose_jax.parallel import ParallelTrainer, apply_gradients, batch_norm_sync

ARCH = "unipose_lstm"


def is_video(config) -> bool:
  """Whether ``config`` describes UniPose-LSTM (``model.arch="unipose_lstm"``)."""
  return config.model.get("arch", "unipose") == ARCH


def is_video_variables(variables) -> bool:
  """Whether model variables are a ``UniPoseLSTM``'s (``params/trunk`` and
  ``params/recurrent``) rather than a single-frame ``UniPose``'s."""
  params = variables.get("params", {})
  return "trunk" in params and "recurrent" in params


def check_kind(variables, *, video: bool, what: str) -> None:
  """Refuse variables of the other kind in one line (``checkpoints.CheckpointError``):
  ``what`` names where they came from."""
  if is_video_variables(variables) != video:
    have, want = ("a UniPose-LSTM", "a single-frame UniPose") if not video else (
      "a single-frame UniPose", "a UniPose-LSTM")  # fmt: skip
    raise checkpoints.CheckpointError(
      f"{what} holds {have} network, this run needs {want} one (model.arch="
      f"{ARCH if video else 'unipose'}); evaluate it with its own config or use another workdir"
    )


# ----------------------------------------------------------------------------- the step


def clip_train_step(
  state,
  batch: dict[str, jax.Array],
  *,
  model,
  tx,
  codec: HeatmapCodec,
  background_weight: float,
  axis_name: str | None = None,
):
  """One optimisation step on a batch of clips.

  batch: ``image`` (B, T, S, S, 3) uint8 RGB, ``keypoints`` (B, T, K, 2) input pixels,
  ``weights`` (B, T, K). Loss: ``sum_t heatmap_mse(pred[:, t], target[:, t])`` (each
  frame's mean over B, h, w, K + 1, as the image loss). With ``axis_name`` (pmap) the
  loss, gradients and BatchNorm statistics are averaged over it.
  """
  step_rng = jax.random.fold_in(state.rng, state.step)
  if axis_name is not None:
    step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
  targets, target_weights = codec.encode(batch["keypoints"], batch["weights"])  # (B,T,h,w,K)
  t = batch["image"].shape[1]

  def loss_fn(params):
    heatmaps, mutated = model.apply(
      {"params": params, "batch_stats": state.batch_stats},
      normalize(batch["image"], model.dtype),
      train=True,
      rngs={"dropout": step_rng},
      mutable=["batch_stats"],
    )
    loss = sum(
      losses.heatmap_mse(heatmaps[:, i], targets[:, i], target_weights[:, i], background_weight)
      for i in range(t)
    )
    return loss, mutated["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return apply_gradients(state, tx, model, loss, batch_stats, grads, axis_name)


def build_video_trainer(run, mesh):
  """``(model, codec, tx, lr_fn, ParallelTrainer)`` of a video run (``train.build_trainer``'s
  counterpart)."""
  from unipose_jax import train  # noqa: PLC0415 (train imports this module)

  config = run.config
  sync = batch_norm_sync(config.model.bn_sync, config.parallelism, mesh.devices.size)
  model = run.model(bn_sync=sync)
  tx, lr_fn = train.make_optimizer(config.optimizer, config.num_train_steps)
  step_fn = functools.partial(
    clip_train_step, model=model, tx=tx, codec=run.codec,
    background_weight=config.loss.background_weight,
  )  # fmt: skip
  return model, run.codec, tx, lr_fn, ParallelTrainer(config.parallelism, mesh, step_fn)


# ----------------------------------------------------------------------------- initialisation


def init_variables(model, seed: int, input_size: int) -> dict[str, Any]:
  """Random variables of a ``UniPoseLSTM`` (one frame of ``input_size``^2 initialises them:
  the parameters do not depend on T)."""
  dummy = jnp.zeros((1, 1, input_size, input_size, 3), jnp.float32)
  init = jax.jit(functools.partial(model.init, train=False))
  return init(jax.random.key(seed, impl="rbg"), dummy)


def create_video_train_state(model, tx, seed: int, input_size: int, variables=None):
  """``train.TrainState`` of a video model (``variables`` replace the initialisation)."""
  from unipose_jax import train  # noqa: PLC0415

  if variables is None:
    variables = init_variables(model, seed, input_size)
  return train.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables["params"],
    batch_stats=variables.get("batch_stats", {}),
    opt_state=tx.init(variables["params"]),
    rng=jax.random.fold_in(jax.random.PRNGKey(seed), 1),
  )


def trunk_from_single_frame(variables, image_variables, source: str):
  """``variables`` of a ``UniPoseLSTM`` (host arrays) with the trunk replaced by a
  single-frame ``UniPose``'s ``image_variables``; returns ``(variables, report)``.

  Every trunk array must exist in ``image_variables`` with the same shape (else
  ``run_config.ConfigError`` naming the first ones); arrays of the image network the
  trunk has not (the image WASP's pooling BatchNorm when ``model.video_wasp``) are left
  out and counted in the report.
  """
  out = jax.tree.map(np.asarray, variables)
  used, unused, problems = 0, 0, []
  for collection in ("params", "batch_stats"):
    trunk = out.get(collection, {}).get("trunk")
    if trunk is None:
      continue
    flat_theirs = dict(_flatten(image_variables.get(collection, {})))
    new = {}
    for path, value in _flatten(trunk):
      theirs = flat_theirs.pop(path, None)
      if theirs is None:
        problems.append(f"{collection}/{'/'.join(path)} missing")
      elif tuple(theirs.shape) != tuple(value.shape):
        problems.append(
          f"{collection}/{'/'.join(path)} is {tuple(theirs.shape)}, the trunk's {tuple(value.shape)}"
        )
      else:
        new[path] = np.asarray(theirs, value.dtype)
        used += 1
    unused += len(flat_theirs)
    out[collection]["trunk"] = _unflatten(new)
  if problems:
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    raise run_config.ConfigError(
      f"model.init_from={source}: its network does not fit this run's trunk: "
      f"{'; '.join(problems[:3])}{more} (same backbone, WASP and decoder keys needed)"
    )
  return out, f"trunk: {used} arrays from the single-frame run ({unused} of its arrays unused)"


def _flatten(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, dict) or hasattr(v, "items"):
      yield from _flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def _unflatten(flat: dict) -> dict:
  out: dict = {}
  for path, value in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return out


def initial_video_state(run, model, tx):
  """The state a new video run starts from: random, or ``model.init_from`` (module doc)."""
  from unipose_jax import run as run_lib  # noqa: PLC0415

  config = run.config
  state = create_video_train_state(model, tx, config.seed, config.data.input_size)
  source = config.model.init_from
  if config.model.pretrained:
    raise run_config.ConfigError(
      "model.pretrained: a torchvision backbone initialises single-frame runs only; for "
      "UniPose-LSTM train a single-frame run from it and give --config.model.init_from=ITS_WORKDIR"
    )
  if not source:
    return state
  variables = jax.device_get(state.variables)
  if os.path.isdir(source):
    trunk_run = run_lib.Run.from_workdir(source)
    if is_video(trunk_run.config):
      raise checkpoints.CheckpointError(
        f"model.init_from={source} is a UniPose-LSTM run: the trunk starts from a "
        "single-frame run's folder (model.arch=unipose) or the original's .pth; to go on "
        "training that run, use it as --workdir"
      )
    image_variables, step = trunk_run.load_variables()
    check_kind(image_variables, video=False, what=f"model.init_from={source}")
    variables, report = trunk_from_single_frame(variables, image_variables, source)
    report = f"checkpoint {step}: {report}"
  else:
    from unipose_jax import models  # noqa: PLC0415

    variables, report = models.load_original_unipose_lstm(source, variables)
  if distributed.is_primary():
    print(f"initialised from {source}: {report}", flush=True)
  return create_video_train_state(model, tx, config.seed, config.data.input_size, variables)


# ----------------------------------------------------------------------------- data


def source_metadata(source):
  """``[(video_id, frame)]`` of every record of ``source`` from its cheap read
  (``source.metadata()``), or None when it has none (then ``index_videos`` reads each
  record once)."""
  reader = getattr(source, "metadata", None)
  return None if reader is None else reader()


def clip_index(run, source, name: str) -> clip_pipeline.VideoIndex:
  """The clips of the run's training source ``name`` (``data.clip_length`` frames); an
  image dataset (no ``video_id``/``frame``) or videos shorter than T: one line
  (``run_config.ConfigError`` naming the keys)."""
  t = run.config.data.clip_length
  metadata = source_metadata(source)
  if metadata is None and hasattr(source, "metadata"):
    raise run_config.ConfigError(
      f"data.train_sources: {name!r} is an image dataset (its records have no video_id / "
      "frame); model.arch=unipose_lstm trains on a video dataset such as 'penn_action'"
    )
  try:
    return clip_pipeline.index_videos(source, t, metadata=metadata)
  except clip_pipeline.ClipError as e:
    raise run_config.ConfigError(
      f"data.train_sources {name!r}, data.clip_length={t}: {e}"
    ) from None


def make_clip_iterator(run, mesh, shard_index: int | None = None, shard_count=None):
  """This process's share of the run's training clips (``train.make_train_iterator``'s
  counterpart); one training source only."""
  config = run.config
  sources = run.train_sources
  if len(sources) != 1:
    raise run_config.ConfigError(
      f"data.train_sources={tuple(config.data.train_sources)!r}: UniPose-LSTM trains on one "
      "video source (e.g. ('penn_action',))"
    )
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  d = config.data
  return clip_pipeline.make_clip_train_iterator(
    sources[0],
    d.clip_length,
    batch_size=distributed.per_process_batch_size(config.batch_size, mesh, shard_count),
    input_size=d.input_size,
    seed=config.seed,
    flip_permutation=run.flip_permutation,
    shard_index=shard_index,
    shard_count=shard_count,
    worker_count=d.worker_count,
    augment=run.augment_config(),
    index=clip_index(run, sources[0], config.data.train_sources[0]),
  )


__all__ = [
  "ARCH",
  "build_video_trainer",
  "check_kind",
  "clip_train_step",
  "create_video_train_state",
  "initial_video_state",
  "is_video",
  "is_video_variables",
  "make_clip_iterator",
  "trunk_from_single_frame",
]
