"""The repository's entry to the command line: ``python launch.py ...`` in a checkout is
the installed ``unipose-jax ...`` (:mod:`unipose_jax.cli`, whose docstring lists the modes);
it also works without the package installed, from the repository root."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `unipose_jax`, `configs`

from unipose_jax.cli import run, split_inputs  # noqa: E402, F401  (split_inputs: tests)

if __name__ == "__main__":
  run()
