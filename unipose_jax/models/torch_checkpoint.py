"""Read a PyTorch checkpoint (``.pth``, ``.pth.tar``) into a flat state dict, whatever its form.

``read_torch_state_dict(source)`` returns ``(state, description)``: ``state`` maps
PyTorch names (``"backbone.layer1.0.conv1.weight"``) to the tensors or arrays of
the checkpoint, unconverted; ``description`` says where they came from and in which
form, for messages. Forms recognised:

* a state dict: a mapping ``name -> tensor`` (numpy arrays work too);
* a dict wrapping one under ``'state_dict'`` (as the original UniPose saves its
  checkpoints), ``'model_state_dict'``, ``'model'`` or ``'net'``, nested or not;
* a whole pickled module, ``torch.save(model)``, bare or inside such a wrapper;
  its ``_parameters``, persistent ``_buffers`` and ``_modules`` are walked exactly
  as ``nn.Module.state_dict()`` would;
* any of these with DataParallel's ``module.`` prefix on every key (removed).

Safety. A path is first read with ``torch.load(weights_only=True)``, which runs no
code from the file. A whole pickled module names its classes (the original's
``model.unipose.unipose``, ``torch.nn.modules.conv.Conv2d``, ...), which that
load refuses, and which usually cannot be imported here anyway. Then every global
the file names that torch does not allow by default is replaced by an inert stub
class (nothing is imported), allowed for that one load, and the load is repeated,
still with ``weights_only=True``: tensors are rebuilt by torch's own reducers and
nothing from the file runs. The few files even this cannot read (whole modules in
the pre-1.6 non-zip format, pickle protocol 4 or newer) need ``allow_pickle=True``:
``torch.load(weights_only=False)`` with a pickle module whose ``find_class`` puts a
stub in place of any class whose module cannot be imported. Like every full
unpickling, that can run code from the file: use it only for files you trust.

torch is optional: it is imported only when a path is read.
"""

from __future__ import annotations

import math
import os
import pickle
import types
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

from unipose_jax.extras import MissingExtraError

#: Keys under which checkpoints commonly wrap their state dict, searched in this order.
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net")

_DATA_PARALLEL_PREFIX = "module."

#: Deepest module tree / wrapper nesting walked (ResNet-101 UniPose is 5 levels deep).
MAX_DEPTH = 64


def size_limits(variables: Mapping[str, Any]) -> tuple[int, int]:
  """``(largest entry, whole file)`` in bytes that a checkpoint of ``variables`` may declare.

  A tensor of the model stored as float64 is the largest a storage can honestly be; the
  whole file may hold four times the model in float64 (the weights plus an optimiser's
  state) and 64 MiB of pickled metadata. Checked before anything is read, so a small file
  that declares a huge zip entry is refused without the memory it asks for.
  """
  sizes = [
    math.prod(getattr(leaf, "shape", ()))
    for tree in variables.values()
    if isinstance(tree, Mapping)
    for leaf in _leaves(tree)
  ]
  largest, total = max(sizes, default=0) * 8, sum(sizes) * 8
  return largest + (1 << 20), 4 * total + (64 << 20)


def _leaves(tree: Mapping[str, Any]):
  for value in tree.values():
    if isinstance(value, Mapping):
      yield from _leaves(value)
    else:
      yield value


def _check_declared_sizes(path: str, limits: tuple[int, int]) -> None:
  """Refuses a file whose zip entries (or whose size, for the legacy format) are too big."""
  largest, total = limits
  mib = lambda n: f"{n / (1 << 20):.1f} MiB"
  if not zipfile.is_zipfile(path):
    size = os.path.getsize(path)
    if size > total:
      raise WeightImportError(
        f"{path!r} is {mib(size)}, more than a checkpoint of this model can be ({mib(total)})"
      )
    return
  try:
    with zipfile.ZipFile(path) as z:
      entries = [(i.filename, i.file_size) for i in z.infolist()]
  except (zipfile.BadZipFile, OSError) as e:
    raise WeightImportError(f"cannot read {path!r} as a torch.save file: {e}") from None
  name, biggest = max(entries, key=lambda e: e[1], default=("", 0))
  if biggest > largest:
    raise WeightImportError(
      f"{path!r} declares an entry {name!r} of {mib(biggest)}, larger than any tensor of this "
      f"model can be ({mib(largest)} as float64); refused before reading it"
    )
  declared = sum(size for _, size in entries)
  if declared > total:
    raise WeightImportError(
      f"{path!r} declares {mib(declared)} of data, more than a checkpoint of this model can "
      f"hold ({mib(total)}); refused before reading it"
    )


class WeightImportError(ValueError):
  """A weight file that cannot be read or does not fit the model; the message names the
  file and every fault (``launch.py`` prints it as one message)."""


class _Stub:
  """Stands in for a class of a pickled module that is not (or must not be) imported.

  Unpickling sets its ``__dict__`` from the pickled state (``_parameters``,
  ``_buffers``, ``_modules``, ...); nothing else happens.
  """

  _stub_of = "?"

  def __init__(self, *args: Any, **kwargs: Any) -> None:
    self._stub_args = (args, kwargs)

  def __repr__(self) -> str:
    return f"<stub of {self._stub_of}>"


_STUBS: dict[str, type] = {}


def _stub_class(full_name: str) -> type:
  """An inert class named like ``full_name`` (``"model.unipose.unipose"``), one per name."""
  if full_name not in _STUBS:
    module, _, qualname = full_name.rpartition(".")
    attrs = {"_stub_of": full_name, "__module__": module or "?", "__qualname__": qualname}
    _STUBS[full_name] = type(qualname or "stub", (_Stub,), attrs)
  return _STUBS[full_name]


class _StubbingUnpickler(pickle.Unpickler):
  """A full unpickler whose ``find_class`` stubs classes whose modules cannot be imported."""

  def find_class(self, module: str, name: str) -> Any:
    try:
      return super().find_class(module, name)
    except (ImportError, AttributeError):
      return _stub_class(f"{module}.{name}")


#: The ``pickle_module`` handed to ``torch.load`` for ``allow_pickle=True``.
_stubbing_pickle = types.ModuleType("unipose_jax_stubbing_pickle")
_stubbing_pickle.Unpickler = _StubbingUnpickler
_stubbing_pickle.load = lambda f, **kw: _StubbingUnpickler(f, **kw).load()
_stubbing_pickle.loads = pickle.loads
_stubbing_pickle.UnpicklingError = pickle.UnpicklingError


def _import_torch(path: str) -> Any:
  try:
    import torch
  except ImportError as e:
    raise MissingExtraError(
      f"reading the PyTorch checkpoint {path!r} needs torch, which is not installed; "
      "install it with `pip install unipose_jax[torch]` (or `pip install torch`), "
      "or pass a dict of numpy arrays instead of a path"
    ) from e
  return torch


def _short(error: BaseException) -> str:
  """The informative line of a (long) ``torch.load`` error."""
  text = str(error)
  marker = "WeightsUnpickler error:"
  if marker in text:  # torch's reason follows the marker, on the same line or the next
    text = text[text.index(marker) + len(marker) :]
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  boilerplate = ("Weights only load failed", "Check the documentation of torch.load")
  reasons = [ln for ln in lines if not ln.startswith(boilerplate)]
  return (reasons or lines or [type(error).__name__])[0]


def _torch_load(path: str, allow_pickle: bool, limits) -> tuple[Any, list[str]]:
  """``torch.load`` in the safest way that works; returns the object and notes on how."""
  torch = _import_torch(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"PyTorch checkpoint not found: {path!r}")
  if limits is not None:
    _check_declared_sizes(path, limits)
  try:
    return torch.load(path, map_location="cpu", weights_only=True), []
  except pickle.UnpicklingError as e:
    failure = _short(e)
  except Exception as e:  # not a torch.save file, truncated, ...
    raise WeightImportError(f"cannot read {path!r} as a torch.save file: {_short(e)}") from e
  try:
    unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
  except Exception:  # not a zip checkpoint: its globals cannot be listed without unpickling
    unsafe = []
  if unsafe:
    stubs = [(_stub_class(name), name) for name in unsafe]
    try:
      with torch.serialization.safe_globals(stubs):
        obj = torch.load(path, map_location="cpu", weights_only=True)
      own = [n for n in unsafe if not n.startswith("torch.")]
      n_torch = len(unsafe) - len(own)
      listed = ", ".join(own + ([f"{n_torch} torch classes"] if n_torch else []))
      return obj, [f"classes stubbed, nothing imported: {listed}"]
    except pickle.UnpicklingError as e:
      failure = _short(e)
  if not allow_pickle:
    raise WeightImportError(
      f"cannot read {path!r} with torch.load(weights_only=True), even with inert stubs for the "
      f"classes it names ({failure}); load it in PyTorch and save model.state_dict() with "
      "torch.save, or, if you trust the file, read it from Python with "
      "load_original_unipose(..., allow_pickle=True) (full unpickling, which can run code from "
      "the file; the command line never does that)"
    )
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
      obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_stubbing_pickle)
  except RecursionError:
    raise WeightImportError(f"cannot read {path!r}: its objects are nested too deeply") from None
  except Exception as e:
    raise WeightImportError(f"cannot read {path!r} even by full unpickling: {_short(e)}") from e
  return obj, ["full unpickling (allow_pickle=True), unimportable classes stubbed"]


def _is_array(value: Any) -> bool:
  return hasattr(value, "shape") and hasattr(value, "dtype")


def _is_module(obj: Any) -> bool:
  d = getattr(obj, "__dict__", None)
  return isinstance(d, dict) and "_parameters" in d and "_modules" in d


def module_state_dict(module: Any, prefix: str = "") -> dict[str, Any]:
  """``module.state_dict()`` of a live, unpickled or stubbed ``nn.Module``, from its ``__dict__``.

  Parameters and persistent buffers that are not ``None``, depth first, named
  ``prefix + "a.b.name"`` as PyTorch names them. A module tree that contains itself, or
  is nested deeper than :data:`MAX_DEPTH`, is refused (a crafted file can hold either).
  """
  out: dict[str, Any] = {}
  stack = [(module, prefix, ())]  # (module, its prefix, ids of the modules above it)
  while stack:
    m, pre, above = stack.pop()
    if id(m) in above:
      raise WeightImportError(f"module tree is cyclic: {pre.rstrip('.')!r} contains itself")
    if len(above) >= MAX_DEPTH:
      raise WeightImportError(
        f"module tree is nested deeper than {MAX_DEPTH} levels at {pre[:80]!r}..."
      )
    d = vars(m)
    for name, p in (d.get("_parameters") or {}).items():
      if p is not None:
        out[pre + name] = p
    skip = d.get("_non_persistent_buffers_set") or set()
    for name, b in (d.get("_buffers") or {}).items():
      if b is not None and name not in skip:
        out[pre + name] = b
    children = []
    for name, child in (d.get("_modules") or {}).items():
      if child is None:
        continue
      if not _is_module(child):
        raise WeightImportError(
          f"submodule {pre + name!r} is {_a(type(child).__name__)}, not a module"
        )
      children.append((child, pre + name + ".", (*above, id(m))))
    stack.extend(reversed(children))  # depth first, in definition order
  return out


def _a(type_name: str) -> str:
  """``"a list"``, ``"an int"``: an article and the type name (``"an eval"``, not ``"a eval"``)."""
  return f"{'an' if type_name[:1].lower() in 'aeiou' else 'a'} {type_name}"


def _extract(obj: Any, where: str, notes: list[str], depth: int = 0) -> dict[str, Any]:
  if depth > MAX_DEPTH:
    raise WeightImportError(f"holds wrappers nested deeper than {MAX_DEPTH} levels")
  if _is_module(obj):
    cls = type(obj)
    notes.append(
      f"whole module {cls.__module__}.{cls.__qualname__}" + (f" under {where}" if where else "")
    )
    return module_state_dict(obj)
  if not isinstance(obj, Mapping):
    raise WeightImportError(
      f"holds {_a(type(obj).__name__)}{' at ' + where if where else ''}, "
      "not a state dict, a dict wrapping one, or a module"
    )
  for key in WRAPPER_KEYS:
    if key in obj and (isinstance(obj[key], Mapping) or _is_module(obj[key])):
      if not _is_module(obj[key]):
        notes.append(f"state dict under {where}[{key!r}]")
      return _extract(obj[key], f"{where}[{key!r}]", notes, depth + 1)
  bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not _is_array(v)]
  bad += [f"{k!r} (key of type {type(k).__name__})" for k in obj if not isinstance(k, str)]
  if bad:
    raise WeightImportError(
      f"holds a dict{' at ' + where if where else ''} that is neither a state dict nor wraps "
      f"one under {', '.join(repr(k) for k in WRAPPER_KEYS)}: entries that are not tensors: "
      + ", ".join(bad[:10])
      + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    )
  return dict(obj)


def read_torch_state_dict(
  source: Mapping[str, Any] | str | os.PathLike | Any,
  *,
  allow_pickle: bool = False,
  limits: tuple[int, int] | None = None,
) -> tuple[dict[str, Any], str]:
  """Flat state dict and a description of its source; see the module docstring for the forms.

  Args:
    source: a path to a ``torch.save`` file, or an object such a file holds: a
      state dict (torch tensors or numpy arrays), a wrapper dict, an ``nn.Module``.
    allow_pickle: for files that the two ``weights_only=True`` attempts cannot
      read, allow full unpickling (it can run code from the file: trusted files only).
    limits: ``(largest entry, whole file)`` in bytes (:func:`size_limits` of the target
      model's variables): a file declaring more is refused before it is read.

  Returns:
    ``(state, description)``: ``state`` maps names to the checkpoint's values as
    stored (torch tensors or arrays; the ``module.`` prefix removed); the
    description reads like ``"'x.pth' (state dict under ['state_dict'])"``.

  Raises:
    FileNotFoundError: no file at the path.
    ImportError: a path was given but torch is not installed.
    ValueError: the file holds no recognisable state dict, or cannot be read safely.
  """
  notes: list[str] = []
  if isinstance(source, Mapping) or _is_module(source):
    name, obj = (
      "the given state dict" if isinstance(source, Mapping) else "the given module",
      source,
    )
  else:
    path = os.fspath(source)
    name = repr(path)
    obj, notes = _torch_load(path, allow_pickle, limits)
  try:
    state = _extract(obj, "", notes)
  except ValueError as e:
    raise WeightImportError(f"{name} {e}") from None
  if state and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
    state = {k[len(_DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    notes.append(f"{_DATA_PARALLEL_PREFIX!r} prefix removed")
  return state, f"{name} ({'; '.join(notes)})" if notes else name
