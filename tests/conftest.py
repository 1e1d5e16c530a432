"""Test set-up shared by the whole suite.

Eight fake CPU devices are configured before JAX is imported anywhere, so that
data-parallel code runs as it would on an 8-accelerator host.
"""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import contextlib  # noqa: E402
import fcntl  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# Tests build the same small networks many times (each training run, each device
# count): a persistent compilation cache, private to this test session, compiles
# each distinct program once.
# The cache is shared by the xdist workers of one run and, through JAX's own environment
# variables, by the launch.py subprocesses the tests start (they compile the same programs).
_run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_cache = os.environ.get("UNIPOSE_TEST_JAX_CACHE") or (
  os.path.join(tempfile.gettempdir(), f"unipose_jax_cache_{_run_id}")
  if _run_id
  else tempfile.mkdtemp(prefix="jax_cache_")
)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))  # `configs` is a top-level package beside `unipose_jax`


LSP_ARCHIVES = ("lsp_dataset.zip", "lspet_dataset.zip")


def lsp_archive_dirs(root: pathlib.Path = REPO_ROOT, environ=os.environ) -> list[pathlib.Path]:
  """Where the real-data tests look for the LSP archives, in order: $UNIPOSE_LSP_DIR alone
  when set; otherwise ``<root>/data`` (where README puts them), then ``<root>/../shared/data``."""
  env = environ.get("UNIPOSE_LSP_DIR")
  return [pathlib.Path(env)] if env else [root / "data", root.parent / "shared" / "data"]


def lsp_archive_dir(root: pathlib.Path = REPO_ROOT, environ=os.environ) -> pathlib.Path | None:
  """The first of :func:`lsp_archive_dirs` holding both :data:`LSP_ARCHIVES`, or None."""
  for folder in lsp_archive_dirs(root, environ):
    if all((folder / name).is_file() for name in LSP_ARCHIVES):
      return folder
  return None


@pytest.fixture(scope="session")
def real_lsp_dir() -> pathlib.Path:
  """The folder of the real LSP archives; skips the test (with the reason) when absent."""
  folder = lsp_archive_dir()
  if folder is None:
    looked = ", ".join(str(f) for f in lsp_archive_dirs())
    pytest.skip(
      f"real LSP archives ({', '.join(LSP_ARCHIVES)}) not found in {looked} (set UNIPOSE_LSP_DIR)"
    )
  return folder


def tiny_network(config, input_size: int = 32):
  """``config`` (the smoke config or a copy) with the suite's tiny UniPose: widths 8/16/8/16,
  sigma 1.5 heatmap pixels, ``input_size`` square inputs. Returns the config."""
  config.data.input_size = input_size
  config.model.backbone_width = 8
  config.model.wasp_features = 16
  config.model.low_level_features = 8
  config.model.decoder_features = 16
  config.codec.sigma = 1.5
  return config


# ----------------------------------------------------------------------------- shared runs

SMALL = "synthetic/small"  # 64x64 images, 128 train / 32 test


@contextlib.contextmanager
def once_per_session(tmp_path_factory, name):
  """A folder shared by the whole test session, ``(folder, True)`` for whoever must fill it.

  Under pytest-xdist the workers share one base temporary folder: the first worker to
  take the lock fills it, the others wait and then read what it wrote.
  """
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  root = pathlib.Path(base) / name
  with open(f"{root}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      done = root / "done"
      fill = not done.exists()
      if fill:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
      yield root, fill
      if fill:
        done.touch()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def launch(*args, timeout=300, **popen):
  """``launch.py *args`` in the repository root with 2 fake devices: a finished
  ``CompletedProcess`` (text), or with ``popen`` keywords a running ``Popen``."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONUNBUFFERED="1")
  cmd = [sys.executable, str(REPO_ROOT / "launch.py"), *args]
  if popen:
    return subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, text=True, **popen)
  return subprocess.run(
    cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
  )


def small_flags(data_dir, workdir, steps):
  """The smoke config on the small synthetic set at 32 px, logging every step; no
  person-presence calibration at the end (``test_presence`` and the shared run test it)."""
  return [
    "--config=configs/smoke.py",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    f"--config.data.train_sources=('{SMALL}',)",
    f"--config.data.eval_source={SMALL}",
    "--config.data.input_size=32",
    "--config.batch_size=4",
    "--config.eval_batch_size=8",
    f"--config.num_train_steps={steps}",
    "--config.log_every=1",
    "--config.checkpoint_every=1000",
    "--config.calibrate_presence=False",  # the runs that need it (the shared one) say so
  ]


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory) -> str:
  """The small synthetic set, prepared once per test session (read-only)."""
  from unipose_jax import datasets

  with once_per_session(tmp_path_factory, "small_tfds") as (root, fill):
    if fill:
      datasets.prepare([SMALL], manual_dir=None, data_dir=str(root), log=lambda *a, **k: None)
  return str(root)


#: The shared run's settings besides small_flags: a box head, DARK's kernel size left at
#: 0 ("the default", resolved when saved and exported), checkpoints at steps 2 and 4.
TRAINED_RUN_FLAGS = (
  "--config.model.box_head=True",
  "--config.codec.dark_kernel=0",
  "--config.checkpoint_every=2",
  "--config.calibrate_presence=True",  # prediction and export tests read its calibration
)
TRAINED_RUN_STEPS = 4


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> pathlib.Path:
  """A finished tiny training run, trained once per test session by ``launch.py
  --mode=train`` (:data:`TRAINED_RUN_FLAGS`, 4 steps, final evaluation) on a data folder
  that held nothing (the synthetic set is built on first use). Its console output is in
  ``<run>/../train.log``.

  Shared by the test modules and xdist workers: never write into it; copy it first
  (:func:`copy_of`).
  """
  with once_per_session(tmp_path_factory, "trained_run") as (root, fill):
    workdir = root / "run"
    if fill:
      flags = small_flags(str(root / "fresh_tfds"), workdir, TRAINED_RUN_STEPS)
      r = launch("--mode=train", *flags, *TRAINED_RUN_FLAGS)
      (root / "train.log").write_text(r.stdout + r.stderr)
      assert r.returncode == 0, r.stdout + r.stderr
  return workdir


def copy_of(run: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
  """A private copy of a shared run folder (checkpoints, config, logs) at ``target``."""
  shutil.copytree(run, target)
  return target


# ----------------------------------------------------------------------------- faults


@contextlib.contextmanager
def read_only(folder):
  """``folder`` (and what it holds) read-only for this process and its children; yields
  how: ``"chmod"`` (not root), or as root, where chmod stops nothing, a read-only bind
  mount of the folder onto itself. Skips the test when root may not mount."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  if os.geteuid() != 0:
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
    for p in modes:
      p.chmod(0o555)
    try:
      yield "chmod"
    finally:
      for p, mode in modes.items():
        p.chmod(mode)
    return
  steps = (["mount", "--bind", str(folder), str(folder)],
           ["mount", "-o", "remount,bind,ro", str(folder)])  # fmt: skip
  for i, cmd in enumerate(steps):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
      if i:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
      pytest.skip(f"running as root, and a read-only bind mount failed: {r.stderr.strip()}")
  try:
    yield "read-only bind mount"
  finally:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=True)


def no_space_left(path: str = ""):
  """An ``OSError`` ENOSPC, as a full disk raises it (no file name: a write's error)."""
  import errno

  return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
