"""Small fixes that let our TFDS builders run without TensorFlow (and its extras).

* ``code_path``: TFDS 4.9.10 computes a builder's source path with
  ``isinstance(path, importlib_resources.abc.Traversable)`` for builders defined in a
  package, but only requires the ``importlib_resources`` backport on Python < 3.9,
  so on 3.11/3.12 every ``download_and_prepare`` of a packaged builder fails with
  ``ModuleNotFoundError: importlib_resources``. We return the module file instead
  (TFDS only uses it to look for an optional ``checksums.tsv`` beside the code).
* ``file_format``: our builders default to ArrayRecord (random access for grain,
  no TensorFlow needed to read it) instead of TFRecord.
"""

from __future__ import annotations

import inspect

from etils import epath
from tensorflow_datasets.core import utils as tfds_utils


class ArrayRecordBuilderMixin:
  """Mix into a ``tfds.core.GeneratorBasedBuilder`` subclass, before it in the bases."""

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:
    try:
      return epath.Path(inspect.getfile(cls))
    except (TypeError, OSError):
      return None

  def __init__(self, *, file_format: str | None = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)
