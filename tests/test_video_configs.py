"""The UniPose-LSTM configs (configs/unipose_lstm_penn.py, configs/smoke_video.py) and
``run.build_video_model``: the keys build the network they describe (shapes only, no
compilation), and the paper's model has the original's number of parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke_video, unipose_lstm_penn
from unipose_jax import run, run_config

K = 13  # Penn Action


def _count(tree) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def test_smoke_video_builds_the_tiny_lstm():
  c = smoke_video.get_config()
  run_config.validate(c)
  model = run.build_video_model(c, K)
  clips = jnp.zeros((1, c.data.clip_length, c.data.input_size, c.data.input_size, 3))
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), clips, train=False))
  out = jax.eval_shape(lambda v: model.apply(v, clips, train=False), v)
  assert out.shape == (1, 3, 8, 8, K + 1)
  p = v["params"]
  assert p["trunk"]["backbone"]["conv1"]["kernel"].shape == (7, 7, 3, 16)  # smoke's trunk
  assert "pool_bn" not in p["trunk"]["wasp"]  # the video WASP
  assert p["recurrent"]["head"]["conv1"]["kernel"].shape == (5, 5, K + 2, 16)
  c.model.lstm_head_kernel = 4
  c.model.box_head = True
  c.data.clip_length = 0
  with pytest.raises(run_config.ConfigError) as e:
    run_config.validate(c)
  for words in ("model.lstm_head_kernel=4: must be odd", "has no box head", "data.clip_length=0"):
    assert words in str(e.value)


@pytest.mark.slow
def test_the_papers_model_has_the_originals_parameters():
  torch = pytest.importorskip("torch", reason="the count is checked against the PyTorch twin")
  import torch_twin_lstm

  c = unipose_lstm_penn.get_config()
  run_config.validate(c)
  assert (c.data.input_size, c.data.clip_length, c.batch_size) == (368, 5, 1)
  model = run.build_video_model(c, K)
  clips = jnp.zeros((1, 1, 368, 368, 3))
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), clips, train=False))
  assert jax.eval_shape(lambda v: model.apply(v, clips), v).shape == (1, 1, 46, 46, K + 1)
  twin = torch_twin_lstm.UniPoseLSTMTwin(K)
  unused = ("decoder.conv2.", "decoder.bn2.")
  ref = sum(p.numel() for n, p in twin.named_parameters() if not n.startswith(unused))
  assert _count(v["params"]) == ref
  del torch
