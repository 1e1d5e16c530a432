"""The TFDS feature spec of every pose dataset of the project, for any ``K``.

Each example, as written and as read back by :func:`unipose_jax.datasets.data_source`
(all coordinates in the stored image's pixels, 0-based, integer = pixel centre):

==============  ===============  ====================================================
key             read as          meaning
==============  ===============  ====================================================
``image``       uint8 (H, W, 3)  RGB image, stored as JPEG bytes (the source's own
                                 bytes where they are an RGB or greyscale JPEG)
``keypoints``   float32 (K, 2)   (x, y); joint order of the dataset's keypoint set.
                                 Unlabeled joints hold their source values (finite;
                                 meaningless), never NaN
``visible``     bool (K,)        the joint is visible
``labeled``     bool (K,)        the joint's location is meaningful (weight > 0)
``image_id``    int32 ()         the source's image number (see each builder)
``box``         float32 (4,)     the person's [x1, y1, x2, y2] (see each builder; NaN
                                 where a person has no labeled joint and no box)
==============  ===============  ====================================================

Extras of some datasets (:data:`EXTRAS`): ``head_box`` (4,) float32 [x1, y1, x2, y2]
(MPII), ``center`` (2,) float32 and ``scale`` () float32 (MPII's person centre, 0-based,
and its height / 200 px), ``annotation_id`` int64 () and ``area`` float32 () (COCO: OKS's
scale), ``video_id`` int32 () and
``frame`` int32 () (Penn Action). None of the datasets stores a crop, so none has ``offset``.

LSP, LSP-extended and the synthetic set store no ``box`` (their files were written before
boxes existed and read unchanged): :func:`labeled_extent` derives it on reading, the
extent of the labeled joints, which is their definition of the box.

Only TFDS feature types whose encoding needs no TensorFlow are used: the Image
feature is always given already-encoded bytes (encoding an ndarray would call
``tf.image.encode_jpeg``), and it is decoded with OpenCV (or PIL) by
``tfds.data_source``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

#: Extra features by name (each builder picks the ones it stores).
EXTRAS: dict[str, tuple[tuple[int, ...], type]] = {
  "head_box": ((4,), np.float32),
  "center": ((2,), np.float32),
  "scale": ((), np.float32),
  "annotation_id": ((), np.int64),
  "area": ((), np.float32),
  "video_id": ((), np.int32),
  "frame": ((), np.int32),
}


def pose_features(
  num_joints: int, *, box: bool = True, extras: Sequence[str] = ()
) -> tfds.features.FeaturesDict:
  """The FeaturesDict of one example with ``num_joints`` joints (see the module docstring);
  ``box=False`` only for the datasets written before boxes existed (LSP, synthetic)."""
  spec = {
    "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8, encoding_format="jpeg"),
    "keypoints": tfds.features.Tensor(shape=(num_joints, 2), dtype=np.float32),
    "visible": tfds.features.Tensor(shape=(num_joints,), dtype=np.bool_),
    "labeled": tfds.features.Tensor(shape=(num_joints,), dtype=np.bool_),
    "image_id": tfds.features.Scalar(dtype=np.int32),
  }
  if box:
    spec["box"] = tfds.features.Tensor(shape=(4,), dtype=np.float32)
  for name in extras:
    shape, dtype = EXTRAS[name]
    spec[name] = (
      tfds.features.Scalar(dtype=dtype)
      if shape == ()
      else tfds.features.Tensor(shape=shape, dtype=dtype)
    )
  return tfds.features.FeaturesDict(spec)


def labeled_extent(keypoints: np.ndarray, labeled: np.ndarray) -> np.ndarray:
  """``(4,)`` float32 [x1, y1, x2, y2], the extent of the labeled joints of ``keypoints``
  ``(K, 2)``; all NaN when no joint is labeled."""
  kp = np.asarray(keypoints, np.float32)[np.asarray(labeled, bool)]
  if not len(kp):
    return np.full(4, np.nan, np.float32)
  return np.concatenate([kp.min(axis=0), kp.max(axis=0)]).astype(np.float32)
