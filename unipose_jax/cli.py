"""unipose_jax command line: ``unipose-jax`` (installed by pip; ``python launch.py`` in a
checkout is the same command).

  unipose-jax --mode=prepare --manual_dir=data --data_dir=data/tfds
  unipose-jax --mode=train   --config=configs/dark_lsp.py --workdir=runs/dark
  unipose-jax --mode=eval    --workdir=runs/dark
  unipose-jax --mode=predict --workdir=runs/dark --inputs=photos/,clip.mp4 --output=out/
  unipose-jax --mode=export  --workdir=runs/dark --output=unipose.onnx
  unipose-jax --mode=export  --workdir=runs/dark --format=release --output=dark_release
      # config.json + parameters, <= 8 files; eval/predict/export take it as --workdir
  unipose-jax --mode=calibrate --workdir=runs/dark   # person presence (training does it)
  unipose-jax --mode=eval    --config=configs/unipose_lsp.py --workdir=runs/official \
      --config.model.init_from=UniPose_LSP.pth        # an original UniPose checkpoint
  unipose-jax --mode=compile --config=configs/dark_lsp_gpu.py --target=h100x8 \
      --per_device_batch=64                           # fits? how fast? (needs the [aot] extra)
  unipose-jax --mode=compile --target=list

Any config key can be overridden with ``--config.a.b=value``. Training saves the resolved
config as ``<workdir>/config.json``; eval, predict and export read it (a given ``--config``
must agree with it on the network's keys). Without ``--config`` the overrides apply to
that saved config: its run-time keys (``predict.*``, ``eval_batch_size``, ``flip_test``,
``data.data_dir``, the decoders ...) may change, its network keys may not
(``config_defaults.key_role``).

Exit codes: 0 done; 1 an error with a message (bad input, no checkpoint, workdir in use,
a failed save, a full disk, a loss that is not finite); 2 a bad command line or config;
130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM in any mode, with nothing partial left under
a final name (training saves a checkpoint first: run the same command to resume). Expected
errors print one message; ``--debug`` shows their traceback and the libraries' logs
(orbax's). Unexpected exceptions (bugs) always show their traceback.

Several hosts: ``--coordinator_address/--num_processes/--process_id``, or
$UNIPOSE_COORDINATOR / $UNIPOSE_NUM_PROCESSES / $UNIPOSE_PROCESS_ID, or --distributed_auto;
SLURM's srun and Open MPI's mpirun are detected. See README.md, "Several hosts".
"""

from __future__ import annotations

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ("prepare", "train", "eval", "predict", "export", "compile", "calibrate")
EXIT_ERROR, EXIT_USAGE = 1, 2

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", None, MODES, "What to do.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, results.")
flags.DEFINE_string("manual_dir", "data", "prepare: folder holding each dataset's files (README).")
flags.DEFINE_string("data_dir", None, "prepare: where TFDS datasets go (default data/tfds).")
flags.DEFINE_list(
  "datasets", None, "prepare: which datasets (default: datasets.DEFAULT_PREPARE; names: README)."
)
flags.DEFINE_multi_string(
  "inputs",
  [],
  "predict: image files, folders of images, video files; comma-separated and/or "
  "the flag repeated (a path holding a comma: give it alone, --inputs='a,b.jpg').",
)
flags.DEFINE_alias("images", "inputs")
flags.DEFINE_string(
  "output",
  None,
  "predict: output folder; export: the .onnx file (--format=release: a folder); compile: JSON.",
)
flags.DEFINE_enum(
  "format",
  "onnx",
  ["onnx", "release"],
  "export: an ONNX file, or a release folder (config.json + parameters, no checkpoint).",
)
flags.DEFINE_enum(
  "release_dtype", "float32", ["float32", "bfloat16"], "export --format=release: parameter dtype."
)
flags.DEFINE_integer("stop_after", None, "train: stop (with a checkpoint) after N steps.")
flags.DEFINE_string("target", None, "compile: a GPU node (h100x8) or TPU slice (v5e:4x4); list.")
flags.DEFINE_integer("per_device_batch", None, "compile: global batches = this x devices.")
flags.DEFINE_enum("forms", "both", ["both", "jit", "pmap"], "compile: parallel forms to compile.")
flags.DEFINE_bool("batch_search", True, "compile: bisect for the largest batch that fits.")
flags.DEFINE_integer("max_batch_compiles", 6, "compile: at most this many bisection compiles.")
flags.DEFINE_bool("debug", False, "Show tracebacks of expected errors too.")
flags.DEFINE_string("coordinator_address", None, "Several hosts: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Several hosts: number of processes.")
flags.DEFINE_integer("process_id", None, "Several hosts: this process, 0 .. num_processes-1.")
flags.DEFINE_bool("distributed_auto", False, "Several hosts: let JAX find the settings.")


class CommandLineError(Exception):
  """A bad command line: printed as one message (exit code 2)."""


#: ``--config.*`` arguments given without ``--config``: overrides of the saved run's
#: config.json, applied by :func:`_saved_config` (absl alone would call them unknown flags).
_saved_run_overrides: list[str] = []
_OVERRIDE = re.compile(r"^--?(no)?config\.")


def _expected_errors() -> tuple[type[BaseException], ...]:
  """Expected failures: printed as one message (exit code 1; a bad config or dataset name 2)."""
  from unipose_jax import (  # noqa: PLC0415
    checkpoints,
    datasets,
    evaluate,
    extras,
    media,
    models,
    release,
    run_config,
    train,
  )

  return (
    checkpoints.CheckpointError, datasets.DatasetError, run_config.ConfigError,
    extras.MissingExtraError, models.WeightImportError, media.PredictInputError,
    evaluate.EvaluationError, train.NonFiniteError, release.ReleaseError,
    OSError,  # a full disk, a read-only folder, a missing file: named
  )  # fmt: skip


def split_inputs(values) -> list[str]:
  """``--inputs`` values (the flag may be repeated) -> paths: a value naming an existing
  path is one path (commas and all); any other value is a comma-separated list."""
  paths = []
  for value in values:
    if os.path.lexists(value):
      paths.append(value)
    else:
      paths.extend(p.strip() for p in value.split(",") if p.strip())
  return paths


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
  try:
    run_lib.check_workdir(workdir)
  except run_lib.NotAWorkdirError as e:
    raise CommandLineError(f"--workdir={e}") from None
  if given is None and _saved_run_overrides:
    given = _saved_config(mode, workdir)
  if given is not None and mode == "train":
    return run_lib.Run(given, workdir)
  try:
    return run_lib.Run.from_workdir(workdir, given)
  except run_lib.NoConfigError:
    where = os.path.join(workdir, "config.json")
    if not os.path.isdir(os.path.join(workdir, run_lib.CHECKPOINT_DIR)):  # no run at all
      raise CommandLineError(
        f"--mode={mode}: no run in {workdir} (no config.json, no checkpoints): train first "
        f"(unipose-jax --mode=train --config=configs/<name>.py --workdir={workdir})"
      ) from None
    raise CommandLineError(f"--mode={mode} needs --config (no {where} to read it from)") from None


def _compile() -> None:
  """``--mode=compile``: the report of a config on a target, without the target's hardware."""
  from unipose_jax.aot import targets, topology  # noqa: PLC0415  (no JAX yet)

  topology.prepare_environment()  # before anything imports JAX
  if FLAGS.target is None:
    raise CommandLineError("--mode=compile needs --target (--target=list prints the targets)")
  if FLAGS.target == "list":
    print("\n".join(targets.describe(t) for t in targets.listed()))
    print("GPU nodes also with 1, 2 or 4 GPUs (h100x2); see README, 'Before you rent a pod'.")
    return
  try:
    target = targets.parse(FLAGS.target)
  except targets.UnknownTargetError as e:
    raise CommandLineError(str(e)) from None
  config = FLAGS.config
  if config is None:
    raise CommandLineError("--mode=compile needs --config")
  import ml_collections  # noqa: PLC0415

  if not isinstance(config, ml_collections.ConfigDict):
    try:  # config_flags keeps a config file's loading error in a stand-in object
      config.to_dict()  # re-raises the loading error
    except Exception as e:  # noqa: BLE001
      raise CommandLineError(f"cannot load --config: {e}") from None
  if FLAGS.per_device_batch is not None:
    if FLAGS.per_device_batch < 1:
      raise CommandLineError(f"--per_device_batch={FLAGS.per_device_batch}: must be >= 1")
    with config.unlocked():
      config.batch_size = config.eval_batch_size = FLAGS.per_device_batch * target.num_chips
  from unipose_jax import files, run_config  # noqa: PLC0415
  from unipose_jax.aot import report, table  # noqa: PLC0415

  run_config.validate(config)
  name = config_flags.get_config_filename(FLAGS["config"])
  forms = ("jit", "pmap") if FLAGS.forms == "both" else (FLAGS.forms,)
  try:
    result = report.compile_report(
      config, target.name, config_name=name, forms=forms, batch_search=FLAGS.batch_search,
      max_compiles=FLAGS.max_batch_compiles, log=lambda msg: print(msg, flush=True),
    )  # fmt: skip
  except (report.BatchSizeError, topology.MissingExtraError) as e:
    raise CommandLineError(str(e)) from None
  stem = os.path.splitext(os.path.basename(name))[0]
  output = FLAGS.output or os.path.join(
    "runs", "compile", stem, target.name.replace(":", "_") + ".json"
  )
  files.write_json(output, result)
  print(table.format_table(result))
  print(f"wrote {output}")


def _saved_config(mode: str, workdir: str):
  """``<workdir>/config.json`` with the ``--config.*`` overrides applied (parsed by
  config_flags, as with ``--config``), refused where the run cannot honour them
  (``run_config.check_overrides``)."""
  import ml_collections  # noqa: PLC0415

  from unipose_jax import run_config  # noqa: PLC0415

  saved, where = run_config.load(workdir), os.path.join(workdir, run_config.CONFIG_FILE)
  if saved is None:
    raise CommandLineError(f"{_saved_run_overrides[0]} needs --config, or a run's {where}")
  config = ml_collections.ConfigDict(saved.to_dict())
  argv = [sys.argv[0], *_saved_run_overrides]
  values = flags.FlagValues()
  try:
    config_flags.DEFINE_config_dict("config", config, flag_values=values, sys_argv=argv)
    rest = values(argv)
  except flags.Error as e:
    raise CommandLineError(str(e)) from None
  except (AttributeError, KeyError) as e:  # an unknown --config.<key>
    raise CommandLineError(_unknown_key(saved, _saved_run_overrides, e, mode)) from None
  if len(rest) > 1:
    raise CommandLineError(f"unexpected arguments: {' '.join(rest[1:])}")
  run_config.check_overrides(saved, config, workdir, mode)
  run_config.validate(config, training=mode == "train", source=f"{where} and the overrides")
  return config


def main(argv) -> None:
  if len(argv) > 1:
    raise CommandLineError(f"unexpected arguments: {' '.join(argv[1:])}")
  mode = FLAGS.mode
  logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
  from unipose_jax import library_logs, preemption  # noqa: PLC0415  (no JAX)

  library_logs.route(debug=FLAGS.debug)
  _work(mode)
  if preemption.should_stop():  # a signal that came after the last safe point
    preemption.check(f"--mode={mode} had finished (its output is complete)")


def _work(mode: str) -> None:
  if mode is None:
    raise CommandLineError(f"--mode is required: one of {', '.join(MODES)}")
  if mode == "compile":
    return _compile()
  if mode == "prepare":
    if _saved_run_overrides:
      raise CommandLineError(f"{_saved_run_overrides[0]}: --mode=prepare reads no run's config")
    from unipose_jax import datasets, modes  # noqa: PLC0415

    datasets.check_names(FLAGS.datasets or ())  # an unknown name: exit 2, before any build
    config_dir = FLAGS.config.data.data_dir if FLAGS.config else "data/tfds"
    return modes.prepare(FLAGS.datasets, FLAGS.manual_dir, FLAGS.data_dir or config_dir)
  if mode != "export" and (FLAGS.format != "onnx" or FLAGS.release_dtype != "float32"):
    raise CommandLineError(f"--format and --release_dtype are for --mode=export, not {mode}")
  if FLAGS.format != "release" and FLAGS.release_dtype != "float32":
    raise CommandLineError("--release_dtype is for --format=release")
  if FLAGS.workdir is None:
    raise CommandLineError(f"--mode={mode} needs --workdir")
  inputs = split_inputs(FLAGS.inputs)
  if mode == "predict" and not inputs:
    raise CommandLineError("--mode=predict needs --inputs=photo.jpg,folder/,clip.mp4")
  run = _run(mode)
  from unipose_jax import distributed  # noqa: PLC0415  (before anything touches a device)

  distributed.initialize(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, auto=FLAGS.distributed_auto
  )
  if mode == "train":
    from unipose_jax import train  # noqa: PLC0415

    train.train_run(run, stop_after=FLAGS.stop_after)
    return None
  from unipose_jax import modes  # noqa: PLC0415

  if mode == "eval":
    modes.evaluate_checkpoint(run)
  elif mode == "predict":
    modes.predict_inputs(run, inputs, FLAGS.output)
  elif mode == "export" and FLAGS.format == "release":
    modes.export_release(run, FLAGS.output, FLAGS.release_dtype)
  elif mode == "export":
    modes.export_checkpoint(run, FLAGS.output)
  elif mode == "calibrate":
    modes.calibrate_presence(run)
  return None


def _parse_flags(argv):
  """absl's flag parsing, with one clear line for a bad flag or config key. Without
  ``--config``, the ``--config.*`` arguments are set aside for :func:`_saved_config`."""
  if not any(re.match(r"^--?config(=|$)", a) for a in argv[1:]):
    argv = _set_aside_overrides(argv)
  path = _config_path(argv)
  if path is not None:
    _check_config_file(path)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _exit(f"error: {e}", EXIT_USAGE)
  except (AttributeError, KeyError) as e:  # an unknown --config.<key>
    mode = next((m.group(1) for a in argv if (m := re.match(r"^--?mode=(.*)$", a))), None)
    _exit(f"error: {_unknown_key(_load_config_file(argv), argv, e, mode)}", EXIT_USAGE)
  except (OSError, SyntaxError, ImportError) as e:
    _exit(f"error: cannot load the config file: {e}", EXIT_USAGE)


def _config_path(argv) -> str | None:
  """The file of ``--config=path.py`` or ``--config path.py`` (its ``:arguments`` off)."""
  for i, arg in enumerate(argv[1:], start=1):
    if m := re.match(r"^--?config=(.*)$", arg):
      return m.group(1).split(":", 1)[0]
    if re.match(r"^--?config$", arg) and i + 1 < len(argv):
      return argv[i + 1].split(":", 1)[0]
  return None


def _check_config_file(path: str) -> None:
  """Exit 2 with ``no such config file: path`` and the configs beside it when ``path`` is
  missing; otherwise make its package importable (``configs/x.py`` does ``from configs
  import default``): the folder above a config folder holding ``__init__.py`` goes on
  ``sys.path``, as ``launch.py`` puts the checkout there."""
  if not os.path.isfile(path):
    folder = os.path.dirname(path) or "."
    if os.path.isdir(folder):
      names = sorted(n for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py")
      listing = f"the configs in {folder}/: {', '.join(names) or 'none'}"
    else:
      listing = f"no folder {folder}/"
    _exit(f"error: no such config file: {path} ({listing})", EXIT_USAGE)
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isfile(os.path.join(folder, "__init__.py")):
    parent = os.path.dirname(folder)
    if parent not in sys.path:
      sys.path.insert(0, parent)


def _set_aside_overrides(argv: list[str]) -> list[str]:
  """``argv`` without its ``--config.*`` arguments (and their values given as the next
  argument), which go to :data:`_saved_run_overrides`."""
  _saved_run_overrides.clear()
  rest, i = [argv[0]], 1
  while i < len(argv):
    arg, i = argv[i], i + 1
    if not _OVERRIDE.match(arg):
      rest.append(arg)
      continue
    _saved_run_overrides.append(arg)
    no_value = "=" not in arg and not _OVERRIDE.match(arg).group(1)
    if no_value and i < len(argv) and not argv[i].startswith("-"):  # --config.a.b VALUE
      _saved_run_overrides.append(argv[i])
      i += 1
  return rest


def _unknown_key(config, argv, error: Exception, mode: str | None = None) -> str:
  """``unknown config key 'a.b'; did you mean 'a.c'?`` for the first ``--config.a.b`` of
  ``argv`` that ``config`` lacks (the error's text when none can be found); the nearest
  key among those ``--mode=mode`` accepts (``run_config.accepted_keys``)."""
  key = next((k for k in _override_keys(argv) if not _has_key(config, k)), str(error).strip("\"'"))
  hint = ""
  if config is not None:
    from unipose_jax import run_config  # noqa: PLC0415

    hint = run_config.suggest_key(config, key, mode)
  return f"unknown config key {key!r}{hint}"


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
  return [a.split("=")[0][m.end() :] for a in argv if (m := _OVERRIDE.match(a))]


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
  """``app.run(main)`` with expected errors as one message and a documented exit code, and
  SIGINT/SIGTERM stopping every mode within a bound (``unipose_jax.preemption``)."""
  from unipose_jax import preemption  # noqa: PLC0415  (no JAX)

  if (main_module := sys.modules.get("__main__")) is not None:
    main_module.__doc__ = __doc__  # --help prints it (launch.py's or pip's entry script)
  with preemption.PreemptionGuard(grace_s=preemption.GRACE_S):
    try:
      app.run(main, flags_parser=_parse_flags)
    except SystemExit:
      raise
    except Exception as e:
      from unipose_jax import run_config  # noqa: PLC0415

      if isinstance(e, CommandLineError) and not FLAGS.debug:
        _exit(f"error: {e}", EXIT_USAGE)
      if isinstance(e, preemption.Preempted):  # stopped by a signal; what is written is whole
        _exit(str(e), e.exit_code)
      if FLAGS.debug or not isinstance(e, _expected_errors()):
        raise
      from unipose_jax import datasets  # noqa: PLC0415  (imported by _expected_errors already)

      usage = (run_config.ConfigError, datasets.UnknownDatasetError)  # a bad config or name
      _exit(f"error: {e}", EXIT_USAGE if isinstance(e, usage) else EXIT_ERROR)


if __name__ == "__main__":
  run()
