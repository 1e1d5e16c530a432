"""The TFDS feature spec shared by every pose dataset of the project.

Each example, as written and as read back by :func:`unipose_jax.datasets.data_source`:

==============  ===============  ====================================================
key             read as          meaning
==============  ===============  ====================================================
``image``       uint8 (H, W, 3)  RGB image, stored as JPEG bytes
``keypoints``   float32 (14, 2)  (x, y) in original-image pixels, integer = pixel
                                 centre, 0-based; joint order of ``keypoint_sets.LSP``
``visible``     bool (14,)       the joint is visible
``labeled``     bool (14,)       the joint's location is meaningful (weight > 0)
``image_id``    int32 ()         number in the source file name (im0001.jpg -> 1);
                                 the example index for the synthetic set
==============  ===============  ====================================================

Only TFDS feature types whose encoding needs no TensorFlow are used: the Image
feature is always given already-encoded bytes (encoding an ndarray would call
``tf.image.encode_jpeg``), and it is decoded with OpenCV (or PIL) by
``tfds.data_source``.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from unipose_jax import keypoint_sets

NUM_JOINTS = keypoint_sets.LSP.num_joints


def pose_features() -> tfds.features.FeaturesDict:
  """The FeaturesDict of one example (see the module docstring)."""
  return tfds.features.FeaturesDict(
    {
      "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8, encoding_format="jpeg"),
      "keypoints": tfds.features.Tensor(shape=(NUM_JOINTS, 2), dtype=np.float32),
      "visible": tfds.features.Tensor(shape=(NUM_JOINTS,), dtype=np.bool_),
      "labeled": tfds.features.Tensor(shape=(NUM_JOINTS,), dtype=np.bool_),
      "image_id": tfds.features.Scalar(dtype=np.int32),
    }
  )
