"""The original UniPose setting on LSP: ResNet-101, output stride 16, 368x368,
sigma 3, the biased (quantized) target and upsample-then-argmax decoding."""

from configs import default


def get_config():
  return default.get_config()
