"""UniPose + DARK on COCO, top-down: DARK's HRNet-W32 256x192 recipe adapted to UniPose.

The input is DARK's 256 x 192 (``data.input_size = (height, width)``; heatmaps 32 x 24).

Data: ``coco`` train (149,813 persons of train2017 with a labeled keypoint, crowds
excluded) for training, ``coco`` validation (6,352 persons of val2017) for evaluation; the
set is COCO's 17 keypoints with its OKS sigmas (``keypoint_sets.COCO``), so evaluation
scores OKS AP through pycocotools (``metrics/coco_eval.py``) and the best checkpoint is
the one with the highest AP (the set's ``best_metric``).

Taken from DARK (Zhang et al., CVPR 2020; ilovepose/DarkPose
``experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml``): unbiased targets and dark
decoding, Adam at 1e-3, 210 epochs with the rate x 0.1 at epochs 170 and 200, 32 images
per GPU on 4 GPUs = a global batch of 128, flip test, rotation factor 45 deg (applied
with probability 0.6), scale factor 0.35, horizontal flip 0.5 (HRNet's ``JointsDataset``).

Adapted to UniPose:

* ResNet-101 UniPose (WASP + decoder, output stride 16), whose heatmaps are at stride 8:
  32 x 24 at this input, where HRNet's are at stride 4 (64 x 48);
* sigma 1 heatmap pixel: DARK's sigma 2 at stride 4 is 8 input pixels, which is sigma 1 at
  stride 8; DARK's own 128 x 96 config, whose heatmaps are also 32 x 24, uses sigma 1
  (``w32_128x96_adam_lr1e-3.yaml``). Its dark-decoding blur kernel there is 3
  (``BLUR_KERNEL: 3``; 11 at 64 x 48), hence ``codec.dark_kernel = 3``;
* bfloat16 compute (parameters and optimiser state float32), for the length below.

Differs from DARK (the project's pipeline):

* the crops, in training and evaluation, are the dataset's defaults (README "Datasets and
  their protocols"), square, where HRNet crops COCO's annotated box with its aspect fixed
  to the input's (0.75) and x 1.25;
* no half-body augmentation (DARK: probability 0.3); scale and rotation are drawn
  uniformly (scale 0.65-1.35, rotation +-45 deg with probability 0.6), where HRNet draws
  them from normals (scale 1 + N(0, 0.35) clipped to 0.65-1.35; rotation N(0, 45 deg)
  clipped to +-90 deg);
* evaluation is on the ground-truth persons (box score 1, OKS-NMS, COCOeval); DARK's
  published numbers use a person detector's boxes (AP 56.4), which ``python -m
  unipose_jax.score`` can score but training does not run;
* no ImageNet weights by default: pass ``--config.model.pretrained=resnet101.pth``.

Length: 210 epochs x 149,813 / 128 = 245,787 steps, rounded up to the hundred: 245,800;
the decays at the first step of epochs 170 and 200: ceil(170 x 149,813 / 128) = 198,971
and ceil(200 x 149,813 / 128) = 234,083. 245,800 x 128 = 31.5 M images. The compile report
(``results/aot/dark_coco/h100x8.json``, 32 images per GPU, 256 x 192) estimates an 11.1 ms
step = 2,886 images/s per H100 (2.9 GB per device; 481 per GPU fit): on DARK's 4 GPUs x 32,
31.5 M / (4 x 2,886) = 2,730 s = 46 min of steps, an ESTIMATE (the measured H200 step of
``dark_lsp_gpu`` ran 2.6 x its estimate: ~2 h is likelier).
Evaluation every 10,000 steps (about 8.5 epochs; 6,352 persons x 2 for the flip test).
"""

from configs import default

TRAIN_PERSONS = 149813  # coco train (datasets/coco.py SPLIT_SIZES)
BATCH = 128  # DARK: 32 per GPU x 4 GPUs
EPOCHS = 210
DECAY_EPOCHS = (170, 200)


def _first_step_of_epoch(epoch: int) -> int:
  return -(-epoch * TRAIN_PERSONS // BATCH)  # ceil


def get_config():
  c = default.get_config()
  c.data.train_sources = ("coco",)
  c.data.train_splits = ("train",)
  c.data.mixture_weights = (1.0,)
  c.data.eval_source = "coco"
  c.data.eval_split = "validation"
  c.data.input_size = (256, 192)  # (height, width), DARK's
  c.data.worker_count = 12
  c.data.eval_worker_count = 4
  c.data.augment.scale_range = (0.65, 1.35)
  c.data.augment.rotation_deg = 45.0
  c.data.augment.rotation_prob = 0.6
  c.data.augment.flip_prob = 0.5

  c.model.backbone_depth = 101
  c.model.output_stride = 16
  c.model.dtype = "bfloat16"

  c.codec.sigma = 1.0
  c.codec.encoding = "unbiased"
  c.codec.decoding = "dark"
  c.codec.dark_kernel = 3

  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "step"
  c.optimizer.decay_factor = 0.1
  c.optimizer.decay_steps = tuple(_first_step_of_epoch(e) for e in DECAY_EPOCHS)

  c.batch_size = BATCH
  # ceil(210 * 149813 / 128) = 245787, rounded up to the hundred.
  c.num_train_steps = 245_800
  c.checkpoint_every = 2000
  c.eval_every = 10_000
  c.eval_batch_size = 128
  c.flip_test = True
  return c
