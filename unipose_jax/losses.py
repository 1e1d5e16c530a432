"""Heatmap losses (pure jnp, float32 whatever the prediction dtype).

Layout: heatmaps are ``(B, h, w, C)`` channels-last. The network predicts
``K + 1`` channels: channel 0 is the background, channels ``1..K`` the joints
in :mod:`unipose_jax.skeleton` order. The codec produces the ``K`` joint
targets and per-joint weights; the background target is derived here.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

Array = Any


def _check_targets(
  target_joints: Array, target_weights: Array | None
) -> tuple[jnp.ndarray, jnp.ndarray]:
  target_joints = jnp.asarray(target_joints, jnp.float32)
  if target_joints.ndim != 4:
    raise ValueError(f"target_joints must have shape (B, h, w, K), got {target_joints.shape}")
  batch, _, _, num_joints = target_joints.shape
  if target_weights is None:
    target_weights = jnp.ones((batch, num_joints), jnp.float32)
  target_weights = jnp.asarray(target_weights, jnp.float32)
  if target_weights.shape != (batch, num_joints):
    raise ValueError(
      f"target_weights must have shape (B, K) = {(batch, num_joints)}, got {target_weights.shape}"
    )
  return target_joints, target_weights


def background_target(target_joints: Array, target_weights: Array | None = None) -> jnp.ndarray:
  """Background target ``(B, h, w)`` float32: ``1 - max_k target[..., k]``.

  Only joints with ``weight > 0`` take part in the maximum (a zero-weight
  joint, e.g. unlabeled, is treated as absent; the weight's magnitude does not
  scale the target). With no weighted joint the background is 1 everywhere.

  Args:
    target_joints: ``(B, h, w, K)`` joint target heatmaps (values in [0, 1]).
    target_weights: ``(B, K)`` per-joint weights, or None for all ones.
  """
  target_joints, target_weights = _check_targets(target_joints, target_weights)
  present = (target_weights > 0)[:, None, None, :]
  peak = jnp.max(jnp.where(present, target_joints, 0.0), axis=-1, initial=0.0)
  return 1.0 - peak


def heatmap_mse(
  pred: Array,
  target_joints: Array,
  target_weights: Array | None = None,
  background_weight: float = 1.0,
) -> jnp.ndarray:
  """Weighted mean squared error over all ``K + 1`` heatmaps, a float32 scalar.

  With ``bg = background_target(target_joints, target_weights)``::

      loss = ( sum_{b,y,x,k} w[b,k] * (pred[b,y,x,k+1] - target[b,y,x,k])**2
             + background_weight * sum_{b,y,x} (pred[b,y,x,0] - bg[b,y,x])**2 )
             / (B * h * w * (K + 1))

  i.e. the mean over every pixel of every channel, each squared error
  multiplied by its channel weight. The denominator is fixed: a zero-weight
  joint contributes 0 to the sum but still counts in ``B*h*w*(K+1)``, so the
  loss scale does not depend on how many joints are labeled. With all
  weights 1 this is exactly ``mean((pred - concat([bg, target]))**2)``, the
  original UniPose MSE.

  Args:
    pred: ``(B, h, w, K + 1)`` predicted heatmaps, channel 0 background; any
      float dtype (cast to float32 before the computation).
    target_joints: ``(B, h, w, K)`` joint targets.
    target_weights: ``(B, K)`` per-joint weights (>= 0), or None for all ones.
      The target of a joint with weight <= 0 is ignored entirely (it may
      hold anything, NaN included).
    background_weight: weight of the background channel's squared errors.
  """
  target_joints, target_weights = _check_targets(target_joints, target_weights)
  pred = jnp.asarray(pred)
  batch, height, width, num_joints = target_joints.shape
  if pred.shape != (batch, height, width, num_joints + 1):
    raise ValueError(
      f"pred must have shape (B, h, w, K + 1) = {(batch, height, width, num_joints + 1)} "
      f"(channel 0 background), got {pred.shape}"
    )
  pred = pred.astype(jnp.float32)
  bg = background_target(target_joints, target_weights)
  weights = target_weights[:, None, None, :]
  # Zero-weight targets are replaced by 0 first so that garbage (even NaN) in
  # them can reach neither the loss nor its gradient.
  safe_targets = jnp.where(weights > 0, target_joints, 0.0)
  joint_sq = jnp.where(weights > 0, jnp.square(pred[..., 1:] - safe_targets) * weights, 0.0)
  bg_sq = jnp.square(pred[..., 0] - bg) * jnp.float32(background_weight)
  total = jnp.sum(joint_sq) + jnp.sum(bg_sq)
  return total / jnp.float32(batch * height * width * (num_joints + 1))


def weighted_mse(pred: Array, target: Array, weights: Array) -> jnp.ndarray:
  """Mean over ``B*h*w*C`` of ``w[b, c] * (pred - target)**2``, a float32 scalar.

  pred, target: ``(B, h, w, C)`` (e.g. the 5 person-box maps); weights: ``(B, C)`` >= 0.
  As in :func:`heatmap_mse`, a zero-weight channel's target is ignored (even NaN) and the
  denominator is fixed.
  """
  pred = jnp.asarray(pred).astype(jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  w = jnp.asarray(weights, jnp.float32)[:, None, None, :]
  if pred.shape != target.shape or w.shape != (pred.shape[0], 1, 1, pred.shape[-1]):
    raise ValueError(
      f"pred {pred.shape}, target {target.shape} and weights {jnp.shape(weights)} "
      "must be (B, h, w, C), (B, h, w, C) and (B, C)"
    )
  sq = jnp.where(w > 0, jnp.square(pred - jnp.where(w > 0, target, 0.0)) * w, 0.0)
  return jnp.sum(sq) / pred.size
