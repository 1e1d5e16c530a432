"""model.bn_sync on 8 CPU devices: whose BatchNorm statistics a device trains with, in both
parallel forms, and which running statistics evaluation and checkpoints then use.

The reference is NumPy: the first BatchNorm's input (the stem convolution's output, captured
from the model) is cut into the groups each mode defines, and the running statistics after
one step must be 0.9 * initial + 0.1 * (mean over groups of each group's mean / biased
variance), whatever the form.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import tiny_network

from configs import smoke
from unipose_jax import checkpoints, distributed, inference, parallel, run_config, train
from unipose_jax import run as run_lib
from unipose_jax.models import normalize
from unipose_jax.models.layers import BatchNormSync

BATCH = 16  # 2 examples per device


def _config(parallelism: str, bn_sync: str):
  c = tiny_network(smoke.get_config())
  c.batch_size = BATCH
  c.parallelism = parallelism
  c.model.bn_sync = bn_sync
  c.optimizer.name, c.optimizer.schedule, c.optimizer.learning_rate = "sgd", "constant", 0.01
  return c


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  # Each device's two examples get their own brightness, so per-device statistics differ.
  shift = np.repeat(np.arange(8) * 12.0, BATCH // 8)[:, None, None, None]
  image = rng.normal(90, 30, size=(BATCH, 32, 32, 3)) + shift
  return {
    "image": np.clip(image, 0, 255).astype(np.uint8),
    "keypoints": rng.uniform(2, 29, size=(BATCH, 14, 2)).astype(np.float32),
    "weights": np.ones((BATCH, 14), np.float32),
  }


def _expected_stem_stats(model, init, images, groups: int):
  """Running (mean, var) of ``backbone/bn1`` after one step, by NumPy."""
  _, inter = model.apply(
    init.variables, normalize(images), train=False, capture_intermediates=True,
    mutable=["intermediates"],
  )  # fmt: skip
  x = np.asarray(inter["intermediates"]["backbone"]["conv1"]["__call__"][0], np.float64)
  g = x.reshape((groups, -1) + x.shape[1:])
  mean = g.mean(axis=(1, 2, 3))
  var = g.var(axis=(1, 2, 3))
  return 0.1 * mean.mean(0), 0.9 + 0.1 * var.mean(0)


def _one_step(parallelism: str, bn_sync: str, batch):
  cfg = _config(parallelism, bn_sync)
  mesh = distributed.data_mesh()
  model, _, tx, _, trainer = train.build_trainer(cfg, mesh)
  init = jax.device_get(train.create_train_state(model, tx, cfg.seed, cfg.data.input_size))
  state = trainer.place(distributed.replicate(init, mesh))
  state, metrics = trainer.step(state, batch)
  return model, init, trainer, state, float(metrics.compute()["loss"])


def test_bn_sync_maps_to_the_model_setting_of_each_form():
  assert parallel.batch_norm_sync("global", "jit", 8) == BatchNormSync()
  assert parallel.batch_norm_sync("local", "jit", 8) == BatchNormSync(batch_groups=8)
  assert parallel.batch_norm_sync("group:2", "jit", 8) == BatchNormSync(batch_groups=4)
  assert parallel.batch_norm_sync("global", "pmap", 8).all_devices
  assert parallel.batch_norm_sync("local", "pmap", 8) == BatchNormSync()
  grouped = parallel.batch_norm_sync("group:4", "pmap", 8)
  assert grouped.axis_index_groups == ((0, 1, 2, 3), (4, 5, 6, 7)) and not grouped.all_devices
  with pytest.raises(ValueError, match="groups of 3 do not divide the 8 devices"):
    parallel.batch_norm_sync("group:3", "jit", 8)
  for bad in ("sync", "group:", "group:0", "groups:2"):
    with pytest.raises(ValueError, match='expected "global", "local" or "group:N"'):
      parallel.bn_group_size(bad)
  cfg = _config("jit", "everywhere")
  with pytest.raises(run_config.ConfigError, match="model.bn_sync='everywhere'"):
    run_config.validate(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("bn_sync,groups", [("global", 1), ("local", 8), ("group:2", 4)])
def test_each_device_trains_with_the_statistics_of_its_group(bn_sync, groups, tmp_path):
  assert jax.device_count() == 8
  batch = _batch()
  losses, saved = {}, {}
  for parallelism in ("jit", "pmap"):
    model, init, trainer, state, losses[parallelism] = _one_step(parallelism, bn_sync, batch)
    want_mean, want_var = _expected_stem_stats(model, init, batch["image"], groups)
    stats = jax.device_get(state.batch_stats)["backbone"]["bn1"]
    if parallelism == "pmap":  # stacked (8, C): every device holds the same running statistics
      for leaf in jax.tree.leaves(jax.device_get(state.batch_stats)):
        np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
      stats = jax.tree.map(lambda x: x[0], stats)
    np.testing.assert_allclose(stats["mean"], want_mean, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], want_var, rtol=2e-5, atol=1e-6)
    # What a checkpoint saves is the canonical state: these running statistics.
    with checkpoints.Checkpointer(str(tmp_path / parallelism)) as ckpt:
      ckpt.save(1, trainer.canonical(state))
      ckpt.wait()
      saved[parallelism] = ckpt.restore(step=1).state["batch_stats"]["backbone"]["bn1"]
    np.testing.assert_allclose(np.asarray(saved[parallelism]["var"]), want_var, rtol=2e-5)
  # The forward pass normalised with the same statistics in both forms: the same loss.
  assert losses["jit"] == pytest.approx(losses["pmap"], rel=1e-5)
  if groups > 1:  # and with other statistics than the global batch's
    global_var = _expected_stem_stats(model, init, batch["image"], 1)[1]
    assert np.max(np.abs(want_var - global_var)) > 1e-3


@pytest.mark.slow
def test_local_statistics_change_the_loss_and_evaluation_uses_running_averages():
  batch = _batch(1)
  _, _, _, _, loss_global = _one_step("jit", "global", batch)
  model, _, trainer, state, loss_local = _one_step("jit", "local", batch)
  assert abs(loss_local - loss_global) > 1e-4 * abs(loss_global)
  # Evaluation with the training model (GroupBatchNorm inside) equals the plain model's.
  variables = jax.device_get(trainer.canonical(state).variables)
  plain = run_lib.Run(_config("jit", "local")).model()
  images = batch["image"][:4]
  got = inference.predict_heatmaps(variables, images, model=model, flip_test=False)
  want = inference.predict_heatmaps(variables, images, model=plain, flip_test=False)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
