"""The command line's modes besides training: prepare, eval, predict, export (ONNX or a
release folder), calibrate.

``launch.py`` parses the flags, finds the run (``run.Run``) and calls one of these with
plain arguments; ``--mode=train`` is ``train.train_and_evaluate``. Every expected failure
is an exception whose message names the file or key (``launch.py`` prints it in one
line).
"""

from __future__ import annotations

import contextlib
import functools
import os

from unipose_jax import datasets, files, geometry, preemption, run_config
from unipose_jax.run import Run


def prepare(names, manual_dir: str, data_dir: str) -> None:
  """``--mode=prepare``: build the TFDS datasets ``names`` (None: ``datasets.DEFAULT_PREPARE``)
  from the files in ``manual_dir`` into ``data_dir``; ``datasets.DatasetError`` saying, in
  one line per dataset, what is missing, what to download and where to put it."""
  names = datasets.DEFAULT_PREPARE if names is None else names
  statuses = datasets.prepare(names, manual_dir=manual_dir, data_dir=data_dir)
  missing = sorted(n for n, s in statuses.items() if s not in ("built", "exists"))
  if missing:
    lines = "; ".join(f"{n}: {datasets.missing_message(n, manual_dir)}" for n in missing)
    raise datasets.DatasetError(
      f"not prepared: {', '.join(missing)} (archives not found in {manual_dir}): {lines}; then "
      f"run: {datasets.prepare_command(data_dir, manual_dir)}"
      f" --datasets={','.join(missing)}"
    )


def _original_variables(run: Run, model):
  """Variables of the original UniPose ``.pth`` of ``config.model.init_from``."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from unipose_jax import models  # noqa: PLC0415

  config = run.config
  height, width = geometry.input_hw(config.data.input_size)
  shapes = jax.eval_shape(
    functools.partial(model.init, train=False), jax.random.key(0),
    jnp.zeros((1, height, width, 3), jnp.float32),
  )  # fmt: skip
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  variables, report = models.load_original_unipose(config.model.init_from, template)
  print(f"loaded {config.model.init_from}: {report}", flush=True)
  return variables


def _new_folders(folder: str) -> list[str]:
  """The folders of ``folder``'s path (itself included) that do not exist yet, deepest
  first: those ``files.check_writable`` would create."""
  out, path = [], os.path.abspath(folder)
  while not os.path.lexists(path) and os.path.dirname(path) != path:
    out.append(path)
    path = os.path.dirname(path)
  return out


def evaluate_checkpoint(run: Run, step: int | None = None) -> dict[str, dict[str, float]]:
  """``--mode=eval``: the run's checkpoint (``step``, else the best, else the newest intact
  one) or, with ``config.model.init_from`` and no checkpoint folder, an original UniPose
  ``.pth``, evaluated with every configured decoder; the files go to
  ``<workdir>/eval/<checkpoint_N | original_NAME>/`` (``reports.write_eval``) and the table
  to the console. Returns ``{decoder: summary}``."""
  from unipose_jax import checkpoints, distributed, evaluate, reports  # noqa: PLC0415

  config = run.config
  run_config.validate(config, training=False)
  eval_dir = os.path.join(run.workdir, "eval")
  made = _new_folders(eval_dir)
  if distributed.is_primary():  # before anything is read or compiled
    files.check_writable(eval_dir, "the evaluation folder")
  if not (config.model.init_from and not os.path.isdir(run.checkpoint_dir)):
    try:
      run.check_has_checkpoint()  # "train first"
    except checkpoints.CheckpointError:
      for folder in made:  # the folders the check made, deepest first: nothing left behind
        with contextlib.suppress(OSError):
          os.rmdir(folder)
      raise
  if run.is_video:  # UniPose-LSTM: every test video whole, the state carried
    from unipose_jax import evaluate_video  # noqa: PLC0415

    return evaluate_video.evaluate_video_checkpoint(run, step)
  mesh = distributed.data_mesh()
  model = run.model()
  if config.model.init_from and not os.path.isdir(run.checkpoint_dir) and not run.is_release:
    variables = _original_variables(run, model)
    name = "original_" + os.path.splitext(os.path.basename(config.model.init_from))[0]
    title = f"{config.model.init_from} (an original UniPose checkpoint)"
  else:
    how = "best, else newest intact" if step is None else "as asked"
    variables, step = run.load_variables(step)
    from unipose_jax.train_video import check_kind  # noqa: PLC0415

    check_kind(variables, video=False, what=f"checkpoint {step} of {run.workdir}")
    if distributed.is_primary():
      print(f"evaluating checkpoint {step} of {run.workdir} ({how})", flush=True)
    name = f"checkpoint_{step}"
    title = f"checkpoint {step} of {run.workdir}"
  variables = distributed.replicate(variables, mesh)
  stop = functools.partial(distributed.any_process, preemption.should_stop)
  result = evaluate.Evaluator.from_run(run, mesh, model).run(variables, should_stop=stop,
                                                             progress=True)  # fmt: skip
  reports.write_eval(os.path.join(run.workdir, "eval", name), result)
  reports.print_summary(result.summary, title, result.keypoint_set)
  return result.summary


def predict_inputs(run: Run, inputs, output: str | None) -> dict:
  """``--mode=predict``: every input checked first (``media.collect_inputs``, images and
  video frames up to ``predict.max_pixels``), then the run's ``Predictor`` over all of
  them into ``output`` (default ``<workdir>/predict``)."""
  from unipose_jax import media  # noqa: PLC0415
  from unipose_jax.predict import Predictor  # noqa: PLC0415

  max_pixels = run.config.predict.max_pixels
  items = media.collect_inputs(inputs, max_pixels=max_pixels)  # all checked before compiling
  out_dir = output or os.path.join(run.workdir, "predict")
  files.check_writable(out_dir, "the prediction output folder")
  if run.is_video:  # UniPose-LSTM: the state carried through each video
    from unipose_jax.predict_video import VideoPredictor  # noqa: PLC0415

    predictor = VideoPredictor.from_run(run)
  else:
    predictor = Predictor.from_run(run)
  return media.predict_all(items, predictor, out_dir, max_pixels=max_pixels)


def export_checkpoint(run: Run, output: str | None) -> str:
  """``--mode=export``: the run's best intact checkpoint to ONNX (``output``, default
  ``<workdir>/unipose.onnx``), checked against JAX, and its decoding settings
  (``Run.export_settings``, resolved) beside it as ``<name>.json``, written before the
  ``.onnx`` is renamed into place: an ``.onnx`` at the path is complete and has its
  settings. Returns the path."""
  from unipose_jax import export  # noqa: PLC0415

  variables, step = run.load_variables()  # no checkpoint: said first
  output = output or os.path.join(run.workdir, "unipose.onnx")
  export.check_output_path(output)
  settings = f"{os.path.splitext(output)[0]}.json"
  path = export.export_onnx(
    run.model(), variables, output, run.config.data.input_size, verify=True,
    before_rename=lambda: files.write_json(settings, run.export_settings(step)),
    log=lambda line: print(line, flush=True),
  )  # fmt: skip
  print(f"wrote {path} (checkpoint {step}) and its decoding settings {settings}")
  return str(path)


def export_release(run: Run, output: str | None, dtype: str = "float32") -> str:
  """``--mode=export --format=release``: the run's best intact checkpoint (or the release
  it is) as a release folder ``output`` (default ``<workdir>/release``): config.json, the
  parameters in ``dtype`` (float32 or bfloat16) and a manifest (``release.write_release``),
  at most 8 files of at most 16 MB. Returns the folder."""
  from unipose_jax import release  # noqa: PLC0415

  variables, step = run.load_variables()  # no checkpoint: said first
  output = output or os.path.join(run.workdir, "release")
  if os.path.abspath(output) == os.path.abspath(run.workdir):
    raise release.ReleaseError(f"release output {output} is the run folder itself; give another")
  manifest = release.write_release(
    output, run.config, variables, step, dtype=dtype, source=os.path.abspath(run.workdir)
  )
  names = [p["file"] for p in manifest["parts"]]
  print(
    f"wrote release {output} (checkpoint {step}, {dtype} parameters, "
    f"{manifest['bytes'] / 1e6:.1f} MB in {len(names)} part(s) + config.json + "
    f"{release.MANIFEST})"
  )
  return output


def calibrate_presence(run: Run) -> dict | None:
  """``--mode=calibrate``: person presence of the run's best checkpoint
  (``calibrate.calibrate_run``), holding the work directory's lock (refused with
  ``checkpoints.WorkdirLockedError`` while a trainer holds it); one process only (a
  ``ConfigError`` otherwise). Returns the calibration record."""
  import jax  # noqa: PLC0415

  from unipose_jax import calibrate, checkpoints  # noqa: PLC0415

  run_config.validate(run.config, training=False)
  if jax.process_count() > 1:  # orbax's reads would wait for the other processes
    raise run_config.ConfigError(
      "--mode=calibrate runs in one process: start it on one host without --num_processes"
    )
  files.check_writable(run.workdir, "the work directory (config.json)")
  files.check_writable(os.path.join(run.workdir, calibrate.OUT_DIR), "the presence folder")
  with checkpoints.WorkdirLock(run.workdir):
    return calibrate.calibrate_run(run)
