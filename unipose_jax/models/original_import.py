"""Load a checkpoint of the original PyTorch UniPose (bmartacho/UniPose) into the Flax ``UniPose``.

``load_original_unipose(source, variables)`` returns ``(new_variables, report)``.
The source is a state dict of the original ``unipose`` module or a ``.pth`` /
``.pth.tar`` file in any form ``torch_checkpoint.read_torch_state_dict`` reads
(the original saves ``{'state_dict': model.state_dict()}``; DataParallel's
``module.`` prefix and whole pickled models work too). Every parameter AND every
BatchNorm running statistic is loaded; conv weights go from OIHW to HWIO.

Key mapping (original -> Flax; ``{weight, bias, running_mean, running_var}`` of a
BatchNorm -> ``params/{scale, bias}``, ``batch_stats/{mean, var}``)::

    backbone.*                       -> backbone/*  (torchvision names, see torch_import)
    wasp.aspp1.{atrous_conv, bn}     -> wasp/branch0_{conv, bn}        (1x1)
    wasp.aspp{2,3,4}.{atrous_conv, bn} -> wasp/branch{1,2,3}_{conv, bn} (atrous cascade)
    wasp.conv2                       -> wasp/branch_proj   (the shared 1x1, applied twice)
    wasp.global_avg_pool.{1, 2}      -> wasp/pool_{conv, bn}
    wasp.conv1, wasp.bn1             -> wasp/project_{conv, bn}
    decoder.conv1, decoder.bn1       -> decoder/low_{conv, bn}
    decoder.last_conv.{0, 1}         -> decoder/{conv1, bn1}
    decoder.last_conv.{4, 5}         -> decoder/{conv2, bn2}
    decoder.last_conv.8.{weight, bias} -> decoder/head/{kernel, bias}

Keys the original's forward pass never uses are accepted, not loaded, and listed
in the report: its decoder's ``conv2`` (a 2048 -> 256 1x1) and ``bn2``, and every
``*.num_batches_tracked``. Any other key the model lacks, any model variable the
checkpoint lacks, and any shape disagreement is an error (one ``ValueError``
naming the keys); a head with another number of maps than the model's is said in
words first (the original's LSP model has 15: 14 joints + background; its box
variant adds 5 maps after those, 20 in all).

The Flax model must have the original's structure: ``UniPose101`` at output
stride 16 (or 8) with the default widths and ``wasp_projection_repeats=2``. The
repeat count leaves no trace in the parameters, so it cannot be checked here.

Input convention. The original was trained on BGR images (``cv2.imread``) with
pixels 0..255 normalised as ``(pixel - 128) / 256``, not on ImageNet-normalised
RGB as this project's pipeline feeds the model; ``to_original_input`` converts
the one into the other, exactly. (Its LSP loader also squashes each image to
368x368, and its heatmap pixel ``i`` stands for input pixel ``8 i``.)
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from flax import traverse_util

from unipose_jax.models.torch_checkpoint import (
  WeightImportError,
  read_torch_state_dict,
  size_limits,
)
from unipose_jax.models.torch_import import (
  match_state_dict,
  mismatch_error,
  replace_leaves,
  torch_key,
  torch_leaf_name,
)
from unipose_jax.models.unipose import IMAGENET_MEAN, IMAGENET_STD

#: Keys of the original's state dict that its forward pass never uses.
UNUSED_PREFIXES: tuple[str, ...] = ("decoder.conv2.", "decoder.bn2.")
UNUSED_SUFFIXES: tuple[str, ...] = (".num_batches_tracked",)

#: Prefixes only an original UniPose-LSTM state dict has (``model/uniposeLSTM.py``).
LSTM_PREFIXES: tuple[str, ...] = ("lstm_0.", "lstm.")

#: The original's head: a 1x1 conv with bias, ``K + 1`` output maps (+ 5 with the box head).
HEAD_KEY = "decoder.last_conv.8"

_WASP_NAMES = {
  "branch_proj": "conv2",
  "pool_conv": "global_avg_pool.1",
  "pool_bn": "global_avg_pool.2",
  "project_conv": "conv1",
  "project_bn": "bn1",
}
_DECODER_NAMES = {
  "low_conv": "conv1",
  "low_bn": "bn1",
  "conv1": "last_conv.0",
  "bn1": "last_conv.1",
  "conv2": "last_conv.4",
  "bn2": "last_conv.5",
  "head": "last_conv.8",
}
_BRANCH = re.compile(r"branch(\d+)_(conv|bn)")
_UNUSED_NOTE = (
  "accepted and not loaded, as the original's forward pass never uses them: "
  "decoder.conv2.*, decoder.bn2.*, *.num_batches_tracked"
)


def original_key(collection: str, path: tuple[str, ...]) -> str:
  """Original UniPose state-dict key of a Flax ``UniPose`` variable.

  ``original_key("batch_stats", ("wasp", "branch2_bn", "var"))`` is
  ``"wasp.aspp3.bn.running_var"``; backbone keys are ``"backbone." + torch_key(...)``.
  """
  scope, *rest = path
  if scope == "backbone":
    return "backbone." + torch_key(collection, tuple(rest))
  if scope in ("wasp", "decoder") and len(rest) == 2:
    module, leaf = rest
    name = (_WASP_NAMES if scope == "wasp" else _DECODER_NAMES).get(module)
    branch = _BRANCH.fullmatch(module) if scope == "wasp" else None
    if branch:
      name = f"aspp{int(branch[1]) + 1}.{'atrous_conv' if branch[2] == 'conv' else 'bn'}"
    if name is not None:
      return f"{scope}.{name}.{torch_leaf_name(collection, leaf)}"
  raise ValueError(f"no original UniPose name for Flax variable {collection}/{'/'.join(path)}")


def is_lstm_state_dict(state: Mapping[str, Any]) -> bool:
  """Whether a (prefix-free) state dict is an original UniPose-LSTM's (it has LSTM keys)."""
  return any(k.startswith(LSTM_PREFIXES) for k in state)


def _is_unused(key: str) -> bool:
  return key.startswith(UNUSED_PREFIXES) or key.endswith(UNUSED_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class OriginalImportReport:
  """What ``load_original_unipose`` did.

  Attributes:
    source: where the weights came from and in which form.
    loaded: checkpoint keys copied into the variables, sorted.
    unused: checkpoint keys the original's forward pass never uses, accepted and
      not loaded (decoder ``conv2``/``bn2``, ``*.num_batches_tracked``), sorted.
    head_maps: output maps of the loaded head (K + 1; K + 6 with a box head).
    num_values: number of scalars loaded (parameters and running statistics).
  """

  source: str
  loaded: tuple[str, ...]
  unused: tuple[str, ...]
  head_maps: int
  num_values: int

  def __str__(self) -> str:
    counters = [k for k in self.unused if k.endswith(UNUSED_SUFFIXES)]
    others = [k for k in self.unused if not k.endswith(UNUSED_SUFFIXES)]
    unused = others + ([f"{len(counters)} x *.num_batches_tracked"] if counters else [])
    return (
      f"loaded {len(self.loaded)} tensors ({self.num_values:,} values, head of "
      f"{self.head_maps} maps) from {self.source}; unused (never used by the original's "
      f"forward pass): {', '.join(unused) if unused else 'none'}"
    )


def _head_problem(checkpoint_maps: int, model_maps: int) -> str:
  c, m = checkpoint_maps, model_maps
  text = f"checkpoint head ({HEAD_KEY}) has {c} output maps, this model has {m}"
  if m - c == 5:
    return (
      f"{text} ({m - 6} joints + background + 5 box maps, or {m - 1} joints + background); "
      "5 maps fewer: the checkpoint has no box head (5 maps after the K + 1 joint maps: box "
      "centre and 4 corners); load it into a model without the box head"
    )
  text += f" ({m - 1} joints + background)"
  if c - m == 5:
    return (
      f"{text}; 5 maps more: the checkpoint was most likely trained with the original's box "
      "head (5 maps after the K + 1 joint maps: box centre and 4 corners); load it into a "
      "model with the box head"
    )
  if m - c == 1:
    return (
      f"{text}; 1 map fewer: the checkpoint may have no background map (reported for some "
      "original releases), so it does not fit a model with K + 1 maps"
    )
  return f"{text}; load it into a model with num_joints={c - 1} (K + 1 maps, background first)"


def load_original_unipose(
  path_or_state_dict: Mapping[str, Any] | str | os.PathLike | Any,
  variables: Mapping[str, Any],
  *,
  allow_pickle: bool = False,
) -> tuple[dict[str, Any], OriginalImportReport]:
  """Fill the Flax ``UniPose`` variables from an original PyTorch UniPose checkpoint.

  Args:
    path_or_state_dict: a state dict of the original ``unipose`` (torch tensors
      or numpy arrays, original key names), a wrapper of one, an ``nn.Module``,
      or the path of a ``.pth`` file holding any of these (needs torch); see
      ``read_torch_state_dict``.
    variables: Flax variables ``{'params': ..., 'batch_stats': ...}`` of a
      ``UniPose`` (arrays, or the ``jax.ShapeDtypeStruct`` leaves of
      ``jax.eval_shape(model.init, ...)``): they give the target shapes and dtypes.
    allow_pickle: let ``read_torch_state_dict`` fully unpickle a file that the
      safe loads cannot read (it can run code from the file: trusted files only).

  Returns:
    ``(new_variables, report)``: plain nested dicts with every ``params`` and
    ``batch_stats`` leaf replaced (in the dtype of the leaf it replaces; other
    collections unchanged), and an ``OriginalImportReport`` (``str()`` of it is a
    one-line summary for logs).

  Raises:
    ValueError: one error naming every missing, unexpected or wrongly shaped key
      (a head of another size first, in words), or an unreadable checkpoint; one line
      for a checkpoint of the original UniPose-LSTM (``load_original_unipose_lstm``).
    FileNotFoundError, ImportError: no such file; a path but no torch.
  """
  params = variables.get("params", {})
  absent = [s for s in ("backbone", "wasp", "decoder") if s not in params]
  if absent:
    raise WeightImportError(
      f"variables are not a UniPose's: params lack {', '.join(absent)} "
      f"(they have {', '.join(sorted(params)) or 'nothing'})"
      + ("; for a UniPoseLSTM use load_original_unipose_lstm" if "recurrent" in params else "")
    )
  state, source = read_torch_state_dict(
    path_or_state_dict, allow_pickle=allow_pickle, limits=size_limits(variables)
  )
  if is_lstm_state_dict(state):
    raise WeightImportError(
      f"{source} is an original UniPose-LSTM checkpoint (it has lstm_0.* and lstm.* keys), "
      "not an image UniPose's: load it with load_original_unipose_lstm into a UniPoseLSTM"
    )
  targets: dict[str, tuple[str, tuple[str, ...], Any]] = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in traverse_util.flatten_dict(dict(variables.get(collection, {}))).items():
      targets[original_key(collection, path)] = (collection, path, leaf)

  match = match_state_dict(state, targets, _is_unused)
  problems = match.problems()
  head = state.get(f"{HEAD_KEY}.weight")
  model_head = targets.get(f"{HEAD_KEY}.weight")
  head_maps = int(head.shape[0]) if getattr(head, "ndim", 0) == 4 else -1
  if model_head is not None and head_maps > 0 and head_maps != model_head[2].shape[-1]:
    for key in (f"{HEAD_KEY}.weight", f"{HEAD_KEY}.bias"):
      match.bad_shapes.pop(key, None)
    problems = [_head_problem(head_maps, int(model_head[2].shape[-1])), *match.problems()]
  if problems:
    raise mismatch_error("original UniPose weights", source, problems, _UNUSED_NOTE)

  report = OriginalImportReport(
    source=source,
    loaded=tuple(match.loaded),
    unused=tuple(match.ignored),
    head_maps=head_maps,
    num_values=sum(v.size for leaves in match.values.values() for v in leaves.values()),
  )
  return replace_leaves(variables, match.values), report


def to_original_input(images: jnp.ndarray) -> jnp.ndarray:
  """This project's model input -> the original checkpoints' input, for the same image.

  ``images``: (B, H, W, 3) RGB in [0, 1], ImageNet-normalised (``unipose.py``).
  Returns (B, H, W, 3) BGR with pixels 0..255 as ``(pixel - 128) / 256``, float32.
  """
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  pixels = (jnp.asarray(images, jnp.float32) * std + mean) * 255.0
  return (pixels[..., ::-1] - 128.0) / 256.0
