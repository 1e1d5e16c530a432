"""Test set-up shared by the whole suite.

Eight fake CPU devices are configured before JAX is imported anywhere, so that
data-parallel code runs as it would on an 8-accelerator host.
"""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


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
