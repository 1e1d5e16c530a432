"""Ablation: the quantized target with DARK's Taylor decoding."""

from configs import default


def get_config():
  c = default.get_config()
  c.codec.encoding = "quantized"
  c.codec.decoding = "dark"
  return c
