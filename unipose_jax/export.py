"""The trained network to ONNX, for deployment without JAX.

::

    from unipose_jax.export import export_onnx
    export_onnx(UniPose101(), variables, "unipose.onnx", input_size=368)

The file takes uint8 RGB images ``images`` (N, H, W, 3) (any N; the letterboxed
network input, see ``unipose_jax.deploy.letterbox``), normalises them inside
the graph with the project's ImageNet mean and std, and returns float32
``heatmaps`` (N, ceil(S / 8), ceil(S / 8), C): the network in evaluation mode,
channel 0 the background, then the K joints (and any extra maps the head has).
Decode them with ``unipose_jax.deploy`` (NumPy) or ``HeatmapCodec.decode``.

The graph is written with the ``onnx`` package's helper API from the module's
hyper-parameters and variables (``onnx_graph.py``), not traced from JAX. Tracing
with jax2onnx was tried (0.12.5 and 0.17.1, under jax 0.10.2 / flax 0.12.8) and
failed on this network: its patch of ``flax.linen.max_pool`` rejects the
positional window and the explicit padding, and ``lax.reduce_window`` becomes a
4-D MaxPool that onnxruntime refuses; besides, jax2onnx 0.13.1+ pin
``orbax-checkpoint<0.11.37`` (the project needs >= 0.12.8) and all versions pull
huggingface-hub, netron, equinox and orbax-export. The ``onnx`` extra needs only
``onnx`` and ``onnxruntime``: ``pip install 'unipose_jax[onnx]'``.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from unipose_jax import extras, files, geometry, preemption


def _input_hw(input_size) -> tuple[int, int]:
  """``S`` or ``(H, W)`` -> ``(H, W)`` of positive ints (``geometry.input_hw``)."""
  return geometry.input_hw(input_size, "input_size")


def check_output_path(path) -> pathlib.Path:
  """Resolves ``path`` and checks it can be written: an existing, writable folder and
  not itself a folder. Raises ``FileNotFoundError``/``PermissionError``/``IsADirectoryError``
  naming the path."""
  path = pathlib.Path(os.fspath(path)).expanduser()
  parent = path.parent.resolve()
  if path.is_dir():
    raise IsADirectoryError(f"ONNX output path {str(path)!r} is a folder; give a file name")
  if not parent.is_dir():
    raise FileNotFoundError(
      f"cannot write ONNX file {str(path)!r}: folder {str(parent)!r} does not exist"
    )
  if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
    raise PermissionError(f"cannot write ONNX file {str(path)!r}: not writable")
  return path


def export_onnx(
  model,
  variables: Mapping[str, Any],
  path,
  input_size,
  *,
  verify: bool = False,
  tolerance: float = 1e-4,
  before_rename=None,
  log=None,
) -> pathlib.Path:
  """Writes the evaluation-mode ``model`` with ``variables`` to an ONNX file.

  Args:
    model: a ``unipose_jax.models.UniPose`` (any ResNet backbone, output stride,
      widths, WASP rates and projection repeats); the graph computes in float32
      whatever ``model.dtype`` is.
    variables: ``{"params": ..., "batch_stats": ...}`` as from ``model.init`` or a
      checkpoint (jax or numpy arrays); every entry must be used by the graph.
    path: the ``.onnx`` file to write (its folder must exist).
    input_size: ``S`` (square input) or ``(H, W)``; fixed in the file, the batch is dynamic.
    verify: run the file with onnxruntime and ``model.apply`` on two random
      images and raise ``AssertionError`` if the heatmaps differ by more than
      ``tolerance`` times the largest reference value.
    before_rename: called once the file is written (and verified), before it is
      renamed into place (``--mode=export`` writes the settings JSON there).
    log: called with one line saying the difference the check measured (``verify``).

  The file is written atomically: to a hidden temporary file beside ``path``, renamed
  over it only when whole (and verified). A full disk, a failed check or an interrupt
  leaves no ``.onnx`` at ``path`` (an earlier one stays) and no temporary file.

  Returns:
    The path written. Input ``images`` uint8 (N, H, W, 3) RGB; output
    ``heatmaps`` float32 (N, ceil(H / 8), ceil(W / 8), C).

  Raises:
    FileNotFoundError, PermissionError, IsADirectoryError: on a bad ``path`` (named),
      before any work is done.
    OSError: the file could not be written (e.g. no space left), in one line naming it.
    extras.MissingExtraError: without the ``onnx`` package (one line, the install command).
  """
  path = check_output_path(path)
  hw = _input_hw(input_size)
  onnx = extras.require("onnx", "onnx")
  from unipose_jax import onnx_graph  # noqa: PLC0415 (imports onnx)

  proto = onnx_graph.build_unipose_graph(model, variables, hw)
  preemption.check("export, before writing; nothing written")
  try:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  except OSError as e:
    raise files.named(e, f"cannot write ONNX file {str(path)!r}") from None
  os.close(fd)
  try:
    with preemption.temporary(tmp):
      try:
        onnx.save_model(proto, tmp)
      except OSError as e:
        raise files.named(e, f"cannot write ONNX file {str(path)!r}") from None
      if verify:
        preemption.check("export, before its check against JAX; nothing written")
        error = max_relative_error(tmp, model, variables, hw)
        if not error <= tolerance:
          raise AssertionError(f"ONNX file {str(path)!r} differs from the model: {error:.2e}")
        if log is not None:
          log(
            f"onnxruntime check: the heatmaps of 2 random images differ from JAX's by "
            f"{error:.2e} of their largest value (at most {tolerance:.0e} allowed)"
          )
      preemption.check("export, before the file was renamed into place; nothing written")
      if before_rename is not None:
        before_rename()
      os.chmod(tmp, 0o644)
      os.replace(tmp, path)
  finally:
    pathlib.Path(tmp).unlink(missing_ok=True)
  return path


def max_relative_error(path, model, variables, input_size, batch: int = 2, seed: int = 0) -> float:
  """``max |onnx - jax| / max |jax|`` of the heatmaps of ``batch`` random uint8 images."""
  import jax

  from unipose_jax.models import normalize

  ort = extras.require("onnxruntime", "onnx")

  h, w = _input_hw(input_size)
  images = np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
  session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  got = session.run(None, {"images": images})[0]
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  ref = np.asarray(apply(variables, normalize(images)))
  return float(np.abs(got - ref).max() / np.abs(ref).max())
