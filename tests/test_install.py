"""What a user of the installed package runs: README's Python snippets, verbatim, from
another directory, with the package installed from a built wheel (not editable) into a
fresh virtual environment, on the shared run and on its ONNX export."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, copy_of, launch

pytestmark = pytest.mark.slow


def readme_snippet(first_line: str) -> str:
  """The indented code block of README.md that starts with ``first_line`` (dedented)."""
  lines = (REPO_ROOT / "README.md").read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.strip() == first_line) - 1
  while lines[start].startswith("    "):  # back to the block's first line
    start -= 1
  block = []
  for line in lines[start + 1 :]:
    if not line.startswith("    "):
      break
    block.append(line[4:])
  return "\n".join(block) + "\n"


def fresh_env_with_the_wheel(tmp_path) -> str:
  """A new virtual environment holding the package as a wheel built from the sources; its
  dependencies come from this test environment's site-packages as a plain path entry
  (whose .pth files, the editable install's among them, are not run). Returns its python."""
  src = tmp_path / "src"  # build from a copy: no build/ folder in the checkout
  shutil.copytree(
    REPO_ROOT / "unipose_jax", src / "unipose_jax", ignore=shutil.ignore_patterns("__pycache__")
  )
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO_ROOT / name, src / name)
  wheels = tmp_path / "wheels"
  subprocess.run(
    [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
     "-w", str(wheels), str(src)],
    check=True, capture_output=True, text=True,
  )  # fmt: skip
  (wheel,) = wheels.glob("unipose_jax-*.whl")
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = str(venv / "bin" / "python")
  subprocess.run(
    [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", str(wheel)],
    check=True, capture_output=True, text=True,
  )  # fmt: skip
  target = subprocess.run(
    [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
    check=True, capture_output=True, text=True,
  ).stdout.strip()  # fmt: skip
  with open(os.path.join(target, "test_dependencies.pth"), "w") as f:
    f.write("\n".join(site.getsitepackages()) + "\n")
  return python


def test_readme_snippets_from_an_installed_wheel(trained_run, tmp_path):
  python = fresh_env_with_the_wheel(tmp_path)
  user = tmp_path / "user"  # the user's folder: no checkout, no configs/ beside it
  (user / "runs").mkdir(parents=True)
  copy_of(trained_run, user / "runs" / "dark")
  rng = np.random.default_rng(0)
  cv2.imwrite(str(user / "photo.jpg"), rng.integers(0, 256, (90, 140, 3), dtype=np.uint8))
  # The shared run's config says dark_kernel=0: the export must write the resolved size.
  r = launch("--mode=export", f"--workdir={user / 'runs' / 'dark'}")  # README's: the default path
  assert r.returncode == 0, r.stderr
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

  def run(code: str) -> dict:
    out = subprocess.run(
      [python, "-c", code], cwd=user, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])

  where = (
    "import json, sys, unipose_jax\n"
    "assert unipose_jax.__file__.startswith(sys.prefix), unipose_jax.__file__\n"
    "try:\n  import configs\n  raise AssertionError('configs/ is importable')\n"
    "except ImportError:\n  pass\n"
  )
  snippet = readme_snippet("from unipose_jax import Predictor")
  got = run(
    where + snippet + "print(json.dumps({'keypoints': p.keypoints.tolist(), 'box': p.box is not"
    " None, 'step': predictor.checkpoint_step, 'found': bool(p.person_found)}))\n"
  )
  found = got["found"]
  assert got["step"] == 4 and np.asarray(got["keypoints"]).shape == (14, 2)
  assert np.isfinite(got["keypoints"]).all()

  snippet = readme_snippet("from unipose_jax import deploy")
  got = run(
    where + snippet + "assert 'jax' not in sys.modules\n"
    "print(json.dumps({'keypoints': keypoints.tolist(), 'scores': scores.tolist(), "
    "'person_found': person_found.tolist(), 'presence': result.presence.tolist()}))\n"
  )
  keypoints, scores = np.asarray(got["keypoints"]), np.asarray(got["scores"])
  assert got["person_found"] == [found] and len(got["presence"]) == 1  # as the Predictor
  assert keypoints.shape == (1, 14 + 5, 2) and scores.shape == (1, 14 + 5)
  assert np.isfinite(keypoints).all() and np.isfinite(scores).all()
  # The same decoding in this process, from the settings file, gives the same answer.
  from unipose_jax import deploy

  s = json.loads((user / "runs" / "dark" / "unipose.json").read_text())
  assert s["dark_kernel"] == 13 and s["dark_sigma"] == 2.0
  image = cv2.cvtColor(cv2.imread(str(user / "photo.jpg")), cv2.COLOR_BGR2RGB)
  here, _ = deploy.predict(
    deploy.onnx_runner(user / "runs" / "dark" / "unipose.onnx"), [image], s["input_size"],
    decoding="dark", num_joints=s["num_joints"], sigma=s["sigma"], dark_kernel=s["dark_kernel"],
    dark_sigma=s["dark_sigma"],
  )  # fmt: skip
  np.testing.assert_allclose(keypoints, here, atol=1e-5)


def test_the_installed_command_works_from_any_folder(tmp_path):
  """pip installs ``unipose-jax`` (pyproject's [project.scripts]): from a folder with no
  checkout, without PYTHONPATH, it parses flags, loads a copy of configs/ given by path
  (whose files import ``configs.default``) and answers in one line."""
  python = fresh_env_with_the_wheel(tmp_path)
  command = os.path.join(os.path.dirname(python), "unipose-jax")
  assert os.access(command, os.X_OK), "pip did not install the unipose-jax command"
  user = tmp_path / "user"
  shutil.copytree(
    REPO_ROOT / "configs", user / "configs", ignore=shutil.ignore_patterns("__pycache__")
  )
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"

  def run(*args):
    return subprocess.run([command, *args], cwd=user, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip

  r = run("--help")
  assert "unipose-jax --mode=train" in r.stdout, r.stdout + r.stderr  # absl exits 1 after --help
  r = run("--mode=eval", "--config=configs/smoke.py", "--workdir=runs/none")
  assert r.returncode == 1, r.stdout + r.stderr
  assert r.stderr.strip() == (
    "error: no checkpoint in runs/none/checkpoints: train first "
    "(unipose-jax --mode=train --workdir=runs/none)"
  )
  r = run("--mode=eval", "--config=configs/nope.py", "--workdir=runs/none")
  assert r.returncode == 2 and "no such config file: configs/nope.py" in r.stderr, r.stderr
  assert not (user / "runs").exists()
