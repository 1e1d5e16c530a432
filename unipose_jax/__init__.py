"""unipose_jax: UniPose (ResNet + WASP + decoder) with DARK heatmap codecs in JAX/Flax.

``from unipose_jax import Predictor`` loads :class:`unipose_jax.predict.Predictor` on
first use, so importing the package itself imports neither JAX nor OpenCV.
"""

__version__ = "0.1.0"

_LAZY = {"Predictor": "unipose_jax.predict", "Prediction": "unipose_jax.predict"}


def __getattr__(name: str):
  if name in _LAZY:
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'unipose_jax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
