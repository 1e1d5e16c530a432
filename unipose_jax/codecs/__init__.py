"""Heatmap codecs: keypoints <-> Gaussian heatmaps, with DARK and the usual baselines.

``HeatmapCodec`` is the only object in the project that knows the stride and
the heatmap size; everything else speaks input (or original-image) pixels.
Convention: ``(x, y)``, integer coordinates are pixel centres,
``x_heatmap = (x_input + 0.5) / s - 0.5``.

:mod:`unipose_jax.codecs.box` (``from unipose_jax.codecs import box``) turns the person
box into the five extra points of UniPose's box head and back.
"""

from unipose_jax.codecs import box
from unipose_jax.codecs.coordinates import heatmap_to_input, input_to_heatmap, strides
from unipose_jax.codecs.decoding import (
  DECODINGS,
  decode_argmax,
  decode_dark,
  decode_heatmaps,
  decode_shift,
  decode_upsample,
  modulate,
)
from unipose_jax.codecs.encoding import (
  ENCODINGS,
  OFF_MAP_SIGMAS,
  encode_heatmaps,
  gaussian_heatmaps,
)
from unipose_jax.codecs.heatmap_codec import HeatmapCodec

__all__ = [
  "DECODINGS",
  "ENCODINGS",
  "OFF_MAP_SIGMAS",
  "HeatmapCodec",
  "box",
  "decode_argmax",
  "decode_dark",
  "decode_heatmaps",
  "decode_shift",
  "decode_upsample",
  "encode_heatmaps",
  "gaussian_heatmaps",
  "heatmap_to_input",
  "input_to_heatmap",
  "modulate",
  "strides",
]
