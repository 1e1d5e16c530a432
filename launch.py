"""unipose_jax command line.

  python launch.py --mode=prepare --manual_dir=data --data_dir=data/tfds
  python launch.py --mode=train   --config=configs/dark_lsp.py --workdir=runs/dark
  python launch.py --mode=eval    --config=configs/dark_lsp.py --workdir=runs/dark
  python launch.py --mode=predict --config=configs/dark_lsp.py --workdir=runs/dark \
      --images=a.jpg,b.jpg --output=predictions/

Any config key can be overridden with ``--config.a.b=value``; an unknown key is an error.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # makes `configs` importable

MODES = ("prepare", "train", "eval", "predict")

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", None, MODES, "What to do.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, results.")
flags.DEFINE_string("manual_dir", "data", "prepare: folder holding the LSP archives.")
flags.DEFINE_string("data_dir", None, "prepare: where TFDS datasets are written "
                    "(default: the config's data.data_dir, else data/tfds).")
flags.DEFINE_list("datasets", ["lsp", "lsp_extended", "synthetic"], "prepare: which datasets.")
flags.DEFINE_list("images", [], "predict: image files.")
flags.DEFINE_string("output", None, "predict: output folder (default: <workdir>/predict).")
flags.DEFINE_integer("stop_after", None, "train: stop (with a checkpoint) after this many steps.")


def _require(name: str) -> None:
  if getattr(FLAGS, name) is None:
    raise app.UsageError(f"--mode={FLAGS.mode} needs --{name}")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  mode = FLAGS.mode
  if mode is None:
    raise app.UsageError(f"--mode is required: one of {', '.join(MODES)}")

  if mode == "prepare":
    from unipose_jax import datasets  # pylint: disable=g-import-not-at-top
    data_dir = FLAGS.data_dir or (FLAGS.config.data.data_dir if FLAGS.config else "data/tfds")
    datasets.prepare(FLAGS.datasets, manual_dir=FLAGS.manual_dir, data_dir=data_dir)
    return

  _require("config")
  _require("workdir")
  config = FLAGS.config
  if mode == "train":
    from unipose_jax import train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(config, FLAGS.workdir, stop_after=FLAGS.stop_after)
  elif mode == "eval":
    from unipose_jax import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.evaluate_checkpoint(config, FLAGS.workdir)
  elif mode == "predict":
    if not FLAGS.images:
      raise app.UsageError("--mode=predict needs --images=a.jpg,b.jpg")
    from unipose_jax import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.predict_images(config, FLAGS.workdir, FLAGS.images,
                            FLAGS.output or os.path.join(FLAGS.workdir, "predict"))


if __name__ == "__main__":
  flags.mark_flag_as_required("mode")
  app.run(main)
