"""Inference: the evaluation-mode forward pass and the way back to original pixels.

Shared by the evaluation step (``evaluate.eval_step``), the :class:`~unipose_jax.predict.
Predictor`, the export check and the benchmarks, so all of them run the same network
pass: uint8 images normalised on the device, ``model.apply(train=False)``, the
background channel dropped (``skeleton.split_maps``, ``K`` = ``model.num_joints``),
optionally the flip test (the keypoint set's flip permutation); then
``codec.decode`` to input pixels and the inverse affine to original pixels.

Coordinates follow design.md section 5: ``(x, y)``, integer coordinates at pixel centres.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unipose_jax import skeleton
from unipose_jax.models import normalize


def _points_maps(model, variables, x: jax.Array) -> jax.Array:
  """The joint (+ box) maps of normalised images, float32, background dropped."""
  maps = model.apply(variables, x, train=False)
  _, joints, box = skeleton.split_maps(maps, num_joints=model.num_joints)
  maps = joints if box is None else jnp.concatenate([joints, box], axis=-1)
  return maps.astype(jnp.float32)


def predict_heatmaps(
  variables, images: jax.Array, *, model, flip_test: bool,
  flip_permutation: Sequence[int] | None = None,
) -> jax.Array:  # fmt: skip
  """Heatmaps (B, h, w, K [+ 5 box maps]) of uint8 images (B, H, W, 3); background dropped.

  With ``flip_test`` the heatmaps of the mirrored images are mirrored back, their
  left/right channels swapped (``flip_permutation``, the keypoint set's ``(K,)``, and
  ``skeleton.BOX_FLIP_PERMUTATION`` for the box maps), and averaged with the plain ones
  (exact for S divisible by the stride, by the pixel-centre convention).
  """
  if flip_test and flip_permutation is None:
    raise ValueError("the flip test needs the keypoint set's flip permutation")
  x = normalize(images, model.dtype)
  heatmaps = _points_maps(model, variables, x)
  if flip_test:
    perm = skeleton.flip_channels(flip_permutation, heatmaps.shape[-1])
    flipped = _points_maps(model, variables, x[:, :, ::-1])
    heatmaps = 0.5 * (heatmaps + flipped[:, :, ::-1][..., perm])
  return heatmaps


def heatmap_fn(
  model, variables, *, flip_test: bool, flip_permutation: Sequence[int] | None = None
) -> Callable[[np.ndarray], jax.Array]:
  """``images uint8 (B, H, W, 3) -> heatmaps (B, h, w, K [+ 5])``: :func:`predict_heatmaps`
  jitted, with ``variables`` put on the default device once (the Predictor's network)."""
  variables = jax.device_put(variables)
  perm = None if flip_permutation is None else tuple(int(i) for i in flip_permutation)

  @jax.jit
  def run(v, images):
    return predict_heatmaps(v, images, model=model, flip_test=flip_test, flip_permutation=perm)

  return lambda images: run(variables, images)


def apply_affine(affine: jax.Array, points: jax.Array) -> jax.Array:
  """Map points (B, N, 2) by per-example 2x3 affines (B, 2, 3) (jnp, inside ``jit``)."""
  return jnp.einsum("bij,bkj->bki", affine[:, :, :2], points) + affine[:, None, :, 2]


def decode_to_original(codec, heatmaps: jax.Array, inverse_affine: jax.Array, decoding: str):
  """Heatmaps (B, h, w, N) -> keypoints (B, N, 2) in original pixels and scores (B, N).

  ``codec.decode`` gives input pixels; ``inverse_affine`` (B, 2, 3) maps input ->
  original (the letterbox's inverse at evaluation).
  """
  points, scores = codec.decode(heatmaps, decoding=decoding)
  return apply_affine(inverse_affine, points), scores
