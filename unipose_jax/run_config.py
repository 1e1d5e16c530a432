"""A run's config: checked, saved with the run, loaded back, compared.

* :func:`validate` checks every key before anything is built and raises one
  :class:`ConfigError` listing every bad key.
* :func:`save` writes the resolved config to ``<workdir>/config.json``; :func:`load`
  reads it back (eval and predict need no ``--config``), taking keys it lacks from the
  package's defaults (:mod:`unipose_jax.config_defaults`) and refusing unknown keys and
  wrongly typed values; :func:`check_matches` refuses a given config whose network keys
  (``config_defaults.key_role``) differ from the run's, naming the keys;
  :func:`check_overrides` refuses overrides of a saved run that its checkpoint or the
  mode cannot honour, with the reason.

What a config builds (model, codec, data, checkpoints) is :mod:`unipose_jax.run`'s.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import ml_collections

from unipose_jax import config_defaults, files, geometry, keypoint_sets
from unipose_jax.models.resnet import RESNET_SPECS
from unipose_jax.models.unipose import HEATMAP_STRIDE

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
CONFIG_FILE = "config.json"
#: The config section holding the run's resolved keypoint set (``Run.keypoint_set``).
KEYPOINTS_SECTION = "keypoints"


class ConfigError(ValueError):
  """A config key with a wrong or missing value (the message names every such key)."""


# ----------------------------------------------------------------------------- checks


def _positive(c, key: str, errors: list[str], zero_ok: bool = False) -> None:
  value = _get(c, key)
  low = 0 if zero_ok else 1
  if not isinstance(value, int) or isinstance(value, bool) or value < low:
    errors.append(f"{key}={value!r}: must be an integer >= {low}")


def _choice(c, key: str, allowed, errors: list[str]) -> None:
  value = _get(c, key)
  if value not in allowed:
    errors.append(f"{key}={value!r}: expected one of {', '.join(map(repr, allowed))}")


def _number(c, key: str, errors: list[str], low: float = 0.0, above: bool = False,
            high: float | None = None) -> None:  # fmt: skip
  """A finite real number >= ``low`` (> ``low`` with ``above``; <= ``high`` if given)."""
  value = _get(c, key)
  ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
  ok = ok and (value > low if above else value >= low) and (high is None or value <= high)
  if not ok:
    bound = "" if low == -math.inf else f" {'>' if above else '>='} {low:g}"
    bound += "" if high is None else f" and <= {high:g}"
    errors.append(f"{key}={value!r}: must be a finite number{bound}")


def _get(c, key: str) -> Any:
  for part in key.split("."):
    c = c[part]
  return c


def _non_finite(config, errors: list[str]) -> None:
  """Every float of the config (tuples' included) finite; keys already reported skipped."""
  for key, value in _flat(config):
    values = value if isinstance(value, list | tuple) else (value,)
    bad = any(isinstance(v, float) and not math.isfinite(v) for v in values)
    if bad and not any(e.startswith(f"{key}=") for e in errors):
      errors.append(f"{key}={value!r}: must be finite")


def _counts(c, key: str, errors: list[str], length: int | None = None) -> None:
  """A tuple of integers >= 1 (``length`` of them), or () for the default."""
  value = tuple(_get(c, key))
  ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
  if not ok or (value and length is not None and len(value) != length):
    many = "" if length is None else f"{length} "
    errors.append(f"{key}={value!r}: must be () (the default) or {many}integers >= 1")


def _model_checks(config, errors: list[str]) -> None:
  """The network's keys (``config_defaults.NETWORK_KEYS``)."""
  m = config.model
  if not m.stage_sizes:
    _choice(config, "model.backbone_depth", tuple(RESNET_SPECS), errors)
  _counts(config, "model.stage_sizes", errors, length=4)
  _counts(config, "model.wasp_rates", errors)
  for key in ("backbone_width", "wasp_features", "low_level_features", "decoder_features"):
    _positive(config, f"model.{key}", errors)
  _number(config, "model.wasp_dropout", errors, high=1.0)
  dropouts = tuple(m.decoder_dropout)
  if len(dropouts) != 2 or not all(isinstance(v, int | float) and 0 <= v <= 1 for v in dropouts):
    errors.append(f"model.decoder_dropout={dropouts!r}: must be 2 rates in [0, 1]")
  _choice(config, "model.dtype", tuple(DTYPES), errors)
  _choice(config, "model.output_stride", (8, 16), errors)
  _number(config, "model.box_margin", errors)
  _choice(config, "model.arch", ("unipose", "unipose_lstm"), errors)
  _positive(config, "model.lstm_head_features", errors)
  kernel = m.lstm_head_kernel
  if not (isinstance(kernel, int) and not isinstance(kernel, bool) and kernel > 0 and kernel % 2):
    errors.append(f"model.lstm_head_kernel={kernel!r}: must be odd and > 0")
  if m.arch == "unipose_lstm" and m.box_head:
    errors.append("model.box_head=True: UniPose-LSTM (model.arch=unipose_lstm) has no box head")
  try:
    from unipose_jax.parallel import bn_group_size  # noqa: PLC0415

    bn_group_size(m.bn_sync)
  except ValueError as e:
    errors.append(str(e))


def _flip_pairs_check(pairs, errors: list[str]) -> None:
  """``data.flip_pairs``: pairs of two different joint indices >= 0, no joint twice (K
  is checked when the run resolves its set)."""
  seen: list[int] = []
  for pair in pairs:
    ok = isinstance(pair, tuple | list) and len(pair) == 2
    ok = ok and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair)
    if not ok or pair[0] == pair[1]:
      errors.append(
        f"data.flip_pairs={tuple(pairs)!r}: must be ((a, b), ...) pairs of two different "
        "joint indices >= 0"
      )
      return
    seen += list(pair)
  twice = sorted({i for i in seen if seen.count(i) > 1})
  if twice:
    errors.append(f"data.flip_pairs={tuple(pairs)!r}: joints {twice} are in two pairs")


def _training_checks(config, errors: list[str]) -> None:
  """The keys only training reads (``config_defaults.TRAINING_KEYS``)."""
  for key in ("num_train_steps", "log_every", "checkpoint_every", "batch_size"):
    _positive(config, key, errors)
  _positive(config, "data.clip_length", errors)
  _positive(config, "eval_every", errors, zero_ok=True)
  _positive(config, "keep_checkpoints", errors)
  _positive(config, "stop_check_every", errors)
  _positive(config, "seed", errors, zero_ok=True)
  _choice(config, "parallelism", ("jit", "pmap"), errors)
  _choice(config, "optimizer.name", ("adam", "adamw", "sgd"), errors)
  _choice(config, "optimizer.schedule", ("step", "cosine", "constant"), errors)
  _number(config, "optimizer.learning_rate", errors, above=True)
  if config.optimizer.schedule == "step":
    _positive(config, "optimizer.decay_every", errors)
  steps = tuple(config.optimizer.decay_steps)
  if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in steps) or any(
    b <= a for a, b in zip(steps, steps[1:])
  ):
    errors.append(f"optimizer.decay_steps={steps!r}: must be increasing integers >= 1")
  _number(config, "optimizer.decay_factor", errors, above=True)
  _positive(config, "optimizer.warmup_steps", errors, zero_ok=True)
  for key in ("weight_decay", "momentum", "grad_clip_norm"):
    _number(config, f"optimizer.{key}", errors)
  _number(config, "loss.background_weight", errors)
  if config.model.box_head:
    _number(config, "loss.box_weight", errors)
  d = config.data
  _positive(config, "data.worker_count", errors, zero_ok=True)
  if not (len(d.train_sources) == len(d.train_splits) == len(d.mixture_weights)):
    errors.append(
      "data.train_sources, data.train_splits and data.mixture_weights must have the same "
      f"length, got {tuple(d.train_sources)}, {tuple(d.train_splits)}, "
      f"{tuple(d.mixture_weights)}"
    )
  if any(not w >= 0 for w in d.mixture_weights) or not sum(d.mixture_weights) > 0:
    errors.append(f"data.mixture_weights={tuple(d.mixture_weights)}: need >= 0, sum > 0")
  _flip_pairs_check(d.flip_pairs, errors)
  from unipose_jax import transforms  # noqa: PLC0415

  _choice(config, "data.crop", ("", *transforms.TRAIN_CROPS), errors)
  a = d.augment
  _number(config, "data.augment.margin", errors, above=True)
  _number(config, "data.augment.rotation_deg", errors, high=180.0)
  _number(config, "data.augment.rotation_prob", errors, high=1.0)
  _number(config, "data.augment.flip_prob", errors, high=1.0)
  _number(config, "data.augment.translate_frac", errors)
  scale = tuple(a.scale_range)
  if not (len(scale) == 2 and all(math.isfinite(v) for v in scale) and 0 < scale[0] <= scale[1]):
    errors.append(f"data.augment.scale_range={scale!r}: must be (low, high), 0 < low <= high")


def validate(config: ml_collections.ConfigDict, training: bool = True, source: str = "") -> None:
  """Check the config before anything is built; one ConfigError names every bad key
  (and ``source``, where the config came from, when given).

  Always: the network's keys, the keys eval, predict and export read, and that every
  float is finite; with ``training`` also the keys only training reads."""
  from unipose_jax.codecs import decoding as decoding_lib  # noqa: PLC0415

  errors: list[str] = []
  try:
    if training:
      _training_checks(config, errors)
    _positive(config, "eval_batch_size", errors)
    _positive(config, "data.eval_worker_count", errors, zero_ok=True)
    from unipose_jax import transforms  # noqa: PLC0415

    _choice(config, "data.eval_crop", ("", *transforms.EVAL_CROPS), errors)
    _number(config, "data.eval_margin", errors, above=True)
    _positive(config, "num_example_images", errors, zero_ok=True)
    try:
      size = geometry.input_hw(config.data.input_size)
    except ValueError as e:
      errors.append(str(e))
    else:
      if any(side % HEATMAP_STRIDE for side in size):
        errors.append(
          f"data.input_size={config.data.input_size!r}: must be a multiple of "
          f"{HEATMAP_STRIDE} (the heatmap stride)"
        )
      if size[0] != size[1] and config.model.get("arch", "unipose") == "unipose_lstm":
        errors.append(
          f"data.input_size={config.data.input_size!r}: UniPose-LSTM (model.arch="
          "unipose_lstm) takes a square input (one int) for now"
        )
    _model_checks(config, errors)
    _choice(config, "codec.encoding", ("unbiased", "quantized"), errors)
    decoders = tuple(decoding_lib.DECODINGS)
    _choice(config, "codec.decoding", decoders, errors)
    for name in config.codec.eval_decodings:
      if name not in decoders:
        errors.append(f"codec.eval_decodings: {name!r} is not one of {', '.join(decoders)}")
    _number(config, "codec.sigma", errors, above=True)
    kernel = config.codec.dark_kernel
    odd = isinstance(kernel, int) and not isinstance(kernel, bool) and kernel > 0 and kernel % 2
    if kernel != 0 and not odd:
      errors.append(f"codec.dark_kernel={kernel!r}: must be 0 (the default) or odd and > 0")
    _number(config, "predict.score_threshold", errors, low=-math.inf)
    _number(config, "predict.crop_margin", errors, above=True)
    _positive(config, "predict.max_pixels", errors)
    _non_finite(config, errors)
    _positive(config, "predict.presence_negatives", errors)
    if not 0.0 < config.predict.presence_fpr < 1.0:
      errors.append(f"predict.presence_fpr={config.predict.presence_fpr!r}: must be in (0, 1)")
  except (KeyError, AttributeError) as e:
    errors.append(f"missing config key {e}")
  if errors:
    raise ConfigError(f"bad config{f' ({source})' if source else ''}:\n  " + "\n  ".join(errors))


#: The modes that read every key of a config; the others (eval, predict, export,
#: calibrate) read only the run-time keys (``config_defaults.key_role``).
_ALL_KEY_MODES = (None, "train", "prepare", "compile")


def accepted_keys(config: ml_collections.ConfigDict, mode: str | None = None) -> list[str]:
  """The dotted keys of ``config`` that ``--mode=mode`` may override: all of them for
  training (and without a mode), the run-time keys for the modes that read a trained run."""
  keys = list(flat_keys(config))
  if mode in _ALL_KEY_MODES:
    return keys
  return [k for k in keys if config_defaults.key_role(k) == "run-time"]


def suggest_key(config: ml_collections.ConfigDict, key: str, mode: str | None = None) -> str:
  """``"; did you mean 'a.b'?"`` for an unknown dotted key, the nearest among the keys
  ``mode`` accepts (:func:`accepted_keys`), or ``""``."""
  match = difflib.get_close_matches(key, accepted_keys(config, mode), n=1, cutoff=0.6)
  return f"; did you mean {match[0]!r}?" if match else ""


def _items(config) -> list:
  return list((config.to_dict() if hasattr(config, "to_dict") else config).items())


def flat_keys(config: Mapping[str, Any]) -> Iterator[str]:
  """Every dotted key of a config (``"predict.second_pass"``), sections left out."""
  return (key for key, _ in _flat(config))


# ----------------------------------------------------------------------------- the run's copy


def _plain(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_plain(v) for v in value]
  return value


def save(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Write the resolved config to ``<workdir>/config.json`` (atomically)."""
  files.write_json(os.path.join(workdir, CONFIG_FILE), _plain(config.to_dict()))


def update_saved(workdir: str, values: Mapping[str, Any]) -> None:
  """Set dotted keys (``{"predict.presence_threshold": 0.31}``) in ``<workdir>/config.json``
  (atomically), leaving every other key as saved."""
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path}: not a readable config ({e})") from e
  for key, value in values.items():
    *parents, last = key.split(".")
    node = saved
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = value
  files.write_json(path, saved)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _typed(default: Any, value: Any) -> tuple[Any, str | None]:
  """``(value as the default's type, None)`` or ``(None, what is wrong)``: a JSON value
  read for a key whose default is ``default`` (an int is also a number; a list becomes a
  tuple whose items have the type of the default's items)."""
  if isinstance(default, tuple):
    kinds = {type(v) for v in default}
    item = kinds.pop()() if len(kinds) == 1 else None  # 0, 0.0 or "": the items' type
    rows = isinstance(value, list) and bool(value) and all(isinstance(v, list) for v in value)
    if isinstance(value, list):
      untyped = _scalar_or_row if rows else _scalar  # all rows ((a, b) pairs) or no rows
      typed = [_typed(item, v)[0] if item is not None else untyped(v) for v in value]
      if None not in typed:
        return tuple(typed), None
    return None, f"expected a list of {_PLURALS.get(type(item), 'numbers or strings')}"
  kind = type(default)
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value), None
  if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
    return value, None
  return None, f"expected {_TYPE_NAMES.get(kind, kind.__name__)}"


def _scalar(value: Any) -> Any:
  """A number or string as is, anything else None."""
  return value if isinstance(value, int | float | str) and not isinstance(value, bool) else None


def _scalar_or_row(value: Any) -> Any:
  """A list of numbers or strings as a tuple (a row of ``data.flip_pairs``), anything
  else None."""
  if isinstance(value, list):
    row = tuple(_scalar(v) for v in value)
    return None if None in row else row
  return None


def _merge(target: ml_collections.ConfigDict, saved: dict, prefix: str, errors: list[str],
           root: ml_collections.ConfigDict) -> None:  # fmt: skip
  """Set ``saved``'s keys on ``target`` (a copy of the defaults), checking names and types."""
  for key, value in saved.items():
    name = f"{prefix}{key}"
    if key not in target:
      errors.append(f"unknown key {name!r}{suggest_key(root, name)}")
    elif isinstance(target[key], ml_collections.ConfigDict):
      if isinstance(value, dict):
        _merge(target[key], value, f"{name}.", errors, root)
      else:
        errors.append(f"{name}={json.dumps(value)}: expected a section (a JSON object)")
    elif target.get_type(key) is object:  # data.input_size: S or (height, width)
      target[key] = tuple(value) if isinstance(value, list) else value
    else:
      typed, fault = _typed(target[key], value)
      if fault:
        errors.append(f"{name}={json.dumps(value)}: {fault}")
      else:
        target[key] = typed


def load(workdir: str, defaults: ml_collections.ConfigDict | None = None):
  """The config a run saved, or None when ``<workdir>/config.json`` does not exist.

  Keys a later version added are taken from ``defaults`` (default: the package's
  :func:`config_defaults.get_config`), so old work directories load. A file that is not
  a JSON object, a key the defaults do not have (the nearest real key named) or a value
  of another type than the default's is a :class:`ConfigError` naming the file and key;
  the values themselves are checked by :func:`validate`, as flags are.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path}: not a readable config ({e})") from e
  if not isinstance(saved, dict):
    raise ConfigError(f"{path}: not a config (a JSON object expected, got {json.dumps(saved)})")
  # a deep copy keeps the fields' types (data.input_size's object type: S or (height, width))
  config = copy.deepcopy(defaults or config_defaults.get_config())
  errors: list[str] = []
  stored_set = saved.pop(KEYPOINTS_SECTION, None)
  _merge(config, saved, "", errors, config)
  if stored_set:  # the run's resolved keypoint set (absent or empty: saved before sets)
    try:
      config[KEYPOINTS_SECTION] = keypoint_section(
        keypoint_sets.from_dict(stored_set, source=f"section {KEYPOINTS_SECTION!r}")
      )
    except keypoint_sets.KeypointSetError as e:
      errors.append(str(e))
  if errors:
    raise ConfigError("\n".join(f"{path}: {e}" for e in errors))
  return config


def keypoint_section(kset: keypoint_sets.KeypointSet) -> ml_collections.ConfigDict:
  """The ``keypoints`` section a run's ``config.json`` stores its resolved set in
  (:meth:`KeypointSet.to_dict`)."""
  return ml_collections.ConfigDict(kset.to_dict())


def stored_keypoint_set(config: ml_collections.ConfigDict) -> keypoint_sets.KeypointSet | None:
  """The set of a config's ``keypoints`` section, or None when it has none (a config
  not yet resolved, or a run saved before keypoint sets: LSP)."""
  section = config.get(KEYPOINTS_SECTION)
  if section is None or not len(section):
    return None
  return keypoint_sets.from_dict(section.to_dict(), source=f"config section {KEYPOINTS_SECTION!r}")


def differing_keys(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> list[str]:
  """Network keys (``config_defaults.key_role``) whose values differ between two configs."""
  fa, fb = dict(_flat(a)), dict(_flat(b))
  out = []
  resolved = [any(k.startswith(f"{KEYPOINTS_SECTION}.") for k in f) for f in (fa, fb)]
  for key in sorted(set(fa) | set(fb)):
    if key.startswith(f"{KEYPOINTS_SECTION}.") and not all(resolved):
      continue  # a config not resolved yet takes the run's set (a run saved before: LSP)
    if config_defaults.key_role(key) == "network" and _plain(fa.get(key)) != _plain(fb.get(key)):
      out.append(f"{key}: run has {fa.get(key)!r}, given {fb.get(key)!r}")
  return out


def _flat(config: Mapping[str, Any], prefix: str = ""):
  for k, v in _items(config):
    if isinstance(v, Mapping):
      yield from _flat(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def check_matches(given: ml_collections.ConfigDict, saved: ml_collections.ConfigDict, workdir):
  """Refuse a given config whose network or heatmaps differ from the run's."""
  diff = differing_keys(saved, given)
  if diff:
    raise ConfigError(
      f"--config differs from the run's {os.path.join(workdir, CONFIG_FILE)} in keys its "
      "checkpoint depends on:\n  " + "\n  ".join(diff) + "\n(leave out --config to use the run's)"
    )


def check_overrides(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                    workdir: str, mode: str) -> None:  # fmt: skip
  """Refuse the ``--config.*`` overrides of a saved run that it cannot honour.

  ``config`` is ``saved`` (``<workdir>/config.json``) with the overrides applied. A
  network key (``config_defaults.key_role``) may not change: the checkpoint was trained
  with the saved value. A training key may change only for ``mode == "train"`` (a
  resumed run); elsewhere nothing reads it, and the nearest run-time key is named
  (``batch_size`` -> ``eval_batch_size``). Run-time keys are free.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  old, new = dict(_flat(saved)), dict(_flat(config))
  run_time = [k for k in new if config_defaults.key_role(k) == "run-time"]
  errors = []
  for key in sorted(k for k in new if _plain(new[k]) != _plain(old.get(k))):
    role = config_defaults.key_role(key)
    if role == "network":
      errors.append(
        f"{key}={new[key]!r}: the network was trained with {old.get(key)!r} ({path}); "
        "a new value needs a new run"
      )
    elif role == "training" and mode != "train":
      match = difflib.get_close_matches(key, run_time, n=1, cutoff=0.6)
      hint = f"; did you mean {match[0]!r}?" if match else ""
      errors.append(f"{key}={new[key]!r}: only training reads it, not --mode={mode}{hint}")
  if errors:
    raise ConfigError("cannot override the saved run's config:\n  " + "\n  ".join(errors))
