"""A run's config: checked, saved with the run, loaded back, compared.

* :func:`validate` checks every key before anything is built and raises one
  :class:`ConfigError` listing every bad key.
* :func:`save` writes the resolved config to ``<workdir>/config.json``; :func:`load`
  reads it back (eval and predict need no ``--config``), taking keys it lacks from the
  package's defaults (:mod:`unipose_jax.config_defaults`); :func:`check_matches` refuses
  a given config whose model or codec differs from the run's, naming the keys.

What a config builds (model, codec, data, checkpoints) is :mod:`unipose_jax.run`'s.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import ml_collections

from unipose_jax import config_defaults, files
from unipose_jax.models.unipose import HEATMAP_STRIDE

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
CONFIG_FILE = "config.json"

#: Keys that must equal the run's for its checkpoint to be usable (the network's shape
#: and how its heatmaps are read).
ARCHITECTURE_KEYS = ("model", "codec.sigma", "data.input_size")
#: Model keys that may differ from the run's (where weights come from, compute dtype).
_FREE_MODEL_KEYS = ("model.pretrained", "model.init_from", "model.dtype")


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


def _get(c, key: str) -> Any:
  for part in key.split("."):
    c = c[part]
  return c


def validate(config: ml_collections.ConfigDict, training: bool = True) -> None:
  """Check the config before anything is built; one ConfigError names every bad key."""
  from unipose_jax.codecs import decoding as decoding_lib  # noqa: PLC0415

  errors: list[str] = []
  try:
    if training:
      for key in ("num_train_steps", "log_every", "checkpoint_every", "batch_size"):
        _positive(config, key, errors)
      _positive(config, "eval_every", errors, zero_ok=True)
      _positive(config, "keep_checkpoints", errors)
      _choice(config, "parallelism", ("jit", "pmap"), errors)
      _choice(config, "optimizer.name", ("adam", "adamw", "sgd"), errors)
      _choice(config, "optimizer.schedule", ("step", "cosine", "constant"), errors)
      if config.optimizer.learning_rate <= 0:
        errors.append(f"optimizer.learning_rate={config.optimizer.learning_rate!r}: must be > 0")
      if config.optimizer.schedule == "step":
        _positive(config, "optimizer.decay_every", errors)
      d = config.data
      if not (len(d.train_sources) == len(d.train_splits) == len(d.mixture_weights)):
        errors.append(
          "data.train_sources, data.train_splits and data.mixture_weights must have the same "
          f"length, got {tuple(d.train_sources)}, {tuple(d.train_splits)}, "
          f"{tuple(d.mixture_weights)}"
        )
      if any(w < 0 for w in d.mixture_weights) or sum(d.mixture_weights) <= 0:
        errors.append(f"data.mixture_weights={tuple(d.mixture_weights)}: need >= 0, sum > 0")
      _positive(config, "stop_check_every", errors)
    _positive(config, "eval_batch_size", errors)
    _positive(config, "data.input_size", errors)
    size = config.data.input_size
    if isinstance(size, int) and size % HEATMAP_STRIDE:
      errors.append(
        f"data.input_size={size}: must be a multiple of {HEATMAP_STRIDE} (the heatmap stride)"
      )
    _choice(config, "model.dtype", tuple(DTYPES), errors)
    _choice(config, "model.output_stride", (8, 16), errors)
    _choice(config, "codec.encoding", ("unbiased", "quantized"), errors)
    decoders = tuple(decoding_lib.DECODINGS)
    _choice(config, "codec.decoding", decoders, errors)
    for name in config.codec.eval_decodings:
      if name not in decoders:
        errors.append(f"codec.eval_decodings: {name!r} is not one of {', '.join(decoders)}")
    if config.codec.sigma <= 0:
      errors.append(f"codec.sigma={config.codec.sigma!r}: must be > 0")
    if config.model.box_head and config.loss.box_weight < 0:
      errors.append(f"loss.box_weight={config.loss.box_weight!r}: must be >= 0")
    _positive(config, "predict.presence_negatives", errors)
    if not 0.0 < config.predict.presence_fpr < 1.0:
      errors.append(f"predict.presence_fpr={config.predict.presence_fpr!r}: must be in (0, 1)")
    if config.model.box_margin < 0:
      errors.append(f"model.box_margin={config.model.box_margin!r}: must be >= 0")
  except (KeyError, AttributeError) as e:
    errors.append(f"missing config key {e}")
  if errors:
    raise ConfigError("bad config:\n  " + "\n  ".join(errors))


def suggest_key(config: ml_collections.ConfigDict, key: str) -> str:
  """``" (did you mean 'a.b'?)"`` for an unknown dotted key, or ``""``."""
  match = difflib.get_close_matches(key, list(flat_keys(config)), n=1, cutoff=0.6)
  return f"; did you mean {match[0]!r}?" if match else ""


def _items(config) -> list:
  return list((config.to_dict() if hasattr(config, "to_dict") else config).items())


def flat_keys(config: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
  for k, v in _items(config):
    if isinstance(v, Mapping):
      yield from flat_keys(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


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


def _tuples(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def load(workdir: str, defaults: ml_collections.ConfigDict | None = None):
  """The config a run saved, or None when ``<workdir>/config.json`` does not exist.

  Keys a later version added are taken from ``defaults`` (default: the package's
  :func:`config_defaults.get_config`), so old work directories load.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      saved = _tuples(json.load(f))
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path}: not a readable config ({e})") from e
  if defaults is None:
    defaults = config_defaults.get_config()
  config = ml_collections.ConfigDict(defaults.to_dict())
  config.update(saved)
  return config


def differing_keys(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> list[str]:
  """Architecture keys (:data:`ARCHITECTURE_KEYS`) whose values differ between two configs."""
  fa, fb = dict(_flat(a)), dict(_flat(b))
  out = []
  for key in sorted(set(fa) | set(fb)):
    if not any(key == p or key.startswith(p + ".") for p in ARCHITECTURE_KEYS):
      continue
    if key in _FREE_MODEL_KEYS:
      continue
    if _plain(fa.get(key)) != _plain(fb.get(key)):
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
