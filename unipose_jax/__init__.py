"""unipose_jax: UniPose (ResNet + WASP + decoder) with DARK heatmap codecs in JAX/Flax."""

__version__ = "0.1.0"
