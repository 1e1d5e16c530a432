"""Load torchvision ResNet weights into the Flax ``ResNet`` (alone or inside ``UniPose``).

torch is optional: it is imported only when a ``.pth`` path is given (read by
``torch_checkpoint.read_torch_state_dict``, in any of its forms) or torch tensors
are passed. Key mapping (torchvision -> Flax)::

    conv1.weight                 (O, I, kh, kw)  -> params/conv1/kernel (kh, kw, I, O)
    bn1.weight / bn1.bias                         -> params/bn1/scale / bias
    bn1.running_mean / running_var                -> batch_stats/bn1/mean / var
    layer3.5.conv2.weight                         -> params/layer3_5/conv2/kernel
    layer1.0.downsample.0.weight                  -> params/layer1_0/downsample_conv/kernel
    layer1.0.downsample.1.{weight,bias,running_*} -> .../layer1_0/downsample_bn/...

torchvision's classifier (``fc.*``) and the ``*.num_batches_tracked`` counters
are ignored on purpose. Any other key of the state dict that the Flax model
lacks, any Flax parameter the state dict lacks, and any shape disagreement is
an error that names the key.

The helpers that match a state dict to Flax leaves (``torch_leaf_name``,
``match_state_dict``, ``mismatch_error``, ``replace_leaves``) also serve
``original_import.load_original_unipose``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import unfreeze

from unipose_jax.models.torch_checkpoint import (
  WeightImportError,
  read_torch_state_dict,
  size_limits,
)

#: State-dict keys that are deliberately not imported.
IGNORED_PREFIXES: tuple[str, ...] = ("fc.",)
IGNORED_SUFFIXES: tuple[str, ...] = (".num_batches_tracked",)

_MODULE_RENAMES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
_LEAF_RENAMES = {
  ("params", "kernel"): "weight",
  ("params", "scale"): "weight",
  ("params", "bias"): "bias",
  ("batch_stats", "mean"): "running_mean",
  ("batch_stats", "var"): "running_var",
}


def torch_key(collection: str, path: tuple[str, ...]) -> str:
  """torchvision state-dict key of a Flax ResNet variable.

  ``torch_key("params", ("layer1_0", "downsample_conv", "kernel"))`` is
  ``"layer1.0.downsample.0.weight"``.
  """
  *modules, leaf = path
  parts = []
  for m in modules:
    m = _MODULE_RENAMES.get(m, m)
    if m.startswith("layer") and "_" in m:
      stage, _, block = m.partition("_")
      m = f"{stage}.{block}"
    parts.append(m)
  if (collection, leaf) not in _LEAF_RENAMES:
    raise ValueError(f"no torchvision name for Flax variable {collection}/{'/'.join(path)}")
  parts.append(_LEAF_RENAMES[(collection, leaf)])
  return ".".join(parts)


def torch_leaf_name(collection: str, leaf: str) -> str:
  """PyTorch name of a Flax conv/BatchNorm leaf: ``("params", "kernel")`` -> ``"weight"``."""
  try:
    return _LEAF_RENAMES[(collection, leaf)]
  except KeyError:
    raise ValueError(f"no PyTorch name for a Flax {collection} leaf called {leaf!r}") from None


def _to_numpy(value: Any, key: str) -> np.ndarray:
  if hasattr(value, "detach"):  # torch.Tensor, without importing torch
    value = value.detach().cpu()
    value = value.float().numpy() if value.is_floating_point() else value.numpy()
  try:
    return np.asarray(value)
  except Exception as e:  # pragma: no cover - defensive
    raise TypeError(f"state dict entry {key!r} is not an array: {type(value).__name__}") from e


def _name_keys(keys: Sequence[str], limit: int = 20) -> str:
  shown = ", ".join(keys[:limit])
  return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


@dataclasses.dataclass
class StateDictMatch:
  """Result of matching a PyTorch state dict against Flax variables (see ``match_state_dict``).

  ``values`` holds, per collection, the Flax path -> value (HWIO kernels, the
  target leaf's dtype) of every matched key; ``bad_shapes`` maps a key to its message.
  """

  values: dict[str, dict[tuple[str, ...], np.ndarray]]
  loaded: list[str]
  ignored: list[str]
  missing: list[str]
  unexpected: list[str]
  bad_shapes: dict[str, str]

  def problems(self) -> list[str]:
    """One line per kind of problem (missing, unexpected, shapes); empty when all matched."""
    out = []
    if self.missing:
      out.append(f"missing keys (in the model, not in the checkpoint): {_name_keys(self.missing)}")
    if self.unexpected:
      out.append(
        f"unexpected keys (in the checkpoint, not in the model): {_name_keys(self.unexpected)}"
      )
    if self.bad_shapes:
      shapes = [self.bad_shapes[k] for k in sorted(self.bad_shapes)]
      out.append(
        f"shape mismatches: {'; '.join(shapes[:20])}"
        + (f"; ... and {len(shapes) - 20} more" if len(shapes) > 20 else "")
      )
    return out


def match_state_dict(
  state: Mapping[str, Any],
  targets: Mapping[str, tuple[str, tuple[str, ...], Any]],
  ignore: Callable[[str], bool],
) -> StateDictMatch:
  """Match state-dict keys to Flax leaves; convert OIHW conv weights to HWIO and cast.

  Args:
    state: PyTorch name -> tensor or array.
    targets: PyTorch name -> ``(collection, path, leaf)`` of the Flax leaf it fills
      (``leaf`` an array or ``jax.ShapeDtypeStruct``: its shape and dtype are used).
    ignore: keys of ``state`` that are not targets and must not count as unexpected.
  """
  wanted = {k for k in state if k in targets or not ignore(k)}
  match = StateDictMatch(
    values={},
    loaded=[],
    ignored=sorted(set(state) - wanted),
    missing=sorted(set(targets) - wanted),
    unexpected=sorted(wanted - set(targets)),
    bad_shapes={},
  )
  for key in sorted(set(targets) & wanted):
    collection, path, leaf = targets[key]
    value = _to_numpy(state[key], key)
    torch_shape = tuple(int(s) for s in value.shape)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if tuple(value.shape) != tuple(leaf.shape):
      layout = f" (OIHW), as HWIO {tuple(int(s) for s in value.shape)}" if value.ndim == 4 else ""
      match.bad_shapes[key] = (
        f"{key}: checkpoint {torch_shape}{layout}, model expects {tuple(leaf.shape)}"
      )
      continue
    match.values.setdefault(collection, {})[path] = np.asarray(value, dtype=leaf.dtype)
    match.loaded.append(key)
  return match


def mismatch_error(what: str, source: str, problems: Sequence[str], note: str) -> WeightImportError:
  """The one exception for a checkpoint that does not fit: a line per problem, then ``note``."""
  lines = "".join(f"\n  - {p}" for p in problems)
  return WeightImportError(f"cannot load {what} from {source}:{lines}\n({note})")


def replace_leaves(
  variables: Mapping[str, Any],
  values: Mapping[str, Mapping[tuple[str, ...], np.ndarray]],
  prefix: tuple[str, ...] = (),
) -> dict[str, Any]:
  """A copy of ``variables`` (plain dicts) with ``values[collection][prefix + path]`` replaced."""
  out = dict(variables)
  for collection, leaves in values.items():
    if collection not in variables:
      continue
    tree = traverse_util.flatten_dict(unfreeze(variables[collection]))
    for path, value in leaves.items():
      tree[prefix + path] = jnp.asarray(value)
    out[collection] = traverse_util.unflatten_dict(tree)
  return out


def load_torchvision_resnet(
  state_dict_or_path: Mapping[str, Any] | str | os.PathLike,
  variables: Mapping[str, Any],
  *,
  scope: str | None = "backbone",
) -> dict[str, Any]:
  """Return a copy of ``variables`` whose ResNet params and batch_stats come from torchvision.

  Args:
    state_dict_or_path: a torchvision ResNet ``state_dict`` (values torch tensors
      or numpy arrays) or the path of a ``.pth`` file holding one (needs torch;
      wrapped, ``module.``-prefixed or a whole model: see ``read_torch_state_dict``).
    variables: Flax variables ``{'params': ..., 'batch_stats': ...}`` of a
      ``UniPose`` (the ResNet is the ``scope`` sub-tree, ``'backbone'``) or of
      a bare ``ResNet`` (use ``scope=None``; also chosen automatically when
      ``params`` has no ``scope`` entry but has ``conv1``).
    scope: name of the backbone sub-tree in ``variables``.

  Returns:
    New variables (plain nested dicts) with every backbone leaf replaced, in the
    dtype of the leaf it replaces; everything outside the backbone is unchanged.

  Raises:
    ValueError: naming every missing key, unexpected key and shape mismatch
      (``fc.*`` and ``*.num_batches_tracked`` are ignored).
    ImportError: a path was given but torch is not installed.
  """
  state, source = read_torch_state_dict(state_dict_or_path, limits=size_limits(variables))
  variables = {k: v for k, v in variables.items()}
  params = variables.get("params", {})
  if scope is not None and scope not in params:
    if "conv1" in params:
      scope = None
    else:
      raise ValueError(f"variables have no {scope!r} params and no bare ResNet params (no 'conv1')")

  targets: dict[str, tuple[str, tuple[str, ...], Any]] = {}
  for collection in ("params", "batch_stats"):
    tree = variables.get(collection, {})
    if scope is not None:
      tree = tree.get(scope, {})
    for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
      targets[torch_key(collection, path)] = (collection, path, leaf)

  match = match_state_dict(
    state,
    targets,
    lambda k: k.startswith(IGNORED_PREFIXES) or k.endswith(IGNORED_SUFFIXES),
  )
  problems = match.problems()
  if problems:
    raise mismatch_error(
      "torchvision ResNet weights",
      source,
      problems,
      "ignored on purpose: fc.*, *.num_batches_tracked",
    )
  return replace_leaves(variables, match.values, (scope,) if scope is not None else ())
