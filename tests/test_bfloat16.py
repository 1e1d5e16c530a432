"""bfloat16 compute (``config.model.dtype="bfloat16"``) against float32, on the CPU.

A small UniPose (configs/smoke.py narrowed as tests/test_train.py's ``small_config``, 64x64
input, 8x8 heatmaps, no dropout) from one initialisation, on the same batches. The step
is written here from the parts train.train_step is made of (models.normalize, the codec's
targets, losses.heatmap_mse, optax), and prediction as inference.predict_heatmaps does it
(normalise, apply, drop the background map): this file imports neither train nor evaluate,
so it does not depend on the rest of the training stack. Parameters stay float32 in both;
bfloat16 is the compute dtype only.

Measured on a 2-core x86 CPU (jax 0.7, XLA:CPU):
* training loss: relative gap |l_bf16 / l_f32 - 1| of 0.0013, 0.0021, 0.0017 over steps 1-3;
* keypoints after 300 float32 steps, DARK decoding of the same weights in both dtypes: 98.2%
  and 100% of the joints within 1 px of the float32 decode, median gap 0.15-0.2 px (0.19, 0.17 under the suite) (argmax
  decoding differs more: near-tied maxima of a barely trained net flip cells).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_network

from configs import smoke
from unipose_jax import inference, losses
from unipose_jax.models import normalize
from unipose_jax.run import Run

SIZE = 64
BATCH = 8
#: ~5x the largest measured relative loss gap (0.0021).
LOSS_RTOL = 0.01
#: The measured 98-100% within 1 px, less a margin for other CPUs' reduction orders.
WITHIN_1PX = 0.9
#: Measured medians 0.15-0.2 px.
MEDIAN_PX = 0.5


def small_config(dtype: str):
  c = tiny_network(smoke.get_config(), SIZE)
  c.model.dtype = dtype
  return c


def dot_batch(seed: int) -> dict[str, np.ndarray]:
  """uint8 images (B, S, S, 3) of 14 coloured dots (radius 2 px) on grey, at the keypoints
  (B, 14, 2) (x, y input pixels, pixel centres at integers): something a net can learn."""
  rng = np.random.default_rng(seed)
  kp = rng.uniform(6, SIZE - 7, (BATCH, 14, 2)).astype(np.float32)
  img = np.full((BATCH, SIZE, SIZE, 3), 40, np.uint8)
  yy, xx = np.mgrid[:SIZE, :SIZE]
  for b in range(BATCH):
    for k in range(14):
      colour = np.array([(37 * k) % 256, (91 * k + 50) % 256, (53 * k + 120) % 256], np.uint8)
      img[b][(xx - kp[b, k, 0]) ** 2 + (yy - kp[b, k, 1]) ** 2 <= 4] = colour
  return {"image": img, "keypoints": kp, "weights": np.ones((BATCH, 14), np.float32)}


def make_step(model, codec, tx):
  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    targets, target_weights = codec.encode(batch["keypoints"], batch["weights"])

    def loss_fn(p):
      heatmaps, mutated = model.apply(
        {"params": p, "batch_stats": batch_stats},
        normalize(batch["image"], model.dtype),
        train=True,
        mutable=["batch_stats"],
      )
      return losses.heatmap_mse(heatmaps, targets, target_weights, 1.0), mutated["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  return step


def make_predict(model):
  return jax.jit(functools.partial(inference.predict_heatmaps, model=model, flip_test=False))


@pytest.fixture(scope="module")
def setup():
  m32 = Run(small_config("float32")).model()
  m16 = Run(small_config("bfloat16")).model()
  codec = Run(small_config("float32")).codec
  assert m16.dtype == jnp.bfloat16 and m32.dtype == jnp.float32
  variables = jax.jit(functools.partial(m32.init, train=False))(
    jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3), jnp.float32)
  )
  tx = optax.adam(3e-3)
  return m32, m16, codec, variables, tx


@pytest.mark.slow
def test_bfloat16_training_loss_tracks_float32(setup):
  m32, m16, codec, variables, tx = setup
  batches = [dot_batch(i) for i in range(3)]
  runs = {}
  for name, model in (("f32", m32), ("bf16", m16)):
    step = make_step(model, codec, tx)
    params, stats = variables["params"], variables["batch_stats"]
    opt_state, out = tx.init(params), []
    for b in batches:
      params, stats, opt_state, loss = step(params, stats, opt_state, b)
      out.append(float(loss))
    # parameters and optimiser state stay float32 under bfloat16 compute
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    runs[name] = np.asarray(out)
  assert np.all(np.isfinite(runs["bf16"]))
  assert runs["f32"][2] < runs["f32"][0]  # the steps do train
  np.testing.assert_allclose(runs["bf16"], runs["f32"], rtol=LOSS_RTOL)
  # and bfloat16 is really used: its losses are not bit-identical to float32's
  assert not np.array_equal(runs["bf16"], runs["f32"])


@pytest.mark.slow
def test_bfloat16_evaluation_decodes_the_float32_keypoints(setup):
  m32, m16, codec, variables, tx = setup
  train_batches = [dot_batch(i) for i in range(4)]
  step = make_step(m32, codec, tx)
  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  for i in range(300):
    params, stats, opt_state, _ = step(params, stats, opt_state, train_batches[i % 4])
  trained = {"params": params, "batch_stats": stats}
  gaps = []
  for b in train_batches[:2]:
    k32, _ = codec.decode(make_predict(m32)(trained, b["image"]), "dark")
    k16, _ = codec.decode(make_predict(m16)(trained, b["image"]), "dark")
    gaps.append(np.linalg.norm(np.asarray(k16) - np.asarray(k32), axis=-1).ravel())
  gaps = np.concatenate(gaps)  # 2 batches x 8 images x 14 joints, input pixels
  assert gaps.size == 2 * BATCH * 14
  assert np.mean(gaps <= 1.0) >= WITHIN_1PX, np.sort(gaps)[-10:]
  assert np.median(gaps) <= MEDIAN_PX, np.median(gaps)
