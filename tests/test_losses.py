"""heatmap_mse and background_target against hand and NumPy computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unipose_jax import losses


def _hand_case():
  # B=1, h=1, w=2, K=2. Joint 1 has weight 0 (and a high peak that must be ignored).
  target = np.array([[[[0.5, 0.9], [0.2, 0.0]]]], np.float32)  # (1, 1, 2, 2)
  weights = np.array([[1.0, 0.0]], np.float32)
  # channels: background, joint 0, joint 1
  pred = np.array([[[[0.4, 0.5, 0.0], [1.0, 0.0, 7.0]]]], np.float32)  # (1, 1, 2, 3)
  return pred, target, weights


def test_background_target_hand_computed():
  _, target, weights = _hand_case()
  # Only joint 0 counts: 1 - 0.5 and 1 - 0.2.
  np.testing.assert_allclose(losses.background_target(target, weights), [[[0.5, 0.8]]], rtol=1e-6)
  # With both joints: 1 - max(0.5, 0.9), 1 - max(0.2, 0).
  np.testing.assert_allclose(losses.background_target(target, None), [[[0.1, 0.8]]], rtol=1e-6)
  # No weighted joint: background everywhere.
  np.testing.assert_array_equal(
    losses.background_target(target, np.zeros((1, 2))), np.ones((1, 1, 2))
  )


def test_heatmap_mse_hand_computed():
  pred, target, weights = _hand_case()
  # background: (0.4-0.5)^2 + (1.0-0.8)^2 = 0.05, times background_weight 2 -> 0.10
  # joint 0:    (0.5-0.5)^2 + (0.0-0.2)^2 = 0.04, times weight 1
  # joint 1:    weight 0 -> 0 (its pred 7.0 does not matter)
  # mean over B*h*w*(K+1) = 1*1*2*3 = 6 entries: 0.14 / 6
  loss = losses.heatmap_mse(pred, target, weights, background_weight=2.0)
  assert loss.shape == () and loss.dtype == jnp.float32
  assert float(loss) == pytest.approx(0.14 / 6, rel=1e-6)


def _numpy_reference(pred, target, weights, background_weight):
  b, h, w, k = target.shape
  bg = np.ones((b, h, w))
  for i in range(b):
    for j in range(k):
      if weights[i, j] > 0:
        bg[i] = np.minimum(bg[i], 1.0 - target[i, ..., j])
  total = 0.0
  for i in range(b):
    total += background_weight * np.sum((pred[i, ..., 0] - bg[i]) ** 2)
    for j in range(k):
      total += weights[i, j] * np.sum((pred[i, ..., j + 1] - target[i, ..., j]) ** 2)
  return total / (b * h * w * (k + 1))


def test_heatmap_mse_matches_numpy():
  rng = np.random.default_rng(0)
  b, h, w, k = 3, 5, 4, 14
  target = rng.random((b, h, w, k)).astype(np.float32)
  pred = rng.normal(0.3, 0.5, (b, h, w, k + 1)).astype(np.float32)
  weights = rng.choice([0.0, 0.5, 1.0], size=(b, k)).astype(np.float32)
  expected = _numpy_reference(pred.astype(np.float64), target.astype(np.float64), weights, 0.25)
  loss = losses.heatmap_mse(pred, target, weights, background_weight=0.25)
  assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_unit_weights_equal_plain_mse_of_concatenated_target():
  rng = np.random.default_rng(1)
  target = rng.random((2, 6, 6, 3)).astype(np.float32)
  pred = rng.random((2, 6, 6, 4)).astype(np.float32)
  full = np.concatenate([1.0 - target.max(-1, keepdims=True), target], axis=-1)
  expected = np.mean((pred - full) ** 2)
  assert float(losses.heatmap_mse(pred, target, np.ones((2, 3)))) == pytest.approx(
    expected, rel=1e-5
  )
  assert float(losses.heatmap_mse(pred, target)) == pytest.approx(expected, rel=1e-5)


def test_zero_weight_joint_contributes_nothing_even_nan():
  pred, target, weights = _hand_case()
  base = losses.heatmap_mse(pred, target, weights)
  target2, pred2 = target.copy(), pred.copy()
  target2[..., 1] = np.nan
  pred2[..., 2] = -50.0
  assert float(losses.heatmap_mse(pred2, target2, weights)) == pytest.approx(float(base), rel=1e-7)
  grad = jax.grad(losses.heatmap_mse)(jnp.asarray(pred2), target2, weights)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(grad[..., 2], 0.0)


def test_bfloat16_prediction_gives_float32_loss():
  rng = np.random.default_rng(2)
  target = rng.random((2, 4, 4, 14)).astype(np.float32)
  pred = jnp.asarray(rng.random((2, 4, 4, 15)), jnp.bfloat16)
  loss = losses.heatmap_mse(pred, target, np.ones((2, 14)))
  assert loss.dtype == jnp.float32
  reference = losses.heatmap_mse(pred.astype(jnp.float32), target, np.ones((2, 14)))
  assert float(loss) == float(reference)


def test_jit_and_grad():
  rng = np.random.default_rng(3)
  target = rng.random((2, 4, 4, 2)).astype(np.float32)
  weights = np.array([[1.0, 1.0], [1.0, 0.0]], np.float32)
  pred = jnp.asarray(rng.random((2, 4, 4, 3)), jnp.float32)
  loss_fn = jax.jit(losses.heatmap_mse)
  assert float(loss_fn(pred, target, weights)) == pytest.approx(
    float(losses.heatmap_mse(pred, target, weights))
  )
  # d loss / d pred = 2 * w * (pred - target) / N
  grad = jax.grad(losses.heatmap_mse)(pred, target, weights)
  n = 2 * 4 * 4 * 3
  np.testing.assert_allclose(
    grad[..., 1:],
    2 * weights[:, None, None, :] * (pred[..., 1:] - target) / n,
    rtol=1e-5,
    atol=1e-7,
  )


def test_bad_shapes_raise():
  target = np.zeros((2, 4, 4, 14), np.float32)
  with pytest.raises(ValueError, match="K \\+ 1"):
    losses.heatmap_mse(np.zeros((2, 4, 4, 14)), target, np.ones((2, 14)))
  with pytest.raises(ValueError, match="K \\+ 1"):
    losses.heatmap_mse(np.zeros((2, 4, 5, 15)), target, np.ones((2, 14)))
  with pytest.raises(ValueError, match="target_weights"):
    losses.heatmap_mse(np.zeros((2, 4, 4, 15)), target, np.ones((2, 13)))
  with pytest.raises(ValueError, match="target_joints"):
    losses.background_target(np.zeros((4, 4, 14)), None)
