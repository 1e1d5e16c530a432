"""Every configuration key, with the original UniPose setting on LSP as its values.

The defaults live in the package (not in the repository's ``configs/``), so that a run
saved by an older version loads in an installed package: keys it lacks are taken from
here (``run_config.load``). ``configs/default.py`` re-exports :func:`get_config`; the
variants there call it and override a few keys, so that an unknown key given on the
command line (``--config.foo=1``) is an error everywhere. Sizes are in pixels;
``data.input_size`` is the network input: an int ``S`` (square, ``S x S``) or ``(height,
width)`` (``--config.data.input_size='(256, 192)'``); ``geometry.input_hw`` normalises it.

Every key has one role (:func:`key_role`), which says what a saved run may change:

* network keys (:data:`NETWORK_KEYS`): the checkpoint's weights were trained with these
  values (the network's shape, the heatmaps' sigma and encoding, the input size, the
  keypoint set); eval, predict, export and a resumed training refuse to change them;
* training keys (:data:`TRAINING_KEYS`): only training reads them; an override on
  ``--mode=eval/predict/export`` would change nothing and is refused;
* run-time keys (:data:`RUN_TIME_KEYS`): what eval, predict and export read (data folder
  and evaluation split, batch size, decoders, flip test, the ``predict`` section):
  overridable on a saved run (``--config.predict.second_pass=False`` without
  ``--config``).

The longest listed prefix of a key decides (``model`` is network, ``model.dtype``
run-time); every key is listed (``tests/test_config.py`` checks it).
"""

import ml_collections
from ml_collections import config_dict

#: Largest image (or video frame) prediction decodes, in pixels (``predict.max_pixels``):
#: 120 MP is above every phone camera's default mode (12-50 MP; 108-200 MP sensors bin to
#: 12-50) and decodes in ~1.3 GB; a 1.2 MB PNG can declare 400 MP and take 4.3 GB.
MAX_PIXELS = 120_000_000

#: Keys (or sections) the trained weights depend on.
NETWORK_KEYS = ("model", "codec.sigma", "codec.encoding", "data.input_size", "keypoints")
#: Keys (or sections) only training reads.
TRAINING_KEYS = (
  "seed", "data.train_sources", "data.train_splits", "data.mixture_weights", "data.clip_length",
  "data.worker_count", "data.augment", "data.flip_pairs", "data.crop", "model.pretrained", "model.init_from",
  "model.bn_sync",
  "loss",
  "optimizer", "batch_size", "num_train_steps", "parallelism", "log_every",
  "stop_check_every", "checkpoint_every", "eval_every", "keep_checkpoints",
  "calibrate_presence",
)  # fmt: skip
#: Keys (or sections) eval, predict and export read, free to change on a saved run.
RUN_TIME_KEYS = (
  "data.data_dir", "data.eval_source", "data.eval_split", "data.eval_worker_count",
  "data.eval_crop", "data.eval_margin",
  "model.dtype", "codec.decoding", "codec.eval_decodings", "codec.dark_kernel",
  "eval_batch_size", "flip_test", "num_example_images", "predict",
)  # fmt: skip
_ROLES = {"network": NETWORK_KEYS, "training": TRAINING_KEYS, "run-time": RUN_TIME_KEYS}


def key_role(key: str) -> str | None:
  """``"network"``, ``"training"`` or ``"run-time"`` for a dotted key (the list holding
  its longest prefix), None for a key no list covers."""
  best, role = -1, None
  for name, prefixes in _ROLES.items():
    for prefix in prefixes:
      if (key == prefix or key.startswith(prefix + ".")) and len(prefix) > best:
        best, role = len(prefix), name
  return role


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # --- data -----------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.data_dir = "data/tfds"  # where `--mode=prepare` wrote the TFDS datasets
  c.data.train_sources = ("lsp",)  # names of datasets/splits mixed for training
  c.data.train_splits = ("train",)
  c.data.mixture_weights = (1.0,)
  c.data.eval_source = "lsp"
  c.data.eval_split = "test"
  # Network input, pixels: S (square) or (height, width); a field of type object, so that
  # either form overrides it (ml_collections refuses a tuple on an int field).
  c.data.input_size = config_dict.FieldReference(368, field_type=object)
  c.data.worker_count = 2  # grain worker processes (0: in the main process)
  c.data.eval_worker_count = 0
  c.data.clip_length = 5  # model.arch="unipose_lstm": frames per training clip (T)
  # An explicit flip map, ((a, b), ...) joint index pairs of the run's keypoint set, for a
  # set whose joint names say nothing about sides (or to replace the set's own pairs);
  # () = the set's own pairs. Checked against K when the run resolves its set.
  c.data.flip_pairs = ()
  # What training crops around: "joints" (the labeled joints' extent) or "box" (the
  # example's own person box: COCO's annotation box, Penn Action's bbox, MPII's
  # center/scale); "" = the training datasets' default (datasets.DATASETS' crop).
  c.data.crop = ""
  # The evaluation input: "whole" (the image letterboxed, LSP's protocol) or "box" (top-down:
  # the person's square crop, data.eval_margin x its box); "" = the evaluation dataset's
  # default (datasets.DATASETS' eval_crop). Training writes both resolved into config.json.
  c.data.eval_crop = ""
  c.data.eval_margin = 1.25  # eval_crop="box": the crop's side = this x the box's longer side
  # Training augmentation (input_pipeline.AugmentConfig).
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.margin = 1.25  # person box x margin fills the input before scaling
  c.data.augment.scale_range = (0.7, 1.3)
  c.data.augment.rotation_deg = 40.0
  c.data.augment.rotation_prob = 0.6
  c.data.augment.flip_prob = 0.5
  c.data.augment.translate_frac = 0.05  # of the input size

  # --- model ----------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.backbone_depth = 101
  c.model.output_stride = 16
  c.model.backbone_width = 64
  c.model.stage_sizes = ()  # () = the standard sizes of backbone_depth;
  # else bottleneck stages of these sizes (tiny nets)
  c.model.wasp_features = 256
  c.model.wasp_rates = ()  # cascade order; () = (18, 12, 6) at output stride 16,
  # (36, 24, 12) at 8: scale down for small inputs
  c.model.low_level_features = 48
  c.model.decoder_features = 256
  c.model.wasp_dropout = 0.5
  c.model.decoder_dropout = (0.5, 0.1)
  c.model.dtype = "float32"  # compute dtype; "bfloat16" on GPU/TPU
  # Whose BatchNorm statistics a device trains with: "global" (the whole global batch),
  # "local" (its own examples, as PyTorch DDP) or "group:N" (N devices); README, "bn_sync".
  c.model.bn_sync = "global"
  c.model.pretrained = ""  # torchvision ResNet .pth for the backbone, if any
  c.model.init_from = ""  # an original UniPose .pth (bmartacho/UniPose) for the whole network
  # UniPose's single-stage person box: 5 more maps (centre, TL, TR, BL, BR) after the joints.
  c.model.box_head = False
  c.model.box_margin = 0.0  # box = extent of the labeled joints, grown by this share per side
  # "unipose": the per-frame network; "unipose_lstm": UniPose-LSTM, the same trunk and a
  # convolutional LSTM across the frames of a video (models/unipose_lstm.py), on clips.
  c.model.arch = "unipose"
  c.model.input_centre_map = False  # unipose_lstm: the released checkpoint's 4-channel conv1
  c.model.video_wasp = True  # unipose_lstm: the original's waspVideo (no BN in the pool branch)
  c.model.feed_previous_heatmaps = False  # unipose_lstm: the improved variant (paper's figure)
  c.model.lstm_head_features = 128  # unipose_lstm: width of the head on the hidden state
  c.model.lstm_head_kernel = 11  # unipose_lstm: its three large convolutions (odd)

  # --- heatmap codec (DARK or the baselines) ---------------------------------
  c.codec = ml_collections.ConfigDict()
  c.codec.sigma = 3.0  # Gaussian sigma in heatmap pixels
  c.codec.encoding = "quantized"  # "unbiased" (DARK) | "quantized"
  c.codec.decoding = "upsample"  # decoder selecting the best checkpoint
  c.codec.eval_decodings = ("argmax", "shift", "upsample", "dark")
  c.codec.dark_kernel = 0  # modulation kernel size (odd); 0 = 2*ceil(3*sigma)+1

  # --- loss -----------------------------------------------------------------
  c.loss = ml_collections.ConfigDict()
  c.loss.background_weight = 1.0
  c.loss.box_weight = 1.0  # weight of the 5 box maps' MSE (box_head only)

  # --- optimisation -----------------------------------------------------------
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"  # "adam" | "adamw" | "sgd"
  c.optimizer.learning_rate = 1e-4
  c.optimizer.schedule = "step"  # "step" | "cosine" | "constant"
  c.optimizer.decay_every = 13275  # step schedule: multiply by decay_factor every N steps
  # step schedule: when given, multiply by decay_factor at each of these steps (increasing)
  # instead of every decay_every (DARK / HRNet: at epochs 170 and 200 of 210).
  c.optimizer.decay_steps = ()
  c.optimizer.decay_factor = 0.333
  c.optimizer.warmup_steps = 0  # cosine schedule
  c.optimizer.weight_decay = 1e-4  # adamw only
  c.optimizer.momentum = 0.9  # sgd only
  c.optimizer.grad_clip_norm = 0.0  # 0 = off

  c.batch_size = 8  # global batch, split over every device of every host
  c.num_train_steps = 125_000  # 1000 images / 8 per step: 125 steps an epoch -> 1000 epochs
  c.parallelism = "jit"  # "jit" (sharded jit over a mesh) | "pmap"

  # --- loop -----------------------------------------------------------------
  c.log_every = 50
  # Every N steps the processes agree whether a stop signal arrived (a device sync);
  # a SIGTERM stops the run within N steps, with a checkpoint.
  c.stop_check_every = 10
  c.checkpoint_every = 1000
  c.eval_every = 5000  # 0: evaluate only at the end
  c.keep_checkpoints = 3
  c.eval_batch_size = 32
  c.flip_test = False
  c.num_example_images = 4  # example PNGs written by evaluation
  c.calibrate_presence = True  # a finished training run calibrates person presence

  # --- predict (--mode=predict and the Predictor) -------------------------------
  c.predict = ml_collections.ConfigDict()
  c.predict.score_threshold = 0.2  # joints scoring below are not `visible` and not drawn
  c.predict.second_pass = True  # crop the person found by the first pass and run again
  c.predict.crop_margin = 1.25  # the crop is the box (or joint extent) times this
  c.predict.max_pixels = MAX_PIXELS  # larger images and video frames are refused
  # Person presence (unipose_jax/calibrate.py): a person is found when the presence score
  # reaches a threshold chosen for this false-positive rate on images without a person.
  c.predict.presence_fpr = 0.05
  c.predict.presence_negatives = 200  # calibration: negative images of each kind
  # Written by calibration (end of training, --mode=calibrate); "" = not calibrated: a
  # person is then found when any joint reaches score_threshold (the old rule).
  c.predict.presence_score = ""
  c.predict.presence_threshold = 0.0
  c.predict.presence_weights = ()  # the "combined" score's fitted weights, bias last
  c.predict.presence_step = -1  # the checkpoint calibrated

  # --- the keypoint set -------------------------------------------------------
  # Empty here: a training run resolves its set from its training sources
  # (``Run.keypoint_set``) and writes it into its config.json as this section
  # (``keypoint_sets.KeypointSet.to_dict``); a saved config.json without it is LSP.
  c.keypoints = ml_collections.ConfigDict()
  return c
