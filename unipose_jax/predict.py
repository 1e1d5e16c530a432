"""Pose prediction on real photos and videos: two passes, confidences, a person box.

Coordinates (design section 5): keypoints are ``(x, y)`` pixels of the ORIGINAL image,
0-based, integer coordinates at pixel centres; boxes are ``(x0, y0, x1, y1)`` in the same
pixels (the extreme joint or box-corner positions, not pixel edges).

How one image is read (:class:`Predictor`):

1. First pass: the whole image is letterboxed into the ``S x S`` network input
   (:func:`transforms.letterbox_affine`, aspect kept, :data:`transforms.BORDER_RGB`
   padding), the heatmaps are decoded (``codec.decode``) and the points are mapped back
   through the inverse affine. A joint is *visible* when its score (the heatmap maximum)
   is ``>= score_threshold``. A person is found when the presence score of these
   heatmaps reaches the run's calibrated threshold (:mod:`unipose_jax.presence`,
   :mod:`unipose_jax.calibrate`); a run without a calibration falls back to the old rule,
   "any visible joint". The person box is the box head's (the mean of its corner points'
   sides) or, without a box head, the extent of the visible joints. With no person
   found, keypoints and scores are still returned, ``visible`` is all False, ``box`` is
   None, and there is no second pass.
2. Second pass (``second_pass``, a person found): a square around the box centre with
   side ``crop_margin * max(box width, box height)`` (at least ``MIN_CROP_FRACTION``
   of the image's longer side, so a single visible joint still gives a sensible crop)
   is resampled to ``S x S`` (outside the image: ``BORDER_RGB``). The crop stays centred
   on the person even at the image border, as in training (person-centred crops). The
   reported keypoints, scores and visibility are this pass's; so is the box (the box
   head's, or the extent of this pass's visible joints; if this pass sees no visible
   joint, the first pass's box is kept). ``person_found`` is the first pass's verdict.

Both passes warp with ``cv2.warpAffine`` (:func:`transforms.warp_image`), whose sampling
follows the pixel-centre convention exactly, so the inverse affine is exact.

Files (:func:`run`): ``<name>_pose.png`` overlays and one ``predictions.json`` for the
images, ``<name>_pose.mp4`` and ``<name>_pose.jsonl`` (one JSON object per frame) per
video; all written atomically (``unipose_jax.files``). Every input is checked by
:func:`collect_inputs` before a model is built.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from unipose_jax import files, skeleton, transforms, visualize
from unipose_jax.media import (  # noqa: F401 (part of predict's API, used by launch.py)
  IMAGE_EXTENSIONS,
  VIDEO_EXTENSIONS,
  Item,
  PredictInputError,
  collect_inputs,
  read_image,
)

#: The second-pass crop is at least this share of the image's longer side.
MIN_CROP_FRACTION = 0.1
#: Video progress is printed at most this often (seconds).
PROGRESS_EVERY_S = 2.0


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
  """

  keypoints: np.ndarray
  scores: np.ndarray
  visible: np.ndarray
  box: np.ndarray | None
  person_found: bool
  passes: int = 1
  presence: float | None = None

  def to_json(self) -> dict[str, Any]:
    """Plain JSON (full precision): ``person_found``, ``presence`` (score or None),
    ``passes``, ``box`` (``[x0, y0, x1, y1]`` or None), ``joint_names`` (LSP order),
    ``keypoints`` (K lists ``[x, y]``), ``scores`` (K) and ``visible`` (K bools)."""
    k = len(self.keypoints)
    names = skeleton.JOINT_NAMES if k == skeleton.NUM_JOINTS else [f"joint_{i}" for i in range(k)]
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
  (:func:`codecs.box.box_from_points`; imported here, not at module import, so that input
  checks run before JAX is imported)."""
  from unipose_jax.codecs import box as box_lib  # noqa: PLC0415

  return np.asarray(box_lib.box_from_points(np.asarray(points, np.float32)[None]))[0]


def joint_extent(keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray | None:
  """``(4,)`` ``x0, y0, x1, y1`` of the visible joints ``(K, 2)``, or None if none is."""
  if not np.any(visible):
    return None
  pts = np.asarray(keypoints, np.float64)[np.asarray(visible, bool)]
  return np.concatenate([pts.min(0), pts.max(0)])


def crop_affine(box: np.ndarray, height: int, width: int, input_size: int, margin: float):
  """Affine (2, 3) original -> input of the second pass's square crop.

  Centre ``c`` of ``box``; side ``d = max(margin * max(box w, box h), MIN_CROP_FRACTION *
  max(H, W), 1)``. The crop's area ``[c - d/2, c + d/2]`` maps onto the input's pixel area
  ``[-0.5, S - 0.5]``: ``x_in = (S / d) (x - c_x) + (S - 1) / 2`` (same in y), the
  convention of :func:`transforms.train_affine`.
  """
  box = np.asarray(box, np.float64)
  centre = (box[:2] + box[2:]) / 2.0
  side = margin * float(np.max(box[2:] - box[:2]))
  side = max(side, MIN_CROP_FRACTION * max(height, width), 1.0)
  zoom = input_size / side
  offset = (input_size - 1) / 2.0 - zoom * centre
  return np.array([[zoom, 0.0, offset[0]], [0.0, zoom, offset[1]]])


# ----------------------------------------------------------------------------- the predictor


class Predictor:
  """Callable ``image (H, W, 3) uint8 RGB -> Prediction`` (see the module doc).

  Args:
    heatmap_fn: ``images uint8 (B, S, S, 3) -> heatmaps (B, h, w, K [+ 5])`` float, the
      background channel dropped, the 5 box maps last when ``box_head``.
    input_size: ``S``, the network's square input side.
    codec: a ``HeatmapCodec`` for that input (its ``decode`` maps heatmaps to input pixels).
    num_joints: ``K``.
    box_head: whether the heatmaps carry the 5 box maps after the joints.
    decoding: the codec's decoder name ("dark", "argmax", ...).
    score_threshold: joints scoring below are not visible.
    second_pass: run the person-centred second pass when a person is found.
    crop_margin: second-pass crop side over the box's longer side.
    presence_score: the name of the presence score (``presence.SCORES``); "" for the
      uncalibrated rule (a person when any joint is visible).
    presence_threshold: a person is found when the presence score is ``>=`` this.
  """

  def __init__(
    self,
    heatmap_fn: Callable[[np.ndarray], Any],
    *,
    input_size: int,
    codec: Any,
    num_joints: int = skeleton.NUM_JOINTS,
    box_head: bool = False,
    decoding: str = "dark",
    score_threshold: float = 0.2,
    second_pass: bool = True,
    crop_margin: float = 1.25,
    presence_score: str = "",
    presence_threshold: float = 0.0,
  ):
    import jax  # noqa: PLC0415  (the package imports without JAX; see __init__)

    if crop_margin <= 0:
      raise ValueError(f"crop_margin must be > 0, got {crop_margin}")
    self.heatmap_fn = heatmap_fn
    self.input_size = int(input_size)
    self.codec = codec
    self.num_joints = int(num_joints)
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

      fn = presence.score_fn(presence_score, num_joints=self.num_joints, sigma=codec.sigma)
      self._presence = jax.jit(fn)

  @classmethod
  def from_workdir(cls, workdir: str, config=None) -> Predictor:
    """The predictor of a run: its config (``<workdir>/config.json`` when ``config`` is
    None), its best (else newest) checkpoint, ``flip_test`` and the ``predict`` settings."""
    import jax  # noqa: PLC0415

    from unipose_jax import evaluate, run_config  # noqa: PLC0415

    if config is None:
      config = run_config.load(workdir)
      if config is None:
        raise FileNotFoundError(f"{workdir}/{run_config.CONFIG_FILE} not found: not a run folder")
    model = run_config.build_model(config)
    codec = run_config.build_codec(config)
    variables, step = run_config.load_variables(workdir)
    variables = jax.device_put(variables)
    flip_test = bool(config.flip_test)

    @jax.jit
    def heatmaps(v, images):
      return evaluate.predict_heatmaps(v, images, model=model, flip_test=flip_test)

    predictor = cls(
      lambda images: heatmaps(variables, images),
      input_size=config.data.input_size,
      codec=codec,
      num_joints=skeleton.NUM_JOINTS,
      box_head=bool(config.model.box_head),
      decoding=config.codec.decoding,
      score_threshold=config.predict.score_threshold,
      second_pass=config.predict.second_pass,
      crop_margin=config.predict.crop_margin,
      **presence_settings(config, workdir, step),
    )
    predictor.checkpoint_step = step
    passes = "two passes" if predictor.second_pass else "one pass"
    person = (
      f"person: {predictor.presence_score} >= {predictor.presence_threshold:.4g}"
      if predictor.presence_score
      else "person: any visible joint"
    )
    print(
      f"predicting with checkpoint {step} of {workdir} ({config.data.input_size} px input, "
      f"{passes}, {config.codec.decoding} decoding, score threshold "
      f"{predictor.score_threshold:g}, {person})",
      flush=True,
    )
    return predictor

  def _pass(self, image: np.ndarray, affine: np.ndarray):
    """Keypoints (K, 2) and scores (K,) in original pixels, the box or None, and the
    presence score (None when uncalibrated)."""
    s = self.input_size
    inputs = transforms.warp_image(image, affine, s)[None]
    maps = self.heatmap_fn(inputs)
    presence = None if self._presence is None else float(self._presence(maps)[0])
    points, scores = self._decode(maps)
    points = np.asarray(points, np.float64)[0]
    scores = np.asarray(scores, np.float64)[0]
    points = transforms.apply_affine_to_points(transforms.invert_affine(affine), points)
    k = self.num_joints
    kp, sc = points[:k], scores[:k]
    visible = sc >= self.score_threshold
    if self.box_head:
      if points.shape[0] < k + skeleton.NUM_BOX_POINTS:
        raise ValueError(f"box_head needs {k} + 5 heatmaps, got {points.shape[0]}")
      box = _box_of(points[k : k + skeleton.NUM_BOX_POINTS]) if visible.any() else None
    else:
      box = joint_extent(kp, visible)
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
    affine = transforms.letterbox_affine(h, w, self.input_size)
    kp, sc, visible, box, presence = self._pass(image, affine)
    if presence is None:
      found = bool(visible.any())
    else:
      found = presence >= self.presence_threshold
    if not found:
      visible, box = np.zeros_like(visible), None
    return Prediction(kp, sc, visible, box, person_found=found, passes=1, presence=presence)

  def __call__(self, image: np.ndarray) -> Prediction:
    """Both passes (the second only when enabled and a person was found)."""
    image = self._check(image)
    first = self.first_pass(image)
    if not (
      self.second_pass and first.box is not None and np.all(np.isfinite(first.box))
    ):  # no person found, or one without a visible joint: nothing to crop
      return first
    h, w = image.shape[:2]
    affine = crop_affine(first.box, h, w, self.input_size, self.crop_margin)
    kp, sc, visible, box, _ = self._pass(image, affine)
    box = first.box if box is None else box
    return Prediction(kp, sc, visible, box, True, passes=2, presence=first.presence)


def presence_settings(config, workdir: str, step: int) -> dict[str, Any]:
  """The Predictor's ``presence_score``/``presence_threshold`` of a run's config, with a
  printed note when the run has no calibration (the old rule then applies) or was
  calibrated on another checkpoint than ``step``."""
  p = config.predict
  if not p.presence_score:
    print(
      f"note: {workdir} has no person-presence calibration (config.json has no "
      'predict.presence_score): a person is "found" whenever any joint scores >= '
      f"{p.score_threshold:g}, which says little. Calibrate it with: python launch.py "
      f"--mode=calibrate --workdir={workdir}",
      flush=True,
    )
    return {}
  if p.presence_step != step:
    print(
      f"note: person presence was calibrated on checkpoint {p.presence_step}, predicting "
      f"with {step}; recalibrate with --mode=calibrate",
      flush=True,
    )
  return {"presence_score": p.presence_score, "presence_threshold": p.presence_threshold}


# ----------------------------------------------------------------------------- outputs


def overlay(image: np.ndarray, pred: Prediction) -> np.ndarray:
  """The picture written for a prediction: :func:`visualize.draw_prediction`."""
  return visualize.draw_prediction(
    image, pred.keypoints, pred.visible, pred.box, pred.person_found, pred.scores
  )


def predict_images(items: Sequence[Item], predictor: Callable, out_dir: str) -> list[dict]:
  """Predict every image item: ``<name>_pose.png`` overlays and ``predictions.json`` (a
  list of ``{"input": path, **Prediction.to_json()}`` in item order) in ``out_dir``;
  one printed line per image. Returns that list."""
  records = []
  for item in items:
    if item.kind != "image":
      continue
    image = read_image(item.path)
    start = time.perf_counter()
    pred = predictor(image)
    seconds = time.perf_counter() - start
    target = visualize.save_png(
      os.path.join(out_dir, f"{item.name}_pose.png"), overlay(image, pred)
    )
    records.append({"input": item.path, **pred.to_json()})
    print(f"{item.path}: {pred.summary()} ({seconds:.2f} s) -> {target}", flush=True)
  if records:
    path = files.write_json(os.path.join(out_dir, "predictions.json"), records)
    print(f"wrote {path} ({len(records)} images)", flush=True)
  return records


def _progress(path: str, done: int, total: int, elapsed: float) -> str:
  rate = done / elapsed if elapsed > 0 else 0.0
  line = f"{path}: frame {done}" + (f"/{total}" if total > 0 else "") + f", {rate:.1f} frames/s"
  if total > 0 and rate > 0:
    line += f", ETA {max(total - done, 0) / rate:.0f} s"
  return line


def predict_video(item: Item, predictor: Callable, out_dir: str) -> dict[str, Any]:
  """Predict every frame of a video item.

  Writes ``<name>_pose.mp4`` (the overlays; mp4v, the input's fps and frame size) and
  ``<name>_pose.jsonl`` (one line per frame: ``{"frame": i, "time_s": i / fps,
  **Prediction.to_json()}``) in ``out_dir``, both atomically (a temporary file renamed
  when the video is done). Prints progress (frames done/total, frames/s, ETA) at most
  every :data:`PROGRESS_EVERY_S` seconds, and a final line. Returns ``{"frames", "fps",
  "video", "jsonl", "seconds"}``.
  """
  cap = cv2.VideoCapture(item.path)
  if not cap.isOpened():
    raise PredictInputError(f"{item.path}: not a readable video (OpenCV cannot open it)")
  fps = float(cap.get(cv2.CAP_PROP_FPS))
  fps = fps if np.isfinite(fps) and fps > 0 else 25.0
  total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
  os.makedirs(out_dir, exist_ok=True)
  video_path = os.path.join(out_dir, f"{item.name}_pose.mp4")
  jsonl_path = os.path.join(out_dir, f"{item.name}_pose.jsonl")
  tmp_video = os.path.join(out_dir, f".{item.name}_pose.{os.getpid()}.tmp.mp4")
  state = {"frames": 0, "writer": None}
  start = last = time.perf_counter()

  def frames_to(jsonl) -> None:
    nonlocal last
    while True:
      ok, frame = cap.read()
      if not ok or frame is None:
        return
      image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
      if state["writer"] is None:
        size = (image.shape[1], image.shape[0])
        state["writer"] = cv2.VideoWriter(tmp_video, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not state["writer"].isOpened():
          raise PredictInputError(f"{video_path}: cannot write a video here (OpenCV, mp4v)")
      pred = predictor(image)
      state["writer"].write(cv2.cvtColor(overlay(image, pred), cv2.COLOR_RGB2BGR))
      i = state["frames"]
      record = {"frame": i, "time_s": round(i / fps, 4), **pred.to_json()}
      jsonl.write((files.json_text(record, indent=None) + "\n").encode("utf-8"))
      state["frames"] = i + 1
      now = time.perf_counter()
      if now - last >= PROGRESS_EVERY_S:
        last = now
        print(_progress(item.path, i + 1, total, now - start), flush=True)

  try:
    files.atomic_write(jsonl_path, frames_to)
    if state["writer"] is None:
      raise PredictInputError(f"{item.path}: not a readable video (no frame could be decoded)")
    state["writer"].release()
    state["writer"] = None
    os.replace(tmp_video, video_path)
  finally:
    cap.release()
    if state["writer"] is not None:
      state["writer"].release()
    pathlib.Path(tmp_video).unlink(missing_ok=True)
  seconds = time.perf_counter() - start
  n = state["frames"]
  print(
    f"{item.path}: {n} frames in {seconds:.1f} s ({n / max(seconds, 1e-9):.1f} frames/s) "
    f"-> {video_path}, {jsonl_path}",
    flush=True,
  )
  return {"frames": n, "fps": fps, "video": video_path, "jsonl": jsonl_path, "seconds": seconds}


def run(items: Sequence[Item], predictor: Callable, out_dir: str) -> dict[str, Any]:
  """Predict all ``items`` into ``out_dir``: the images (:func:`predict_images`), then each
  video (:func:`predict_video`). Returns ``{"images": records, "videos": summaries}``."""
  images = predict_images(items, predictor, out_dir)
  videos = [predict_video(item, predictor, out_dir) for item in items if item.kind == "video"]
  return {"images": images, "videos": videos}
