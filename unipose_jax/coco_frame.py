"""COCO's coordinate frames and the project's, both ways (one owner of the mapping).

The project's convention: 0-based pixel coordinates, integer = pixel centre (pixel ``(i, j)``
covers ``[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]``).

COCO uses two frames in one file:

* **keypoints** (``annotations[].keypoints``, and a results file's ``keypoints``) are
  *pixel indices*: integers in ``[0, W - 1]``, the annotator's click on a pixel. That is the
  project's convention already, so keypoints map unchanged. This is how the published
  top-down pipelines read them (HRNet, DarkPose and mmpose use the values as they are), and
  detectron2 says so explicitly (it adds 0.5 when loading, to reach its continuous frame, and
  subtracts it again when writing results, "COCO's keypoint coordinates are pixel indices").
* **boxes** (``bbox`` = ``[x, y, w, h]``) are *continuous* coordinates in which the image
  spans ``[0, W] x [0, H]`` (they are the extents of the segmentation polygons): the left
  edge of pixel 0 is at 0 and its centre at 0.5. In the project's frame that edge is at
  -0.5, so a box maps by subtracting 0.5 from its corners: ``[x1, y1, x2, y2] =
  [x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5]``; width and height are unchanged.

Predictions written back for COCOeval go through the inverses (:func:`keypoints_to_coco`,
:func:`box_to_coco`), so that results and ground truth are compared in one frame. NumPy only;
this module sits at the bottom of the import graph (it imports nothing of the package).
"""

from __future__ import annotations

import numpy as np


def keypoints_from_coco(xy) -> np.ndarray:
  """COCO keypoint ``(..., 2)`` (x, y) -> the project's frame: unchanged, as float32."""
  return np.array(xy, dtype=np.float32, copy=True).reshape(np.shape(xy))


def keypoints_to_coco(xy) -> np.ndarray:
  """The project's ``(..., 2)`` (x, y) -> COCO's keypoint frame: unchanged, as float64
  (the inverse of :func:`keypoints_from_coco`)."""
  return np.array(xy, dtype=np.float64, copy=True).reshape(np.shape(xy))


def box_from_coco(xywh) -> np.ndarray:
  """COCO ``bbox`` ``(..., 4)`` [x, y, w, h] (continuous, image = [0, W]) -> the project's
  ``(..., 4)`` float32 [x1, y1, x2, y2] (0-based, integer = pixel centre)."""
  b = np.asarray(xywh, dtype=np.float64)
  x, y, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
  return np.stack([x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5], axis=-1).astype(np.float32)


def box_to_coco(x1y1x2y2) -> np.ndarray:
  """The project's ``(..., 4)`` [x1, y1, x2, y2] -> COCO's ``(..., 4)`` float64 [x, y, w, h]
  (the inverse of :func:`box_from_coco`)."""
  b = np.asarray(x1y1x2y2, dtype=np.float64)
  x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
  return np.stack([x1 + 0.5, y1 + 0.5, x2 - x1, y2 - y1], axis=-1)
