"""Load a checkpoint of the original PyTorch UniPose-LSTM into the Flax ``UniPoseLSTM``.

``load_original_unipose_lstm(source, variables)`` returns ``(new_variables, report)``,
the twin of ``original_import.load_original_unipose``: the same safe reading
(``torch_checkpoint.read_torch_state_dict``: plain state dicts, ``{'state_dict': ...}``
wrappers, DataParallel's ``module.`` prefix, whole pickled models), the same trunk key
mapping (``original_key``), every parameter and BatchNorm statistic loaded, conv
weights OIHW -> HWIO, and the same report (:class:`OriginalImportReport`).

Key mapping (original ``model/uniposeLSTM.py`` -> Flax)::

    backbone.*, wasp.*, decoder.*      -> trunk/...  (as load_original_unipose maps them;
                                          the video WASP has no wasp.global_avg_pool.2)
    lstm_0.conv_{g,i,o}_lstm           -> recurrent/lstm_0/conv_{g,i,o}
    lstm.conv_{g,i,o,f}{x,h}_lstm      -> recurrent/lstm/conv_{g,i,o,f}{x,h}
    conv1 .. conv5                     -> recurrent/head/conv1 .. conv5

The forms the released checkpoint and the published code differ in are said in words:
a 4-channel first convolution (``backbone.conv1.weight`` (64, 4, 7, 7), RGB + centre
map) needs ``UniPoseLSTM(input_centre_map=True)``; a WASP with BatchNorm in its
image-pooling branch needs ``video_wasp=False``; the LSTM of the improved variant
(``feed_previous_heatmaps=True``) reads 2K + 3 channels, the original's K + 2; the
head's maps (``conv5``) must be the model's K + 1. A checkpoint of the image UniPose
(no ``lstm_0``/``lstm``/``conv5`` keys) is refused in one line, as ``load_original_unipose``
refuses an LSTM checkpoint.

Input convention: as the image model's (``original_import.to_original_input``: the
original fed BGR pixels as ``(pixel - 128) / 256``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from flax import traverse_util

from unipose_jax.models.original_import import (
  LSTM_PREFIXES,
  OriginalImportReport,
  _is_unused,
  is_lstm_state_dict,
  original_key,
)
from unipose_jax.models.torch_checkpoint import (
  WeightImportError,
  read_torch_state_dict,
  size_limits,
)
from unipose_jax.models.torch_import import (
  match_state_dict,
  mismatch_error,
  replace_leaves,
  torch_leaf_name,
)

#: The original's last head convolution: K + 1 maps.
HEAD_KEY = "conv5"
FIRST_CONV_KEY = "backbone.conv1.weight"
LSTM_INPUT_KEY = "lstm_0.conv_g_lstm.weight"
POOL_BN_PREFIX = "wasp.global_avg_pool.2."

_HEAD_CONV = re.compile(r"conv[1-5]")
_UNUSED_NOTE = (
  "accepted and not loaded, as the original's forward pass never uses them: "
  "decoder.conv2.*, decoder.bn2.*, *.num_batches_tracked"
)


def original_lstm_key(collection: str, path: tuple[str, ...]) -> str:
  """Original UniPose-LSTM state-dict key of a Flax ``UniPoseLSTM`` variable.

  ``original_lstm_key("params", ("recurrent", "lstm", "conv_fh", "kernel"))`` is
  ``"lstm.conv_fh_lstm.weight"``; ``("trunk", ...)`` paths map as ``original_key``'s.
  """
  scope, *rest = path
  if scope == "trunk":
    return original_key(collection, tuple(rest))
  if scope == "recurrent" and len(rest) == 3 and collection == "params":
    module, conv, leaf = rest
    name = torch_leaf_name(collection, leaf)
    if module in ("lstm_0", "lstm") and conv.startswith("conv_"):
      return f"{module}.{conv}_lstm.{name}"
    if module == "head" and _HEAD_CONV.fullmatch(conv):
      return f"{conv}.{name}"
  raise ValueError(f"no original UniPose-LSTM name for Flax variable {collection}/{'/'.join(path)}")


def _channels(value: Any, axis: int) -> int:
  shape = getattr(value, "shape", ())
  return int(shape[axis]) if len(shape) == 4 else -1


def _form_problems(state: Mapping[str, Any], targets: Mapping[str, Any], k: int) -> list[str]:
  """The differences of form, in words (they also show up as shape or key mismatches)."""
  problems = []
  have, want = (
    _channels(state.get(FIRST_CONV_KEY), 1),
    _channels(targets[FIRST_CONV_KEY][2], 2) if FIRST_CONV_KEY in targets else -1,
  )
  if have > 0 and want > 0 and have != want:
    if have == 4:
      problems.append(
        f"first convolution ({FIRST_CONV_KEY}) takes 4 input channels (RGB + the centre map, "
        f"as the released Penn Action checkpoint), this model's takes {want}: build "
        "UniPoseLSTM(input_centre_map=True)"
      )
    else:
      problems.append(
        f"first convolution ({FIRST_CONV_KEY}) takes {have} input channels, this model's "
        f"takes {want}" + (" (input_centre_map=True): build it with input_centre_map=False"
                           if want == 4 else "")
      )  # fmt: skip
  have, want = _channels(state.get(LSTM_INPUT_KEY), 1), k + 2
  if have > 0:
    model_in = _channels(targets[LSTM_INPUT_KEY][2], 2) if LSTM_INPUT_KEY in targets else -1
    if model_in > 0 and have != model_in:
      extra = (
        "; the model is the improved variant (feed_previous_heatmaps=True, the previous "
        f"heatmaps are read too: {2 * k + 3} channels), which the original does not have: "
        "build it with feed_previous_heatmaps=False"
        if model_in == 2 * k + 3 and have == want
        else ""
      )
      problems.append(
        f"LSTM input ({LSTM_INPUT_KEY}) takes {have} channels in the checkpoint, "
        f"{model_in} in this model{extra}"
      )
  head = state.get(f"{HEAD_KEY}.weight")
  model_head = targets.get(f"{HEAD_KEY}.weight")
  have = int(head.shape[0]) if getattr(head, "ndim", 0) == 4 else -1
  if model_head is not None and have > 0 and have != model_head[2].shape[-1]:
    m = int(model_head[2].shape[-1])
    problems.append(
      f"checkpoint head ({HEAD_KEY}) has {have} output maps, this model has {m} "
      f"({m - 1} joints + background); load it into a model with num_joints={have - 1}"
    )
  pool_bn_in_state = any(key.startswith(POOL_BN_PREFIX) for key in state)
  pool_bn_in_model = any(key.startswith(POOL_BN_PREFIX) for key in targets)
  if pool_bn_in_state != pool_bn_in_model:
    problems.append(
      "the checkpoint's WASP has BatchNorm in its image-pooling branch (wasp.global_avg_pool.2.*, "
      "the image WASP), this model's has not (the original's video WASP): build it with "
      "video_wasp=False"
      if pool_bn_in_state
      else "the checkpoint's WASP has no BatchNorm in its image-pooling branch (the original's "
      "video WASP, no wasp.global_avg_pool.2.*), this model's has: build it with video_wasp=True"
    )
  return problems


def load_original_unipose_lstm(
  path_or_state_dict: Mapping[str, Any] | str | os.PathLike | Any,
  variables: Mapping[str, Any],
  *,
  allow_pickle: bool = False,
) -> tuple[dict[str, Any], OriginalImportReport]:
  """Fill the Flax ``UniPoseLSTM`` variables from an original PyTorch UniPose-LSTM checkpoint.

  Args:
    path_or_state_dict: a state dict of the original's ``unipose`` of
      ``model/uniposeLSTM.py`` (torch tensors or numpy arrays), a wrapper of one, an
      ``nn.Module``, or the path of a ``.pth`` file holding any of these (needs torch).
    variables: ``{'params': ..., 'batch_stats': ...}`` of a ``UniPoseLSTM`` (arrays or
      ``jax.ShapeDtypeStruct`` leaves): they give the target shapes and dtypes.
    allow_pickle: as ``load_original_unipose``'s (trusted files only).

  Returns:
    ``(new_variables, report)`` as ``load_original_unipose`` returns them.

  Raises:
    WeightImportError (a ValueError): an image-model checkpoint (one line), or one error
      naming every missing, unexpected or wrongly shaped key, the differences of form
      (first convolution, LSTM input, head, WASP) first and in words.
  """
  params = variables.get("params", {})
  if "trunk" not in params or "recurrent" not in params:
    raise WeightImportError(
      "variables are not a UniPoseLSTM's (params have "
      f"{', '.join(sorted(params)) or 'nothing'}, not trunk and recurrent)"
      + ("; for the image UniPose use load_original_unipose" if "backbone" in params else "")
    )
  state, source = read_torch_state_dict(
    path_or_state_dict, allow_pickle=allow_pickle, limits=size_limits(variables)
  )
  if not is_lstm_state_dict(state):
    kind = "an original UniPose (image model) checkpoint" if "backbone.conv1.weight" in state else (
      "not an original UniPose-LSTM checkpoint"
    )  # fmt: skip
    raise WeightImportError(
      f"{source} is {kind}: it has no lstm_0.* or lstm.* keys; load it with "
      "load_original_unipose into a UniPose"
    )
  targets: dict[str, tuple[str, tuple[str, ...], Any]] = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in traverse_util.flatten_dict(dict(variables.get(collection, {}))).items():
      targets[original_lstm_key(collection, path)] = (collection, path, leaf)
  model_head = targets.get(f"{HEAD_KEY}.weight")
  k = int(model_head[2].shape[-1]) - 1 if model_head is not None else 0

  match = match_state_dict(state, targets, _is_unused)
  form = _form_problems(state, targets, k)
  problems = form + match.problems()
  if problems:
    raise mismatch_error("original UniPose-LSTM weights", source, problems, _UNUSED_NOTE)
  head = state[f"{HEAD_KEY}.weight"]
  report = OriginalImportReport(
    source=source,
    loaded=tuple(match.loaded),
    unused=tuple(match.ignored),
    head_maps=int(head.shape[0]),
    num_values=sum(v.size for leaves in match.values.values() for v in leaves.values()),
  )
  return replace_leaves(variables, match.values), report


__all__ = [
  "LSTM_PREFIXES",
  "is_lstm_state_dict",
  "load_original_unipose_lstm",
  "original_lstm_key",
]
