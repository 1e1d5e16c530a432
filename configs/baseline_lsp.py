"""The usual baseline: quantized encoding, quarter-pixel shift decoding."""

from configs import default


def get_config():
  c = default.get_config()
  c.codec.encoding = "quantized"
  c.codec.decoding = "shift"
  return c
