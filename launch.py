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


class UserError(Exception):
  """An expected failure: printed as one message (exit code 1)."""


class CommandLineError(Exception):
  """A bad command line: printed as one message (exit code 2)."""


def _expected_errors() -> tuple[type[BaseException], ...]:
  from unipose_jax import checkpoints, datasets, models, run_config  # noqa: PLC0415

  found = [checkpoints.CheckpointError, datasets.DatasetError, run_config.ConfigError]
  found += [models.WeightImportError]
  found += [UserError, FileNotFoundError, PermissionError, IsADirectoryError]
  try:
    from unipose_jax.predict import PredictInputError  # noqa: PLC0415

    found.append(PredictInputError)
  except ImportError:
    pass
  return tuple(found)


def _config(mode: str):
  """The config of this command: ``--config`` (checked against the run's) or the run's."""
  from unipose_jax import run_config  # noqa: PLC0415

  given, workdir = FLAGS.config, FLAGS.workdir
  if given is not None and type(given).__name__ == "_ErrorConfig":
    try:
      given.to_dict()  # re-raises the loading error
    except Exception as e:  # noqa: BLE001
      raise CommandLineError(f"cannot load --config: {e}") from None
  saved = run_config.load(workdir) if workdir else None
  if given is None and saved is None:
    where = f"{workdir}/config.json" if workdir else "a --workdir"
    raise CommandLineError(f"--mode={mode} needs --config (no {where} to read it from)")
  if given is not None and saved is not None and mode != "train":
    run_config.check_matches(given, saved, workdir)
  return given if given is not None else saved


def _prepare() -> None:
  from unipose_jax import datasets  # noqa: PLC0415

  data_dir = FLAGS.data_dir or (FLAGS.config.data.data_dir if FLAGS.config else "data/tfds")
  statuses = datasets.prepare(FLAGS.datasets, manual_dir=FLAGS.manual_dir, data_dir=data_dir)
  missing = sorted(n for n, s in statuses.items() if s not in ("built", "exists"))
  if missing:
    raise UserError(
      f"not prepared: {', '.join(missing)} (archives not found in {FLAGS.manual_dir}); put them "
      f"there and run:\n  {datasets.prepare_command(data_dir, FLAGS.manual_dir)}"
    )


def _export(config) -> None:
  from unipose_jax import export, files, run_config  # noqa: PLC0415

  variables, step = run_config.load_variables(FLAGS.workdir)  # no checkpoint: said first
  output = FLAGS.output or os.path.join(FLAGS.workdir, "unipose.onnx")
  export.check_output_path(output)
  model = run_config.build_model(config)
  path = export.export_onnx(model, variables, output, config.data.input_size, verify=True)
  codec = run_config.build_codec(config)
  files.write_json(
    f"{os.path.splitext(path)[0]}.json",
    {"checkpoint_step": step, "input_size": config.data.input_size,
     "heatmap_size": list(codec.heatmap_size), "sigma": config.codec.sigma,
     "decoding": config.codec.decoding, "dark_kernel": config.codec.dark_kernel,
     "box_head": bool(config.model.box_head)},
  )  # fmt: skip
  print(
    f"wrote {path} (checkpoint {step}) and its decoding settings {os.path.splitext(path)[0]}.json"
  )


def main(argv) -> None:
  if len(argv) > 1:
    raise CommandLineError(f"unexpected arguments: {' '.join(argv[1:])}")
  mode = FLAGS.mode
  logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
  if mode is None:
    raise CommandLineError(f"--mode is required: one of {', '.join(MODES)}")
  if mode == "prepare":
    return _prepare()
  if FLAGS.workdir is None:
    raise CommandLineError(f"--mode={mode} needs --workdir")
  config = _config(mode)
  from unipose_jax import distributed  # noqa: PLC0415  (before anything touches a device)

  distributed.initialize(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, auto=FLAGS.distributed_auto
  )
  if mode == "train":
    from unipose_jax import train  # noqa: PLC0415

    train.train_and_evaluate(config, FLAGS.workdir, stop_after=FLAGS.stop_after)
  elif mode == "eval":
    from unipose_jax import evaluate  # noqa: PLC0415

    evaluate.evaluate_checkpoint(config, FLAGS.workdir)
  elif mode == "predict":
    if not FLAGS.inputs:
      raise CommandLineError("--mode=predict needs --inputs=photo.jpg,folder/,clip.mp4")
    from unipose_jax import predict  # noqa: PLC0415

    items = predict.collect_inputs(FLAGS.inputs)  # every input checked before compiling
    predictor = predict.Predictor.from_workdir(FLAGS.workdir, config=config)
    predict.run(items, predictor, FLAGS.output or os.path.join(FLAGS.workdir, "predict"))
  elif mode == "export":
    _export(config)
  elif mode == "calibrate":
    from unipose_jax import calibrate  # noqa: PLC0415

    calibrate.calibrate_locked(config, FLAGS.workdir)
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
    if isinstance(e, CommandLineError) and not FLAGS.debug:
      _exit(f"error: {e}", EXIT_USAGE)
    if type(e).__name__ == "Preempted":  # train.Preempted: stopped by a signal, saved
      _exit(f"pre-empted: {e}", e.exit_code)
    if FLAGS.debug or not isinstance(e, _expected_errors()):
      raise
    _exit(f"error: {e}", EXIT_USAGE if type(e).__name__ == "ConfigError" else EXIT_ERROR)


if __name__ == "__main__":
  run()
