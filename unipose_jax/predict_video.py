"""Prediction with UniPose-LSTM: a video's frames in order, the LSTM's state carried from
frame to frame, each frame cropped around the person found in the previous one.

The original assumes a person centred in the frame (its centre map). Here, per frame:

1. Where to look: the previous frame's box (the extent of its visible joints), cropped as
   the image predictor's second pass crops (``geometry.crop_affine``, side
   ``predict.crop_margin`` x the box's longer side); for the first frame, or after a
   frame without a person, the project's two-pass search (``Predictor``, run on the
   network's single-frame path, the trunk's own maps) gives the box, and the state
   starts afresh (the first-frame cell) - a new track. No person there either: the
   whole letterboxed frame.
2. One ``UniPoseLSTM.step`` (jitted) on that crop with the carried state; its joints
   decoded and mapped back to the frame. A joint is visible when its score is
   ``>= predict.score_threshold``; no visible joint ends the track.

``VideoPredictor`` is a callable ``image (H, W, 3) uint8 RGB -> predict.Prediction`` as
``Predictor`` is, with :meth:`reset` (``media.predict_video`` calls it before each video),
so ``--mode=predict --inputs=clip.mp4`` writes ``<name>_pose.mp4`` and one JSON line per
frame, with frames/s and an ETA, unchanged. ``passes`` in the output: 1 = the LSTM
step alone, 2 = after a new search. Still images go through the same path (one frame).
"""

from __future__ import annotations

import numpy as np

from unipose_jax import geometry, skeleton, transforms
from unipose_jax.predict import Prediction, Predictor


class VideoPredictor:
  """See the module doc. ``step_fn(images (1, S, S, 3) uint8, state) -> (heatmaps (1, h, w,
  K + 1), state)``; ``initial_state()`` the state before a track; ``search``: the image
  ``Predictor`` of the single-frame path (its codec, decoding, threshold, crop margin)."""

  def __init__(self, step_fn, initial_state, search: Predictor):
    import jax  # noqa: PLC0415

    self.step_fn, self.initial_state, self.search = step_fn, initial_state, search
    self.keypoint_set, self.num_joints = search.keypoint_set, search.num_joints
    self.input_size = search.input_size
    self._decode = jax.jit(lambda m: search.codec.decode(m, decoding=search.decoding))
    self.reset()

  def reset(self) -> None:
    """Forget the track (the next frame starts a video)."""
    self._state, self._box = None, None

  @classmethod
  def from_run(cls, run) -> VideoPredictor:
    """The predictor of a video ``run.Run``: its best (else newest) intact checkpoint (a
    single-frame network's is refused in one line) and its ``predict`` settings."""
    import jax  # noqa: PLC0415

    from unipose_jax.models import UniPoseLSTM, normalize  # noqa: PLC0415
    from unipose_jax.models.unipose_lstm import initial_state  # noqa: PLC0415
    from unipose_jax.train_video import check_kind  # noqa: PLC0415

    variables, step = run.load_variables()
    check_kind(variables, video=True, what=f"checkpoint {step} of {run.workdir}")
    model, k = run.model(), run.num_joints
    variables = jax.device_put(variables)
    s = run.config.data.input_size

    @jax.jit
    def step_fn(v, images, state):
      return model.apply(v, normalize(images), state, method=UniPoseLSTM.step)

    @jax.jit
    def trunk_fn(v, images):
      maps = model.apply(v, normalize(images), False, method=lambda m, x, t: m._trunk_maps(x, t))
      return skeleton.split_maps(maps, num_joints=k)[1]

    settings = run.predictor_settings()
    settings.update(box_head=False, presence_score="", presence_weights=())  # LSTM runs: none
    search = Predictor(lambda images: trunk_fn(variables, images), **settings)
    predictor = cls(
      lambda images, state: step_fn(variables, images, state),
      lambda: initial_state(1, s, s, k),
      search,
    )
    predictor.checkpoint_step = step
    print(
      f"predicting with UniPose-LSTM checkpoint {step} of {run.workdir} ({s} px crops around "
      f"the previous frame's person, the state carried; first frame: two-pass search)",
      flush=True,
    )
    return predictor

  def __call__(self, image: np.ndarray) -> Prediction:
    image = self.search._check(image)
    h, w = image.shape[:2]
    passes = 1
    if self._box is None:  # a new track: the two-pass search on the single-frame path
      found = self.search(image)
      self._box = found.box if found.box is not None and np.all(np.isfinite(found.box)) else None
      self._state, passes = self.initial_state(), 2
    if self._box is None:
      affine = geometry.letterbox_affine(h, w, self.input_size)
    else:
      affine = geometry.crop_affine(self._box, h, w, self.input_size, self.search.crop_margin)
    inputs = transforms.warp_image(image, affine, self.input_size)[None]
    maps, self._state = self.step_fn(inputs, self._state)
    joints = skeleton.split_maps(maps, num_joints=self.num_joints)[1]
    points, scores = self._decode(joints)
    kp = geometry.apply_affine_to_points(
      geometry.invert_affine(affine), np.asarray(points, np.float64)[0]
    )
    sc = np.asarray(scores, np.float64)[0]
    visible = sc >= self.search.score_threshold
    box, count = geometry.joint_extent(kp, visible)
    self._box = box if count else None  # no visible joint: the next frame searches again
    return Prediction(
      kp, sc, visible, self._box, person_found=bool(count), passes=passes,
      keypoint_set=self.keypoint_set,
    )  # fmt: skip


__all__ = ["VideoPredictor"]
