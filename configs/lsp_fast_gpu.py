"""UniPose + DARK that converges inside one GPU lease: ResNet-18 at 256 px, LSP + LSP-extended.

Chosen with ``launch.py --mode=compile --target=h100x1`` (results/aot/lsp_fast_gpu/,
README "A model trained in one GPU lease") so that at least 100 epochs of the 11000-image
mix fit into 4 minutes of one H100 at the roofline estimate x 2.6 (the ratio measured for
ResNet-101 on the H200, results/gpu_h200_2026-12-04/), and its parameters in bfloat16 stay
under 48 MB (they travel back from the device machine as a release folder).

* network: ResNet-18 (basic blocks, torchvision widths 64..512), output stride 16 (a 16x16
  final map at 256 px) with WASP rates (12, 8, 4) (the paper's (18, 12, 6) scaled by
  256 / 368), WASP and decoder at 256 features as in the paper; heatmaps 32x32 at stride 8,
  sigma 2 heatmap pixels (3 at 46x46 in the paper, scaled and rounded).
* data: LSP train (1000) and LSP-extended train (10000) mixed 1 : 10 (11000 images an
  epoch), evaluation on LSP test (1000) with the flip test.
* DARK: unbiased encoding and dark decoding; the quantized twin of the ablation is
  ``--config.codec.encoding=quantized`` (same seed, data order and schedule).
* bfloat16 compute, batch 256 on one GPU, Adam at 1e-4 x sqrt(256 / 8) = 5.66e-4 (the
  paper's rate at batch 8, square-root scaling), cosine after 300 warm-up steps.

Length: 100 epochs x 11000 / 256 = 4297 -> 4300 steps (1.10 M images). Evaluation every
1000 steps and at the end (5 evaluations: the validation curve), checkpoints as often.
"""

from configs import default

REFERENCE_BATCH = 8  # the paper's batch (configs/default.py)
REFERENCE_LR = 1e-4
BATCH = 256
EPOCHS = 100
TRAIN_IMAGES = 1000 + 10000  # LSP train + LSP-extended train


def get_config():
  c = default.get_config()
  c.data.train_sources = ("lsp", "lsp_extended")
  c.data.train_splits = ("train", "train")
  c.data.mixture_weights = (1.0, 10.0)  # proportional to the sizes
  c.data.eval_source = "lsp"
  c.data.eval_split = "test"
  c.data.input_size = 256
  c.data.worker_count = 14  # of the device host's 16 cores (README: the input pipeline)
  c.data.eval_worker_count = 4

  c.model.backbone_depth = 18
  c.model.backbone_width = 64
  c.model.output_stride = 16
  c.model.wasp_rates = (12, 8, 4)
  c.model.wasp_features = 256
  c.model.low_level_features = 48
  c.model.decoder_features = 256
  c.model.dtype = "bfloat16"

  c.codec.sigma = 2.0
  c.codec.encoding = "unbiased"
  c.codec.decoding = "dark"
  c.codec.dark_kernel = 0  # 2 * ceil(3 * sigma) + 1 = 13

  c.optimizer.name = "adam"
  c.optimizer.learning_rate = REFERENCE_LR * (BATCH / REFERENCE_BATCH) ** 0.5  # 5.66e-4
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 300

  c.batch_size = BATCH
  # ceil(100 * 11000 / 256) = 4297, rounded up to the hundred.
  c.num_train_steps = 4300
  c.log_every = 50
  c.stop_check_every = 50
  c.checkpoint_every = 1000
  c.eval_every = 1000
  c.keep_checkpoints = 2
  c.eval_batch_size = 250  # LSP test (1000) in 4 batches
  c.flip_test = True
  return c
