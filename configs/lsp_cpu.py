"""Real LSP on a 2-core CPU in under an hour: ResNet-18 at 128x128 (16x16 heatmaps).

DARK's unbiased encoding and dark decoding; the encoding is switched with
``--config.codec.encoding=quantized`` for the with/without comparison.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.input_size = 128
  c.data.worker_count = 0  # grain threads: workers do not pay on 2 cores
  c.model.backbone_depth = 18
  c.model.backbone_width = 32
  c.model.output_stride = 16
  c.model.wasp_rates = (6, 4, 2)  # an 8x8 final map
  c.model.wasp_features = 64
  c.model.low_level_features = 24
  c.model.decoder_features = 64
  c.model.wasp_dropout = 0.1
  c.model.decoder_dropout = (0.1, 0.0)
  c.codec.sigma = 1.5
  c.codec.encoding = "unbiased"
  c.codec.decoding = "dark"
  c.codec.dark_kernel = 5
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 200
  c.batch_size = 16
  c.num_train_steps = 3000  # 48 epochs of LSP train
  c.log_every = 50
  c.checkpoint_every = 500
  c.eval_every = 500
  c.eval_batch_size = 64
  return c
