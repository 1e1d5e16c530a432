"""Pure per-record transforms of the input pipeline: augmentation, letterbox, warping.

Conventions (design.md section 5; the affine algebra, the letterbox affine and the
person box are :mod:`unipose_jax.geometry`'s):

* Keypoints are ``(x, y)`` in pixels, ``x`` along columns; integer coordinates
  are pixel centres (the pixel in row ``i``, column ``j`` has its centre at
  ``x = j, y = i``).
* An *affine* is a ``(2, 3)`` float matrix ``A`` mapping a source point
  ``(x, y, 1)`` to a destination point ``A @ (x, y, 1)``, both in that
  pixel-centre convention. ``cv2.warpAffine(img, A, (W_in, H_in), flags=INTER_LINEAR)``
  samples with exactly this convention: output pixel ``(j, i)`` takes the
  bilinear interpolation of the source at ``A^-1 @ (j, i, 1)``.
* A record (what a data source returns) is a dict::

      image     uint8   (H, W, 3) RGB
      keypoints float32 (K, 2)    original-image pixels
      visible   bool    (K,)
      labeled   bool    (K,)
      image_id  int32   ()

Every function here is pure: randomness comes in through an explicit
``np.random.Generator``; the same generator state gives the same output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from unipose_jax.geometry import (
  apply_affine_to_points,
  input_hw,
  invert_affine,
  is_flipping,
  letterbox_affine,
  person_box,
  square_crop_affine,
)

#: Border fill of warped images: the mean colour, which normalises to ~0.
#: Fill outside the image: the ImageNet mean in 0..255 (``models.IMAGENET_MEAN`` x 255,
#: rounded), which normalises to about 0. A literal so that this module (and ``deploy``)
#: imports no JAX; tests check it against the model's constants.
BORDER_RGB: tuple[float, float, float] = (124.0, 116.0, 104.0)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Ranges of the training augmentation (all geometric, composed into one affine).

  Attributes:
    margin: the labeled joints' bounding box, enlarged by this factor on its
      longer side, fills the input side at ``scale == 1``. Joints mark centres
      (head top, ankles, wrists), so some margin keeps hands, feet and hair in.
    scale_range: ``(lo, hi)``; the zoom is multiplied by ``U(lo, hi)``
      (values > 1 make the person bigger).
    rotation_deg: maximum rotation in degrees; the angle is ``U(-r, r)``.
      Positive angles turn the image clockwise on screen (y axis down).
    rotation_prob: probability that a rotation is applied at all (else 0).
    flip_prob: probability of a horizontal flip (mirrors x and swaps
      left/right joints with the keypoint set's ``flip_permutation``); must be 0 for a
      set without flip pairs (``Run.augment_config`` sees to it).
    translate_frac: maximum shift of the person's centre, as a fraction of
      the input side, independently in x and y: ``U(-t, t) * S``.
  """

  margin: float = 1.25
  scale_range: tuple[float, float] = (0.7, 1.3)
  rotation_deg: float = 40.0
  rotation_prob: float = 0.6
  flip_prob: float = 0.5
  translate_frac: float = 0.05

  def __post_init__(self):
    lo, hi = self.scale_range
    if not 0 < lo <= hi:
      raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {self.scale_range}")
    if self.margin <= 0:
      raise ValueError(f"margin must be positive, got {self.margin}")
    for name in ("rotation_prob", "flip_prob"):
      p = getattr(self, name)
      if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {p}")
    if self.rotation_deg < 0 or self.translate_frac < 0:
      raise ValueError("rotation_deg and translate_frac must be >= 0")


#: Augmentation off: person-centred crop with the margin only (used by tests, eval-like training).
NO_AUGMENT = AugmentConfig(
  scale_range=(1.0, 1.0), rotation_deg=0.0, rotation_prob=0.0, flip_prob=0.0, translate_frac=0.0
)


# ----------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------


def train_affine(
  keypoints: np.ndarray,
  labeled: np.ndarray,
  height: int,
  width: int,
  rng: np.random.Generator,
  cfg: AugmentConfig,
  input_size: Any,
  region: tuple[np.ndarray, float] | None = None,
) -> np.ndarray:
  """Random training affine: person-centred crop, scale, rotation, flip, translation.

  ``input_size``: ``S`` or ``(H_in, W_in)`` (``geometry.input_hw``), ``L = max(H_in, W_in)``.
  ``A = T(S_c + t) . M . R(theta) . Z(zoom) . T(-c)`` where ``c`` is the centre
  of the labeled joints' box, ``zoom = s * L / (margin * extent)`` with ``extent`` the
  longer side of that box grown to the input's aspect ratio (``person_box``),
  ``S_c = ((W_in-1)/2, (H_in-1)/2)`` the input centre, ``M = diag(-1, 1)`` when
  flipping (mirror about the vertical line through the input centre), and
  ``t = U(-f, f) * (W_in, H_in)``. Exactly six uniforms are drawn from ``rng``
  every call, so the draw sequence does not depend on the branches. ``region``: the
  person's ``(centre (2,), extent)`` to crop (:func:`person_region` for this input size,
  ``data.crop="box"``); None: the labeled joints' box (:func:`~unipose_jax.geometry.person_box`).

  A flip is recognisable as ``det(A[:, :2]) < 0`` (:func:`is_flipping`); joints
  then must be relabelled with the keypoint set's ``flip_permutation``.

  Returns:
    (2, 3) float64 affine original -> input pixels.
  """
  u = rng.random(6)
  in_h, in_w = input_hw(input_size, "input_size")
  if region is None:
    region = person_box(keypoints, labeled, height, width, (in_h, in_w))
  centre, extent = region
  lo, hi = cfg.scale_range
  zoom = (lo + (hi - lo) * u[0]) * max(in_h, in_w) / (cfg.margin * extent)
  theta = math.radians(cfg.rotation_deg * (2.0 * u[2] - 1.0)) if u[1] < cfg.rotation_prob else 0.0
  flip = u[3] < cfg.flip_prob
  tx, ty = cfg.translate_frac * np.array([in_w, in_h]) * (2.0 * u[4:6] - 1.0)
  cos, sin = math.cos(theta) * zoom, math.sin(theta) * zoom
  lin = np.array([[cos, -sin], [sin, cos]])
  if flip:
    lin[0] *= -1.0
  out_centre = np.array([(in_w - 1) / 2.0 + tx, (in_h - 1) / 2.0 + ty])
  return np.concatenate([lin, (out_centre - lin @ centre)[:, None]], axis=1)


#: ``data.crop``: what training crops around: the labeled joints' extent, or the example's
#: person box (:func:`person_region`).
TRAIN_CROPS = ("joints", "box")
#: ``data.eval_crop``: the whole image letterboxed (LSP's protocol), or the person's square
#: crop (top-down: MPII, COCO, Penn Action).
EVAL_CROPS = ("whole", "box")
#: MPII's person centre lies above the hips: HRNet (and DarkPose, mmpose) move it down by
#: this many ``scale`` units (``scale`` = person height / 200 px) before cropping.
MPII_CENTRE_SHIFT = 15.0
#: MPII's person box side per ``scale`` unit (the annotation's definition of ``scale``).
MPII_SCALE_PX = 200.0


def person_region(
  record: Mapping[str, Any],
  keypoints: np.ndarray,
  labeled: np.ndarray,
  height: int,
  width: int,
  input_size: Any = 1,
) -> tuple[np.ndarray, float]:
  """``(centre (2,), extent)``: the person's region, in original pixels, before any margin,
  grown to the aspect ratio of ``input_size`` (``S`` or ``(H_in, W_in)``, ``L = max(H_in,
  W_in)``): ``extent`` is the longer side of the grown region, ``max(w L / W_in, h L / H_in)``
  for a region ``w`` wide and ``h`` high (a square input: ``max(w, h)``).

  * MPII (the record has ``center`` and ``scale`` > 0): HRNet's, ``centre = center + (0,
    15 scale)``, ``extent = 200 scale`` (with HRNet's 1.25 as the margin this is its crop);
  * else the record's ``box`` [x1, y1, x2, y2] (COCO's annotation box, Penn Action's
    ``bbox``): its centre and longer side;
  * else, or when that box is not finite or under 1 pixel, the labeled joints' box
    (:func:`~unipose_jax.geometry.person_box`, the whole image without a labeled joint).
  """
  in_h, in_w = input_hw(input_size, "input_size")
  long = max(in_h, in_w)
  if "center" in record and "scale" in record:
    c = np.asarray(record["center"], np.float64)
    sc = float(np.asarray(record["scale"]))
    if np.isfinite(c).all() and np.isfinite(sc) and sc > 0:
      side = MPII_SCALE_PX * sc  # a square region
      return c + np.array([0.0, MPII_CENTRE_SHIFT * sc]), max(
        side * (long / in_w), side * (long / in_h)
      )
  if "box" in record:
    b = np.asarray(record["box"], np.float64)
    if b.shape == (4,) and np.isfinite(b).all():
      bw, bh = b[2:] - b[:2]
      extent = float(max(bw * (long / in_w), bh * (long / in_h)))
      if extent >= 1.0:
        return (b[:2] + b[2:]) / 2.0, extent
  return person_box(keypoints, labeled, height, width, (in_h, in_w))


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


def _image_id(record: Mapping[str, Any]) -> str:
  return str(np.asarray(record["image_id"]).item()) if "image_id" in record else "?"


def check_record(
  record: Mapping[str, Any], joint_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Validates a record and returns ``(image, keypoints, labeled, visible)``.

  ``keypoints`` is returned as float64 (K, 2) with unlabeled non-finite entries
  replaced by 0. ``joint_names`` (the keypoint set's, length K) name faulty joints in
  messages; without them joints are named by index.

  Raises:
    ValueError: naming the image id, on a wrong shape/dtype, or a non-finite
      keypoint on a labeled joint.
  """
  iid = _image_id(record)
  image = np.asarray(record["image"])
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(
      f"image_id {iid}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}"
    )
  kp = np.asarray(record["keypoints"], np.float64)
  k = kp.shape[0] if kp.ndim == 2 else -1
  if kp.ndim != 2 or kp.shape[1] != 2:
    raise ValueError(f"image_id {iid}: keypoints must be (K, 2), got {kp.shape}")
  labeled = np.asarray(record["labeled"], bool)
  visible = np.asarray(record.get("visible", labeled), bool)
  if labeled.shape != (k,) or visible.shape != (k,):
    raise ValueError(
      f"image_id {iid}: labeled/visible must be ({k},), got {labeled.shape}, {visible.shape}"
    )
  finite = np.isfinite(kp).all(1)
  bad = labeled & ~finite
  if bad.any():
    named = joint_names is not None and len(joint_names) == k
    names = [joint_names[j] if named else str(j) for j in np.flatnonzero(bad)]
    raise ValueError(f"image_id {iid}: non-finite keypoints on labeled joints {names}")
  kp = np.where(finite[:, None], kp, 0.0)
  return image, kp, labeled, visible


def warp_image(image: np.ndarray, affine: np.ndarray, input_size: Any) -> np.ndarray:
  """Warps an (H, W, 3) uint8 image to (H_in, W_in, 3) uint8 (``input_size``: ``S`` or
  ``(H_in, W_in)``) with bilinear sampling, mean-colour border."""
  in_h, in_w = input_hw(input_size, "input_size")
  return cv2.warpAffine(
    image,
    np.asarray(affine, np.float64),
    (in_w, in_h),
    flags=cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_CONSTANT,
    borderValue=BORDER_RGB,
  )


def inside_input(points: np.ndarray, input_size: Any) -> np.ndarray:
  """(..., K, 2) -> (..., K) bool: the point ``(x, y)`` lies in ``[0, W_in-1] x [0, H_in-1]``
  (between border pixel centres; ``input_size``: ``S`` or ``(H_in, W_in)``)."""
  in_h, in_w = input_hw(input_size, "input_size")
  return np.all((points >= 0.0) & (points <= np.array([in_w - 1, in_h - 1])), axis=-1)


def _finish(
  image: np.ndarray, affine: np.ndarray, kp: np.ndarray, labeled: np.ndarray, input_size: Any
) -> dict[str, np.ndarray]:
  kp_in = apply_affine_to_points(affine, kp)
  weights = labeled & inside_input(kp_in, input_size)
  kp_in = np.where(labeled[:, None], kp_in, 0.0)
  return {
    "image": image,
    "keypoints": kp_in.astype(np.float32),
    "weights": weights.astype(np.float32),
    "affine": affine.astype(np.float32),
    "inverse_affine": invert_affine(affine).astype(np.float32),
  }


def transform_train(
  record: Mapping[str, Any],
  rng: np.random.Generator,
  *,
  cfg: AugmentConfig = AugmentConfig(),
  input_size: Any = 368,
  flip_permutation: Sequence[int] | None = None,
  crop: str = "joints",
) -> dict[str, np.ndarray]:
  """Augments one record for training (one composed affine, one warp).

  ``crop`` (:data:`TRAIN_CROPS`): ``"joints"`` centres the crop on the labeled joints' box,
  ``"box"`` on the person's region (:func:`person_region`).

  ``flip_permutation``: the keypoint set's ``(K,)`` flip permutation, which relabels the
  joints of a flipped sample; None (a set without flip pairs) needs ``cfg.flip_prob`` 0.

  Returns a dict:
    image           uint8 (H_in, W_in, 3) RGB, ``input_size`` ``S`` or ``(H_in, W_in)``
                    (normalised on the device, ``models.normalize``)
    keypoints       float32 (K, 2) input pixels; joint ``k`` is joint ``k`` of the
                    person *as seen in the output* (relabelled after a flip);
                    0 for unlabeled joints, the finite transformed value for
                    labeled joints pushed off the input
    weights         float32 (K,) 1 for labeled joints inside the input (``inside_input``)
    affine          float32 (2, 3) original -> input
    inverse_affine  float32 (2, 3) input -> original
    image_id        int32 ()
  Note: ``keypoints[k]`` of a flipped sample maps back through ``inverse_affine``
  to the original location of joint ``flip_permutation[k]``.

  Raises:
    ValueError: on a malformed record or NaN on a labeled joint (names the image id).
  """
  image, kp, labeled, _ = check_record(record)
  h, w = image.shape[:2]
  if crop not in TRAIN_CROPS:
    raise ValueError(f"crop must be one of {TRAIN_CROPS}, got {crop!r}")
  region = person_region(record, kp, labeled, h, w, input_size) if crop == "box" else None
  affine = train_affine(kp, labeled, h, w, rng, cfg, input_size, region)
  if is_flipping(affine):
    if flip_permutation is None:
      raise ValueError(
        "a flip needs the keypoint set's flip permutation (a set without flip pairs: "
        "flip_prob must be 0)"
      )
    perm = np.asarray(flip_permutation)
    if perm.shape != (kp.shape[0],):
      raise ValueError(f"flip permutation {perm.shape} for {kp.shape[0]} joints")
    kp, labeled = kp[perm], labeled[perm]
  out = _finish(warp_image(image, affine, input_size), affine, kp, labeled, input_size)
  out["image_id"] = np.int32(record.get("image_id", -1))
  return out


#: Ground truth a dataset's protocol normalises or matches by, passed through evaluation
#: batches as the record holds it (original pixels, like ``keypoints_orig``): MPII's
#: ``head_box`` (4,), the person ``box`` (4,) ``[x1, y1, x2, y2]``, COCO's ``area`` () and
#: ``annotation_id`` () (``metrics.protocols.batch_keys`` says which a protocol needs).
PROTOCOL_FIELDS: dict[str, Any] = {
  "head_box": np.float32,
  "box": np.float32,
  "area": np.float32,
  "annotation_id": np.int64,
}


def eval_affine(
  record: Mapping[str, Any], kp: np.ndarray, labeled: np.ndarray, height: int, width: int,
  input_size: Any, crop: str = "whole", margin: float = 1.25,
) -> np.ndarray:  # fmt: skip
  """The (2, 3) original -> input affine of an evaluation record: ``crop="whole"`` the
  letterbox of the whole image (:func:`~unipose_jax.geometry.letterbox_affine`);
  ``"box"`` the crop of the input's aspect ratio whose longer side is ``margin`` x the person
  region's extent (the region grown to that aspect, :func:`person_region`) around its centre."""
  if crop == "whole":
    return letterbox_affine(height, width, input_size)
  if crop != "box":
    raise ValueError(f"eval crop must be one of {EVAL_CROPS}, got {crop!r}")
  centre, extent = person_region(record, kp, labeled, height, width, input_size)
  return square_crop_affine(centre, margin * extent, input_size)


def transform_eval(
  record: Mapping[str, Any], *, input_size: Any = 368, crop: str = "whole", margin: float = 1.25
) -> dict[str, np.ndarray]:
  """One record for evaluation: the whole image letterboxed (aspect kept, centred;
  ``crop="whole"``) or the person's square crop (``"box"``, :func:`eval_affine` with
  ``margin``); predictions map back to original pixels through ``inverse_affine``.

  Returns the keys of :func:`transform_train` plus:
    keypoints_orig  float32 (K, 2) the annotation in original pixels (non-finite
                    entries of unlabeled joints set to 0)
    labeled, visible bool (K,)
    valid           bool () ``record.get('valid', True)``
    source_index    int32 () ``record.get('source_index', -1)``: the record's position in
                    its data source (set by the evaluation loader)
    and each of :data:`PROTOCOL_FIELDS` the record holds, unchanged.
  """
  image, kp, labeled, visible = check_record(record)
  h, w = image.shape[:2]
  affine = eval_affine(record, kp, labeled, h, w, input_size, crop, margin)
  out = _finish(warp_image(image, affine, input_size), affine, kp, labeled, input_size)
  out.update(
    keypoints_orig=kp.astype(np.float32),
    labeled=labeled,
    visible=visible,
    image_id=np.int32(record.get("image_id", -1)),
    valid=np.bool_(record.get("valid", True)),
    source_index=np.int32(record.get("source_index", -1)),
  )
  for key, dtype in PROTOCOL_FIELDS.items():
    if key in record:
      out[key] = np.asarray(record[key], dtype)
  return out
