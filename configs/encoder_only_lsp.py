"""Ablation: DARK's unbiased encoding with the baseline shift decoding."""

from configs import default


def get_config():
  c = default.get_config()
  c.codec.encoding = "unbiased"
  c.codec.decoding = "shift"
  return c
