"""UniPose + DARK on one H100/H200-class GPU: ResNet-101 at 368, LSP + LSP-extended, bfloat16.

Differences from the paper's setting (configs/unipose_lsp.py, configs/default.py):

* data: LSP train (1000 images) and LSP-extended train (10000) mixed 1 : 10, i.e. in
  proportion to their sizes, so one "epoch" is 11000 images and each source is passed
  through at the same rate; evaluation on LSP test (1000) as before.
* DARK: unbiased encoding, dark (Taylor) decoding selects the checkpoint; flip test.
* bfloat16 compute (parameters and optimiser state stay float32).
* global batch 64 instead of 8, learning rate scaled by the square root of the batch
  ratio (the Adam rule of thumb): 1e-4 * sqrt(64 / 8) = 2.83e-4, with a cosine schedule
  after 500 linear warm-up steps (to 1% of the peak at the end).

Length, from a throughput estimate (re-measure with benchmarks/train_bench.py on the GPU
and rescale ``num_train_steps`` if it is far off):

  paper: 125000 steps x 8 = 1.0 M images seen (1000 epochs of LSP train);
  here:  100 epochs x 11000 images = 1.1 M images / 64 per step = 17188 -> 17200 steps;
  at ~700 images/s (ResNet-101, 368 px, bfloat16, one H100): 17200 x 64 / 700 = 1573 s
  = 26 min of steps, plus 9 evaluations (every 2000 steps and at the end; 1000 test images
  x 2 for the flip test, ~5 s each) and start-up/compilation (~2 min): ~30 min.

The input pipeline must deliver >= 1.2 x 700 = 840 images/s: 12 grain worker processes
(benchmarks/input_bench.py measures the per-worker rate; re-run it on the GPU host).
"""

from configs import default

REFERENCE_BATCH = 8  # the paper's batch (configs/default.py)
REFERENCE_LR = 1e-4
BATCH = 64
EPOCHS = 100
TRAIN_IMAGES = 1000 + 10000  # LSP train + LSP-extended train


def get_config():
  c = default.get_config()
  c.data.train_sources = ("lsp", "lsp_extended")
  c.data.train_splits = ("train", "train")
  c.data.mixture_weights = (1.0, 10.0)  # proportional to the sizes
  c.data.eval_source = "lsp"
  c.data.eval_split = "test"
  c.data.input_size = 368
  c.data.worker_count = 12
  c.data.eval_worker_count = 4

  c.model.backbone_depth = 101
  c.model.dtype = "bfloat16"

  c.codec.encoding = "unbiased"
  c.codec.decoding = "dark"

  c.optimizer.name = "adam"
  c.optimizer.learning_rate = REFERENCE_LR * (BATCH / REFERENCE_BATCH) ** 0.5  # 2.83e-4
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 500

  c.batch_size = BATCH
  # ceil(100 * 11000 / 64) = 17188, rounded up to the hundred.
  c.num_train_steps = 17200
  c.log_every = 50
  c.stop_check_every = 50
  # ~90 s of steps at 700 images/s (a pre-emption loses at most that plus stop_check_every);
  # each save writes ~0.7 GB (ResNet-101 parameters + Adam moments, float32) in the background.
  c.checkpoint_every = 1000
  c.eval_every = 2000
  c.keep_checkpoints = 3
  c.eval_batch_size = 64
  c.flip_test = True
  return c
