"""Training survives its evaluations and stops on divergence, losing no trained step.

"Not lost" is checked the same way everywhere: the checkpoint of the last trained step
exists and restores. All of these train a tiny network: marked slow.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import launch, read_only, small_flags
from test_train import small_config

from unipose_jax import checkpoints, evaluate, files, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(small_data_dir):
  return small_data_dir


def _restores(workdir, step: int) -> checkpoints.Restored:
  """The newest intact checkpoint of ``workdir``: it must be ``step``, and finite."""
  with checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
    restored = ckpt.restore()
  assert restored.step == step
  leaves = jax.tree.leaves(restored.state["params"])
  assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves)
  return restored


def _steps(workdir) -> list[int]:
  rows = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  return [json.loads(r)["step"] for r in rows if '"loss"' in r]


def test_a_damaged_test_set_fails_each_evaluation_in_one_line_and_loses_no_step(
  data_dir, tmp_path, capsys
):
  bad = tmp_path / "tfds"
  shutil.copytree(data_dir, bad)
  (shard,) = (bad / "synthetic" / "small" / "1.0.0").glob("synthetic-test.array_record-*")
  (tmp_path / "good").mkdir()
  shutil.copy(shard, tmp_path / "good")
  data = bytearray(shard.read_bytes())
  for i in range(len(data) // 5, 3 * len(data) // 5, 997):  # bit flips inside the records
    data[i] ^= 0xFF
  shard.write_bytes(bytes(data))
  c = small_config(str(bad))
  c.num_train_steps, c.eval_every, c.log_every, c.checkpoint_every = 4, 2, 1, 1000
  workdir = str(tmp_path / "run")
  with pytest.raises(evaluate.EvaluationError) as info:
    train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  out = capsys.readouterr().out
  failed = [line for line in out.splitlines() if "evaluation at step" in line]
  assert len(failed) == 2, out
  assert (
    f"evaluation at step 2 failed: prepared dataset 'synthetic/small' is damaged: {shard}"
    in (failed[0])
  )
  assert failed[0].endswith("checkpoint 2 is saved; training goes on")
  assert failed[1].endswith("checkpoint 4 is saved")
  assert str(info.value).startswith(f"training finished (checkpoint 4 saved in {workdir}/")
  assert "--mode=prepare" in str(info.value) and "run the same command again" in str(info.value)
  assert _steps(workdir) == [1, 2, 3, 4]
  assert _restores(workdir, 4).metrics is None  # never evaluated: never the best
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  # Rebuilt (here: the good file back), the same command evaluates checkpoint 4 and ends.
  shutil.copy(next((tmp_path / "good").glob("synthetic-test.*")), shard)
  summary = train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  assert _steps(workdir) == [1, 2, 3, 4] and set(summary) >= {"dark"}
  assert _restores(workdir, 4).metrics["dark/pck@0.2"] == summary["dark"]["pck@0.2"]
  assert os.path.exists(os.path.join(workdir, "eval_metrics.json"))


def test_a_full_eval_folder_once_loses_nothing_and_the_run_goes_on(data_dir, tmp_path, monkeypatch):
  """The disk is full while step 2's evaluation writes (freed afterwards): one line, the
  checkpoint of step 2 stays (without metrics), training and the final evaluation go on."""
  real = files.atomic_write

  def full_at_step_2(path, write):
    if f"{os.sep}eval{os.sep}step_2{os.sep}" in str(path):
      raise files.named(OSError(28, "No space left on device"), f"cannot write {path}")
    return real(path, write)

  monkeypatch.setattr(files, "atomic_write", full_at_step_2)
  c = small_config(data_dir)
  c.num_train_steps, c.eval_every, c.log_every, c.checkpoint_every = 4, 2, 1, 1000
  workdir = tmp_path / "run"
  summary = train.train_and_evaluate(c, str(workdir), devices=jax.devices()[:2])
  assert set(summary) == set(train.run_lib.eval_decodings(c))
  assert os.listdir(workdir / "eval" / "step_2") == []  # nothing that looks complete
  assert (workdir / "eval" / "step_4" / "eval_metrics.json").exists()
  restored = _restores(str(workdir), 4)
  assert restored.metrics["dark/pck@0.2"] == summary["dark"]["pck@0.2"]
  directory = workdir / "checkpoints"
  with checkpoints.Checkpointer(directory, read_only=True, best_metric="dark/pck@0.2") as ckpt:
    assert ckpt.restore(step=2).metrics is None and ckpt.best_step() == 4


def test_a_read_only_eval_folder_on_the_command_line(data_dir, tmp_path):
  workdir = tmp_path / "run"
  with read_only(workdir / "eval") as how:
    r = launch("--mode=train", *small_flags(data_dir, workdir, 4), "--config.eval_every=2")
  assert r.returncode == 1, r.stdout + r.stderr
  assert r.stderr.count("\n") == 1 and r.stderr.startswith(
    f"error: training finished (checkpoint 4 saved in {workdir}/checkpoints) but its final "
    f"evaluation failed: cannot write to the evaluation folder {workdir}/eval/step_4: "
  ), (how, r.stderr)
  assert "evaluation at step 2 failed: cannot write to the evaluation folder" in r.stdout
  assert "training goes on" in r.stdout
  _restores(str(workdir), 4)
  assert not (workdir / ".lock").exists()


def test_a_diverging_loss_stops_with_one_line_and_no_non_finite_checkpoint(data_dir, tmp_path):
  """SGD at 1e3 diverges within a few steps. The loss is checked at every log step (1
  here): exit 1 naming the step; every checkpoint on disk is finite."""
  workdir = tmp_path / "run"
  flags = [
    *small_flags(data_dir, workdir, 20), "--config.checkpoint_every=2",
    "--config.optimizer.name=sgd", "--config.optimizer.momentum=0.0",
    "--config.optimizer.schedule=constant", "--config.optimizer.learning_rate=1e3",
  ]  # fmt: skip
  r = launch("--mode=train", *flags)
  assert r.returncode == 1, r.stdout + r.stderr
  assert r.stderr.count("\n") == 1, r.stderr
  line = r.stderr.strip()
  assert line.startswith("error: the training loss is "), line
  step = int(line.split(" at step ")[1].split(":")[0])
  assert 1 < step < 20 and "Lower --config.optimizer.learning_rate (now 1000)" in line
  last = max(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  assert f"the last checkpoint, step {last}, is finite" in line and last < step
  for s in os.listdir(workdir / "checkpoints"):
    with checkpoints.Checkpointer(workdir / "checkpoints", read_only=True) as ckpt:
      params = jax.tree.leaves(ckpt.restore(step=int(s)).state["params"])
    assert all(np.isfinite(np.asarray(x)).all() for x in params), s


def test_a_state_that_diverged_between_log_steps_is_never_saved(data_dir, tmp_path):
  """Checkpoints every step, the loss logged every 4: the state check before each save
  stops the run at the first non-finite state."""
  c = small_config(data_dir)
  c.optimizer.name, c.optimizer.momentum, c.optimizer.schedule = "sgd", 0.0, "constant"
  c.optimizer.learning_rate = 1e3
  c.num_train_steps, c.checkpoint_every, c.log_every = 12, 1, 4
  workdir = str(tmp_path / "run")
  with pytest.raises(train.NonFiniteError) as info:
    train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  assert str(info.value).startswith("the train state is not finite at step ")
  step = int(str(info.value).split(" at step ")[1].split(":")[0])
  _restores(workdir, step - 1)  # every step before it saved, the last one finite
  assert not math.isnan(float(step))


def test_init_from_is_not_read_when_the_run_resumes_and_says_so(data_dir, tmp_path, capsys):
  c = small_config(data_dir)
  c.num_train_steps, c.checkpoint_every = 2, 2
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  c.num_train_steps = 3
  c.model.init_from = str(tmp_path / "UniPose_LSP.pth")  # does not exist: never read
  capsys.readouterr()
  train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  out = capsys.readouterr().out
  assert (
    f"note: --config.model.init_from={tmp_path}/UniPose_LSP.pth is not used: the run resumes "
    "from checkpoint 2 (it only initialises a new run; use a new --workdir)"
  ) in out
  _restores(workdir, 3)
