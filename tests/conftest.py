"""Test set-up shared by the whole suite.

Eight fake CPU devices are configured before JAX is imported anywhere, so that
data-parallel code runs as it would on an 8-accelerator host.
"""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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


def lsp_archive_dir() -> pathlib.Path:
  """Folder holding lsp_dataset.zip / lspet_dataset.zip: $UNIPOSE_LSP_DIR or ../shared/data."""
  env = os.environ.get("UNIPOSE_LSP_DIR")
  return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_lsp_dir() -> pathlib.Path:
  """The folder of the real LSP archives; skips the test (with the reason) when absent."""
  folder = lsp_archive_dir()
  needed = [folder / "lsp_dataset.zip", folder / "lspet_dataset.zip"]
  missing = [str(p) for p in needed if not p.is_file()]
  if missing:
    pytest.skip(f"real LSP archives not found: {', '.join(missing)} (set UNIPOSE_LSP_DIR)")
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
