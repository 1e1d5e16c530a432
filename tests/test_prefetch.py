"""distributed.prefetch_to_mesh and distributed.any_process.

The suite runs on 8 fake CPU devices (tests/conftest.py sets
``--xla_force_host_platform_device_count=8`` before JAX is imported).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT

from unipose_jax import distributed


class CountingIterator:
  """``n`` batches of 8 (batch ``i`` has ``image`` filled with ``i``); a state that counts
  the batches handed out, and records how far ahead the consumer has pulled."""

  def __init__(self, n: int, batch: int = 8):
    self.n, self.batch, self.pos = n, batch, 0

  def __iter__(self):
    return self

  def __next__(self):
    if self.pos >= self.n:
      raise StopIteration
    i, self.pos = self.pos, self.pos + 1
    return {
      "image": np.full((self.batch, 4, 4, 3), i, np.uint8),
      "keypoints": np.arange(self.batch * 14 * 2, dtype=np.float32).reshape(self.batch, 14, 2)
      + 1000 * i,
      "weights": np.ones((self.batch, 14), np.float32),
      "image_id": np.arange(self.batch, dtype=np.int32) + 100 * i,
    }

  def get_state(self):
    return {"pos": self.pos}

  def set_state(self, state):
    self.pos = state["pos"]


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8
  return distributed.data_mesh()


def test_batches_come_in_source_order_with_equal_values(mesh):
  expected = list(CountingIterator(5))
  got = list(distributed.prefetch_to_mesh(CountingIterator(5), mesh, size=2))
  assert len(got) == 5
  for want, have in zip(expected, got):
    assert sorted(have) == sorted(want)
    for k in want:
      np.testing.assert_array_equal(np.asarray(have[k]), want[k])
      assert have[k].dtype == want[k].dtype  # uint8 images stay uint8 on the device


def test_exhaustion_after_exactly_the_source_batches(mesh):
  it = distributed.prefetch_to_mesh(CountingIterator(5), mesh, size=2)
  for i in range(5):
    assert int(np.asarray(next(it)["image"])[0, 0, 0, 0]) == i
  with pytest.raises(StopIteration):
    next(it)
  with pytest.raises(StopIteration):
    next(it)


def test_keeps_size_batches_ahead(mesh):
  inner = CountingIterator(10)
  it = distributed.prefetch_to_mesh(inner, mesh, size=2)
  assert inner.pos == 0  # nothing pulled before the first next()
  next(it)
  assert inner.pos == 3  # batch 0 returned, batches 1 and 2 in flight
  next(it)
  assert inner.pos == 4
  it3 = distributed.prefetch_to_mesh(CountingIterator(10), mesh, size=3)
  next(it3)
  assert it3._iterator.pos == 4  # pylint: disable=protected-access


@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_get_state_is_that_of_the_last_batch_returned(mesh, k):
  it = distributed.prefetch_to_mesh(CountingIterator(5), mesh, size=2)
  for _ in range(k):
    next(it)
  assert it.get_state() == {"pos": k}  # not the inner iterator's {"pos": k + 2}


def test_set_state_resumes_with_the_next_batch(mesh):
  it = distributed.prefetch_to_mesh(CountingIterator(6), mesh, size=2)
  next(it), next(it)
  state = it.get_state()
  rest = [int(np.asarray(b["image"])[0, 0, 0, 0]) for b in it]
  resumed = distributed.prefetch_to_mesh(CountingIterator(6), mesh, size=2)
  resumed.set_state(state)
  assert [int(np.asarray(b["image"])[0, 0, 0, 0]) for b in resumed] == rest == [2, 3, 4, 5]


def test_batches_are_placed_on_the_batch_sharding(mesh):
  batch = next(distributed.prefetch_to_mesh(CountingIterator(3), mesh, size=2))
  want = distributed.batch_sharded(mesh)
  for k, x in batch.items():
    assert x.sharding.is_equivalent_to(want, x.ndim), k
    assert x.sharding == want
    # one row of the global batch of 8 on each of the 8 devices
    assert len(x.addressable_shards) == 8
    assert {s.data.shape[0] for s in x.addressable_shards} == {1}


def test_keys_select_the_arrays(mesh):
  batch = next(distributed.prefetch_to_mesh(CountingIterator(2), mesh, keys=("weights", "image")))
  assert sorted(batch) == ["image", "weights"]
  with pytest.raises(KeyError, match=r"lacks \['valid'\].*asked for keys \['image', 'valid'\]"):
    next(distributed.prefetch_to_mesh(CountingIterator(2), mesh, keys=("image", "valid")))


def test_bad_size_is_refused(mesh):
  with pytest.raises(ValueError, match="prefetch size must be >= 1, got 0"):
    distributed.prefetch_to_mesh(CountingIterator(2), mesh, size=0)


def test_works_with_a_grain_iterator_and_the_pmap_split(mesh):
  """The real inner iterators: grain's (train's data) through train's pmap reshaping."""
  grain = pytest.importorskip("grain")
  ds = grain.MapDataset.range(40).map(lambda i: {"x": np.full((3,), i, np.int32)}).batch(8)
  inner = iter(ds.to_iter_dataset())

  class Split:  # train._Split: (B, ...) -> (n, B / n, ...)
    def __init__(self, it, n):
      self.it, self.n = it, n

    def __next__(self):
      b = next(self.it)
      return {k: np.reshape(v, (self.n, -1) + v.shape[1:]) for k, v in b.items()}

    def get_state(self):
      return self.it.get_state()

    def set_state(self, s):
      self.it.set_state(s)

  it = distributed.prefetch_to_mesh(Split(inner, 8), mesh, size=2)
  first = next(it)
  assert first["x"].shape == (8, 1, 3)
  state = it.get_state()
  rest = [np.asarray(b["x"])[:, 0, 0].tolist() for b in it]
  assert rest == [list(range(8 * j, 8 * j + 8)) for j in range(1, 5)]
  again = iter(ds.to_iter_dataset())
  again.set_state(state)
  assert next(again)["x"][:, 0].tolist() == list(range(8, 16))


@pytest.mark.parametrize("flag", [True, False])
def test_any_process_single_process(flag):
  assert jax.process_count() == 1
  assert distributed.any_process(flag) is flag
  calls = []
  assert distributed.any_process(lambda: calls.append(1) or flag) is flag
  assert calls == [1]


_TWO_PROCESS = textwrap.dedent(
  """
  import sys
  import jax
  from unipose_jax import distributed
  port, pid = sys.argv[1], int(sys.argv[2])
  distributed.initialize(f"127.0.0.1:{port}", 2, pid)
  print("RESULT", distributed.any_process(pid == 1), distributed.any_process(lambda: False),
        flush=True)
  """
)


@pytest.mark.slow
def test_any_process_across_two_processes():
  """Process 1 alone is signalled: both processes see True; nobody: both see False."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", _TWO_PROCESS, str(port), str(pid)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )  # fmt: skip
    for pid in (0, 1)
  ]
  try:
    outs = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
    assert "RESULT True False" in out, out
