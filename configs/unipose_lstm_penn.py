"""UniPose-LSTM on Penn Action, the paper's setting (issue 28).

The original (bmartacho/UniPose ``uniposeLSTM.py``): ResNet-101 trunk at output stride 16
with the video WASP, a 368 x 368 input, clips of T = 5 consecutive frames, batch 1 (one
clip), Adam at 1e-4 decayed x0.333 every 13,275 steps, the sum of the per-frame heatmap
MSE. Penn Action has 1,258 training videos: one clip per video per epoch, so 100 epochs
are 125,800 steps at batch 1. The trunk may start from a per-frame run
(``--config.model.init_from=WORKDIR``) or the original's checkpoint
(``--config.model.init_from=FILE.pth``; the released one needs
``--config.model.input_centre_map=True``). Training: ``unipose_jax/train_video.py``;
evaluation (every test video whole, the state carried; the single-frame path beside it):
``unipose_jax/evaluate_video.py``. Batch 1 is one device's: on 8 GPUs give
``--config.batch_size=8`` (``--mode=compile ... --per_device_batch=1``).
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.train_sources = ("penn_action",)
  c.data.train_splits = ("train",)
  c.data.mixture_weights = (1.0,)
  c.data.eval_source = "penn_action"
  c.data.eval_split = "test"
  c.data.input_size = 368
  c.data.clip_length = 5
  c.model.arch = "unipose_lstm"
  c.model.backbone_depth = 101
  c.model.output_stride = 16
  c.model.video_wasp = True
  c.model.input_centre_map = False
  c.model.feed_previous_heatmaps = False
  c.model.lstm_head_features = 128
  c.model.lstm_head_kernel = 11
  c.batch_size = 1
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-4
  c.optimizer.schedule = "step"
  c.optimizer.decay_every = 13275
  c.optimizer.decay_factor = 0.333
  c.num_train_steps = 125_800
  return c
