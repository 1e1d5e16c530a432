"""Named compile targets (GPU nodes, TPU slices) and the published figures of their chips.

Names: TPU slices by JAX's topology names (``v5e:2x2``, ``v5e:16x16``, ``v4:2x2x1``,
``v5p:4x8x8``, ``v6e:8x8``); GPU nodes as ``<gpu>x<count>`` (``h100x8``, ``a100x8``,
``h200x8``; 1 to 8 GPUs of one NVLink node). :func:`parse` turns a name into a
:class:`Target`; :func:`listed` is every name ``--target=list`` prints.

One table (:data:`CHIPS`) holds each chip's peak FLOP/s, HBM size and bandwidth and the
interconnect bandwidth one chip gets in an all-reduce, with their sources. The step-time
model (``estimate.py``) reads nothing else.
"""

from __future__ import annotations

import dataclasses
import re

GiB = 1024**3
MiB = 1024**2


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip's published figures (per chip; bandwidths in bytes/s).

  ``allreduce_bandwidth``: bytes/s one chip moves in one direction during a ring
  all-reduce (NVLink: the per-direction NVLink bandwidth; TPU: the pod's published
  all-reduce bandwidth divided by its chips, or half the bidirectional ICI bandwidth).
  ``collective_latency_s``: an ASSUMED fixed cost per collective on the step's critical
  path (launch and synchronisation); no vendor publishes it, see ``sources``.
  ``usable_fraction``: share of HBM a JAX program may use by default (GPU: JAX
  pre-allocates 75 % of device memory, ``XLA_PYTHON_CLIENT_MEM_FRACTION``; TPU: all of it,
  and the TPU compiler itself refuses a program that does not fit).
  """

  key: str
  name: str
  platform: str  # "tpu" | "cuda"
  hbm_bytes: int
  hbm_bandwidth: float
  peak_flops: dict[str, float]  # by compute dtype (dense)
  allreduce_bandwidth: float
  collective_latency_s: float
  usable_fraction: float
  sources: tuple[str, ...]
  spec_file: str = ""  # GPU: GpuTargetConfigProto text under unipose_jax/aot/specs/
  topology_kwargs: tuple[tuple[str, str], ...] = ()  # TPU: extra get_topology_desc arguments


_NV_LATENCY = (
  "collective_latency_s 10 us: an assumption of the order of NCCL's small-message "
  "all-reduce time inside one NVLink node (nccl-tests), not a vendor figure"
)
_TPU_LATENCY = (
  "collective_latency_s 5 us: an assumption (a few ICI hops of ~1 us plus "
  "synchronisation), not a vendor figure"
)

CHIPS: dict[str, Chip] = {
  "h100": Chip(
    "h100",
    "NVIDIA H100 SXM5 80GB",
    "cuda",
    81559 * MiB,
    3.35e12,
    {"bfloat16": 989e12, "float16": 989e12, "float32": 494e12},  # float32: TF32 tensor cores
    450e9,
    10e-6,
    0.75,
    (
      "NVIDIA H100 Tensor Core GPU datasheet (SXM5): 989 TFLOP/s dense BF16, 494 TF32, "
      "3.35 TB/s HBM3, NVLink 900 GB/s bidirectional (450 GB/s each way); 81559 MiB is what "
      "nvidia-smi reports for the 80 GB part",
      _NV_LATENCY,
    ),
    spec_file="h100_sxm_80gb.txtpb",
  ),  # fmt: skip
  "h200": Chip(
    "h200",
    "NVIDIA H200 SXM 141GB",
    "cuda",
    143771 * MiB,
    4.8e12,
    {"bfloat16": 989e12, "float16": 989e12, "float32": 494e12},
    450e9,
    10e-6,
    0.75,
    (
      "NVIDIA H200 Tensor Core GPU datasheet (SXM): 989 TFLOP/s dense BF16, 494 TF32, "
      "4.8 TB/s HBM3e, NVLink 900 GB/s bidirectional; 143771 MiB measured by nvidia-smi in "
      "results/gpu_h200_2026-12-04/env.txt",
      _NV_LATENCY,
    ),
    spec_file="h200_sxm_141gb.txtpb",
  ),  # fmt: skip
  "a100": Chip(
    "a100",
    "NVIDIA A100 SXM4 80GB",
    "cuda",
    81920 * MiB,
    2.039e12,
    {"bfloat16": 312e12, "float16": 312e12, "float32": 156e12},  # float32: TF32
    300e9,
    10e-6,
    0.75,
    (
      "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): 312 TFLOP/s dense BF16, 156 TF32, "
      "2,039 GB/s HBM2e, NVLink 600 GB/s bidirectional (300 GB/s each way)",
      _NV_LATENCY,
    ),
    spec_file="a100_sxm_80gb.txtpb",
  ),  # fmt: skip
  "v4": Chip(
    "v4",
    "TPU v4",
    "tpu",
    32 * GiB,
    1.2e12,
    {"bfloat16": 275e12, "float32": 275e12 / 4},
    1.1e15 / 4096,
    5e-6,
    1.0,
    (
      "cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16 per chip, HBM2 32 GiB at 1200 GB/s, "
      "all-reduce bandwidth 1.1 PB/s per 4096-chip pod (268.6 GB/s per chip); float32 "
      "matmuls taken as 4 bf16 passes (an assumption)",
      _TPU_LATENCY,
    ),
    topology_kwargs=(("chip_config_name", "megacore"),),
  ),  # fmt: skip
  "v5e": Chip(
    "v5e",
    "TPU v5e",
    "tpu",
    16 * GiB,
    819e9,
    {"bfloat16": 197e12, "float32": 197e12 / 4},
    51.2e12 / 256,
    5e-6,
    1.0,
    (
      "cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16 per chip, 16 GiB HBM2 at 819 GB/s, "
      "ICI 1600 Gbps per chip, all-reduce bandwidth 51.2 TB/s per 256-chip pod (200 GB/s "
      "per chip)",
      _TPU_LATENCY,
    ),
  ),  # fmt: skip
  "v5p": Chip(
    "v5p",
    "TPU v5p",
    "tpu",
    95 * GiB,
    2765e9,
    {"bfloat16": 459e12, "float32": 459e12 / 4},
    600e9,
    5e-6,
    1.0,
    (
      "cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16 per chip, 95 GiB HBM2e at "
      "2765 GB/s, bidirectional ICI 1200 GB/s per chip (600 GB/s each way)",
      _TPU_LATENCY,
    ),
  ),  # fmt: skip
  "v6e": Chip(
    "v6e",
    "TPU v6e (Trillium)",
    "tpu",
    32 * GiB,
    1638e9,
    {"bfloat16": 918e12, "float32": 918e12 / 4},
    102.4e12 / 256,
    5e-6,
    1.0,
    (
      "cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16 per chip, 32 GB HBM at 1638 GB/s, "
      "all-reduce bandwidth 102.4 TB/s per 256-chip pod (400 GB/s per chip)",
      _TPU_LATENCY,
    ),
  ),  # fmt: skip
}

#: The slice shapes listed for each TPU family, 4 to 256 chips (JAX topology names).
TPU_SHAPES: dict[str, tuple[str, ...]] = {
  "v4": ("2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8"),
  "v5p": ("2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8"),
  "v5e": ("2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16"),
  "v6e": ("2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16"),
}
#: 2D-torus families put 8 chips on the single host of a 2x4 slice (v5litepod-8, v6e-8);
#: larger slices have 4 chips per host, as JAX's topology names give by default.
_SINGLE_HOST_8 = ("v5e", "v6e")
GPU_COUNTS = (1, 2, 4, 8)
GPU_LISTED = ("h100x8", "a100x8", "h200x8")


@dataclasses.dataclass(frozen=True)
class Target:
  """A named compile target: ``chip`` x ``num_chips`` in the shape ``topology``."""

  name: str
  chip: Chip
  topology: str  # TPU: "2x2", "4x8x8"; GPU: "1x1x8" (slices x hosts x devices per host)
  num_chips: int

  @property
  def platform(self) -> str:
    return self.chip.platform

  def topology_kwargs(self) -> dict[str, object]:
    """Extra arguments of ``jax.experimental.topologies.get_topology_desc`` (TPU)."""
    kw: dict[str, object] = dict(self.chip.topology_kwargs)
    if self.chip.key in _SINGLE_HOST_8 and self.topology == "2x4":
      kw["chips_per_host_bounds"] = (2, 4, 1)
    return kw


class UnknownTargetError(ValueError):
  """A ``--target`` name that is not a listed GPU node or TPU slice."""


def _product(shape: str) -> int:
  n = 1
  for part in shape.split("x"):
    n *= int(part)
  return n


def parse(name: str) -> Target:
  """The :class:`Target` of ``name``; raises :class:`UnknownTargetError` naming the choices."""
  text = name.strip().lower()
  tpu = re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})", text)
  if tpu and tpu.group(2) in TPU_SHAPES[tpu.group(1)]:
    family, shape = tpu.groups()
    return Target(f"{family}:{shape}", CHIPS[family], shape, _product(shape))
  gpu = re.fullmatch(r"(h100|h200|a100)x(\d+)", text)
  if gpu and int(gpu.group(2)) in GPU_COUNTS:
    count = int(gpu.group(2))
    return Target(f"{gpu.group(1)}x{count}", CHIPS[gpu.group(1)], f"1x1x{count}", count)
  raise UnknownTargetError(
    f"unknown --target {name!r}: expected a GPU node <gpu>x<count> (gpu h100, h200 or a100; "
    f"count {', '.join(map(str, GPU_COUNTS))}) or a TPU slice such as "
    f"{', '.join(f'{f}:{s[0]}' for f, s in TPU_SHAPES.items())}; --target=list prints them all"
  )


def listed() -> list[Target]:
  """Every target ``--target=list`` prints: the 8-GPU nodes, then each TPU family's slices."""
  names = list(GPU_LISTED) + [f"{f}:{s}" for f, shapes in TPU_SHAPES.items() for s in shapes]
  return [parse(n) for n in names]


def describe(target: Target) -> str:
  """One line of ``--target=list``."""
  c = target.chip
  return (
    f"{target.name:12s} {target.num_chips:4d} x {c.name:22s} "
    f"{c.hbm_bytes / GiB:6.1f} GiB HBM, {c.peak_flops['bfloat16'] / 1e12:5.0f} TFLOP/s bf16"
  )
