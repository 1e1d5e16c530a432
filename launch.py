"""unipose_jax command line.

  python launch.py --mode=prepare --manual_dir=data --data_dir=data/tfds
  python launch.py --mode=train   --config=configs/dark_lsp.py --workdir=runs/dark
  python launch.py --mode=eval    --config=configs/dark_lsp.py --workdir=runs/dark
  python launch.py --mode=predict --config=configs/dark_lsp.py --workdir=runs/dark \
      --images=a.jpg,b.jpg --output=predictions/

Any config key can be overridden with ``--config.a.b=value``; an unknown key is an error.

Several hosts (one process per host; train, eval and predict):

  python launch.py --mode=train ... --coordinator_address=host0:1234 --num_processes=2 --process_id=0

or $UNIPOSE_COORDINATOR / $UNIPOSE_NUM_PROCESSES / $UNIPOSE_PROCESS_ID, or --distributed_auto
on a Cloud TPU pod slice, or nothing at all under SLURM's srun or Open MPI's mpirun, where
JAX reads the cluster's own settings. See README.md, "Several hosts".
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # makes `configs` importable

MODES = ("prepare", "train", "eval", "predict")

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", None, MODES, "What to do.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, results.")
flags.DEFINE_string("manual_dir", "data", "prepare: folder holding the LSP archives.")
flags.DEFINE_string(
  "data_dir",
  None,
  "prepare: where TFDS datasets are written (default: the config's data.data_dir, else data/tfds).",
)
flags.DEFINE_list("datasets", ["lsp", "lsp_extended", "synthetic"], "prepare: which datasets.")
flags.DEFINE_list("images", [], "predict: image files.")
flags.DEFINE_string("output", None, "predict: output folder (default: <workdir>/predict).")
flags.DEFINE_integer("stop_after", None, "train: stop (with a checkpoint) after this many steps.")
flags.DEFINE_string(
  "coordinator_address",
  None,
  "Several hosts: host:port of process 0 (default: $UNIPOSE_COORDINATOR; see --distributed_auto).",
)
flags.DEFINE_integer(
  "num_processes", None, "Several hosts: number of processes (default: $UNIPOSE_NUM_PROCESSES)."
)
flags.DEFINE_integer(
  "process_id",
  None,
  "Several hosts: this process, 0 .. num_processes-1 (default: $UNIPOSE_PROCESS_ID).",
)
flags.DEFINE_bool(
  "distributed_auto",
  False,
  "Several hosts: let JAX find the settings itself "
  "(Cloud TPU pod slices; SLURM srun, Open MPI and GKE TPU slices are detected "
  "without it). Also $UNIPOSE_DISTRIBUTED_AUTO=1.",
)


def _require(name: str) -> None:
  if getattr(FLAGS, name) is None:
    raise app.UsageError(f"--mode={FLAGS.mode} needs --{name}")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  mode = FLAGS.mode
  logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
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
  # Before anything touches a device: JAX's multi-process runtime, when configured.
  from unipose_jax import distributed  # pylint: disable=g-import-not-at-top

  distributed.initialize(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, auto=FLAGS.distributed_auto
  )
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

    evaluate.predict_images(
      config, FLAGS.workdir, FLAGS.images, FLAGS.output or os.path.join(FLAGS.workdir, "predict")
    )


if __name__ == "__main__":
  flags.mark_flag_as_required("mode")
  app.run(main)
