"""Every configuration key, with the original UniPose setting on LSP as its values.

The defaults live inside the package (``unipose_jax/config_defaults.py``), so that an
installed package loads a run's ``config.json`` without this folder; this file re-exports
them for the variants here, which call ``get_config()`` and override a few keys.
"""

from unipose_jax.config_defaults import get_config

__all__ = ["get_config"]
