"""A tiny network on the synthetic set: trains and evaluates in about a minute on a CPU.

Its numbers are never results on real data; it proves the whole loop runs.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.train_sources = ("synthetic",)
  c.data.train_splits = ("train",)
  c.data.mixture_weights = (1.0,)
  c.data.eval_source = "synthetic"
  c.data.eval_split = "test"
  c.data.input_size = 128
  c.data.worker_count = 0
  c.data.augment.rotation_deg = 20.0
  c.model.backbone_depth = 18
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.backbone_width = 16
  c.model.output_stride = 8
  c.model.wasp_rates = (6, 4, 2)  # a 16x16 final map
  c.model.wasp_features = 32
  c.model.low_level_features = 16
  c.model.decoder_features = 32
  c.model.wasp_dropout = 0.0
  c.model.decoder_dropout = (0.0, 0.0)
  c.codec.sigma = 2.0
  c.codec.encoding = "unbiased"
  c.codec.decoding = "dark"
  c.codec.dark_kernel = 5
  c.optimizer.learning_rate = 3e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 20
  c.batch_size = 16
  c.num_train_steps = 300
  c.log_every = 25
  c.checkpoint_every = 100
  c.eval_every = 0
  c.eval_batch_size = 32
  c.num_example_images = 2
  return c
