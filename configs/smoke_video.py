"""A tiny UniPose-LSTM on Penn Action clips, for tests on a CPU (issue 28).

The trunk is configs/smoke.py's tiny network; the LSTM head is narrow (16) with 5x5
convolutions; 64 x 64 inputs (8 x 8 heatmaps), clips of 3 frames. Its numbers are never
results; it proves the video path runs.
"""

from configs import smoke


def get_config():
  c = smoke.get_config()
  c.data.train_sources = ("penn_action",)
  c.data.train_splits = ("train",)
  c.data.mixture_weights = (1.0,)
  c.data.eval_source = "penn_action"
  c.data.eval_split = "test"
  c.data.input_size = 64
  c.data.clip_length = 3
  c.model.arch = "unipose_lstm"
  c.model.wasp_rates = (3, 2, 1)  # an 8 x 8 final map at output stride 8
  c.model.lstm_head_features = 16
  c.model.lstm_head_kernel = 5
  c.batch_size = 4
  c.num_train_steps = 40
  c.log_every = 10
  c.checkpoint_every = 20
  c.eval_batch_size = 4
  return c
