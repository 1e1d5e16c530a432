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
from unipose_jax.models.original_lstm_import import load_original_unipose_lstm, original_lstm_key
from unipose_jax.models.resnet import (
  RESNET_SPECS,
  BasicBlock,
  Bottleneck,
  ResNet,
  ResNetTiny,
  resnet,
  stage_strides_and_dilations,
)
from unipose_jax.models.torch_checkpoint import WeightImportError, read_torch_state_dict
from unipose_jax.models.torch_import import load_torchvision_resnet, torch_key
from unipose_jax.models.unipose import (
  HEATMAP_STRIDE,
  IMAGENET_MEAN,
  IMAGENET_STD,
  UniPose,
  UniPose101,
  UniPoseTiny,
  heatmap_size,
  normalize,
  num_maps,
  split_maps,
)
from unipose_jax.models.unipose_lstm import (
  ClipShapeError,
  LSTMState,
  UniPoseLSTM,
  centre_map,
  initial_state,
  pooled_centre_map,
)
from unipose_jax.models.wasp import WASP, default_wasp_rates

__all__ = [
  "HEATMAP_STRIDE",
  "IMAGENET_MEAN",
  "IMAGENET_STD",
  "OriginalImportReport",
  "RESNET_SPECS",
  "WASP",
  "BasicBlock",
  "ClipShapeError",
  "LSTMState",
  "Bottleneck",
  "Decoder",
  "ResNet",
  "ResNetTiny",
  "UniPose",
  "UniPose101",
  "UniPoseLSTM",
  "UniPoseTiny",
  "centre_map",
  "initial_state",
  "load_original_unipose_lstm",
  "original_lstm_key",
  "pooled_centre_map",
  "default_wasp_rates",
  "heatmap_size",
  "load_original_unipose",
  "load_torchvision_resnet",
  "max_pool_3x3_s2",
  "normalize",
  "num_maps",
  "split_maps",
  "original_key",
  "read_torch_state_dict",
  "WeightImportError",
  "resize_bilinear_align_corners",
  "resnet",
  "stage_strides_and_dilations",
  "to_original_input",
  "torch_key",
  "torch_padding",
]
