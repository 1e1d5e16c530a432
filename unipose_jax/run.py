"""A run: the facts of one work directory, worked out in one place.

A :class:`Run` is a config (``<workdir>/config.json``, or one given and checked against
it) and a work directory. From it come the model and the heatmap codec, the data
sources, the checkpoint folder and the metric that picks its best checkpoint, the best
intact checkpoint's variables (or a release folder's, ``release.py``), the settings an ONNX export writes beside its file and
what :class:`~unipose_jax.predict.Predictor` needs. Training, ``--mode=eval``,
``--mode=predict``, ``--mode=export`` and ``Predictor.from_workdir`` all go through it;
``run_config`` only checks, saves, loads and compares configs.

The run's keypoint set (:attr:`Run.keypoint_set`: ``K``, the joint names, flip pairs,
limbs, metric normalisers and the best-checkpoint metric) is resolved here, once: from the
config's ``keypoints`` section when the run has saved one, else from its training sources
(``datasets.keypoint_set`` of each; ``keypoint_sets.common`` refuses sources whose sets
differ), with ``data.flip_pairs`` as an explicit flip map. Training writes it into
``config.json`` (:meth:`Run.resolved_config`).

Work directories written by earlier versions load: keys their ``config.json`` lacks
come from the package's defaults (``config_defaults``), a ``codec.dark_kernel`` of
0 (meaning "the default size") is resolved here, and a ``config.json`` without a
``keypoints`` section (saved before keypoint sets) is :data:`keypoint_sets.LSP`.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import ml_collections

from unipose_jax import datasets, geometry, keypoint_sets, run_config
from unipose_jax.codecs import HeatmapCodec
from unipose_jax.models import Bottleneck, ResNet, UniPose, UniPoseLSTM, heatmap_size
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


def best_metric(config: ml_collections.ConfigDict, kset: keypoint_sets.KeypointSet) -> str:
  """The key of the evaluation metrics that picks a run's best checkpoint (higher is
  better): the keypoint set's metric (``KeypointSet.best_metric``: PCK@0.2 for LSP) of
  the run's own decoder, e.g. ``"dark/pck@0.2"``."""
  return f"{config.codec.decoding}/{kset.best_metric}"


def build_model(config: ml_collections.ConfigDict, num_joints: int,
                bn_sync: BatchNormSync | None = None) -> UniPose:  # fmt: skip
  """``UniPose`` of ``config.model`` with ``num_joints`` joint maps (the run's set's
  ``K``; plain arguments from here on)."""
  cfg = config.model
  backbone = None
  if cfg.stage_sizes:  # a custom (small) bottleneck ResNet instead of a standard depth
    backbone = functools.partial(ResNet, stage_sizes=tuple(cfg.stage_sizes), block_cls=Bottleneck)
  return UniPose(
    num_joints=int(num_joints),
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


def build_video_model(
  config: ml_collections.ConfigDict, num_joints: int, bn_sync: BatchNormSync | None = None
) -> UniPoseLSTM:
  """``UniPoseLSTM`` of ``config.model`` (``model.arch="unipose_lstm"``): the trunk is
  :func:`build_model`'s network, the LSTM keys are ``model.input_centre_map``,
  ``video_wasp``, ``feed_previous_heatmaps``, ``lstm_head_features``, ``lstm_head_kernel``."""
  cfg = config.model
  return UniPoseLSTM(
    num_joints=int(num_joints),
    make_trunk=build_model(config, num_joints).clone,  # called with the LSTM's own trunk settings
    input_centre_map=bool(cfg.input_centre_map),
    video_wasp=bool(cfg.video_wasp),
    feed_previous_heatmaps=bool(cfg.feed_previous_heatmaps),
    head_features=int(cfg.lstm_head_features),
    head_kernel=int(cfg.lstm_head_kernel),
    dtype=run_config.DTYPES[cfg.dtype],
    bn_sync=bn_sync,
  )


def build_codec(config: ml_collections.ConfigDict) -> HeatmapCodec:
  """The heatmap codec: the input's ``(H, W)`` (``geometry.input_hw`` of ``data.input_size``)
  and the model's heatmap size for it (``codec.dark_kernel`` 0 = the codec's default size)."""
  size = geometry.input_hw(config.data.input_size)
  return HeatmapCodec(
    input_size=size,
    heatmap_size=heatmap_size(size),
    sigma=config.codec.sigma,
    encoding=config.codec.encoding,
    decoding=config.codec.decoding,
    dark_kernel=config.codec.dark_kernel or None,
  )


def eval_decodings(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Every configured evaluation decoder, the checkpoint-selecting one included."""
  names = tuple(config.codec.eval_decodings)
  return names if config.codec.decoding in names else names + (config.codec.decoding,)


def resolve_keypoint_set(config: ml_collections.ConfigDict) -> keypoint_sets.KeypointSet:
  """The keypoint set of a config's training sources (``datasets.keypoint_set`` of each
  of ``data.train_sources``; sources with different sets are refused), with
  ``data.flip_pairs`` as its flip map when given. Raises ``run_config.ConfigError``
  naming the key."""
  d = config.data
  names = list(d.train_sources)
  try:
    kset = keypoint_sets.common([datasets.keypoint_set(n, d.data_dir) for n in names], names)
  except keypoint_sets.KeypointSetError as e:
    raise run_config.ConfigError(f"data.train_sources: {e}") from None
  if d.flip_pairs:
    try:
      kset = kset.with_flip_pairs(d.flip_pairs)
    except keypoint_sets.KeypointSetError as e:
      raise run_config.ConfigError(
        f"data.flip_pairs={tuple(d.flip_pairs)!r}: {e} ({kset.num_joints} joints: "
        f"{', '.join(kset.joint_names)})"
      ) from None
  return kset


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
    self._said: set[str] = set()

  def say_once(self, message: str) -> None:
    """Print ``message`` the first time this run is told it (a note said once per
    command, e.g. that a set without flip pairs trains and evaluates without flipping)."""
    if message not in self._said:
      self._said.add(message)
      print(message, flush=True)

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

  # ----------------------------------------------------------------------- keypoint set

  @functools.cached_property
  def keypoint_set(self) -> keypoint_sets.KeypointSet:
    """The run's keypoint set (the module doc): the config's ``keypoints`` section, else
    the saved run's, else LSP for a run saved before sets existed, else the training
    sources' (:func:`resolve_keypoint_set`)."""
    for config in (self.config, self.saved):
      if config is not None:
        try:
          stored = run_config.stored_keypoint_set(config)
        except keypoint_sets.KeypointSetError as e:
          raise run_config.ConfigError(str(e)) from None
        if stored is not None:
          return stored
    if self.saved is not None:
      return keypoint_sets.LSP  # a config.json written before keypoint sets existed
    return resolve_keypoint_set(self.config)

  @property
  def num_joints(self) -> int:
    """``K`` of :attr:`keypoint_set`."""
    return self.keypoint_set.num_joints

  def _no_flip(self) -> None:
    """One line, once per command, for a set without flip pairs whose config asks for a
    flip (augmentation or test)."""
    kset = self.keypoint_set
    self.say_once(
      f"note: keypoint set {kset.name!r} has no left/right flip pairs: no flip augmentation "
      "and no flip test (data.augment.flip_prob and flip_test are ignored; give pairs with "
      "--config.data.flip_pairs)"
    )

  @property
  def flip_test(self) -> bool:
    """Whether evaluation and prediction use the flip test: ``config.flip_test`` and a
    set with flip pairs (a set without them says so once and goes without)."""
    if not self.config.flip_test:
      return False
    if not self.keypoint_set.has_flip:
      self._no_flip()
      return False
    return True

  @property
  def flip_permutation(self):
    """``(K,)`` the set's flip permutation, or None when it has no flip pairs."""
    kset = self.keypoint_set
    return kset.flip_permutation if kset.has_flip else None

  def augment_config(self):
    """``transforms.AugmentConfig`` of ``data.augment``; flip augmentation off (said
    once) for a set without flip pairs."""
    from unipose_jax import transforms  # noqa: PLC0415

    settings = self.config.data.augment.to_dict()
    if settings["flip_prob"] > 0 and not self.keypoint_set.has_flip:
      self._no_flip()
      settings["flip_prob"] = 0.0
    return transforms.AugmentConfig(**settings)

  # ----------------------------------------------------------------------- data sources

  @functools.cached_property
  def train_sources(self) -> list:
    """The training sources (``data.train_sources``/``train_splits``), opened once; each
    checked to carry the run's keypoint set."""
    d = self.config.data
    names = list(d.train_sources)
    self._check_sets(names)
    return [data_source(n, s, d.data_dir) for n, s in zip(names, d.train_splits)]

  @functools.cached_property
  def eval_source(self):
    """The evaluation source (``data.eval_source``/``eval_split``), opened once; refused
    (``run_config.ConfigError``) when its keypoint set is not the run's."""
    d = self.config.data
    self._check_sets([d.eval_source])
    return data_source(d.eval_source, d.eval_split, d.data_dir)

  @property
  def train_crop(self) -> str:
    """What training crops around (``data.crop``; ``""``: the training datasets' default,
    ``datasets.DATASETS``' ``crop``, which must agree; ``run_config.ConfigError`` else)."""
    d = self.config.data
    if d.crop:
      return d.crop
    found = {datasets.entry(n).crop for n in d.train_sources}
    if len(found) != 1:
      raise run_config.ConfigError(
        f"data.crop: the training sources {tuple(d.train_sources)} crop differently by "
        f"default ({', '.join(sorted(found))}); set data.crop to 'joints' or 'box'"
      )
    return found.pop()

  @property
  def eval_crop(self) -> str:
    """The evaluation input (``data.eval_crop``; ``""``: the evaluation dataset's default,
    ``datasets.DATASETS``' ``eval_crop``: ``"whole"`` for LSP, ``"box"`` for MPII, COCO and
    Penn Action)."""
    d = self.config.data
    return d.eval_crop or datasets.entry(d.eval_source).eval_crop

  def _check_sets(self, names) -> None:
    kset = self.keypoint_set
    for name in names:
      theirs = datasets.keypoint_set(name, self.config.data.data_dir)
      if theirs.joint_names != kset.joint_names:
        raise run_config.ConfigError(
          f"data source {name!r} has keypoint set {theirs.name!r} ({theirs.num_joints} "
          f"joints), the run's is {kset.name!r} ({kset.num_joints} joints)"
        )

  # ----------------------------------------------------------------------- model and codec

  @property
  def is_video(self) -> bool:
    """Whether the run's network is UniPose-LSTM (``model.arch="unipose_lstm"``)."""
    return self.config.model.get("arch", "unipose") == "unipose_lstm"

  def model(self, bn_sync: BatchNormSync | None = None) -> UniPose | UniPoseLSTM:
    """The network, ``K`` joint maps of the run's set (``bn_sync``: whose BatchNorm
    statistics it trains with, ``parallel.batch_norm_sync`` of ``model.bn_sync``): a
    ``UniPoseLSTM`` for a video run (:attr:`is_video`)."""
    if self.is_video:
      return build_video_model(self.config, self.num_joints, bn_sync)
    return build_model(self.config, self.num_joints, bn_sync)

  @functools.cached_property
  def codec(self) -> HeatmapCodec:
    return build_codec(self.config)

  @property
  def eval_decodings(self) -> tuple[str, ...]:
    return eval_decodings(self.config)

  def resolved_config(self) -> ml_collections.ConfigDict:
    """The config with its defaults resolved (``codec.dark_kernel`` 0 -> the size used,
    ``data.crop``/``eval_crop`` "" -> :attr:`train_crop`/:attr:`eval_crop`, the
    ``keypoints`` section -> :attr:`keypoint_set`), as training writes it to
    ``config.json``."""
    config = ml_collections.ConfigDict(self.config.to_dict())
    config.codec.dark_kernel = self.codec.dark_kernel_size
    config.data.crop = self.train_crop
    config.data.eval_crop = self.eval_crop
    config[run_config.KEYPOINTS_SECTION] = run_config.keypoint_section(self.keypoint_set)
    return config

  # ----------------------------------------------------------------------- checkpoints

  @property
  def is_release(self) -> bool:
    """Whether the work directory is a release folder (``release.py``: config.json, the
    parameters and a manifest, no checkpoints)."""
    from unipose_jax import release  # noqa: PLC0415

    return self.workdir is not None and release.is_release(self.workdir)

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.workdir, CHECKPOINT_DIR)

  @property
  def best_metric(self) -> str:
    """:func:`best_metric` of the saved config (the one training selected with), else of
    this config, for the run's keypoint set."""
    return best_metric(self.saved if self.saved is not None else self.config, self.keypoint_set)

  def checkpointer(self, **kwargs):
    """A ``checkpoints.Checkpointer`` of the run's folder that keeps and prefers the best
    checkpoint by :attr:`best_metric` (``kwargs``: ``max_to_keep``, ``read_only``)."""
    from unipose_jax import checkpoints  # noqa: PLC0415

    return checkpoints.Checkpointer(self.checkpoint_dir, best_metric=self.best_metric, **kwargs)

  def check_has_checkpoint(self, ckpt=None) -> None:
    """Raise ``checkpoints.CheckpointError`` ("train first") when the run has no
    checkpoint; reads only (``ckpt``: an open read-only checkpointer of the run)."""
    from unipose_jax import checkpoints  # noqa: PLC0415

    if self.is_release:
      return  # a release folder holds its variables, no checkpoints
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
    there is none (or ``step`` is missing or damaged). A release folder
    (:attr:`is_release`) gives its variables (float32) and the step they came from
    (``release.ReleaseError`` when damaged, or for another ``step``).
    """
    from unipose_jax import release  # noqa: PLC0415

    if self.is_release:
      variables, saved_step = release.load_release(self.workdir)
      if step is not None and step != saved_step:
        raise release.ReleaseError(
          f"{self.workdir} is a release of checkpoint {saved_step}: it holds no checkpoint {step}"
        )
      return variables, saved_step
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
    decision = presence_numpy.settings_of(
      self.config.predict, presence.symmetric_limbs(self.keypoint_set.joint_names)
    )
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
      # The keypoint set: K channels after the background, their names and, for a flip
      # test outside JAX, the left/right pairs (0-based joint indices).
      "num_joints": self.num_joints,
      "joint_names": list(self.keypoint_set.joint_names),
      "flip_pairs": [list(p) for p in self.keypoint_set.flip_pairs],
      **decision,
    }

  def predictor_settings(self) -> dict[str, Any]:
    """The keyword arguments of ``Predictor`` besides its heatmap function."""
    c = self.config
    return {
      "input_size": c.data.input_size,
      "codec": self.codec,
      "keypoint_set": self.keypoint_set,
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
