"""Keypoint sets: what a run's ``K`` joints are, in one frozen description each.

A :class:`KeypointSet` owns every per-dataset fact about the joints: their names (index
``k`` of every ``(..., K, 2)`` array of a run is ``joint_names[k]``), the left/right pairs a
horizontal flip swaps, the limbs an overlay draws, the normaliser of each metric (LSP's
torso and neck-to-head segment, MPII's head box, the person box of Penn Action, COCO's OKS
sigmas) and the metric that picks a run's best checkpoint. "Right" and "left" are the
person's own.

Built in: :data:`LSP` (14), :data:`MPII` (16), :data:`COCO` (17), :data:`PENN_ACTION` (13).
A COCO-format dataset's set comes from its own file (:func:`from_coco_categories`); flip
pairs are derived from the names (:func:`flip_pairs_from_names`) whatever the spelling.
A run writes its resolved set into ``config.json`` (:meth:`KeypointSet.to_dict`) and reads
it back (:func:`from_dict`); a run saved before sets existed is :data:`LSP`.

This module sits at the bottom of the import graph with ``skeleton`` (the channel layout):
it imports nothing of the package.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: How PCK normalises distances: ``"torso"`` = the distance between two joints of the
#: annotation (LSP), ``"box"`` = the larger side of the person box (Penn Action).
PCK_NORMALISERS = ("torso", "box", "")
#: How PCKh normalises: ``"head_segment"`` = 1.0 x the distance between two joints (LSP:
#: neck to head top; LSP has no head box), ``"head_box"`` = 0.6 x the head box's diagonal
#: (MPII).
PCKH_NORMALISERS = ("head_segment", "head_box", "")


class KeypointSetError(ValueError):
  """A keypoint set that is inconsistent, or sets that cannot be combined."""


@dataclasses.dataclass(frozen=True)
class KeypointSet:
  """One keypoint set (see the module doc).

  Attributes:
    name: the set's name (``"lsp"``, ``"mpii"``, ``"coco"``, ``"penn_action"``, or a
      COCO-format dataset's own name).
    joint_names: ``K`` names, in the order of the dataset's arrays.
    flip_pairs: ``(a, b)`` index pairs swapped by a horizontal flip; empty = the set has
      no left/right pairs (no flip augmentation, no flip test).
    limbs: ``(a, b)`` index pairs drawn as bones.
    pck_normaliser: one of :data:`PCK_NORMALISERS`.
    torso: the two joints whose distance is the PCK normaliser when it is ``"torso"``.
    pckh_normaliser: one of :data:`PCKH_NORMALISERS`.
    head: the two joints of ``"head_segment"``.
    sigmas: OKS per-joint sigmas (COCO's are the keypoint's sigma, i.e. its published
      value / 10), or empty.
    best_metric: the metric key (without the decoder prefix) that picks a run's best
      checkpoint, higher is better: ``"pck@0.2"``, ``"pckh@0.5"`` or ``"AP"``.
    table_columns: the protocol's table: ``(column, joint indices)``, the column's value
      being the mean of its joints' values (MPII: Head, Shoulder, ..., Ankle).
    mean_excludes: joints left out of the protocol's mean (MPII: pelvis and thorax).
  """

  name: str
  joint_names: tuple[str, ...]
  flip_pairs: tuple[tuple[int, int], ...] = ()
  limbs: tuple[tuple[int, int], ...] = ()
  pck_normaliser: str = ""
  torso: tuple[int, int] | None = None
  pckh_normaliser: str = ""
  head: tuple[int, int] | None = None
  sigmas: tuple[float, ...] = ()
  best_metric: str = "pck@0.2"
  table_columns: tuple[tuple[str, tuple[int, ...]], ...] = ()
  mean_excludes: tuple[int, ...] = ()

  def __post_init__(self):
    k = len(self.joint_names)
    where = f"keypoint set {self.name!r}"
    if k == 0:
      raise KeypointSetError(f"{where}: no joint names")
    if len(set(self.joint_names)) != k:
      dup = sorted({n for n in self.joint_names if self.joint_names.count(n) > 1})
      raise KeypointSetError(f"{where}: repeated joint names {dup}")
    seen: set[int] = set()
    for field, pairs in (("flip_pairs", self.flip_pairs), ("limbs", self.limbs)):
      for pair in pairs:
        if len(pair) != 2 or not all(0 <= int(i) < k for i in pair) or pair[0] == pair[1]:
          raise KeypointSetError(
            f"{where}: {field} entry {tuple(pair)} is not two joints of 0..{k - 1}"
          )
    for a, b in self.flip_pairs:
      if a in seen or b in seen:
        raise KeypointSetError(f"{where}: joint {a if a in seen else b} is in two flip pairs")
      seen.update((a, b))
    if self.pck_normaliser not in PCK_NORMALISERS:
      raise KeypointSetError(
        f"{where}: pck_normaliser {self.pck_normaliser!r}, expected one of {PCK_NORMALISERS}"
      )
    if self.pckh_normaliser not in PCKH_NORMALISERS:
      raise KeypointSetError(
        f"{where}: pckh_normaliser {self.pckh_normaliser!r}, expected one of {PCKH_NORMALISERS}"
      )
    for field, pair, needed in (
      ("torso", self.torso, self.pck_normaliser == "torso"),
      ("head", self.head, self.pckh_normaliser == "head_segment"),
    ):
      if needed and pair is None:
        raise KeypointSetError(f"{where}: {field} joints are needed by its normaliser")
      if pair is not None and not (len(pair) == 2 and all(0 <= int(i) < k for i in pair)):
        raise KeypointSetError(f"{where}: {field} {tuple(pair)} is not two joints of 0..{k - 1}")
    if self.sigmas and len(self.sigmas) != k:
      raise KeypointSetError(f"{where}: {len(self.sigmas)} OKS sigmas for {k} joints")
    if self.sigmas and not all(float(s) > 0 for s in self.sigmas):
      raise KeypointSetError(f"{where}: OKS sigmas must be positive")
    for column, joints in self.table_columns:
      if not joints or not all(0 <= int(i) < k for i in joints):
        raise KeypointSetError(
          f"{where}: table column {column!r} has joints {joints} outside 0..{k - 1}"
        )

  # ----------------------------------------------------------------------- derived facts

  @property
  def num_joints(self) -> int:
    """``K``."""
    return len(self.joint_names)

  @property
  def has_flip(self) -> bool:
    """Whether a horizontal flip can relabel the joints (flip augmentation, flip test)."""
    return bool(self.flip_pairs)

  @property
  def flip_permutation(self) -> np.ndarray:
    """``(K,)`` int: ``keypoints[..., flip_permutation, :]`` relabels joints after a
    horizontal flip (the identity for joints without a partner)."""
    perm = np.arange(self.num_joints)
    for a, b in self.flip_pairs:
      perm[a], perm[b] = b, a
    perm.setflags(write=False)
    return perm

  def side(self, joint: int) -> str:
    """``"left"``, ``"right"`` or ``""`` (centre or unknown) for joint index ``joint``:
    from the flip pairs where the name says a side, else from the name alone."""
    return name_side(self.joint_names[joint])[0]

  def is_left(self, joint: int) -> bool:
    """Whether joint ``joint`` is on the person's left."""
    return self.side(joint) == "left"

  # ----------------------------------------------------------------------- storage

  def to_dict(self) -> dict[str, Any]:
    """Plain JSON-able form (lists), as ``config.json`` stores it."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      out[f.name] = _plain(value)
    return out

  def with_flip_pairs(self, pairs: Sequence[Sequence[int]]) -> KeypointSet:
    """This set with ``pairs`` as its flip pairs (a user's explicit flip map)."""
    return dataclasses.replace(self, flip_pairs=tuple((int(a), int(b)) for a, b in pairs))


def _plain(value):
  if isinstance(value, tuple | list):
    return [_plain(v) for v in value]
  return value


def _tuple_of_pairs(value) -> tuple[tuple[int, int], ...]:
  return tuple((int(a), int(b)) for a, b in value)


def from_dict(d: Mapping[str, Any], source: str = "config.json") -> KeypointSet:
  """The set stored by :meth:`KeypointSet.to_dict` (raises :class:`KeypointSetError`
  naming ``source`` for a malformed one)."""
  if not isinstance(d, Mapping):
    raise KeypointSetError(f"{source}: keypoint set must be a mapping, got {type(d).__name__}")
  known = {f.name for f in dataclasses.fields(KeypointSet)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise KeypointSetError(f"{source}: unknown keypoint set fields {unknown}")
  try:
    return KeypointSet(
      name=str(d["name"]),
      joint_names=tuple(str(n) for n in d["joint_names"]),
      flip_pairs=_tuple_of_pairs(d.get("flip_pairs", ())),
      limbs=_tuple_of_pairs(d.get("limbs", ())),
      pck_normaliser=str(d.get("pck_normaliser", "")),
      torso=tuple(int(i) for i in d["torso"]) if d.get("torso") is not None else None,
      pckh_normaliser=str(d.get("pckh_normaliser", "")),
      head=tuple(int(i) for i in d["head"]) if d.get("head") is not None else None,
      sigmas=tuple(float(s) for s in d.get("sigmas", ())),
      best_metric=str(d.get("best_metric", "pck@0.2")),
      table_columns=tuple(
        (str(c), tuple(int(i) for i in j)) for c, j in d.get("table_columns", ())
      ),
      mean_excludes=tuple(int(i) for i in d.get("mean_excludes", ())),
    )
  except KeypointSetError as e:
    raise KeypointSetError(f"{source}: {e}") from None
  except (KeyError, TypeError, ValueError) as e:
    raise KeypointSetError(f"{source}: malformed keypoint set ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------- names


_SIDE_WORDS = {"left": "left", "l": "left", "right": "right", "r": "right"}


def _tokens(name: str) -> list[str]:
  """Lower-case words of a joint name: split on non-alphanumerics and camelCase."""
  spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
  return [t for t in re.split(r"[^0-9a-zA-Z]+", spaced.lower()) if t]


def name_side(name: str) -> tuple[str, str]:
  """``(side, rest)`` of a joint name: ``side`` is ``"left"``, ``"right"`` or ``""``;
  ``rest`` is the name's other words joined by ``_``.

  The side is a word ``left``/``right``/``l``/``r`` anywhere in the name, in any case and
  with any separator: ``left_eye``, ``l_eye``, ``Left Eye``, ``eye_left``, ``leftEye``,
  ``L-Eye`` all give ``("left", "eye")``. A name with no side word, or with two, gives
  ``("", name's words)``.
  """
  words = _tokens(name)
  sides = [i for i, w in enumerate(words) if w in _SIDE_WORDS]
  if len(sides) != 1:
    # Glued prefixes (``lefteye``, ``rightknee``) once no word says a side.
    if not sides and len(words) == 1:
      for prefix in ("left", "right"):
        if words[0].startswith(prefix) and len(words[0]) > len(prefix):
          return prefix, words[0][len(prefix) :]
    return "", "_".join(words)
  i = sides[0]
  return _SIDE_WORDS[words[i]], "_".join(words[:i] + words[i + 1 :])


def flip_pairs_from_names(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
  """Left/right pairs of ``names``: joints whose names differ only by their side word
  (:func:`name_side`). Names with no side, or whose partner is missing, pair with none.
  Pairs are ``(left index, right index)`` sorted by the first joint of each."""
  by_rest: dict[str, dict[str, int]] = {}
  for k, name in enumerate(names):
    side, rest = name_side(name)
    if side:
      by_rest.setdefault(rest, {})
      if side in by_rest[rest]:
        return ()  # two joints claim the same side of one name: say nothing
      by_rest[rest][side] = k
  pairs = [tuple(sorted((d["left"], d["right"]))) for d in by_rest.values() if len(d) == 2]
  return tuple(sorted(pairs))


# ----------------------------------------------------------------------------- built-in sets

LSP = KeypointSet(
  name="lsp",
  joint_names=(
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "neck",
    "head_top",
  ),  # fmt: skip
  flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)),
  limbs=(
    (0, 1),
    (1, 2),
    (5, 4),
    (4, 3),
    (2, 3),
    (6, 7),
    (7, 8),
    (11, 10),
    (10, 9),
    (8, 9),
    (8, 12),
    (9, 12),
    (12, 13),
    (2, 8),
    (3, 9),
  ),  # fmt: skip
  pck_normaliser="torso",
  torso=(9, 2),  # left shoulder to right hip (LSP's person-centric PCK)
  pckh_normaliser="head_segment",
  head=(12, 13),  # neck to head top (LSP has no head box)
  best_metric="pck@0.2",
)

MPII = KeypointSet(
  name="mpii",
  joint_names=(
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
  ),  # fmt: skip
  flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
  limbs=(
    (0, 1),
    (1, 2),
    (2, 6),
    (5, 4),
    (4, 3),
    (3, 6),
    (6, 7),
    (7, 8),
    (8, 9),
    (10, 11),
    (11, 12),
    (12, 7),
    (15, 14),
    (14, 13),
    (13, 7),
  ),  # fmt: skip
  pckh_normaliser="head_box",
  best_metric="pckh@0.5",
  table_columns=(
    ("Head", (9,)),
    ("Shoulder", (12, 13)),
    ("Elbow", (11, 14)),
    ("Wrist", (10, 15)),
    ("Hip", (2, 3)),
    ("Knee", (1, 4)),
    ("Ankle", (0, 5)),
  ),  # fmt: skip
  mean_excludes=(6, 7),  # pelvis, thorax
)

#: COCO's published OKS sigmas (its keypoint sigmas x 10), in its joint order.
COCO_SIGMAS_X10 = (
  0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87,
  0.89, 0.89,
)  # fmt: skip

COCO = KeypointSet(
  name="coco",
  joint_names=(
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
  ),  # fmt: skip
  flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
  # COCO's own 1-based skeleton, made 0-based.
  limbs=(
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
  ),  # fmt: skip
  sigmas=tuple(s / 10 for s in COCO_SIGMAS_X10),
  best_metric="AP",
)

PENN_ACTION = KeypointSet(
  name="penn_action",
  joint_names=(
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
  ),  # fmt: skip
  flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)),
  limbs=(
    (0, 1),
    (0, 2),
    (1, 2),
    (1, 3),
    (3, 5),
    (2, 4),
    (4, 6),
    (1, 7),
    (2, 8),
    (7, 8),
    (7, 9),
    (9, 11),
    (8, 10),
    (10, 12),
  ),  # fmt: skip
  pck_normaliser="box",
  best_metric="pck@0.2",
  # The UniPose paper's Penn Action table.
  table_columns=(
    ("Head", (0,)),
    ("Shoulder", (1, 2)),
    ("Elbow", (3, 4)),
    ("Wrist", (5, 6)),
    ("Hip", (7, 8)),
    ("Knee", (9, 10)),
    ("Ankle", (11, 12)),
  ),  # fmt: skip
)

#: The sets defined in the package, by name.
BUILTIN: dict[str, KeypointSet] = {s.name: s for s in (LSP, MPII, COCO, PENN_ACTION)}

#: OKS sigma given to every joint of a COCO-format set that brings none: the mean of
#: COCO's 17 sigmas (0.0625...), i.e. a joint about as hard to place as COCO's average one.
DEFAULT_OKS_SIGMA: float = float(np.mean(COCO_SIGMAS_X10) / 10)


def get(name: str) -> KeypointSet:
  """A built-in set by name (one line listing the known ones otherwise)."""
  try:
    return BUILTIN[name]
  except KeyError:
    raise KeypointSetError(f"unknown keypoint set {name!r}; known: {', '.join(BUILTIN)}") from None


def from_coco_categories(
  categories: Sequence[Mapping[str, Any]],
  name: str,
  source: str = "annotations",
  *,
  flip_pairs: Sequence[Sequence[int]] | None = None,
  sigmas: Sequence[float] | None = None,
) -> KeypointSet:
  """The set of a COCO-format file's ``categories``: ``keypoints`` names and the 1-based
  ``skeleton``, for one category or several that share one keypoint list (AP-10K).

  Flip pairs come from the names (:func:`flip_pairs_from_names`) unless ``flip_pairs`` is
  given (a user's explicit map; ``()`` = no flipping). Sigmas: ``sigmas``, else COCO's when
  the names are COCO's, else :data:`DEFAULT_OKS_SIGMA` for every joint. The best metric is
  OKS AP.

  Raises :class:`KeypointSetError` naming ``source`` when no category has keypoints, or
  categories' keypoint lists differ.
  """
  with_kp = [c for c in categories if isinstance(c, Mapping) and c.get("keypoints")]
  if not with_kp:
    raise KeypointSetError(f"{source}: no category with 'keypoints' names in 'categories'")
  names = tuple(str(n) for n in with_kp[0]["keypoints"])
  for c in with_kp[1:]:
    if tuple(str(n) for n in c["keypoints"]) != names:
      raise KeypointSetError(
        f"{source}: categories {with_kp[0].get('name')!r} and {c.get('name')!r} have different "
        "keypoint lists; one run trains on one keypoint set"
      )
  k = len(names)
  limbs = []
  for pair in with_kp[0].get("skeleton") or ():
    if len(pair) != 2 or not all(1 <= int(i) <= k for i in pair):
      raise KeypointSetError(f"{source}: skeleton entry {pair} is not two 1-based joints of 1..{k}")
    limbs.append((int(pair[0]) - 1, int(pair[1]) - 1))
  if sigmas is None:
    sigmas = COCO.sigmas if names == COCO.joint_names else (DEFAULT_OKS_SIGMA,) * k
  pairs = flip_pairs_from_names(names) if flip_pairs is None else flip_pairs
  try:
    return KeypointSet(
      name=name,
      joint_names=names,
      flip_pairs=_tuple_of_pairs(pairs),
      limbs=tuple(limbs),
      sigmas=tuple(float(s) for s in sigmas),
      best_metric="AP",
    )
  except KeypointSetError as e:
    raise KeypointSetError(f"{source}: {e}") from None


def common(sets: Sequence[KeypointSet], sources: Sequence[str]) -> KeypointSet:
  """The one set of a run's training sources; refuses sources whose sets differ (by
  their joints, in one line naming both)."""
  if not sets:
    raise KeypointSetError("no data sources to take a keypoint set from")
  first = sets[0]
  for s, src in zip(sets[1:], sources[1:]):
    if s.joint_names != first.joint_names:
      raise KeypointSetError(
        f"data sources {sources[0]!r} ({first.name}, {first.num_joints} joints) and {src!r} "
        f"({s.name}, {s.num_joints} joints) have different keypoint sets; one run trains on one set"
      )
  return first
