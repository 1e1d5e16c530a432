"""The UniPose network: ResNet backbone, WASP, decoder, and PyTorch weight import.

All modules are flax.linen, channels-last (NHWC), PyTorch-exact padding and
resizing. See ``unipose.py`` for the input/output conventions.
"""

from unipose_jax.models.decoder import Decoder
from unipose_jax.models.layers import max_pool_3x3_s2, resize_bilinear_align_corners, torch_padding
from unipose_jax.models.original_import import (
  OriginalImportReport,
  load_original_unipose,
  original_key,
  to_original_input,
)
from unipose_jax.models.resnet import (
  OUTPUT_STRIDES,
  RESNET_SPECS,
  RESNETS,
  BasicBlock,
  Bottleneck,
  ResNet,
  ResNet18,
  ResNet34,
  ResNet50,
  ResNet101,
  ResNet152,
  ResNetTiny,
  stage_strides_and_dilations,
)
from unipose_jax.models.torch_checkpoint import read_torch_state_dict
from unipose_jax.models.torch_import import load_torchvision_resnet, torch_key
from unipose_jax.models.unipose import (
  HEATMAP_STRIDE,
  IMAGENET_MEAN,
  IMAGENET_STD,
  UNIPOSE_MODELS,
  UniPose,
  UniPose18,
  UniPose34,
  UniPose50,
  UniPose101,
  UniPose152,
  UniPoseTiny,
  heatmap_size,
)
from unipose_jax.models.wasp import WASP, WASP_RATES_OS16, default_wasp_rates

__all__ = [
  "BasicBlock",
  "Bottleneck",
  "Decoder",
  "HEATMAP_STRIDE",
  "IMAGENET_MEAN",
  "IMAGENET_STD",
  "OUTPUT_STRIDES",
  "OriginalImportReport",
  "RESNETS",
  "RESNET_SPECS",
  "ResNet",
  "ResNet18",
  "ResNet34",
  "ResNet50",
  "ResNet101",
  "ResNet152",
  "ResNetTiny",
  "UNIPOSE_MODELS",
  "UniPose",
  "UniPose18",
  "UniPose34",
  "UniPose50",
  "UniPose101",
  "UniPose152",
  "UniPoseTiny",
  "WASP",
  "WASP_RATES_OS16",
  "default_wasp_rates",
  "heatmap_size",
  "load_original_unipose",
  "load_torchvision_resnet",
  "max_pool_3x3_s2",
  "original_key",
  "read_torch_state_dict",
  "resize_bilinear_align_corners",
  "stage_strides_and_dilations",
  "to_original_input",
  "torch_key",
  "torch_padding",
]
