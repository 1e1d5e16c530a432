"""Pose prediction on real photos and videos: two passes, confidences, a person box.

Coordinates (design section 5): keypoints are ``(x, y)`` pixels of the ORIGINAL image,
0-based, integer coordinates at pixel centres; boxes are ``(x0, y0, x1, y1)`` in the same
pixels (the extreme joint or box-corner positions, not pixel edges).

How one image is read (:class:`Predictor`):

1. First pass: the whole image is letterboxed into the ``H_in x W_in`` network input
   (:func:`geometry.letterbox_affine`, aspect kept, :data:`transforms.BORDER_RGB`
   padding), the heatmaps are decoded (``codec.decode``) and the points are mapped back
   through the inverse affine. A joint is *visible* when its score (the heatmap maximum)
   is ``>= score_threshold``. A person is found when the presence score of these
   heatmaps reaches the run's calibrated threshold (:mod:`unipose_jax.presence`,
   :mod:`unipose_jax.calibrate`); a run without a calibration falls back to the old rule,
   "any visible joint". The person box is the box head's (the mean of its corner points'
   sides) or, without a box head, the extent of the visible joints. With no person
   found, keypoints and scores are still returned, ``visible`` is all False, ``box`` is
   None, and there is no second pass.
2. Second pass (``second_pass``, a person found): a crop of the input's aspect ratio
   around the box centre, the box grown to that aspect, its longer side ``crop_margin``
   times the grown box's (a square input: ``crop_margin * max(box width, box height)``; at
   least ``geometry.MIN_CROP_FRACTION`` of the image's longer side, so a single visible
   joint still gives a sensible crop; ``geometry.crop_affine``) is resampled to the
   ``H_in x W_in`` input (outside the image: ``BORDER_RGB``). The crop stays centred
   on the person even at the image border, as in training (person-centred crops). The
   reported keypoints, scores and visibility are this pass's; so is the box (the box
   head's, or the extent of this pass's visible joints; if this pass sees no visible
   joint, the first pass's box is kept). ``person_found`` is the first pass's verdict.

Both passes warp with ``cv2.warpAffine`` (:func:`transforms.warp_image`), whose sampling
follows the pixel-centre convention exactly, so the inverse affine is exact.

The files of ``--mode=predict`` (overlays, ``predictions.json``, videos) are written by
:mod:`unipose_jax.media`, which also checks every input before a model is built.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from unipose_jax import geometry, skeleton, transforms
from unipose_jax.keypoint_sets import KeypointSet

# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class Prediction:
  """One person's pose in original-image pixels.

  Attributes:
    keypoints: ``(K, 2)`` float64 ``(x, y)``, pixel centres at integer coordinates.
    scores: ``(K,)`` float64, each joint's heatmap maximum.
    visible: ``(K,)`` bool, ``scores >= score_threshold``.
    box: ``(4,)`` float64 ``(x0, y0, x1, y1)``, or None when no person was found.
    person_found: the first pass's verdict: presence score ``>=`` the calibrated
      threshold (uncalibrated runs: any joint visible).
    passes: how many network passes produced these keypoints (1 or 2).
    presence: the first pass's presence score, or None for an uncalibrated run.
    keypoint_set: what the ``K`` joints are (names, limbs: the run's set), or None
      (joints then named ``joint_<k>``; an overlay needs the set).
  """

  keypoints: np.ndarray
  scores: np.ndarray
  visible: np.ndarray
  box: np.ndarray | None
  person_found: bool
  passes: int = 1
  presence: float | None = None
  keypoint_set: KeypointSet | None = None

  def to_json(self) -> dict[str, Any]:
    """Plain JSON (full precision): ``person_found``, ``presence`` (score or None),
    ``passes``, ``box`` (``[x0, y0, x1, y1]`` or None), ``joint_names`` (the keypoint
    set's order), ``keypoints`` (K lists ``[x, y]``), ``scores`` (K) and ``visible`` (K
    bools)."""
    k = len(self.keypoints)
    kset = self.keypoint_set
    names = kset.joint_names if kset is not None else [f"joint_{i}" for i in range(k)]
    return {
      "person_found": bool(self.person_found),
      "presence": None if self.presence is None else float(self.presence),
      "passes": int(self.passes),
      "box": None if self.box is None else [float(v) for v in self.box],
      "joint_names": list(names),
      "keypoints": [[float(x), float(y)] for x, y in self.keypoints],
      "scores": [float(v) for v in self.scores],
      "visible": [bool(v) for v in self.visible],
    }

  def summary(self) -> str:
    """One line: ``"no person found"`` or ``"9/14 joints visible, box (x0, y0)-(x1, y1)"``."""
    if not self.person_found:
      return "no person found"
    text = f"{int(self.visible.sum())}/{len(self.visible)} joints visible"
    if self.box is not None:
      x0, y0, x1, y1 = self.box
      text += f", box ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f})"
    return text


def _box_of(points: np.ndarray) -> np.ndarray:
  """``(4,)`` box of the box head's 5 decoded points ``(5, 2)``, as evaluation computes it
  (:func:`codecs.box.box_from_points`; imported here, not at module import, so that
  importing this module imports no JAX)."""
  from unipose_jax.codecs import box as box_lib  # noqa: PLC0415

  return np.asarray(box_lib.box_from_points(np.asarray(points, np.float32)[None]))[0]


# ----------------------------------------------------------------------------- the predictor


class Predictor:
  """Callable ``image (H, W, 3) uint8 RGB -> Prediction`` (see the module doc).

  Args:
    heatmap_fn: ``images uint8 (B, H_in, W_in, 3) -> heatmaps (B, h, w, K [+ 5])`` float, the
      background channel dropped, the 5 box maps last when ``box_head``.
    input_size: ``S`` (a square input) or ``(H_in, W_in)``, the network's input
      (``geometry.input_hw``; kept as given in ``input_size``, as ``(H_in, W_in)`` in
      ``input_hw``).
    codec: a ``HeatmapCodec`` for that input (its ``decode`` maps heatmaps to input pixels).
    keypoint_set: the run's keypoint set (``K`` and the joints' names in the output).
    box_head: whether the heatmaps carry the 5 box maps after the joints.
    decoding: the codec's decoder name ("dark", "argmax", ...).
    score_threshold: joints scoring below are not visible.
    second_pass: run the person-centred second pass when a person is found.
    crop_margin: second-pass crop side over the box's longer side.
    presence_score: the name of the presence score (``presence.SCORES``); "" for the
      uncalibrated rule (a person when any joint is visible).
    presence_threshold: a person is found when the presence score is ``>=`` this.
    presence_weights: the fitted weights of the ``"combined"`` presence score.
  """

  def __init__(
    self,
    heatmap_fn: Callable[[np.ndarray], Any],
    *,
    input_size: int | tuple[int, int],
    codec: Any,
    keypoint_set: KeypointSet,
    box_head: bool = False,
    decoding: str = "dark",
    score_threshold: float = 0.2,
    second_pass: bool = True,
    crop_margin: float = 1.25,
    presence_score: str = "",
    presence_threshold: float = 0.0,
    presence_weights: tuple[float, ...] = (),
  ):
    import jax  # noqa: PLC0415  (the package imports without JAX; see __init__)

    if crop_margin <= 0:
      raise ValueError(f"crop_margin must be > 0, got {crop_margin}")
    self.heatmap_fn = heatmap_fn
    self.input_hw = geometry.input_hw(input_size, "input_size")
    self.input_size = self.input_hw[0] if np.ndim(input_size) == 0 else self.input_hw
    self.codec = codec
    self.keypoint_set = keypoint_set
    self.num_joints = keypoint_set.num_joints
    self.box_head = bool(box_head)
    self.decoding = decoding
    self.score_threshold = float(score_threshold)
    self.second_pass = bool(second_pass)
    self.crop_margin = float(crop_margin)
    self._decode = jax.jit(functools.partial(codec.decode, decoding=decoding))
    self.presence_score, self.presence_threshold = presence_score, float(presence_threshold)
    self._presence = None
    if presence_score:
      from unipose_jax import presence  # noqa: PLC0415

      want = presence.num_features(self.num_joints, self.box_head) + 1
      if presence_score == presence.COMBINED and len(presence_weights) != want:
        raise ValueError(
          f"presence_weights (config predict.presence_weights) has {len(presence_weights)} "
          f"values, the {presence.COMBINED!r} score of this network needs {want}: recalibrate"
        )
      fn = presence.score_fn(
        presence_score, num_joints=self.num_joints, sigma=codec.sigma, weights=presence_weights,
        limb_pairs=presence.symmetric_limbs(keypoint_set.joint_names),
      )  # fmt: skip
      self._presence = jax.jit(fn)

  @classmethod
  def from_workdir(cls, workdir: str, config=None) -> Predictor:
    """The predictor of a run folder: its config (``<workdir>/config.json`` when ``config``
    is None; a given one must match its network), see :meth:`from_run`."""
    from unipose_jax.run import Run  # noqa: PLC0415  (JAX: imported on use)

    return cls.from_run(Run.from_workdir(workdir, config))

  @classmethod
  def from_run(cls, run) -> Predictor:
    """The predictor of a ``run.Run``: its best (else newest) intact checkpoint, its
    ``flip_test`` and ``predict`` settings (``Run.predictor_settings``)."""
    from unipose_jax import inference  # noqa: PLC0415

    variables, step = run.load_variables()
    heatmaps = inference.heatmap_fn(
      run.model(), variables, flip_test=run.flip_test, flip_permutation=run.flip_permutation
    )
    predictor = cls(heatmaps, **run.predictor_settings())
    note = presence_note(run.config, run.workdir, step)
    if note:
      print(note, flush=True)
    predictor.checkpoint_step = step
    passes = "two passes" if predictor.second_pass else "one pass"
    person = (
      f"person: {predictor.presence_score} >= {predictor.presence_threshold:.4g}"
      if predictor.presence_score
      else "person: any visible joint"
    )
    in_h, in_w = predictor.input_hw
    size = in_h if in_h == in_w else f"{in_h}x{in_w}"
    print(
      f"predicting with checkpoint {step} of {run.workdir} ({size} px input, "
      f"{passes}, {predictor.decoding} decoding, score threshold "
      f"{predictor.score_threshold:g}, {person})",
      flush=True,
    )
    return predictor

  def _pass(self, image: np.ndarray, affine: np.ndarray):
    """Keypoints (K, 2) and scores (K,) in original pixels, the box or None, and the
    presence score (None when uncalibrated)."""
    inputs = transforms.warp_image(image, affine, self.input_hw)[None]
    maps = self.heatmap_fn(inputs)
    presence = None if self._presence is None else float(self._presence(maps)[0])
    points, scores = self._decode(maps)
    points = np.asarray(points, np.float64)[0]
    scores = np.asarray(scores, np.float64)[0]
    points = geometry.apply_affine_to_points(geometry.invert_affine(affine), points)
    _, kp, box_points = skeleton.split_maps(
      points, background=False, num_joints=self.num_joints, axis=-2
    )
    sc = skeleton.split_maps(scores, background=False, num_joints=self.num_joints)[1]
    visible = sc >= self.score_threshold
    if self.box_head:
      if box_points is None:
        raise ValueError(f"box_head needs {self.num_joints} + 5 heatmaps, got {len(points)}")
      box = _box_of(box_points) if visible.any() else None
    else:
      box, count = geometry.joint_extent(kp, visible)
      box = box if count else None
    return kp, sc, visible, box, presence

  def _check(self, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
      raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    return image

  def first_pass(self, image: np.ndarray) -> Prediction:
    """The letterboxed whole-image pass alone (step 1 of the module doc)."""
    image = self._check(image)
    h, w = image.shape[:2]
    kp, sc, visible, box, presence = self._pass(
      image, geometry.letterbox_affine(h, w, self.input_hw)
    )
    if presence is None:
      found = bool(visible.any())
    else:
      found = presence >= self.presence_threshold
    if not found:
      visible, box = np.zeros_like(visible), None
    return Prediction(
      kp, sc, visible, box, person_found=found, passes=1, presence=presence,
      keypoint_set=self.keypoint_set,
    )  # fmt: skip

  def __call__(self, image: np.ndarray) -> Prediction:
    """Both passes (the second only when enabled and a person was found)."""
    image = self._check(image)
    first = self.first_pass(image)
    if not (
      self.second_pass and first.box is not None and np.all(np.isfinite(first.box))
    ):  # no person found, or one without a visible joint: nothing to crop
      return first
    h, w = image.shape[:2]
    affine = geometry.crop_affine(first.box, h, w, self.input_hw, self.crop_margin)
    kp, sc, visible, box, _ = self._pass(image, affine)
    box = first.box if box is None else box
    return Prediction(
      kp, sc, visible, box, True, passes=2, presence=first.presence,
      keypoint_set=self.keypoint_set,
    )  # fmt: skip


def presence_note(config, workdir: str, step: int) -> str | None:
  """A note when a run has no person-presence calibration (the old rule then applies) or
  was calibrated on another checkpoint than ``step``; None when all is well."""
  p = config.predict
  if not p.presence_score:
    return (
      f"note: {workdir} has no person-presence calibration (config.json has no "
      'predict.presence_score): a person is "found" whenever any joint scores >= '
      f"{p.score_threshold:g}, which says little. Calibrate it with: unipose-jax "
      f"--mode=calibrate --workdir={workdir}"
    )
  if p.presence_step != step:
    return (
      f"note: person presence was calibrated on checkpoint {p.presence_step}, predicting "
      f"with {step}; recalibrate with: unipose-jax --mode=calibrate --workdir={workdir}"
    )
  return None
