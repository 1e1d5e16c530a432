"""``launch.py`` whose disk is full for checkpoint step ``$FULL_AT_STEP``: every write of orbax
into that step's temporary folder fails with ENOSPC, in its background threads, as a full
disk does. Run as ``python full_disk_launch.py <launch.py flags>`` (test_reliability)."""

import errno
import os
import sys

from etils import epath

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.argv[0] = os.path.join(REPO, "launch.py")

_path = type(epath.Path("/"))
_write_text = _path.write_text
_marker = f"/{os.environ['FULL_AT_STEP']}.orbax-checkpoint-tmp"


def _full_disk(self, *args, **kwargs):
  if _marker in str(self):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
  return _write_text(self, *args, **kwargs)


_path.write_text = _full_disk

import launch  # noqa: E402

launch.run()
