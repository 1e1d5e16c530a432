"""A tiny network on the synthetic set: builds it, trains, evaluates and calibrates person
presence in under a minute on a 2-core CPU.

Measured on the project's shared 2-core machine (the whole command, the dataset's first
build included, JAX on the CPU alone): 68 s of CPU time (user + system), 1 min 12 s of
wall clock with the machine loaded by other work (load average 4.6). The earlier 300 steps
at 128 px with 200 negatives of each kind took 247 s of CPU there, and 2 min 21 s of wall
clock on an idle machine; in proportion this one takes about 40 s idle.
``tests/test_train.py`` holds it to 90 s of CPU. It reaches 16 % PCK@0.2 (dark decoding)
and a held-out presence AUC of 0.998. Its numbers are never results on real data; it
proves the whole loop runs.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.train_sources = ("synthetic",)
  c.data.train_splits = ("train",)
  c.data.mixture_weights = (1.0,)
  c.data.eval_source = "synthetic"
  c.data.eval_split = "test"
  c.data.input_size = 96
  c.data.worker_count = 0
  c.data.augment.rotation_deg = 20.0
  c.model.backbone_depth = 18
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.backbone_width = 16
  c.model.output_stride = 8
  c.model.wasp_rates = (6, 4, 2)  # a 12x12 final map
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
  c.optimizer.warmup_steps = 10
  c.batch_size = 16
  c.num_train_steps = 90
  c.log_every = 15
  c.checkpoint_every = 30
  c.eval_every = 0
  c.eval_batch_size = 32
  c.num_example_images = 2
  c.predict.presence_negatives = 50  # of each kind (calibration at the end)
  return c
