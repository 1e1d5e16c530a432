"""Checkpointing with orbax: train state, data-iterator state and metrics per step.

One checkpoint directory holds one sub-directory per saved step (``<dir>/<step>/``),
written by an :class:`orbax.checkpoint.CheckpointManager` with three items:

* ``state``   -- the train state, any pytree of arrays (a flax ``struct.dataclass``
  or a dict holding params, batch_stats, opt_state, step, rng, ...), written with
  ``StandardSave`` (tensorstore, one shard per device, no gather to one host);
* ``extra``   -- JSON: the data-iterator state (e.g. grain's ``get_state()``) in a
  lossless JSON encoding (``bytes`` are base64-encoded, tuples kept), plus the
  PRNG implementation name of every typed PRNG key in the state;
* ``metrics`` -- JSON: the optional flat ``{name: float}`` dict given to
  :meth:`Checkpointer.save`; orbax's own metrics item, which it reads back on
  start-up so the retention policy keeps working across restarts.

Retention: the newest ``max_to_keep`` checkpoints are kept, plus (``keep_best``)
the one with the highest ``metrics[best_metric]``, however old.  This uses
orbax's ``AnyPreservationPolicy(LatestN, BestN(n=1))`` in a single manager.

Crash safety: orbax writes each step to ``<step>.orbax-checkpoint-tmp*`` and
renames it to ``<step>`` only after every item is committed, so a save that dies
half way is never listed by :meth:`Checkpointer.all_steps` /
:meth:`Checkpointer.latest_step`; leftover temporary directories are deleted the
next time a :class:`Checkpointer` opens the directory for writing.

Asynchronous saving: with ``async_save=True`` :meth:`Checkpointer.save` returns
once the arrays are copied off the devices; writing happens on a background
thread.  The caller may donate or overwrite the state right after ``save``
returns.  Call :meth:`Checkpointer.wait_until_finished` before reading a
checkpoint from another program, and :meth:`Checkpointer.close` (or use the
object as a context manager) before exiting.

Multi-host: every process must call ``save``/``restore``/``close`` with the same
arguments, in the same order (orbax synchronises the processes with barriers).
Each process writes the array shards it owns; only the primary process writes
the JSON items, the step metadata and performs deletions -- orbax does this, the
wrapper adds no process-dependent logic.

PRNG keys: raw ``uint32`` keys (``jax.random.PRNGKey``) are ordinary arrays.
Typed keys (``jax.random.key``) are stored as their ``key_data`` plus the name of
their implementation; they come back as typed keys when the restore target has a
typed-key leaf there, or when restoring without a target.

This module imports nothing from the rest of ``unipose_jax`` (design.md, sect. 6).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

__all__ = [
  "CheckpointNotFoundError",
  "CheckpointStructureError",
  "Checkpointer",
  "PreemptionGuard",
  "available_steps",
  "decode_json_state",
  "encode_json_state",
  "is_checkpoint_dir",
]

logger = logging.getLogger(__name__)

STATE_ITEM = "state"
EXTRA_ITEM = "extra"
_FORMAT_VERSION = 1

PyTree = Any


class CheckpointNotFoundError(FileNotFoundError):
  """No checkpoint (or not the requested step) in a directory."""


class CheckpointStructureError(ValueError):
  """The restore target does not have the structure or shapes of the saved state."""


# --------------------------------------------------------------------------
# Directory inspection.
# --------------------------------------------------------------------------


def _as_path(directory: str | os.PathLike) -> epath.Path:
  """An epath (local, gs://, ...); local paths are made absolute."""
  text = os.fspath(directory)
  return epath.Path(text if "://" in text else os.path.abspath(text))


def available_steps(directory: str | os.PathLike) -> list[int]:
  """Sorted steps of the finalized checkpoints written by :class:`Checkpointer`.

  Temporary (unfinalized) step directories and directories that merely have
  numeric names are ignored.  A missing directory has no steps.
  """
  path = _as_path(directory)
  if not path.is_dir():
    return []
  steps = ocp.utils.checkpoint_steps(path)
  return sorted(s for s in steps if (path / str(s) / STATE_ITEM).is_dir())


def is_checkpoint_dir(directory: str | os.PathLike) -> bool:
  """True when ``directory`` holds at least one finalized checkpoint."""
  return bool(available_steps(directory))


def _describe_non_checkpoint_dir(path: epath.Path) -> str:
  """A message explaining why ``path`` holds no checkpoint, with a hint if possible."""
  if not path.exists():
    return f"checkpoint directory {str(path)!r} does not exist"
  if not path.is_dir():
    return f"{str(path)!r} is a file, not a checkpoint directory"
  entries = sorted(p.name for p in path.iterdir())
  hint = ""
  nested = [p for p in sorted(path.iterdir()) if p.is_dir() and is_checkpoint_dir(p)]
  if nested:
    hint = f"; did you mean {str(nested[0])!r}?"
  shown = ", ".join(entries[:10]) + (", ..." if len(entries) > 10 else "")
  return f"{str(path)!r} contains no finalized checkpoint (entries: {shown or 'none'}){hint}"


# --------------------------------------------------------------------------
# Lossless JSON encoding of data-iterator states.
# --------------------------------------------------------------------------

_BYTES_TAG = "__bytes_b64__"
_TUPLE_TAG = "__tuple__"
_DICT_TAG = "__dict__"
_TAGS = (_BYTES_TAG, _TUPLE_TAG, _DICT_TAG)


def encode_json_state(value: Any, _path: str = "data_state") -> Any:
  """Turns a data-iterator state into plain JSON, losslessly.

  Accepts ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, lists,
  tuples and dicts with ``str`` keys, nested arbitrarily (numpy scalars are
  turned into Python numbers).  ``bytes`` become ``{"__bytes_b64__": "..."}``,
  tuples ``{"__tuple__": [...]}``; a dict whose only key is one of these tags is
  escaped as ``{"__dict__": {...}}``.  :func:`decode_json_state` inverts it.

  Raises:
    TypeError: for any other type or a non-string dict key; names the path.
  """
  if value is None or isinstance(value, (bool, str)):
    return value
  if isinstance(value, (int, float)):
    return value
  if isinstance(value, np.generic) and value.shape == ():
    return value.item()
  if isinstance(value, (bytes, bytearray)):
    return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
  if isinstance(value, tuple):
    return {_TUPLE_TAG: [encode_json_state(v, f"{_path}[{i}]") for i, v in enumerate(value)]}
  if isinstance(value, list):
    return [encode_json_state(v, f"{_path}[{i}]") for i, v in enumerate(value)]
  if isinstance(value, Mapping):
    out = {}
    for k, v in value.items():
      if not isinstance(k, str):
        raise TypeError(
          f"{_path}: dict keys must be str to be stored as JSON, got {k!r} ({type(k).__name__})"
        )
      out[k] = encode_json_state(v, f"{_path}[{k!r}]")
    if len(out) == 1 and next(iter(out)) in _TAGS:
      return {_DICT_TAG: out}
    return out
  raise TypeError(
    f"{_path}: cannot store a {type(value).__name__} in the JSON data state "
    "(allowed: None, bool, int, float, str, bytes, list, tuple, dict with str keys)"
  )


def decode_json_state(value: Any) -> Any:
  """Inverse of :func:`encode_json_state`."""
  if isinstance(value, list):
    return [decode_json_state(v) for v in value]
  if isinstance(value, dict):
    if len(value) == 1:
      ((tag, inner),) = value.items()
      if tag == _BYTES_TAG:
        return base64.b64decode(inner.encode("ascii"))
      if tag == _TUPLE_TAG:
        return tuple(decode_json_state(v) for v in inner)
      if tag == _DICT_TAG:
        return {k: decode_json_state(v) for k, v in inner.items()}
    return {k: decode_json_state(v) for k, v in value.items()}
  return value


# --------------------------------------------------------------------------
# Pytree helpers.
# --------------------------------------------------------------------------


def _key_name(entry: Any) -> str:
  """One path component, in orbax's spelling (dict key, attribute or index)."""
  if isinstance(entry, jax.tree_util.DictKey):
    return str(entry.key)
  if isinstance(entry, jax.tree_util.GetAttrKey):
    return entry.name
  if isinstance(entry, jax.tree_util.SequenceKey):
    return str(entry.idx)
  if isinstance(entry, jax.tree_util.FlattenedIndexKey):
    return str(entry.key)
  return str(entry)


def _leaf_names(tree: PyTree, is_leaf: Callable[[Any], bool] | None = None) -> dict[str, Any]:
  """Maps dotted leaf paths ("opt_state.1.0.mu.conv.kernel") to leaves."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
  return {".".join(_key_name(k) for k in path): leaf for path, leaf in flat}


def _is_typed_key(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _split_typed_keys(state: PyTree) -> tuple[PyTree, dict[str, str]]:
  """Replaces typed PRNG keys by their uint32 key data; returns their impl names."""
  impls: dict[str, str] = {}
  flat, treedef = jax.tree_util.tree_flatten_with_path(state)
  leaves = []
  for path, leaf in flat:
    if _is_typed_key(leaf):
      impls[".".join(_key_name(k) for k in path)] = str(jax.random.key_impl(leaf))
      leaf = jax.random.key_data(leaf)
    leaves.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, leaves), impls


def _format_names(names: Iterable[str], limit: int = 8) -> str:
  names = sorted(names)
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _to_float_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Validates a flat metrics dict and converts its values to Python floats."""
  if not isinstance(metrics, Mapping):
    raise TypeError(f"metrics must be a dict of floats, got {type(metrics).__name__}")
  out = {}
  for k, v in metrics.items():
    try:
      out[str(k)] = float(np.asarray(v).item())
    except (TypeError, ValueError) as e:
      raise TypeError(f"metrics[{k!r}] is not a scalar number: {v!r}") from e
  return out


# --------------------------------------------------------------------------
# The checkpointer.
# --------------------------------------------------------------------------


class Checkpointer:
  """Saves and restores (train state, data-iterator state, metrics) per step.

  Args:
    directory: where the step directories go; created if missing (unless
      ``read_only``).  Local path or any path orbax/epath supports.
    max_to_keep: how many of the newest checkpoints are kept (``None``: all).
    keep_best: also keep the checkpoint with the highest
      ``metrics[best_metric]`` even when it is older than the newest
      ``max_to_keep``.  Checkpoints saved without that metric never count as
      best (NaN counts as worst).
    best_metric: metric name, higher is better.
    async_save: write in a background thread (orbax async checkpointing).
    save_interval_steps: :meth:`save` without ``force`` only writes steps that
      are multiples of this (1: every call writes).
    read_only: open for restoring only (evaluation jobs); saving is refused.

  Example::

      with Checkpointer(workdir / "checkpoints") as ckpt:
          if ckpt.latest_step() is not None:
              state, data_state, _ = ckpt.restore(target_state=abstract_state)
          ...
          ckpt.save(step, state, train_iter.get_state(), metrics={"pck@0.2": 0.81})
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    max_to_keep: int | None = 3,
    keep_best: bool = True,
    best_metric: str = "pck@0.2",
    async_save: bool = True,
    save_interval_steps: int = 1,
    read_only: bool = False,
  ):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be None or >= 1, got {max_to_keep}")
    if save_interval_steps < 1:
      raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
    self.directory = _as_path(directory)
    if self.directory.exists() and not self.directory.is_dir():
      raise NotADirectoryError(f"checkpoint directory {str(self.directory)!r} is a file")
    if read_only and not self.directory.is_dir():
      raise CheckpointNotFoundError(_describe_non_checkpoint_dir(self.directory))
    self.max_to_keep = max_to_keep
    self.keep_best = keep_best
    self.best_metric = best_metric
    self.async_save = async_save
    self.save_interval_steps = save_interval_steps
    self.read_only = read_only

    policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
    if keep_best:
      policies.append(
        ocp.checkpoint_managers.BestN(
          get_metric_fn=self._score,
          reverse=False,  # ascending sort; the last n are kept: highest is best
          n=1,
          keep_checkpoints_without_metrics=False,
        )
      )
    options = ocp.CheckpointManagerOptions(
      # save() decides itself (interval, force) and always passes force=True.
      save_interval_steps=0 if read_only else 1,
      # best_fn makes orbax write and reload the metrics item and enables
      # best_step(); retention itself is decided by preservation_policy.
      best_fn=self._score,
      best_mode="max",
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=not read_only,
      create=not read_only,
      read_only=read_only,
    )
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add(STATE_ITEM, ocp.args.StandardSave)
    registry.add(STATE_ITEM, ocp.args.StandardRestore)
    registry.add(EXTRA_ITEM, ocp.args.JsonSave)
    registry.add(EXTRA_ITEM, ocp.args.JsonRestore)
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, handler_registry=registry
    )
    self._last_saved: int | None = None
    foreign = sorted(set(self._manager.all_steps()) - set(available_steps(self.directory)))
    if foreign and not read_only:
      self._manager.close()
      raise ValueError(
        f"{str(self.directory)!r} holds step-like entries that are not checkpoints "
        f"written by this module: {foreign}; checkpoints need a dedicated directory "
        "(retention would delete such entries)"
      )

  # -- retention score -----------------------------------------------------

  def _score(self, metrics: Any) -> float:
    """Score of a checkpoint for "best": the metric, or -inf when absent/NaN."""
    if not isinstance(metrics, Mapping) or self.best_metric not in metrics:
      return -math.inf
    try:
      value = float(metrics[self.best_metric])
    except (TypeError, ValueError):
      return -math.inf
    return -math.inf if math.isnan(value) else value

  # -- queries -------------------------------------------------------------

  def all_steps(self) -> list[int]:
    """Sorted steps of the checkpoints kept: finalized ones, plus a save in flight.

    A step whose asynchronous save was started by this object counts at once
    (as in orbax); :meth:`restore` waits for it.  Unfinalized directories left
    by a crashed process never count.
    """
    return sorted(
      s
      for s in self._manager.all_steps()
      if s == self._last_saved or (self.directory / str(s) / STATE_ITEM).is_dir()
    )

  def latest_step(self) -> int | None:
    """The newest step of :meth:`all_steps` (a save in flight included), or None."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def best_step(self) -> int | None:
    """The step with the highest ``metrics[best_metric]`` among those kept, or None."""
    scored = [(self._score(self._manager.metrics(s)), s) for s in self.all_steps()]
    scored = [(v, s) for v, s in scored if v > -math.inf]
    return max(scored)[1] if scored else None

  def metrics(self, step: int) -> dict[str, float] | None:
    """The metrics saved with ``step`` (``None`` if saved without)."""
    self._check_step(step)
    m = self._manager.metrics(step)
    return None if m is None else dict(m)

  # -- saving --------------------------------------------------------------

  def save(
    self,
    step: int,
    state: PyTree,
    data_state: Any = None,
    metrics: Mapping[str, Any] | None = None,
    force: bool = False,
  ) -> bool:
    """Saves ``state``, ``data_state`` and ``metrics`` as checkpoint ``step``.

    Must be called by every process.  Returns True when a save was started.
    Nothing is written (and False returned) when ``step`` is not a multiple of
    ``save_interval_steps`` (unless ``force``), or when ``step`` is not newer
    than the latest checkpoint (a checkpoint on disk is never overwritten;
    ``force`` allows saving an older step that does not exist yet).

    Args:
      step: the training step, a non-negative int.
      state: pytree of ``jax.Array`` / numpy arrays (typed PRNG keys allowed).
      data_state: JSON-like iterator state; see :func:`encode_json_state`.
      metrics: optional flat ``{name: number}``; ``metrics[best_metric]``
        decides which checkpoint is the best.
      force: save even if ``step`` is off the save interval.
    """
    if self.read_only:
      raise RuntimeError(f"Checkpointer for {str(self.directory)!r} is read-only")
    step = int(step)
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    extra = {"format_version": _FORMAT_VERSION, "data_state": encode_json_state(data_state)}
    metrics = None if metrics is None else _to_float_metrics(metrics)
    if step in self.all_steps():
      logger.warning(
        "checkpoint for step %d already exists in %s; not saving", step, self.directory
      )
      return False
    if not force:
      latest = self.latest_step()
      if step % self.save_interval_steps or (latest is not None and step <= latest):
        return False
    arrays, impls = _split_typed_keys(state)
    extra["prng_key_impls"] = impls
    self._last_saved = step
    return bool(
      self._manager.save(
        step,
        args=ocp.args.Composite(
          **{
            STATE_ITEM: ocp.args.StandardSave(arrays),
            EXTRA_ITEM: ocp.args.JsonSave(extra),
          }
        ),
        metrics=metrics,
        force=True,
      )
    )

  def wait_until_finished(self) -> None:
    """Blocks until pending asynchronous saves are committed; re-raises their errors."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and deletions, then releases orbax's resources."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  # -- restoring -----------------------------------------------------------

  def _check_step(self, step: int) -> None:
    steps = self.all_steps()
    if not steps:
      raise CheckpointNotFoundError(_describe_non_checkpoint_dir(self.directory))
    if step not in steps:
      raise CheckpointNotFoundError(
        f"no checkpoint for step {step} in {str(self.directory)!r}; available steps: {steps}"
      )

  def restore(
    self,
    step: int | None = None,
    target_state: PyTree | None = None,
    shardings: Any = None,
  ) -> tuple[PyTree, Any, dict[str, float] | None]:
    """Restores checkpoint ``step`` (default: the latest).

    Must be called by every process.  Pending saves are waited for first.

    Args:
      step: which step; must be one of :meth:`all_steps`.
      target_state: the structure to restore into: a pytree with the state's
        structure whose leaves are arrays or ``jax.ShapeDtypeStruct`` (e.g.
        ``jax.eval_shape(init_fn)`` with shardings attached).  Leaves are
        restored with the target's shape check, dtype (a cast when it differs
        from the saved one) and sharding, so a state saved on 8 devices
        restores onto any other mesh.  ``None``: the saved structure, as
        nested dicts/lists, on one local device (or ``shardings``).
      shardings: optional ``jax.sharding.Sharding`` for every leaf, or a
        pytree of shardings with the target's structure; overrides the
        target's own shardings.  Leaves with no sharding anywhere go to the
        first local device.

    Returns:
      ``(state, data_state, metrics)``; ``metrics`` is None if none were saved.

    Raises:
      CheckpointNotFoundError: no checkpoint, or ``step`` is not available
        (the message lists the available steps).
      CheckpointStructureError: the target's leaves do not match the saved
        ones (the message names the missing/unexpected/mis-shaped leaves).
    """
    self._manager.wait_until_finished()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise CheckpointNotFoundError(_describe_non_checkpoint_dir(self.directory))
    step = int(step)
    self._check_step(step)

    extra = self._manager.restore(
      step, args=ocp.args.Composite(**{EXTRA_ITEM: ocp.args.JsonRestore()})
    )[EXTRA_ITEM]
    impls: dict[str, str] = dict(extra.get("prng_key_impls", {}))
    saved = self._saved_leaves(step)

    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if target_state is None:
      if shardings is not None and not isinstance(shardings, jax.sharding.Sharding):
        raise TypeError("without target_state, shardings must be one Sharding or None")
      tree = self._manager.item_metadata(step)[STATE_ITEM]
      tree = getattr(tree, "tree", tree)
      abstract = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=shardings or default),
        tree,
        is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"),
      )
      want_typed = dict(impls)
    else:
      abstract, want_typed = self._abstract_target(target_state, shardings, default, impls)
    self._check_structure(abstract, saved, step)

    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract)}),
    )[STATE_ITEM]
    if want_typed:
      flat, treedef = jax.tree_util.tree_flatten_with_path(restored)
      leaves = []
      for path, leaf in flat:
        name = ".".join(_key_name(k) for k in path)
        if name in want_typed:
          leaf = jax.random.wrap_key_data(leaf, impl=want_typed[name])
        leaves.append(leaf)
      restored = jax.tree_util.tree_unflatten(treedef, leaves)
    data_state = decode_json_state(extra.get("data_state"))
    metrics = self._manager.metrics(step)
    return restored, data_state, (None if metrics is None else dict(metrics))

  def _saved_leaves(self, step: int) -> dict[str, Any]:
    """Dotted leaf name -> orbax ArrayMetadata of the saved state."""
    tree = self._manager.item_metadata(step)[STATE_ITEM]
    tree = getattr(tree, "tree", tree)
    return _leaf_names(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))

  @staticmethod
  def _abstract_target(
    target: PyTree,
    shardings: Any,
    default: jax.sharding.Sharding,
    impls: Mapping[str, str],
  ) -> tuple[PyTree, dict[str, str]]:
    """ShapeDtypeStructs (typed keys as key data) with the shardings to restore onto."""
    if shardings is None or isinstance(shardings, jax.sharding.Sharding):
      sharding_tree = jax.tree_util.tree_map(lambda _: shardings, target)
    else:
      try:
        sharding_tree = jax.tree_util.tree_map(
          lambda _, s: s,
          target,
          shardings,
          is_leaf=lambda x: isinstance(x, jax.sharding.Sharding),
        )
      except ValueError as e:
        raise CheckpointStructureError(
          f"shardings do not have the structure of target_state: {e}"
        ) from e
    flat, treedef = jax.tree_util.tree_flatten_with_path(target)
    flat_sh = jax.tree_util.tree_leaves(
      sharding_tree, is_leaf=lambda x: x is None or isinstance(x, jax.sharding.Sharding)
    )
    if len(flat_sh) != len(flat):
      raise CheckpointStructureError("shardings do not have the structure of target_state")
    want_typed: dict[str, str] = {}
    leaves = []
    for (path, leaf), sh in zip(flat, flat_sh):
      name = ".".join(_key_name(k) for k in path)
      if sh is None:
        sh = getattr(leaf, "sharding", None) or default
      if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
        leaf = np.asarray(leaf)
      shape, dtype = tuple(leaf.shape), leaf.dtype
      if _is_typed_key(leaf):
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, dtype))
        shape, dtype = tuple(data.shape), data.dtype
        if name in impls:
          want_typed[name] = impls[name]
        elif isinstance(leaf, jax.Array):
          want_typed[name] = str(jax.random.key_impl(leaf))
        else:  # saved as raw key data, target abstract: JAX's default impl
          want_typed[name] = str(jax.config.jax_default_prng_impl)
      leaves.append(jax.ShapeDtypeStruct(shape, dtype, sharding=sh))
    return jax.tree_util.tree_unflatten(treedef, leaves), want_typed

  def _check_structure(self, abstract: PyTree, saved: Mapping[str, Any], step: int) -> None:
    """Raises CheckpointStructureError naming mismatching leaves."""
    wanted = _leaf_names(abstract)
    missing = set(wanted) - set(saved)
    unexpected = set(saved) - set(wanted)
    problems = []
    if missing:
      problems.append(f"in the target but not in the checkpoint: {_format_names(missing)}")
    if unexpected:
      problems.append(f"in the checkpoint but not in the target: {_format_names(unexpected)}")
    shape_bad = [
      f"{n} (saved {tuple(saved[n].shape)}, target {tuple(wanted[n].shape)})"
      for n in sorted(set(wanted) & set(saved))
      if tuple(saved[n].shape) != tuple(wanted[n].shape)
    ]
    if shape_bad:
      problems.append(f"shape mismatch: {_format_names(shape_bad)}")
    if problems:
      raise CheckpointStructureError(
        f"cannot restore step {step} of {str(self.directory)!r} into the given "
        "target_state; " + "; ".join(problems)
      )


# --------------------------------------------------------------------------
# Pre-emption.
# --------------------------------------------------------------------------


class PreemptionGuard(contextlib.AbstractContextManager):
  """Turns SIGTERM/SIGINT into a flag so the training loop can save and exit.

  Inside ``with PreemptionGuard() as guard:`` the first delivery of a guarded
  signal sets ``guard.should_stop`` (and ``guard.received``) instead of killing
  the process; a second delivery of the same signal falls through to the
  previous handler (so a second Ctrl-C still interrupts).  The previous
  handlers are put back on exit.  Must be entered in the main thread.

  Multi-host: only the processes that got the signal see the flag; reduce it
  over processes (:meth:`should_stop_any_process`) before acting, so that all
  processes take the same branch and call ``Checkpointer.save`` together.

  Example::

      with PreemptionGuard() as guard:
          for step in ...:
              ...
              if guard.should_stop_any_process():
                  ckpt.save(step, state, it.get_state(), force=True)
                  break
  """

  def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)):
    self.signals = tuple(signals)
    self.received: int | None = None
    self._previous: dict[int, Any] = {}
    self._stop = threading.Event()

  @property
  def should_stop(self) -> bool:
    """True once a guarded signal arrived in this process."""
    return self._stop.is_set()

  def should_stop_any_process(self) -> bool:
    """``should_stop`` OR-reduced over all JAX processes (collective; call on all)."""
    if jax.process_count() == 1:
      return self.should_stop
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(self.should_stop, np.int32))
    return bool(np.any(flags))

  def _handle(self, signum: int, frame: Any) -> None:
    if self._stop.is_set() and self.received == signum:
      previous = self._previous.get(signum, signal.SIG_DFL)
      if callable(previous):
        previous(signum, frame)
        return
      if previous == signal.SIG_IGN:
        return
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.received = signum
    self._stop.set()
    logger.warning("received signal %d; will stop at the next opportunity", signum)

  def __enter__(self) -> PreemptionGuard:
    if threading.current_thread() is not threading.main_thread():
      raise RuntimeError("PreemptionGuard must be entered in the main thread")
    for s in self.signals:
      self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    self._previous.clear()
