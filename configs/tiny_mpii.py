"""A tiny CPU network on ``mpii`` (its real format; the tests prepare tiny files of it):
10 steps at a 64 px input with 8-16 channel widths, evaluated by MPII's PCKh on the
person's crop, in seconds on one core. ``tiny_coco`` and ``tiny_penn_action`` are this
network on their datasets. Its numbers are never results."""

from configs import smoke


def get_config():
  c = smoke.get_config()
  c.data.train_sources = ("mpii",)
  c.data.train_splits = ("train",)
  c.data.mixture_weights = (1.0,)
  c.data.eval_source = "mpii"
  c.data.eval_split = "validation"
  # data.crop and data.eval_crop stay "": the dataset's defaults (datasets.DATASETS).
  c.data.input_size = 64
  c.model.backbone_width = 8
  c.model.wasp_features = 16
  c.model.low_level_features = 8
  c.model.decoder_features = 16
  c.codec.sigma = 1.5
  c.codec.dark_kernel = 0
  c.batch_size = 4
  c.eval_batch_size = 4
  c.num_train_steps = 10
  c.optimizer.warmup_steps = 2
  c.log_every = 5
  c.checkpoint_every = 10
  c.eval_every = 0
  c.num_example_images = 1
  c.calibrate_presence = False
  return c
