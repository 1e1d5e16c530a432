"""The step loop of one training invocation: steps, logs, stop checks, checkpoints and the
evaluations during training (``train.py`` builds what it runs).

Order at a step that does several things: the loss check (log steps), the stop check, the
save (its state checked to be finite first), then the evaluation of what was just saved.
So a failed or interrupted evaluation never loses trained steps, and a diverged run never
writes a non-finite checkpoint over a finite one.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp

from unipose_jax import checkpoints, datasets, distributed, evaluate, preemption, reports
from unipose_jax.metric_writers import ReportProgress
from unipose_jax.preemption import Preempted


class NonFiniteError(Exception):
  """The training loss (or the train state) stopped being finite; nothing non-finite was
  saved."""


def _diverged(what: str, step: int, ckpt, config) -> NonFiniteError:
  last = ckpt.latest_step()
  kept = f"the last checkpoint, step {last}, is finite" if last else "no checkpoint was saved"
  return NonFiniteError(
    f"{what} at step {step}: training diverged and stopped; {kept} and nothing non-finite "
    f"was saved. Lower --config.optimizer.learning_rate (now {config.optimizer.learning_rate:g})"
    " or set --config.optimizer.grad_clip_norm, then train in a new --workdir"
  )


@jax.jit
def _all_finite(tree) -> jax.Array:
  """Whether every floating-point value of ``tree`` is finite (one bool)."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def run(
  state, first_step: int, *, config, workdir, trainer, batches, lr_fn, ckpt, writer, evaluator,
  stop_after, guard,
) -> dict:  # fmt: skip
  """The step loop of one invocation (the state lives on the devices throughout).

  Every ``log_every`` steps the mean loss and gradient norm since the last row and
  ``learning_rate`` (the schedule's rate of the last update, ``lr_fn(step - 1)``) go to
  the writer, and a loss that is not finite stops the run (:class:`NonFiniteError`);
  before every save the state is checked to be finite (one bool to the host), so a
  diverged state never replaces a finite checkpoint. At a step that both saves and
  evaluates, the checkpoint is saved first: an evaluation that fails (a damaged test set,
  an unwritable ``eval/``) is reported in one line and training goes on; a failed final
  evaluation raises :class:`evaluate.EvaluationError` after the run's last checkpoint, and
  a run resumed at its last step whose final evaluation never finished (failed, or
  skipped by a stop signal) runs it.
  """
  c, step, summary, metrics, eval_failed = config, first_step, {}, None, None
  total = c.num_train_steps
  progress = ReportProgress(
    num_train_steps=total, images_per_step=c.batch_size, every_steps=c.log_every, writer=writer
  )
  progress(first_step)
  final_done = os.path.join(workdir, "eval", f"step_{total}", reports.EVAL_METRICS_FILE)
  if first_step == total and not os.path.exists(final_done):  # stopped or failed before it
    with progress.paused():
      summary, eval_failed = _evaluate(
        evaluator, writer, ckpt, trainer.canonical(state), workdir, step, total, guard
      )
  while step < total:
    state, m = trainer.step(state, next(batches))
    metrics = m if metrics is None else metrics.merge(m)
    step += 1
    ckpt.check()  # a failed background save stops the run now
    if step % c.log_every == 0 or step == total:
      scalars = {k: float(v) for k, v in metrics.compute().items()}
      if not math.isfinite(scalars["loss"]):
        raise _diverged(f"the training loss is {scalars['loss']}", step, ckpt, c)
      scalars["learning_rate"] = float(lr_fn(step - 1))
      metrics = None
      progress.extra = {"loss": scalars["loss"], "lr": scalars["learning_rate"]}
      writer.write_scalars(step, scalars)
    progress(step)
    signalled = (step % c.stop_check_every == 0 or step == total) and distributed.any_process(
      guard.should_stop
    )
    stop = signalled or (stop_after is not None and step - first_step >= stop_after)
    eval_now = not signalled and (step == total or (c.eval_every > 0 and step % c.eval_every == 0))
    if eval_now or stop or step % c.checkpoint_every == 0:
      canonical = trainer.canonical(state)
      if not bool(_all_finite(canonical)):
        raise _diverged("the train state is not finite", step, ckpt, c)
      ckpt.save(step, canonical, batches.get_state())
    if eval_now:
      with progress.paused():  # the ETA is of training steps: evaluations left out
        summary, eval_failed = _evaluate(
          evaluator, writer, ckpt, canonical, workdir, step, total, guard
        )
    if stop:
      ckpt.wait()
      why = (
        f"{preemption.signal_name(guard.received)}" if signalled else f"--stop_after={stop_after}"
      )
      _log(f"stopped at step {step} by {why}; checkpoint saved in {workdir}")
      if signalled:
        raise preemption.preempted(
          f"training at step {step} of {total}; checkpoint {step} saved, resume with the same "
          "command"
        )  # fmt: skip
      return {}
  if eval_failed:
    raise evaluate.EvaluationError(
      f"training finished (checkpoint {step} saved in {ckpt.directory}) but its final "
      f"evaluation failed: {eval_failed}; fix that and run the same command again (it "
      "evaluates the last checkpoint, then stops)"
    )
  return summary


#: Evaluation metrics logged to TensorBoard / metrics.jsonl and saved with a checkpoint.
#: (``pckh@0.5`` and ``pck@0.2`` are also MPII's and Penn Action's best-metric aliases; ``AP``
#: COCO's.)
SUMMARY = (
  "pck@0.2", "pck@0.1", "pck@0.05", "auc@0.2", "pckh@0.5", "box_iou", "box_iou>=0.5", "AP",
)  # fmt: skip

#: Faults of an evaluation during training that the run survives (its checkpoint is saved).
EVALUATION_FAULTS = (OSError, datasets.DatasetError, checkpoints.CheckpointError)


def _flat(summary: dict) -> dict[str, float]:
  """``{"<decoder>/<metric>": value}`` of the :data:`SUMMARY` metrics."""
  return {f"{dec}/{k}": v for dec, res in summary.items() for k, v in res.items() if k in SUMMARY}


def _evaluate(evaluator, writer, ckpt, state, workdir: str, step: int, total: int, guard):
  """Evaluate the checkpoint just saved at ``step``: ``eval/step_<step>/`` (every file at
  the last step, else the metrics), the scalars, the console table, the metrics added to
  the checkpoint, and at the end the run's ``eval_metrics.json``.

  Returns ``(summary, None)``, or ``({}, reason)`` when it failed with one of
  :data:`EVALUATION_FAULTS` (reported in one line; the checkpoint stays). A stop signal
  during it raises :class:`Preempted` once the checkpoint is committed.
  """
  final = step == total
  try:
    result = evaluator.run(
      state.variables,
      examples=final,
      should_stop=lambda: distributed.any_process(guard.should_stop),
    )
    ckpt.wait()  # the checkpoint first: a failed save stops the run, as anywhere
    reports.write_eval(os.path.join(workdir, "eval", f"step_{step}"), result, all_files=final)
    ckpt.add_metrics(step, _flat(result.summary))
  except Preempted:
    ckpt.wait()
    raise
  except checkpoints.CheckpointSaveError:
    raise
  except EVALUATION_FAULTS as e:
    goes_on = "; training goes on" if not final else ""
    _log(f"evaluation at step {step} failed: {e}; checkpoint {step} is saved{goes_on}")
    return {}, str(e)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in _flat(result.summary).items()})
  if final:
    title = f"final evaluation: checkpoint {step} (the last step, {step} of {total})"
    reports.write_final_summary(workdir, result.summary, title, result.keypoint_set)
  else:
    title = f"evaluation of checkpoint {step} (step {step})"
    reports.print_summary(result.summary, title, result.keypoint_set)
  return result.summary, None


def _log(msg: str) -> None:
  if distributed.is_primary():
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
