"""A run: the facts of one work directory, worked out in one place.

A :class:`Run` is a config (``<workdir>/config.json``, or one given and checked against
it) and a work directory. From it come the model and the heatmap codec, the data
sources, the checkpoint folder and the metric that picks its best checkpoint, the best
intact checkpoint's variables, the settings an ONNX export writes beside its file and
what :class:`~unipose_jax.predict.Predictor` needs. Training, ``--mode=eval``,
``--mode=predict``, ``--mode=export`` and ``Predictor.from_workdir`` all go through it;
``run_config`` only checks, saves, loads and compares configs.

Work directories written by earlier versions load: keys their ``config.json`` lacks
come from the package's defaults (``config_defaults``), and a ``codec.dark_kernel`` of
0 (meaning "the default size") is resolved here.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import ml_collections

from unipose_jax import datasets, run_config, skeleton
from unipose_jax.codecs import HeatmapCodec
from unipose_jax.models import Bottleneck, ResNet, UniPose, heatmap_size
from unipose_jax.models.layers import BatchNormSync

CHECKPOINT_DIR = "checkpoints"


class NoConfigError(FileNotFoundError):
  """A work directory without ``config.json`` and no config given."""


class NotAWorkdirError(NotADirectoryError):
  """A work directory path that is a file (or lies under one)."""


def check_workdir(workdir: str) -> None:
  """Raise :class:`NotAWorkdirError` when ``workdir``, or the nearest of its parents
  that exists, is not a folder (a missing ``workdir`` is fine: training creates it)."""
  path = os.path.abspath(workdir)
  while not os.path.lexists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    raise NotAWorkdirError(f"{workdir}: not a work directory ({path} is a file, not a folder)")


def best_metric(config: ml_collections.ConfigDict) -> str:
  """The key of the evaluation metrics that picks a run's best checkpoint (higher is
  better): PCK@0.2 of the run's own decoder, e.g. ``"dark/pck@0.2"``."""
  return f"{config.codec.decoding}/pck@0.2"


def build_model(config: ml_collections.ConfigDict, bn_sync: BatchNormSync | None = None) -> UniPose:
  """``UniPose`` of ``config.model`` (plain arguments from here on)."""
  cfg = config.model
  backbone = None
  if cfg.stage_sizes:  # a custom (small) bottleneck ResNet instead of a standard depth
    backbone = functools.partial(ResNet, stage_sizes=tuple(cfg.stage_sizes), block_cls=Bottleneck)
  return UniPose(
    num_joints=skeleton.NUM_JOINTS,
    box_head=bool(cfg.box_head),
    backbone_depth=cfg.backbone_depth,
    backbone=backbone,
    output_stride=cfg.output_stride,
    backbone_width=cfg.backbone_width,
    wasp_features=cfg.wasp_features,
    wasp_rates=tuple(cfg.wasp_rates) or None,
    low_level_features=cfg.low_level_features,
    decoder_features=cfg.decoder_features,
    wasp_dropout=cfg.wasp_dropout,
    decoder_dropouts=tuple(cfg.decoder_dropout),
    dtype=run_config.DTYPES[cfg.dtype],
    bn_sync=bn_sync,
  )


def build_codec(config: ml_collections.ConfigDict) -> HeatmapCodec:
  """The heatmap codec: the square input and the model's heatmap size for it
  (``codec.dark_kernel`` 0 = the codec's default size)."""
  size = config.data.input_size
  side = heatmap_size(size)
  return HeatmapCodec(
    input_size=(size, size),
    heatmap_size=(side, side),
    sigma=config.codec.sigma,
    encoding=config.codec.encoding,
    decoding=config.codec.decoding,
    dark_kernel=config.codec.dark_kernel or None,
  )


def eval_decodings(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Every configured evaluation decoder, the checkpoint-selecting one included."""
  names = tuple(config.codec.eval_decodings)
  return names if config.codec.decoding in names else names + (config.codec.decoding,)


def data_source(name: str, split: str, data_dir: str):
  """A random-access source of a prepared dataset; the synthetic set (no download) is
  built on first use."""
  if name.split("/")[0] == "synthetic" and not datasets.is_prepared(name, data_dir):
    print(f"building the synthetic dataset in {data_dir} (first use)", flush=True)
    datasets.prepare([name], manual_dir=None, data_dir=data_dir)
  return datasets.data_source(name, split, data_dir)


class Run:
  """A config and its work directory (see the module doc).

  Args:
    config: the config of this command (validated by the caller).
    workdir: the work directory (may not exist yet for training).
    saved: the config the run saved (``config.json``), if any: it names the metric
      that picked the best checkpoint.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None,
               saved: ml_collections.ConfigDict | None = None):  # fmt: skip
    self.config, self.workdir, self.saved = config, workdir, saved

  @classmethod
  def from_workdir(cls, workdir: str, config: ml_collections.ConfigDict | None = None) -> Run:
    """The run in ``workdir``: its ``config.json``, or ``config`` when given (refused
    with :class:`run_config.ConfigError` when its network differs from the saved one),
    checked by ``run_config.validate`` (the keys eval, predict and export read).

    Raises :class:`NotAWorkdirError` when ``workdir`` is a file, :class:`NoConfigError`
    when there is no config.
    """
    check_workdir(workdir)
    saved, path = run_config.load(workdir), os.path.join(workdir, run_config.CONFIG_FILE)
    if config is None:
      if saved is None:
        raise NoConfigError(f"{path} not found: not a run folder (train first, or give a config)")
      config = saved
    elif saved is not None:
      run_config.check_matches(config, saved, workdir)
    run_config.validate(config, training=False, source=path if config is saved else "")
    return cls(config, workdir, saved)

  # ----------------------------------------------------------------------- model and codec

  def model(self, bn_sync: BatchNormSync | None = None) -> UniPose:
    """The network (``bn_sync``: whose BatchNorm statistics it trains with,
    ``parallel.batch_norm_sync`` of ``model.bn_sync``)."""
    return build_model(self.config, bn_sync)

  @functools.cached_property
  def codec(self) -> HeatmapCodec:
    return build_codec(self.config)

  @property
  def eval_decodings(self) -> tuple[str, ...]:
    return eval_decodings(self.config)

  def resolved_config(self) -> ml_collections.ConfigDict:
    """The config with its defaults resolved (``codec.dark_kernel`` 0 -> the size used),
    as training writes it to ``config.json``."""
    config = ml_collections.ConfigDict(self.config.to_dict())
    config.codec.dark_kernel = self.codec.dark_kernel_size
    return config

  # ----------------------------------------------------------------------- checkpoints

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.workdir, CHECKPOINT_DIR)

  @property
  def best_metric(self) -> str:
    """:func:`best_metric` of the saved config (the one training selected with), else of
    this config."""
    return best_metric(self.saved if self.saved is not None else self.config)

  def checkpointer(self, **kwargs):
    """A ``checkpoints.Checkpointer`` of the run's folder that keeps and prefers the best
    checkpoint by :attr:`best_metric` (``kwargs``: ``max_to_keep``, ``read_only``)."""
    from unipose_jax import checkpoints  # noqa: PLC0415

    return checkpoints.Checkpointer(self.checkpoint_dir, best_metric=self.best_metric, **kwargs)

  def check_has_checkpoint(self, ckpt=None) -> None:
    """Raise ``checkpoints.CheckpointError`` ("train first") when the run has no
    checkpoint; reads only (``ckpt``: an open read-only checkpointer of the run)."""
    from unipose_jax import checkpoints  # noqa: PLC0415

    if ckpt is not None:
      steps = ckpt.all_steps()
    elif os.path.isdir(self.checkpoint_dir):
      with self.checkpointer(read_only=True) as opened:
        steps = opened.all_steps()
    else:
      steps = []
    if not steps:
      raise checkpoints.CheckpointError(
        f"no checkpoint in {self.checkpoint_dir}: train first "
        f"(unipose-jax --mode=train --workdir={self.workdir})"
      )

  def load_variables(self, step: int | None = None) -> tuple[dict[str, Any], int]:
    """Model variables ``{"params", "batch_stats"}`` (host arrays) of a checkpoint, and
    its step.

    Default: the best checkpoint by :attr:`best_metric`, else the newest intact one
    (damaged ones are reported and skipped). Raises ``checkpoints.CheckpointError`` when
    there is none (or ``step`` is missing or damaged).
    """
    with self.checkpointer(read_only=True) as ckpt:
      self.check_has_checkpoint(ckpt)
      restored = ckpt.restore(step=step, prefer_best=step is None)
    state = restored.state
    return {"params": state["params"], "batch_stats": state["batch_stats"]}, restored.step

  # ----------------------------------------------------------------------- what users get

  def export_settings(self, step: int) -> dict[str, Any]:
    """The decoding settings written beside an exported ONNX file, resolved: the DARK
    kernel's size and sigma are the ones the codec uses, ready for
    ``deploy.predict(..., dark_kernel=, dark_sigma=)``; and the person-presence decision
    (``presence_numpy.settings_of``: score, weights, threshold, the checkpoint it was
    calibrated on) that ``deploy.predict_with_settings`` applies as ``Predictor`` does."""
    from unipose_jax import presence, presence_numpy  # noqa: PLC0415

    codec = self.codec
    decision = presence_numpy.settings_of(self.config.predict, presence.SYMMETRIC_LIMBS)
    decision["presence_step"] = int(self.config.predict.presence_step)
    return {
      "checkpoint_step": int(step),
      "input_size": self.config.data.input_size,
      "heatmap_size": list(codec.heatmap_size),
      "sigma": codec.sigma,
      "decoding": codec.decoding,
      "dark_kernel": codec.dark_kernel_size,
      "dark_sigma": codec.dark_kernel_sigma,
      "box_head": bool(self.config.model.box_head),
      **decision,
    }

  def predictor_settings(self) -> dict[str, Any]:
    """The keyword arguments of ``Predictor`` besides its heatmap function."""
    c = self.config
    return {
      "input_size": c.data.input_size,
      "codec": self.codec,
      "num_joints": skeleton.NUM_JOINTS,
      "box_head": bool(c.model.box_head),
      "decoding": c.codec.decoding,
      "score_threshold": c.predict.score_threshold,
      "second_pass": c.predict.second_pass,
      "crop_margin": c.predict.crop_margin,
      # Person presence as calibrated ("" = not calibrated: the old rule).
      "presence_score": c.predict.presence_score,
      "presence_threshold": c.predict.presence_threshold,
      "presence_weights": tuple(c.predict.presence_weights),
    }
