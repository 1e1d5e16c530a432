"""UniPose with DARK: unbiased encoding and Taylor (dark) decoding."""

from configs import default


def get_config():
  c = default.get_config()
  c.codec.encoding = "unbiased"
  c.codec.decoding = "dark"
  return c
