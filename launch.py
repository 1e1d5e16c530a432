"""unipose_jax command line.

  python launch.py --mode=prepare --manual_dir=data --data_dir=data/tfds
  python launch.py --mode=train   --config=configs/dark_lsp.py --workdir=runs/dark
  python launch.py --mode=eval    --workdir=runs/dark
  python launch.py --mode=predict --workdir=runs/dark --inputs=photos/,clip.mp4 --output=out/
  python launch.py --mode=export  --workdir=runs/dark --output=unipose.onnx
  python launch.py --mode=calibrate --workdir=runs/dark   # person presence (training does it)
  python launch.py --mode=eval    --config=configs/unipose_lsp.py --workdir=runs/official \
      --config.model.init_from=UniPose_LSP.pth        # an original UniPose checkpoint

Any config key can be overridden with ``--config.a.b=value``. Training saves the resolved
config as ``<workdir>/config.json``; eval, predict and export read it (a given ``--config``
must agree with it on the network's keys).

Exit codes: 0 done; 1 an error with a message (bad input, no checkpoint, workdir in use,
a failed save); 2 a bad command line or config; 143 training stopped by SIGTERM/SIGINT
after saving a checkpoint (run the same command to resume). Expected errors print one
message; ``--debug`` shows their traceback. Unexpected exceptions (bugs) always do.

Several hosts: ``--coordinator_address/--num_processes/--process_id``, or
$UNIPOSE_COORDINATOR / $UNIPOSE_NUM_PROCESSES / $UNIPOSE_PROCESS_ID, or --distributed_auto;
SLURM's srun and Open MPI's mpirun are detected. See README.md, "Several hosts".
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # makes `configs` importable

MODES = ("prepare", "train", "eval", "predict", "export", "calibrate")
EXIT_ERROR, EXIT_USAGE = 1, 2

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", None, MODES, "What to do.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, results.")
flags.DEFINE_string("manual_dir", "data", "prepare: folder holding the LSP archives.")
flags.DEFINE_string("data_dir", None, "prepare: where TFDS datasets go (default data/tfds).")
flags.DEFINE_list("datasets", ["lsp", "lsp_extended", "synthetic"], "prepare: which datasets.")
flags.DEFINE_list("inputs", [], "predict: image files, folders of images, video files.")
flags.DEFINE_alias("images", "inputs")
flags.DEFINE_string("output", None, "predict: output folder; export: the .onnx file.")
flags.DEFINE_integer("stop_after", None, "train: stop (with a checkpoint) after N steps.")
flags.DEFINE_bool("debug", False, "Show tracebacks of expected errors too.")
flags.DEFINE_string("coordinator_address", None, "Several hosts: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Several hosts: number of processes.")
flags.DEFINE_integer("process_id", None, "Several hosts: this process, 0 .. num_processes-1.")
flags.DEFINE_bool("distributed_auto", False, "Several hosts: let JAX find the settings.")


class CommandLineError(Exception):
  """A bad command line: printed as one message (exit code 2)."""


def _expected_errors() -> tuple[type[BaseException], ...]:
  """Expected failures: printed as one message (exit code 1; a bad config 2)."""
  from unipose_jax import checkpoints, datasets, extras, media, models, run_config  # noqa: PLC0415

  return (
    checkpoints.CheckpointError, datasets.DatasetError, run_config.ConfigError, extras.MissingExtraError,
    models.WeightImportError, media.PredictInputError, FileNotFoundError, PermissionError,
    IsADirectoryError,
  )  # fmt: skip


def _run(mode: str):
  """The run of this command: ``--workdir`` with ``--config`` (checked against the run's
  ``config.json``, except when training: train checks) or with its ``config.json``."""
  import ml_collections  # noqa: PLC0415

  from unipose_jax import run as run_lib  # noqa: PLC0415

  given, workdir = FLAGS.config, FLAGS.workdir
  if given is not None and not isinstance(given, ml_collections.ConfigDict):
    try:  # config_flags keeps a config file's loading error in a stand-in object
      given.to_dict()  # re-raises the loading error
    except Exception as e:  # noqa: BLE001
      raise CommandLineError(f"cannot load --config: {e}") from None
  if given is not None and mode == "train":
    return run_lib.Run(given, workdir)
  try:
    return run_lib.Run.from_workdir(workdir, given)
  except run_lib.NoConfigError:
    where = os.path.join(workdir, "config.json")
    raise CommandLineError(f"--mode={mode} needs --config (no {where} to read it from)") from None


def main(argv) -> None:
  if len(argv) > 1:
    raise CommandLineError(f"unexpected arguments: {' '.join(argv[1:])}")
  mode = FLAGS.mode
  logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
  if mode is None:
    raise CommandLineError(f"--mode is required: one of {', '.join(MODES)}")
  if mode == "prepare":
    from unipose_jax import modes  # noqa: PLC0415

    config_dir = FLAGS.config.data.data_dir if FLAGS.config else "data/tfds"
    return modes.prepare(FLAGS.datasets, FLAGS.manual_dir, FLAGS.data_dir or config_dir)
  if FLAGS.workdir is None:
    raise CommandLineError(f"--mode={mode} needs --workdir")
  if mode == "predict" and not FLAGS.inputs:
    raise CommandLineError("--mode=predict needs --inputs=photo.jpg,folder/,clip.mp4")
  run = _run(mode)
  from unipose_jax import distributed  # noqa: PLC0415  (before anything touches a device)

  distributed.initialize(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, auto=FLAGS.distributed_auto
  )
  if mode == "train":
    from unipose_jax import train  # noqa: PLC0415

    train.train_and_evaluate(run.config, FLAGS.workdir, stop_after=FLAGS.stop_after)
    return None
  from unipose_jax import modes  # noqa: PLC0415

  if mode == "eval":
    modes.evaluate_checkpoint(run)
  elif mode == "predict":
    modes.predict_inputs(run, FLAGS.inputs, FLAGS.output)
  elif mode == "export":
    modes.export_checkpoint(run, FLAGS.output)
  elif mode == "calibrate":
    modes.calibrate_presence(run)
  return None


def _parse_flags(argv):
  """absl's flag parsing, with one clear line for a bad flag or config key."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _exit(f"error: {e}", EXIT_USAGE)
  except (AttributeError, KeyError) as e:  # an unknown --config.<key>
    config = _load_config_file(argv)
    key = next((k for k in _override_keys(argv) if not _has_key(config, k)), str(e).strip("\"'"))
    hint = ""
    if config is not None:
      from unipose_jax import run_config  # noqa: PLC0415

      hint = run_config.suggest_key(config, key)
    _exit(f"error: unknown config key {key!r}{hint}", EXIT_USAGE)
  except (OSError, SyntaxError, ImportError) as e:
    _exit(f"error: cannot load the config file: {e}", EXIT_USAGE)


def _load_config_file(argv):
  """The config of ``--config=path.py`` (no overrides), or None."""
  import importlib.util  # noqa: PLC0415

  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  try:
    spec = importlib.util.spec_from_file_location("_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
  except Exception:  # noqa: BLE001 (only for a hint)
    return None


def _override_keys(argv) -> list[str]:
  return [a.split("=")[0][len("--config.") :] for a in argv if a.startswith("--config.")]


def _has_key(config, key: str) -> bool:
  try:
    for part in key.split("."):
      config = config[part]
  except (AttributeError, KeyError, TypeError):
    return False
  return True


def _exit(message: str, code: int) -> None:
  print(message, file=sys.stderr, flush=True)
  sys.exit(code)


def run() -> None:
  """``app.run(main)`` with expected errors as one message and a documented exit code."""
  try:
    app.run(main, flags_parser=_parse_flags)
  except SystemExit:
    raise
  except Exception as e:
    from unipose_jax import preemption, run_config  # noqa: PLC0415

    if isinstance(e, CommandLineError) and not FLAGS.debug:
      _exit(f"error: {e}", EXIT_USAGE)
    if isinstance(e, preemption.Preempted):  # stopped by a signal, checkpoint saved
      _exit(f"pre-empted: {e}", e.exit_code)
    if FLAGS.debug or not isinstance(e, _expected_errors()):
      raise
    _exit(f"error: {e}", EXIT_USAGE if isinstance(e, run_config.ConfigError) else EXIT_ERROR)


if __name__ == "__main__":
  run()
