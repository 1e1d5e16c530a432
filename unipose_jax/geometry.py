"""Plane geometry of keypoints and images: affines, the letterbox and crop affines, the
extent (box) of a set of joints.

Conventions (design.md section 5):

* Keypoints are ``(x, y)`` in pixels, ``x`` along columns; integer coordinates
  are pixel centres (the pixel in row ``i``, column ``j`` has its centre at
  ``x = j, y = i``).
* An *affine* is a ``(2, 3)`` float matrix ``A`` mapping a source point
  ``(x, y, 1)`` to a destination point ``A @ (x, y, 1)``, both in that
  pixel-centre convention (the convention of ``cv2.warpAffine``, see
  ``transforms.warp_image``).
* A box is ``(x0, y0, x1, y1)`` with ``x0 <= x1``, ``y0 <= y1``, in the frame of the
  points it comes from; continuous (the extreme joint positions, not pixel edges).

NumPy only (no OpenCV, no JAX), so that every layer can use it: the input pipeline,
the codecs' box (:func:`joint_extent` also runs on ``jax.numpy`` arrays inside ``jit``),
prediction and the JAX-free ``deploy``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The second-pass crop of prediction is at least this share of the image's longer side.
MIN_CROP_FRACTION = 0.1


# ----------------------------------------------------------------------------- affine algebra


def _to3(a: np.ndarray) -> np.ndarray:
  """(..., 2, 3) -> (..., 3, 3) homogeneous matrix."""
  a = np.asarray(a, np.float64)
  bottom = np.broadcast_to(np.array([0.0, 0.0, 1.0]), a.shape[:-2] + (1, 3))
  return np.concatenate([a, bottom], axis=-2)


def compose_affines(*affines: np.ndarray) -> np.ndarray:
  """Composition ``affines[0] o affines[1] o ...`` (the last one is applied first).

  Args:
    *affines: (2, 3) matrices.
  Returns:
    (2, 3) float64 matrix.
  """
  out = np.eye(3)
  for a in affines:
    out = out @ _to3(a)
  return out[:2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
  """Inverse of a (..., 2, 3) affine (batched), as (..., 2, 3) of the input's float dtype.

  Raises:
    ValueError: if the linear part is singular.
  """
  affine = np.asarray(affine)
  dtype = affine.dtype if np.issubdtype(affine.dtype, np.floating) else np.float64
  a = affine.astype(np.float64)
  lin = a[..., :2]
  det = lin[..., 0, 0] * lin[..., 1, 1] - lin[..., 0, 1] * lin[..., 1, 0]
  if np.any(np.abs(det) < 1e-12):
    raise ValueError("affine is singular (determinant ~0) and cannot be inverted")
  inv_lin = (
    np.stack(
      [
        np.stack([lin[..., 1, 1], -lin[..., 0, 1]], -1),
        np.stack([-lin[..., 1, 0], lin[..., 0, 0]], -1),
      ],
      -2,
    )
    / det[..., None, None]
  )
  inv_t = -np.einsum("...ij,...j->...i", inv_lin, a[..., 2])
  return np.concatenate([inv_lin, inv_t[..., None]], axis=-1).astype(dtype)


def apply_affine_to_points(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Maps points through an affine.

  Args:
    affine: (..., 2, 3).
    points: (..., N, 2) as (x, y); leading dims broadcast with the affine's.
  Returns:
    (..., N, 2) transformed points, dtype of the promoted inputs.
  """
  affine = np.asarray(affine)
  points = np.asarray(points)
  return np.einsum("...ij,...nj->...ni", affine[..., :2], points) + affine[..., None, :, 2]


def is_flipping(affine: np.ndarray) -> bool:
  """Whether a (2, 3) affine mirrors the image (negative determinant)."""
  return bool(np.linalg.det(np.asarray(affine, np.float64)[:, :2]) < 0)


# ----------------------------------------------------------------------------- input size


def input_hw(size: Any, key: str = "data.input_size") -> tuple[int, int]:
  """The network input's ``(height, width)`` from ``data.input_size``: a positive int ``S``
  (the square ``(S, S)``, what every run saved before non-square inputs holds) or a
  ``(height, width)`` pair of positive ints (a list, as ``config.json`` stores it, too).

  The one place the project normalises an input size; every layer that takes an
  ``input_size`` accepts either form and calls this.

  Raises:
    ValueError: ``"<key>: expected a positive int or (height, width), got ..."``.
  """
  if isinstance(size, int | np.integer) and not isinstance(size, bool) and size > 0:
    return int(size), int(size)
  if isinstance(size, tuple | list | np.ndarray) and len(size) == 2:
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in size):
      return int(size[0]), int(size[1])
  raise ValueError(f"{key}: expected a positive int or (height, width), got {size!r}")


# ----------------------------------------------------------------------------- input affines


def letterbox_affine(height: int, width: int, input_size: Any) -> np.ndarray:
  """Affine mapping the whole ``height x width`` image into the ``H_in x W_in`` input.

  ``input_size``: ``S`` or ``(H_in, W_in)`` (:func:`input_hw`). Aspect ratio is kept; the
  image is scaled by ``r = min(H_in / H, W_in / W)`` (``S / max(H, W)`` for a square input)
  and centred, the rest is padding. The image's pixel *area* ``[-0.5, W - 0.5]`` maps onto
  ``[ox - 0.5, ox + r W - 0.5]`` with ``ox = (W_in - r W) / 2`` (``oy = (H_in - r H) / 2``),
  so ``x_in = r (x + 0.5) - 0.5 + ox``.

  Returns:
    (2, 3) float64 affine original -> input pixels.
  """
  if height <= 0 or width <= 0:
    raise ValueError(f"image size must be positive, got {height}x{width}")
  in_h, in_w = input_hw(input_size, "input_size")
  r = in_h / max(height, width) if in_h == in_w else min(in_h / height, in_w / width)
  ox = (in_w - r * width) / 2.0
  oy = (in_h - r * height) / 2.0
  return np.array([[r, 0.0, 0.5 * r - 0.5 + ox], [0.0, r, 0.5 * r - 0.5 + oy]])


def crop_affine(box: np.ndarray, height: int, width: int, input_size: Any, margin: float):
  """Affine (2, 3) original -> input of prediction's second-pass crop of ``box``.

  ``input_size``: ``S`` or ``(H_in, W_in)``; ``L = max(H_in, W_in)``. The box is grown to
  the input's aspect ratio; the crop's longer side is ``d = max(margin * max(box w * L /
  W_in, box h * L / H_in), MIN_CROP_FRACTION * max(H, W), 1)`` (for a square input
  ``margin * max(box w, box h)``), centred on the box's centre ``c``. The crop's area maps
  onto the input's pixel area ``[-0.5, W_in - 0.5] x [-0.5, H_in - 0.5]``: ``x_in = (L / d)
  (x - c_x) + (W_in - 1) / 2``, ``y_in = (L / d) (y - c_y) + (H_in - 1) / 2``, the convention
  of ``transforms.train_affine``.
  """
  in_h, in_w = input_hw(input_size, "input_size")
  long = max(in_h, in_w)
  box = np.asarray(box, np.float64)
  centre = (box[:2] + box[2:]) / 2.0
  bw, bh = box[2:] - box[:2]
  side = margin * float(max(bw * (long / in_w), bh * (long / in_h)))
  side = max(side, MIN_CROP_FRACTION * max(height, width), 1.0)
  zoom = long / side
  offset = np.array([(in_w - 1) / 2.0, (in_h - 1) / 2.0]) - zoom * centre
  return np.array([[zoom, 0.0, offset[0]], [0.0, zoom, offset[1]]])


def square_crop_affine(centre, side: float, input_size: Any) -> np.ndarray:
  """Affine (2, 3) original -> input of the crop of the input's aspect ratio whose longer
  side is ``side`` (``d``), centred at ``centre`` (2,); ``input_size`` ``S`` or ``(H_in,
  W_in)``, ``L = max(H_in, W_in)`` (a square input: the square of side ``d``). Its area maps
  onto the input's pixel area ``[-0.5, W_in - 0.5] x [-0.5, H_in - 0.5]``, ``x_in = (L / d)
  (x - c_x) + (W_in - 1) / 2``, ``y_in = (L / d) (y - c_y) + (H_in - 1) / 2``, the convention
  of :func:`crop_affine` and ``transforms.train_affine``, without the second pass's minimum."""
  in_h, in_w = input_hw(input_size, "input_size")
  c = np.asarray(centre, np.float64)
  zoom = max(in_h, in_w) / max(float(side), 1.0)
  offset = np.array([(in_w - 1) / 2.0, (in_h - 1) / 2.0]) - zoom * c
  return np.array([[zoom, 0.0, offset[0]], [0.0, zoom, offset[1]]])


# ----------------------------------------------------------------------------- boxes of joints


def joint_extent(keypoints: Any, mask: Any, margin: float = 0.0, xp: Any = np):
  """The box of a set of joints: the extent (min/max) of the masked, finite ones.

  The one definition of the person box of joints in the project: the input pipeline's
  person-centred crop (:func:`person_box`), the box head's targets and the evaluation's
  annotation box (``codecs.box.box_from_keypoints``, with ``xp=jax.numpy`` inside
  ``jit``) and prediction's box of the visible joints all call it.

  Args:
    keypoints: ``(..., K, 2)`` ``(x, y)`` in any pixel frame; joints outside ``mask``
      may hold anything, NaN included.
    mask: ``(..., K)`` bool (or numbers, nonzero = counts). A joint with a non-finite
      coordinate never counts.
    margin: each side grows by ``margin * width`` (left, right) or ``margin * height``
      (top, bottom); a number >= 0 (0: the joints' extent, as in the original UniPose).
    xp: the array namespace, ``numpy`` (default) or ``jax.numpy``.

  Returns:
    ``box`` ``(..., 4)`` ``(x0, y0, x1, y1)`` in the frame of ``keypoints`` (dtype of
    ``keypoints``) and ``count`` ``(...,)`` int, how many joints counted. Where none
    counted the box is ``(inf, inf, -inf, -inf)``: check ``count`` first.
  """
  use = (xp.asarray(mask) != 0) & xp.all(xp.isfinite(keypoints), axis=-1)
  lo = xp.min(xp.where(use[..., None], keypoints, xp.inf), axis=-2)
  hi = xp.max(xp.where(use[..., None], keypoints, -xp.inf), axis=-2)
  count = xp.sum(use, axis=-1)
  if not isinstance(margin, int | float) or margin:  # a traced margin, or a nonzero one
    grow = margin * xp.where(count[..., None] > 0, hi - lo, 0.0)
    lo, hi = lo - grow, hi + grow
  return xp.concatenate([lo, hi], axis=-1), count


def person_box(
  keypoints: np.ndarray, labeled: np.ndarray, height: int, width: int, input_size: Any = 1
) -> tuple[np.ndarray, float]:
  """Centre and longer side of the labeled joints' box (:func:`joint_extent`), the box
  grown to the input's aspect ratio.

  Args:
    keypoints: (K, 2) original pixels; labeled: (K,) bool.
    input_size: ``S`` or ``(H_in, W_in)`` (:func:`input_hw`); only its aspect ratio counts.
  Returns:
    ``(centre (2,), extent)``: centre of the box and the longer side ``L = max(H_in, W_in)``
    of the box grown to the input's aspect, ``max(box w * L / W_in, box h * L / H_in)``
    (a square input: ``max(box w, box h)``). With no labeled joint, or a degenerate box
    (< 1 pixel), the whole image: centre of the image and ``max(W L / W_in, H L / H_in)``.
  """
  in_h, in_w = input_hw(input_size, "input_size")
  long = max(in_h, in_w)
  box, count = joint_extent(np.asarray(keypoints, np.float64), labeled)
  if count > 0:
    bw, bh = box[2:] - box[:2]
    extent = float(max(bw * (long / in_w), bh * (long / in_h)))
    if extent >= 1.0:
      return (box[:2] + box[2:]) / 2.0, extent
  extent = max(width * (long / in_w), height * (long / in_h))
  return np.array([(width - 1) / 2.0, (height - 1) / 2.0]), float(extent)
