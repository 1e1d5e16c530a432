"""Optional dependencies: import one, or say in one line which extra installs it.

``pip install -e .`` installs what training, evaluation and prediction need; ONNX export
and running an exported file need ``onnx`` / ``onnxruntime`` (the ``onnx`` extra, which
README's set-up installs), reading PyTorch checkpoints needs ``torch``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra -> what it is for (the message says it).
EXTRAS = {
  "onnx": "ONNX export and running an exported file",
  "coco": "COCO's OKS AP (pycocotools' COCOeval)",
  "torch": "reading PyTorch checkpoints (.pth)",
}


class MissingExtraError(ImportError):
  """An optional package is not installed; the message names the install command."""


def require(module: str, extra: str) -> ModuleType:
  """``importlib.import_module(module)``, or :class:`MissingExtraError` in one line naming
  ``pip install 'unipose_jax[<extra>]'``."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise MissingExtraError(
      f"{EXTRAS.get(extra, extra)} needs {module.split('.')[0]}, which is not installed "
      f"({e.msg if hasattr(e, 'msg') else e}); install it with: pip install 'unipose_jax[{extra}]'"
    ) from None
