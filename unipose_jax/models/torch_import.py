"""Load torchvision ResNet weights into the Flax ``ResNet`` (alone or inside ``UniPose``).

torch is optional: it is imported only when a ``.pth`` path is given (or torch
tensors are passed). Key mapping (torchvision -> Flax)::

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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import unfreeze

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
  try:
    parts.append(_LEAF_RENAMES[(collection, leaf)])
  except KeyError:
    raise ValueError(
      f"no torchvision name for Flax variable {collection}/{'/'.join(path)}"
    ) from None
  return ".".join(parts)


def _to_numpy(value: Any, key: str) -> np.ndarray:
  if hasattr(value, "detach"):  # torch.Tensor, without importing torch
    value = value.detach().cpu().float().numpy()
  try:
    return np.asarray(value)
  except Exception as e:  # pragma: no cover - defensive
    raise TypeError(f"state dict entry {key!r} is not an array: {type(value).__name__}") from e


def _read_state_dict(source: Mapping[str, Any] | str | os.PathLike) -> tuple[dict[str, Any], str]:
  if isinstance(source, Mapping):
    return dict(source), "the given state dict"
  path = os.fspath(source)
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      f"reading the PyTorch checkpoint {path!r} needs torch, which is not installed; "
      "install it with `pip install unipose_jax[torch]` (or `pip install torch`), "
      "or pass a dict of numpy arrays instead of a path"
    ) from e
  if not os.path.isfile(path):
    raise FileNotFoundError(f"torchvision checkpoint not found: {path!r}")
  loaded = torch.load(path, map_location="cpu", weights_only=True)
  if (
    isinstance(loaded, Mapping)
    and "state_dict" in loaded
    and isinstance(loaded["state_dict"], Mapping)
  ):
    loaded = loaded["state_dict"]
  if not isinstance(loaded, Mapping):
    raise ValueError(f"{path!r} does not hold a state dict (got {type(loaded).__name__})")
  return dict(loaded), repr(path)


def load_torchvision_resnet(
  state_dict_or_path: Mapping[str, Any] | str | os.PathLike,
  variables: Mapping[str, Any],
  *,
  scope: str | None = "backbone",
) -> dict[str, Any]:
  """Return a copy of ``variables`` whose ResNet params and batch_stats come from torchvision.

  Args:
    state_dict_or_path: a torchvision ResNet ``state_dict`` (values torch tensors
      or numpy arrays) or the path of a ``.pth`` file holding one (needs torch).
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
  state, source = _read_state_dict(state_dict_or_path)
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

  wanted = {
    k for k in state if not k.startswith(IGNORED_PREFIXES) and not k.endswith(IGNORED_SUFFIXES)
  }
  missing = sorted(set(targets) - wanted)
  unexpected = sorted(wanted - set(targets))
  new_leaves: dict[str, dict[tuple[str, ...], Any]] = {"params": {}, "batch_stats": {}}
  bad_shapes = []
  for key in sorted(set(targets) & wanted):
    collection, path, leaf = targets[key]
    value = _to_numpy(state[key], key)
    torch_shape = tuple(int(s) for s in value.shape)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if tuple(value.shape) != tuple(leaf.shape):
      layout = (
        " (OIHW), as HWIO " + str(tuple(int(s) for s in value.shape)) if value.ndim == 4 else ""
      )
      bad_shapes.append(
        f"{key}: checkpoint {torch_shape}{layout}, model expects {tuple(leaf.shape)}"
      )
      continue
    new_leaves[collection][path] = np.asarray(value, dtype=leaf.dtype)

  problems = []
  if missing:
    problems.append(f"missing keys (in the model, not in the checkpoint): {', '.join(missing)}")
  if unexpected:
    problems.append(
      f"unexpected keys (in the checkpoint, not in the model): {', '.join(unexpected)}"
    )
  if bad_shapes:
    problems.append(f"shape mismatches: {'; '.join(bad_shapes)}")
  if problems:
    raise ValueError(
      f"cannot load torchvision ResNet weights from {source}: "
      + " | ".join(problems)
      + " (ignored on purpose: fc.*, *.num_batches_tracked)"
    )

  out = dict(variables)
  for collection, leaves in new_leaves.items():
    if collection not in variables:
      continue
    tree = traverse_util.flatten_dict(unfreeze(variables[collection]))
    prefix = (scope,) if scope is not None else ()
    for path, value in leaves.items():
      tree[prefix + path] = jnp.asarray(value)
    out[collection] = traverse_util.unflatten_dict(tree)
  return out
