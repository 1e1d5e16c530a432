"""TFDS builder ``synthetic``: procedurally drawn stick figures with the 14 LSP joints.

Meant for tests and quick demos: it needs no download, is deterministic given its
config's seed, builds in seconds, and is easy enough for a small CNN to learn.

Each image shows one front-facing figure on a cluttered background:

* the pose comes from a simple kinematic model (torso tilt, shoulder/hip abduction,
  elbow/knee flexion, head tilt, limb lengths), scaled and placed at random so that
  the whole figure is inside the image;
* every body part has its own saturated colour: torso green, upper arms blue,
  forearms cyan, thighs red, shins orange, head skin-coloured with a dark hair cap at
  the top, dark hands and feet. A limb of the person's left and the matching one of
  the right share a colour: left and right are told apart by geometry (the figure
  always faces the camera, so its right side is on the image's left when upright).
  That keeps the set consistent under the input pipeline's horizontal flip, which
  mirrors the image and swaps left/right labels: a mirrored figure is again a valid
  front-facing figure with correct labels, whereas side-specific colours would
  contradict the swapped labels;
* the background is a desaturated gradient with random desaturated rectangles,
  ellipses and lines, and the whole image gets Gaussian noise.

Keypoints follow the project convention (x, y), integer = pixel centre, 0-based
(OpenCV draws with the same convention; sub-pixel positions are drawn with
``shift``). All joints are labeled and visible.
"""

from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from unipose_jax import keypoint_sets, preemption
from unipose_jax.datasets._tfds_compat import ArrayRecordBuilderMixin
from unipose_jax.datasets.features import pose_features

NUM_JOINTS = keypoint_sets.LSP.num_joints
_SHIFT = 4  # OpenCV fixed-point bits for sub-pixel drawing
_ONE = 1 << _SHIFT

# RGB colours of the body parts (jittered per figure).
COLOURS = {
  "torso": (40, 170, 60),
  "upper_arm": (40, 70, 230),
  "forearm": (20, 200, 230),
  "thigh": (220, 30, 40),
  "shin": (245, 140, 15),
  "head": (235, 190, 150),
  "hair": (70, 40, 20),
  "hand": (25, 25, 25),
}

_J = {name: k for k, name in enumerate(keypoint_sets.LSP.joint_names)}


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """Size of the synthetic set.

  Attributes:
    image_size: images are ``(image_size, image_size, 3)``.
    num_train, num_test: examples in the ``train`` and ``test`` splits.
    seed: base seed; example ``i`` of a split depends only on (seed, split, i).
  """

  image_size: int = 128
  num_train: int = 512
  num_test: int = 128
  seed: int = 0


def _unit(angle: np.ndarray | float) -> np.ndarray:
  return np.array([np.cos(angle), np.sin(angle)])


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def sample_pose(rng: np.random.Generator) -> np.ndarray:
  """A random plausible pose, ``(14, 2)`` (x, y) in torso-length units, y down.

  The figure faces the camera: its right side is at -x when upright.
  """
  kp = np.zeros((NUM_JOINTS, 2))
  tilt = rng.normal(0.0, 0.3)
  if rng.random() < 0.1:  # an occasional acrobat
    tilt = rng.uniform(-np.pi, np.pi)
  up = np.array([np.sin(tilt), -np.cos(tilt)])  # pelvis -> neck
  right = np.array([-np.cos(tilt), -np.sin(tilt)])  # person's right, perpendicular to up
  down = -up

  pelvis = np.zeros(2)
  neck = pelvis + up * 1.0
  hip_half = rng.uniform(0.17, 0.25)
  shoulder_half = rng.uniform(0.3, 0.4)
  kp[_J["neck"]] = neck
  kp[_J["head_top"]] = neck + _rotate(up, rng.normal(0.0, 0.25)) * rng.uniform(0.45, 0.55)

  for side, sign in (("right", 1.0), ("left", -1.0)):
    outward = right * sign
    # Arm: abduction from hanging down (0) to raised overhead (~pi), flexion at the elbow.
    shoulder = neck + outward * shoulder_half + down * 0.05
    abduction = rng.uniform(-0.4, 2.9)
    upper_dir = np.cos(abduction) * down + np.sin(abduction) * outward
    flex = rng.uniform(0.0, 2.4) * rng.choice((-1.0, 1.0))
    fore_dir = _rotate(upper_dir, flex)
    elbow = shoulder + upper_dir * rng.uniform(0.5, 0.62)
    wrist = elbow + fore_dir * rng.uniform(0.45, 0.57)
    kp[_J[f"{side}_shoulder"]], kp[_J[f"{side}_elbow"]], kp[_J[f"{side}_wrist"]] = (
      shoulder,
      elbow,
      wrist,
    )
    # Leg: abduction mostly small, sometimes a kick; knee flexion either way.
    hip = pelvis + outward * hip_half
    abduction = rng.uniform(-0.35, 0.6) if rng.random() < 0.8 else rng.uniform(0.6, 1.6)
    thigh_dir = np.cos(abduction) * down + np.sin(abduction) * outward
    flex = rng.uniform(0.0, 1.8) * rng.choice((-1.0, 1.0))
    shin_dir = _rotate(thigh_dir, flex)
    knee = hip + thigh_dir * rng.uniform(0.7, 0.85)
    ankle = knee + shin_dir * rng.uniform(0.65, 0.8)
    kp[_J[f"{side}_hip"]], kp[_J[f"{side}_knee"]], kp[_J[f"{side}_ankle"]] = hip, knee, ankle
  return kp


def _fixed(points: np.ndarray) -> np.ndarray:
  """Sub-pixel coordinates -> OpenCV fixed-point int32 (pixel centre = integer)."""
  return np.round(np.asarray(points) * _ONE).astype(np.int32)


def _jitter(
  rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 25
) -> tuple[int, ...]:
  c = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, size=3), 0, 255)
  return tuple(int(v) for v in c)


def _desaturated(rng: np.random.Generator) -> tuple[int, ...]:
  grey = rng.uniform(40, 215)
  c = grey + rng.uniform(-35, 35, size=3)
  return tuple(int(v) for v in np.clip(c, 0, 255))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  a, b = np.asarray(_desaturated(rng), float), np.asarray(_desaturated(rng), float)
  direction = _unit(rng.uniform(0, 2 * np.pi))
  yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
  t = np.clip((xx * direction[0] + yy * direction[1] + 1.0) / 2.0, 0.0, 1.0)[..., None]
  image = ((1 - t) * a + t * b).astype(np.uint8)
  for _ in range(rng.integers(6, 16)):
    colour = _desaturated(rng)
    kind = rng.integers(3)
    p = rng.uniform(-0.1, 1.1, size=2) * size
    extent = rng.uniform(0.04, 0.3, size=2) * size
    if kind == 0:
      cv2.rectangle(
        image, _fixed(p - extent / 2), _fixed(p + extent / 2), colour, -1, cv2.LINE_AA, _SHIFT
      )
    elif kind == 1:
      cv2.ellipse(
        image,
        _fixed(p),
        _fixed(extent / 2),
        float(rng.uniform(0, 180)),
        0,
        360,
        colour,
        -1,
        cv2.LINE_AA,
        _SHIFT,
      )
    else:
      q = p + _unit(rng.uniform(0, 2 * np.pi)) * extent[0] * 2
      thickness = int(rng.integers(1, max(2, size // 25)))
      cv2.line(image, _fixed(p), _fixed(q), colour, thickness, cv2.LINE_AA, _SHIFT)
  return image


def _draw_figure(
  image: np.ndarray, kp: np.ndarray, torso_px: float, rng: np.random.Generator
) -> None:
  limb = max(2, int(round(torso_px * rng.uniform(0.1, 0.14))))
  colours = {name: _jitter(rng, c) for name, c in COLOURS.items()}

  def seg(a: str, b: str, colour: tuple[int, ...], thickness: int = limb) -> None:
    cv2.line(image, _fixed(kp[_J[a]]), _fixed(kp[_J[b]]), colour, thickness, cv2.LINE_AA, _SHIFT)

  for side in ("right", "left"):
    seg(f"{side}_hip", f"{side}_knee", colours["thigh"])
    seg(f"{side}_knee", f"{side}_ankle", colours["shin"])
  torso = kp[[_J["right_shoulder"], _J["left_shoulder"], _J["left_hip"], _J["right_hip"]]]
  cv2.fillConvexPoly(image, _fixed(torso), colours["torso"], cv2.LINE_AA, _SHIFT)
  seg("neck", "head_top", colours["head"], max(1, limb // 2))  # the neck itself
  for side in ("right", "left"):
    seg(f"{side}_shoulder", f"{side}_elbow", colours["upper_arm"])
    seg(f"{side}_elbow", f"{side}_wrist", colours["forearm"])
    for joint in (f"{side}_wrist", f"{side}_ankle"):
      cv2.circle(
        image,
        _fixed(kp[_J[joint]]),
        max(1, limb * 2 // 3) * _ONE,
        colours["hand"],
        -1,
        cv2.LINE_AA,
        _SHIFT,
      )
  # Head: an ellipse from the neck to the head top, with hair on its top third.
  neck, top = kp[_J["neck"]], kp[_J["head_top"]]
  axis = top - neck
  length = float(np.hypot(*axis))
  angle = float(np.degrees(np.arctan2(axis[1], axis[0])))
  centre = neck + axis * 0.55
  axes = np.array([length * 0.45, length * 0.36])
  cv2.ellipse(
    image, _fixed(centre), _fixed(axes), angle, 0, 360, colours["head"], -1, cv2.LINE_AA, _SHIFT
  )
  cv2.ellipse(
    image, _fixed(centre), _fixed(axes), angle, -55, 55, colours["hair"], -1, cv2.LINE_AA, _SHIFT
  )


def render_example(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Draws one figure.

  Returns:
    image: ``(image_size, image_size, 3)`` uint8 RGB.
    keypoints: ``(14, 2)`` float32, (x, y) pixel centres, all inside the image.
  """
  pose = sample_pose(rng)
  lo, hi = pose.min(axis=0), pose.max(axis=0)
  extent = float(max(hi - lo))
  # Leave room around the joints for the limb thickness and the head.
  target = rng.uniform(0.55, 0.85) * image_size
  scale = target / max(extent, 1e-6)
  margin = 0.1 * scale + 1.0
  span = (hi - lo) * scale
  room = np.maximum(image_size - 1 - 2 * margin - span, 0.0)
  offset = margin + rng.uniform(0, 1, size=2) * room - lo * scale
  keypoints = pose * scale + offset
  keypoints = np.clip(keypoints, 0.0, image_size - 1.0)

  image = _background(rng, image_size)
  _draw_figure(image, keypoints, torso_px=scale, rng=rng)
  return _add_noise(rng, image), keypoints.astype(np.float32)


def _add_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
  noise = rng.normal(0.0, rng.uniform(2.0, 8.0), size=image.shape)
  return np.clip(image + noise, 0, 255).astype(np.uint8)


def render_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
  """An image of the set without its figure: the background and the pixel noise of
  :func:`render_example`, ``(image_size, image_size, 3)`` uint8 RGB (a negative for
  person-presence calibration)."""
  return _add_noise(rng, _background(rng, image_size))


_SPLIT_CODES = {"train": 0, "test": 1}


def make_example(config: SyntheticConfig, split: str, index: int) -> dict[str, np.ndarray]:
  """Example ``index`` (0-based) of ``split``, before encoding; deterministic.

  Returns a dict with ``image`` (H, W, 3) uint8, ``keypoints`` (14, 2) float32,
  ``visible`` and ``labeled`` (14,) bool (all True) and ``image_id`` = ``index + 1``.
  """
  rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index])
  image, keypoints = render_example(rng, config.image_size)
  return {
    "image": image,
    "keypoints": keypoints,
    "visible": np.ones(NUM_JOINTS, bool),
    "labeled": np.ones(NUM_JOINTS, bool),
    "image_id": np.int32(index + 1),
  }


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
  """``(H, W, 3)`` uint8 RGB -> JPEG bytes (PIL; no TensorFlow)."""
  buffer = io.BytesIO()
  Image.fromarray(image, mode="RGB").save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


class Synthetic(ArrayRecordBuilderMixin, tfds.core.GeneratorBasedBuilder):
  """Synthetic stick figures; configs ``default`` (128 px, 512/128) and ``small`` (64 px, 128/32)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    SyntheticConfig(name="default", description="128x128 images, 512 train / 128 test."),
    SyntheticConfig(
      name="small",
      description="64x64 images, 128 train / 32 test.",
      image_size=64,
      num_train=128,
      num_test=32,
    ),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=pose_features(keypoint_sets.LSP.num_joints, box=False),  # box: derived on reading
      disable_shuffling=True,  # examples stay in image-id order
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager
    config: SyntheticConfig = self.builder_config
    return {
      "train": self._generate_examples("train", config.num_train),
      "test": self._generate_examples("test", config.num_test),
    }

  def _generate_examples(self, split: str, count: int):
    config: SyntheticConfig = self.builder_config
    for index in range(count):
      preemption.check(f"building {self.name}/{config.name}; the incomplete build is not kept")
      example = make_example(config, split, index)
      example["image"] = encode_jpeg(example["image"])
      yield index, example
