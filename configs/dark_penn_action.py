"""UniPose + DARK on Penn Action, per frame: the paper's single-image setting with DARK.

Data: ``penn_action`` train (1,258 videos, 87,543 frames) for training, ``penn_action``
test (1,068 videos, 76,298 frames: every test frame, as the protocol scores them) for
evaluation; the set is Penn Action's 13 joints (``keypoint_sets.PENN_ACTION``), so
evaluation scores Penn Action's PCK@0.2 (normaliser max(box width, box height), visible
joints only; ``metrics/penn.py``) and the best checkpoint is the one with the highest
PCK@0.2 (the set's ``best_metric``, the table's ``Mean``). Frames are single images here;
``configs/unipose_lstm_penn.py`` is the video network on clips (UniPose-LSTM).

Taken from the original code: the single-image trainer ``unipose.py`` (the paper's UniPose),
applied to Penn Action's frames: ResNet-101 at output stride 16 with WASP, float32, a
368 x 368 input (``utils/penn_action_data.py`` resizes every frame to 368 x 368), heatmaps
at stride 8 (46 x 46), sigma 3 heatmap pixels, batch 8, Adam at 1e-4 multiplied by 0.333
every 13,275 iterations.

Added (DARK): unbiased targets, the dark (Taylor) decoder selecting the checkpoint, and
the flip test at evaluation.

Differs from the original code:

* the original trains on Penn Action only through ``uniposeLSTM.py``, on clips of 5 frames
  (``penn_action_data.py`` returns clips); it has no per-frame Penn Action trainer, so the
  length here is chosen, not copied: the images the paper's LSP setting sees
  (``configs/default.py``: 125,000 steps x 8 = 1.0 M images), i.e. 1.0 M / 87,543 = 11.4
  epochs of the training frames (consecutive frames are near duplicates, so an epoch of
  frames is worth far less than an epoch of distinct images). 9 decays of the step
  schedule fall in it (as in ``default.py``);
* augmentation: the original resizes the whole frame to 368 x 368 (aspect not kept); here
  each frame's person is cropped (the dataset's default crop, README "Datasets and their
  protocols") and augmented as for LSP (scale 0.7-1.3, rotation +-40 deg with probability
  0.6, flip 0.5, shift 5 %); a visible joint pushed off the input has weight 0;
* no ImageNet weights by default: pass ``--config.model.pretrained=resnet101.pth``.

Length: 125,000 steps x 8 = 1.0 M frames. Evaluation is the costly part of a run: each
pass is 76,298 frames x 2 (flip test), so it runs every 25,000 steps (5 passes, the last
at the end) rather than every 5,000.
"""

from configs import default

TRAIN_FRAMES = 87543  # penn_action train: 1,258 videos (docs/design.md)
BATCH = 8
IMAGES = 125_000 * 8  # the paper's LSP setting (configs/default.py)


def get_config():
  c = default.get_config()
  c.data.train_sources = ("penn_action",)
  c.data.train_splits = ("train",)
  c.data.mixture_weights = (1.0,)
  c.data.eval_source = "penn_action"
  c.data.eval_split = "test"
  c.data.input_size = 368

  c.model.arch = "unipose"
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
  c.num_train_steps = IMAGES // BATCH  # 125,000
  c.eval_every = 25_000
  c.flip_test = True
  return c
