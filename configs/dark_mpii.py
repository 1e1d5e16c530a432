"""UniPose + DARK on MPII: the paper's per-frame setting (bmartacho/UniPose) with DARK.

Data: ``mpii`` train (22,246 persons) for training, ``mpii`` validation (2,958 persons in
2,729 images, ``mpii_gt_val.mat``'s order) for evaluation; the set is MPII's 16 joints
(``keypoint_sets.MPII``), so evaluation scores MPII's PCKh (``metrics/pckh.py``) and the
best checkpoint is the one with the highest PCKh@0.5 (the set's ``best_metric``, the
table's ``Mean``).

Taken from the original code (``unipose.py`` with ``--dataset=MPII``, ``utils/mpii_data.py``):

* ResNet-101 at output stride 16 with WASP and the decoder (the defaults), float32;
* a 368 x 368 input, heatmaps at stride 8 (46 x 46), Gaussian sigma 3 heatmap pixels;
* batch 8, Adam at 1e-4, multiplied by 0.333 every 13,275 iterations (the original counts
  iterations, not epochs: ``adjust_learning_rate(..., self.iters, ...)``);
* 100 epochs (``unipose.py``: ``epochs = 100``): 100 x 22,246 / 8 = 278,075 steps, rounded
  up to the hundred: 278,100. The step schedule decays 20 times in that span: after 5 decays
  (66,375 steps, 24 epochs) the rate is 1e-4 x 0.333^5 = 4.1e-7, so most of the run refines
  at a negligible rate, as the original's does (shorten it with
  ``--config.num_train_steps``; the schedule stays the same).

Added (DARK, Zhang et al., CVPR 2020): the unbiased (sub-pixel) Gaussian targets, the
dark (Taylor) decoder selecting the checkpoint, and the flip test at evaluation (DARK's
and HRNet's MPII numbers use it; the original UniPose evaluation does not).

Differs from the original code:

* augmentation: the original's MPII loader applies none (its crop and transform calls are
  commented out) and resizes the *whole image* to 368 x 368, aspect not kept; here the
  project's pipeline crops each person (the dataset's default crop, README "Datasets and
  their protocols") and augments it as for LSP (scale 0.7-1.3, rotation +-40 deg with
  probability 0.6, flip 0.5, shift 5 %). Users of the original code report ~70 % PCKh@0.5
  from it without the authors' own person boxes (bmartacho/UniPose issue #28);
* evaluation: MPII's PCKh (0.6 x head-box diagonal, HRNet's definition) on the standard
  validation split, where the original prints its own PCKh of 46 x 46 heatmaps;
* no ImageNet weights by default: pass ``--config.model.pretrained=resnet101.pth``.

Length: 278,100 steps x 8 = 2.22 M images. The compile report
(``results/aot/dark_mpii/h100x8.json``, 8 images per GPU, float32) estimates a 14.6 ms
step = 548 images/s per H100 (4.0 GB per device; 153 per GPU still fit): 278,100 x 14.6 ms
= 68 min of steps on one H100 at batch 8, an ESTIMATE; the measured H200 step of
``dark_lsp_gpu`` ran 2.6 x its estimate (``results/aot/README.md``), which makes ~3 h
likelier. Evaluation every 10,000 steps (28 evaluations: 2,958 persons x 2 for the flip
test each).
"""

from configs import default

TRAIN_PERSONS = 22246  # mpii train (datasets/mpii.py SPLIT_SIZES)
BATCH = 8
EPOCHS = 100


def get_config():
  c = default.get_config()
  c.data.train_sources = ("mpii",)
  c.data.train_splits = ("train",)
  c.data.mixture_weights = (1.0,)
  c.data.eval_source = "mpii"
  c.data.eval_split = "validation"
  c.data.input_size = 368

  c.model.backbone_depth = 101
  c.model.output_stride = 16
  c.model.dtype = "float32"

  c.codec.sigma = 3.0
  c.codec.encoding = "unbiased"
  c.codec.decoding = "dark"

  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-4
  c.optimizer.schedule = "step"
  c.optimizer.decay_every = 13275
  c.optimizer.decay_factor = 0.333

  c.batch_size = BATCH
  # ceil(100 * 22246 / 8) = 278075, rounded up to the hundred.
  c.num_train_steps = 278_100
  c.eval_every = 10_000
  c.flip_test = True
  return c
