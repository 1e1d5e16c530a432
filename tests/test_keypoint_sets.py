"""Keypoint sets: the built-in sets, flip pairs from names, COCO categories, storage."""

import json
import pathlib

import numpy as np
import pytest

from unipose_jax import keypoint_sets as ks

SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "samples"


@pytest.mark.parametrize("s, k", [(ks.LSP, 14), (ks.MPII, 16), (ks.COCO, 17), (ks.PENN_ACTION, 13)])
def test_builtin_sets_have_their_joint_counts_and_name_derived_flip_pairs(s, k):
  assert s.num_joints == k
  # Every built-in set's hand-written pairs are the ones its names imply.
  assert tuple(sorted(tuple(sorted(p)) for p in s.flip_pairs)) == ks.flip_pairs_from_names(
    s.joint_names
  )
  perm = s.flip_permutation
  assert sorted(perm) == list(range(k)) and np.all(perm[perm] == np.arange(k))
  for a, b in s.flip_pairs:
    assert {s.side(a), s.side(b)} == {"left", "right"}


def test_lsp_facts_are_the_ones_of_design_md():
  assert ks.LSP.flip_pairs == ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9))
  assert ks.LSP.torso == (9, 2) and ks.LSP.head == (12, 13)
  assert ks.LSP.joint_names[9] == "left_shoulder" and ks.LSP.joint_names[2] == "right_hip"


def test_coco_sigmas_are_the_published_ones_over_ten():
  assert ks.COCO.sigmas[0] == pytest.approx(0.026) and ks.COCO.sigmas[-1] == pytest.approx(0.089)
  assert len(ks.COCO.limbs) == 19


@pytest.mark.parametrize(
  "names, pairs",
  [
    (["nose", "left_eye", "right_eye"], ((1, 2),)),
    (["l_knee", "r_knee", "neck"], ((0, 1),)),
    (["Left Shoulder", "Right Shoulder", "Head"], ((0, 1),)),
    (["knee_right", "knee_left"], ((0, 1),)),
    (["LeftHand", "RightHand"], ((0, 1),)),
    (["L-Paw", "R-Paw", "tail"], ((0, 1),)),
    (["lefteye", "righteye"], ((0, 1),)),
    (["a", "b", "c"], ()),
    (["left_eye", "right_ear"], ()),  # different parts do not pair
  ],
)
def test_flip_pairs_from_names_in_any_spelling(names, pairs):
  assert ks.flip_pairs_from_names(names) == pairs


def test_name_side_does_not_take_side_words_inside_words():
  assert ks.name_side("elbow") == ("", "elbow")
  assert ks.name_side("tail_root") == ("", "tail_root")  # 'r' only as a whole word
  assert ks.name_side("L_Eye") == ("left", "eye")


def test_round_trip_through_json():
  for s in ks.BUILTIN.values():
    d = json.loads(json.dumps(s.to_dict()))
    assert ks.from_dict(d) == s


def test_from_dict_names_the_source_and_the_fault():
  d = ks.LSP.to_dict()
  d["flip_pairs"] = [[0, 99]]
  with pytest.raises(ks.KeypointSetError, match=r"run/config.json: .*flip_pairs entry \(0, 99\)"):
    ks.from_dict(d, source="run/config.json")
  with pytest.raises(ks.KeypointSetError, match="unknown keypoint set fields"):
    ks.from_dict({**ks.LSP.to_dict(), "colour": 1})
  with pytest.raises(ks.KeypointSetError, match="malformed"):
    ks.from_dict({"name": "x"})


def test_from_coco_categories_one_or_several_sharing_a_list():
  cat = {
    "name": "dog",
    "keypoints": ["nose", "L_Eye", "R_Eye", "tail"],
    "skeleton": [[1, 2], [1, 3]],
  }
  s = ks.from_coco_categories([cat, {**cat, "name": "cat"}], "animals")
  assert s.num_joints == 4 and s.flip_pairs == ((1, 2),) and s.limbs == ((0, 1), (0, 2))
  assert s.sigmas == (ks.DEFAULT_OKS_SIGMA,) * 4 and s.best_metric == "AP"
  other = {**cat, "name": "bird", "keypoints": ["beak"]}
  with pytest.raises(ks.KeypointSetError, match="different keypoint lists"):
    ks.from_coco_categories([cat, other], "animals", source="x.json")
  with pytest.raises(ks.KeypointSetError, match=r"x.json: skeleton entry \[1, 9\]"):
    ks.from_coco_categories([{**cat, "skeleton": [[1, 9]]}], "animals", source="x.json")
  with pytest.raises(ks.KeypointSetError, match="x.json: no category"):
    ks.from_coco_categories([{"name": "person"}], "p", source="x.json")
  explicit = ks.from_coco_categories([cat], "animals", flip_pairs=())
  assert not explicit.has_flip


def test_common_refuses_sources_with_different_sets():
  assert ks.common([ks.LSP, ks.LSP], ["lsp", "lsp_extended"]) is ks.LSP
  with pytest.raises(ks.KeypointSetError, match="'lsp' \\(lsp, 14 joints\\) and 'mpii'"):
    ks.common([ks.LSP, ks.MPII], ["lsp", "mpii"])


def test_unknown_set_is_one_line_listing_the_known():
  with pytest.raises(ks.KeypointSetError, match="known: lsp, mpii, coco, penn_action"):
    ks.get("h36m")


def test_the_real_coco_sample_gives_the_coco_set():
  path = SAMPLES / "coco" / "test_coco.json"
  if not path.exists():
    pytest.skip(f"real COCO sample absent ({path})")
  categories = json.loads(path.read_text())["categories"]
  s = ks.from_coco_categories(categories, "coco", source=str(path))
  assert s.joint_names == ks.COCO.joint_names
  assert s.flip_pairs == ks.COCO.flip_pairs and s.limbs == ks.COCO.limbs
  assert s.sigmas == ks.COCO.sigmas
