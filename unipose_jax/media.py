"""The media of prediction: image files, folders and videos in, overlays and JSON out.

Inputs (:func:`collect_inputs`) are checked before any model is built. This module
imports OpenCV, NumPy and the drawing code only (no JAX), so a bad input is reported
before JAX is imported or anything is compiled. Images are ``(H, W, 3)`` uint8 RGB.

Outputs (:func:`predict_all`), for any predictor ``image -> predict.Prediction``:
``<name>_pose.png`` overlays and one ``predictions.json`` for the images,
``<name>_pose.mp4`` and ``<name>_pose.jsonl`` (one JSON object per frame) per video; all
written atomically (``unipose_jax.files``).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image

from unipose_jax import files, preemption, visualize
from unipose_jax.config_defaults import MAX_PIXELS  # ``predict.max_pixels``'s default

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class PredictInputError(ValueError):
  """An input (or output) of prediction that cannot be used; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Item:
  """One input: ``path``, ``kind`` ("image" or "video"), ``name`` (unique output stem)."""

  path: str
  kind: str
  name: str


def _kind(path: str) -> str | None:
  ext = os.path.splitext(path)[1].lower()
  return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None


def _too_large(width: int, height: int, max_pixels: int) -> str | None:
  if width * height <= max_pixels:
    return None
  return (
    f"{width}x{height} = {width * height / 1e6:.3g} MP is over the limit of "
    f"{max_pixels / 1e6:g} MP (--config.predict.max_pixels; raise it to read this file)"
  )


def _size_problem(path: str, max_pixels: int) -> str | None:
  """The fault of an image whose header declares more than ``max_pixels``, read from the
  header alone (PIL opens lazily); None where PIL cannot read the header (OpenCV decides)."""
  pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # ours is the limit
  try:
    with Image.open(path) as im:
      width, height = im.size
  except Exception:  # noqa: BLE001 - not a format PIL knows: OpenCV's decoder decides
    return None
  finally:
    Image.MAX_IMAGE_PIXELS = pil_limit
  return _too_large(width, height, max_pixels)


def read_image(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
  """``(H, W, 3)`` uint8 RGB of an image file (EXIF orientation applied, grey and alpha
  images converted), or :class:`PredictInputError` naming the file; an image whose header
  declares more than ``max_pixels`` is refused before it is decoded."""
  if problem := _size_problem(path, max_pixels):
    raise PredictInputError(f"{path}: {problem}")
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    raise PredictInputError(f"{path}: not a readable image (OpenCV cannot decode it)")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _video_problem(path: str, max_pixels: int) -> str | None:
  cap = cv2.VideoCapture(path)
  try:
    if not cap.isOpened():
      return "not a readable video (OpenCV cannot open it)"
    size = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if problem := _too_large(*size, max_pixels):
      return f"frames of {problem}"
    ok, frame = cap.read()
    if not ok or frame is None:
      return "not a readable video (no frame could be decoded)"
  finally:
    cap.release()
  return None


def _problem(path: str, kind: str | None, max_pixels: int) -> tuple[str | None, str | None]:
  """``(kind, None)`` for a usable file, ``(None, what is wrong)`` otherwise."""
  if kind == "video":
    problem = _video_problem(path, max_pixels)
    return (None, problem) if problem else ("video", None)
  if problem := _size_problem(path, max_pixels):
    return None, problem
  if cv2.imread(path, cv2.IMREAD_COLOR) is not None:
    return "image", None
  if kind == "image":
    return None, "not a readable image (OpenCV cannot decode it)"
  exts = ", ".join(e[1:] for e in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
  return None, f"not an image or a video (readable extensions: {exts})"


def _unique_names(paths: Sequence[str]) -> list[str]:
  """Output stems in input order: the file's stem, then ``<stem>_2``, ``<stem>_3``, ...
  for later inputs whose stem is taken (compared case-insensitively)."""
  taken: set[str] = set()
  out = []
  for path in paths:
    stem = pathlib.Path(path).stem or "input"
    name, n = stem, 1
    while name.lower() in taken:
      n += 1
      name = f"{stem}_{n}"
    taken.add(name.lower())
    out.append(name)
  return out


def _missing(path: str) -> str:
  """Why ``path`` cannot be reached: no such file, a broken link, or a loop of links."""
  if not os.path.islink(path):
    return "no such file or folder"
  try:
    os.stat(path)
  except OSError as e:
    if e.errno == errno.ELOOP:
      return "a loop of symbolic links"
  return f"a broken symbolic link (to {os.readlink(path)})"


def collect_inputs(paths: Sequence[str], max_pixels: int = MAX_PIXELS) -> list[Item]:
  """The inputs of prediction, every one checked (decoded once) before any model is built.

  Args:
    paths: image files, video files and folders. A folder contributes its image and
      video files (by extension, sorted by name, not recursive); other files in it are
      skipped. A file given explicitly with another extension is used if OpenCV reads it
      as an image. The same file given twice is used once.
  Returns:
    Items in input order, each with a unique output ``name`` (:func:`_unique_names`).
  Raises:
    PredictInputError: one message listing every bad input as ``"<path>: <fault>"``
      (missing, unreadable image, unopenable video, non-image file, folder with no image
      or video, an image or video frame over ``max_pixels``, a broken or looping link).
  """
  found: list[tuple[str, str]] = []
  errors: list[str] = []
  for path in paths:
    path = str(path)
    entries = []
    if not os.path.exists(path):
      errors.append(f"{path}: {_missing(path)}")
    elif os.path.isdir(path):
      entries = sorted(e for e in os.listdir(path) if _kind(e) and not e.startswith("."))
      entries = [os.path.join(path, e) for e in entries if os.path.isfile(os.path.join(path, e))]
      if not entries:
        exts = ", ".join(e[1:] for e in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        errors.append(f"{path}: folder holds no image or video ({exts})")
    else:
      entries = [path]
    for entry in entries:
      kind, problem = _problem(entry, _kind(entry), max_pixels)
      if kind:
        found.append((entry, kind))
      else:
        errors.append(f"{entry}: {problem}")
  if errors:
    head = "bad input" if len(errors) == 1 else f"{len(errors)} bad inputs"
    raise PredictInputError(f"{head}:\n  " + "\n  ".join(errors))
  seen: set[str] = set()
  unique = []
  for path, kind in found:
    key = os.path.realpath(path)
    if key not in seen:
      seen.add(key)
      unique.append((path, kind))
  names = _unique_names([p for p, _ in unique])
  return [Item(p, k, n) for (p, k), n in zip(unique, names)]


# ----------------------------------------------------------------------------- outputs

#: Video progress is printed at most this often (seconds).
PROGRESS_EVERY_S = 2.0


def overlay(image: np.ndarray, pred) -> np.ndarray:
  """The picture written for a ``predict.Prediction``: :func:`visualize.draw_prediction`
  (its keypoint set's limbs and sides)."""
  if pred.keypoint_set is None:
    raise ValueError("an overlay needs the prediction's keypoint_set")
  return visualize.draw_prediction(
    image, pred.keypoints, pred.visible, pred.box, pred.person_found, pred.scores,
    keypoint_set=pred.keypoint_set,
  )  # fmt: skip


def predict_images(
  items: Sequence[Item], predictor: Callable, out_dir: str, max_pixels: int = MAX_PIXELS
) -> list[dict]:
  """Predict every image item (read with :func:`read_image` under ``max_pixels``):
  ``<name>_pose.png`` overlays and ``predictions.json`` (a list of ``{"input": path,
  **Prediction.to_json()}`` in item order) in ``out_dir``; one printed line per image.
  Returns that list."""
  records = []
  for item in items:
    if item.kind != "image":
      continue
    preemption.check(f"prediction, after {len(records)} images; no predictions.json written")
    image = read_image(item.path, max_pixels)
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
  if hasattr(predictor, "reset"):  # a video model's state: each video starts afresh
    predictor.reset()
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
      preemption.check(
        f"{item.path}, after {state['frames']} frames; its video and JSON lines not written"
      )
      ok, frame = cap.read()
      if not ok or frame is None:
        break
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
    if state["writer"] is None:
      raise PredictInputError(f"{item.path}: not a readable video (no frame could be decoded)")
    state["writer"].release()
    state["writer"] = None
    _check_video(tmp_video, video_path, state["frames"])  # before the JSON lines are renamed

  try:
    with preemption.temporary(tmp_video):
      files.atomic_write(jsonl_path, frames_to)
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


def _check_video(tmp: str, target: str, frames: int) -> None:
  """OpenCV's writer fails silently (a full disk leaves a truncated file): the written video
  must open and hold ``frames`` frames, else ``OSError`` naming ``target``."""
  cap = cv2.VideoCapture(tmp)
  try:
    written = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
  finally:
    cap.release()
  if written != frames:
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(tmp))).free
    raise OSError(
      f"cannot write {target}: the video written holds {written} of {frames} frames "
      f"({free / 1e6:.0f} MB free on its disk)"
    )


def predict_all(
  items: Sequence[Item], predictor: Callable, out_dir: str, max_pixels: int = MAX_PIXELS
) -> dict[str, Any]:
  """Predict all ``items`` into ``out_dir``: the images (:func:`predict_images`, under
  ``max_pixels``: the limit :func:`collect_inputs` checked them with), then each video
  (:func:`predict_video`). Returns ``{"images": records, "videos": summaries}``."""
  images = predict_images(items, predictor, out_dir, max_pixels)
  videos = [predict_video(item, predictor, out_dir) for item in items if item.kind == "video"]
  return {"images": images, "videos": videos}
