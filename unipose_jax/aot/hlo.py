"""Facts read from a compiled program's optimised HLO text (``Compiled.as_text()``).

* :func:`collectives`: collective ops per step by kind (all-reduce, all-gather, ...), with
  the bytes of their buffers and the size of their device groups;
* :func:`convolutions`: convolutions by lowering (an XLA ``convolution`` op, as on TPU, or
  the cuDNN custom call it became on GPU) and by operand dtype;
* :func:`kernel_io_bytes`: bytes read and written by the top-level ops of the entry
  computation (each fusion, custom call or copy reads its operands from and writes its
  result to device memory): the step's HBM traffic, counted the same way on every platform
  (a GPU's compiled cost analysis leaves out cuDNN calls).

Only the text is read; one instruction per line, ``%name = shape opcode(operands), ...``.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

_INSTRUCTION = re.compile(
  r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>.+?)\s(?P<op>[a-z][\w\-]*)\((?P<args>.*)$"
)
_ARRAY = re.compile(r"\b(?P<dtype>pred|[subf]\d+|bf16|f8e\w+|c64|c128|token)\[(?P<dims>[\d,]*)\]")
_BYTES = {"pred": 1, "bf16": 2, "c64": 8, "c128": 16, "token": 0}
COLLECTIVES = (
  "all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
  "collective-broadcast", "ragged-all-to-all",
)  # fmt: skip
#: Ops that move no data of their own (views, tuples, the second half of async pairs).
_FREE = (
  "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
  "partition-id", "replica-id", "iota",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Instruction:
  name: str
  shape: str
  op: str
  args: str  # operands and attributes, the rest of the line

  @property
  def operands(self) -> list[str]:
    """Names of the operands (``%a, %b`` before the first ``), attr=``)."""
    head = self.args.split("), ")[0]
    return re.findall(r"%([\w.\-]+)", head)

  def attribute(self, key: str) -> str | None:
    m = re.search(rf"\b{key}=(\"[^\"]*\"|\{{[^}}]*\}}|[^,\s]+)", self.args)
    return m.group(1).strip('"') if m else None


def arrays(shape: str) -> list[tuple[str, int]]:
  """``(dtype, bytes)`` of each array in a (tuple) shape string."""
  out = []
  for m in _ARRAY.finditer(shape):
    dtype = m.group("dtype")
    size = _BYTES.get(dtype) or max(1, int(re.sub(r"\D", "", dtype) or 8) // 8)
    dims = [int(d) for d in m.group("dims").split(",") if d]
    out.append((dtype, size * math.prod(dims)))
  return out


def shape_bytes(shape: str) -> int:
  return sum(b for _, b in arrays(shape))


def parse(text: str) -> tuple[dict[str, Instruction], list[Instruction]]:
  """``({name: instruction} over the module, [instructions of the ENTRY computation])``."""
  by_name: dict[str, Instruction] = {}
  entry: list[Instruction] = []
  in_entry = False
  for line in text.splitlines():
    if line.startswith("ENTRY"):
      in_entry = True
      continue
    if in_entry and line.startswith("}"):
      in_entry = False
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    inst = Instruction(m.group("name"), m.group("shape"), m.group("op"), m.group("args"))
    by_name[inst.name] = inst
    if in_entry:
      entry.append(inst)
  return by_name, entry


def group_size(inst: Instruction, num_devices: int) -> int:
  """Devices in each replica group of a collective (all devices when not given)."""
  groups = inst.attribute("replica_groups")
  if groups and groups.startswith("{{"):
    first = groups[2:].split("}")[0]
    return len([x for x in first.split(",") if x.strip()])
  iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", inst.args)
  if iota:
    return int(iota.group(2))
  mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", inst.args)
  if mesh:
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", mesh.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", mesh.group(2)) if a in sizes)
  if inst.op.startswith("collective-permute"):
    return 2
  return num_devices


def _collective_kind(op: str) -> str | None:
  base = op.removesuffix("-start")
  return base if base in COLLECTIVES else None


def collectives(text: str, num_devices: int) -> dict[str, dict[str, float]]:
  """``{kind: {"count", "bytes", "wire_bytes", "by_dtype"}}`` per step and device.

  ``bytes``: the buffer each op reduces or gathers (for all-reduce its operands; for
  all-gather its result; for reduce-scatter its operand); ``wire_bytes``: what one device
  sends in a ring algorithm over its group of n: 2(n-1)/n x bytes for all-reduce,
  (n-1)/n x bytes for all-gather, reduce-scatter and all-to-all, bytes for a permute.
  """
  by_name, _ = parse(text)
  out: dict[str, dict[str, float]] = {}
  for inst in by_name.values():
    kind = _collective_kind(inst.op)
    if kind is None:
      continue
    if kind == "reduce-scatter":
      size = sum(shape_bytes(by_name[o].shape) for o in inst.operands if o in by_name)
    elif inst.op.endswith("-start") and kind != "all-reduce":
      size = max((b for _, b in arrays(inst.shape)), default=0)  # (operand, result, ...)
    else:
      size = shape_bytes(inst.shape)
    n = max(group_size(inst, num_devices), 1)
    factor = {"all-reduce": 2 * (n - 1) / n, "collective-permute": 1.0}.get(kind, (n - 1) / n)
    entry = out.setdefault(kind, {"count": 0, "bytes": 0, "wire_bytes": 0.0, "by_dtype": {}})
    entry["count"] += 1
    entry["bytes"] += size
    entry["wire_bytes"] += factor * size
    dtypes = {dt for dt, _ in arrays(inst.shape)}
    key = dtypes.pop() if len(dtypes) == 1 else "mixed"
    entry["by_dtype"][key] = entry["by_dtype"].get(key, 0) + size
  return out


def _conv_lowering(inst: Instruction) -> str | None:
  if inst.op == "convolution":
    return "convolution (XLA op)"
  if inst.op == "custom-call":
    target = inst.attribute("custom_call_target") or ""
    if "conv" in target.lower():
      return target
  return None


def convolutions(text: str) -> dict[str, object]:
  """``{"by_lowering": {lowering: count}, "by_dtype": {dtype: count}, "float32": [op names]}``.

  The dtype of a convolution is that of its input operand; ``float32`` lists the
  ``op_name`` metadata of every float32 convolution (a finding in a bfloat16 config).
  Matrix products that XLA emitted as convolutions (``op_name`` of a ``dot_general``) are
  counted apart and left out of the dtypes.
  """
  by_name, _ = parse(text)
  lowering: collections.Counter = collections.Counter()
  dtypes: collections.Counter = collections.Counter()
  f32: list[str] = []
  for inst in by_name.values():
    kind = _conv_lowering(inst)
    if kind is None:
      continue
    op_name = inst.attribute("op_name") or inst.name
    if "dot_general" in op_name:  # a matrix product XLA emitted as a convolution (TPU)
      lowering[f"{kind} from dot_general"] += 1
      continue
    lowering[kind] += 1
    first = inst.operands[0] if inst.operands else None
    found = arrays(by_name[first].shape) if first in by_name else arrays(inst.shape)
    dtype = found[0][0] if found else "?"
    dtypes[dtype] += 1
    if dtype == "f32":
      f32.append(op_name)
  return {"by_lowering": dict(lowering), "by_dtype": dict(dtypes), "float32": f32}


def kernel_io_bytes(text: str) -> int:
  """Bytes the entry computation's top-level ops read and write (see the module doc)."""
  by_name, entry = parse(text)
  total = 0
  for inst in entry:
    if inst.op in _FREE or inst.op.endswith("-done"):
      continue
    total += shape_bytes(inst.shape)
    total += sum(shape_bytes(by_name[o].shape) for o in inst.operands if o in by_name)
  return total
