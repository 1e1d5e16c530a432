"""TFDS builders ``lsp`` and ``lsp_extended`` (Leeds Sports Pose), written as ArrayRecord.

Both are built from the archives as distributed, put by the user in a "manual dir"
(see ``MANUAL_DOWNLOAD_INSTRUCTIONS``); nothing is downloaded. Reading and validating
the archives is done by :mod:`unipose_jax.datasets.archives`; the features are those of
:mod:`unipose_jax.datasets.features`. Examples are stored in image-id order
(``disable_shuffling``), so example ``i`` of ``lsp``'s ``test`` split is image
``1001 + i``.

No TensorFlow is needed to build or to read these datasets.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from unipose_jax import keypoint_sets, preemption
from unipose_jax.datasets import archives
from unipose_jax.datasets._tfds_compat import ArrayRecordBuilderMixin
from unipose_jax.datasets.features import pose_features

_LSP_CITATION = """\
@inproceedings{Johnson10,
  title = {Clustered Pose and Nonlinear Appearance Models for Human Pose Estimation},
  author = {Johnson, Sam and Everingham, Mark},
  booktitle = {Proceedings of the British Machine Vision Conference (BMVC)},
  year = {2010},
  note = {doi:10.5244/C.24.12}
}"""

_LSPET_CITATION = """\
@inproceedings{Johnson11,
  title = {Learning Effective Human Pose Estimation from Inaccurate Annotation},
  author = {Johnson, Sam and Everingham, Mark},
  booktitle = {Proceedings of Computer Vision and Pattern Recognition (CVPR)},
  year = {2011}
}"""

_INSTRUCTIONS = """\
The Leeds Sports Pose archives cannot be downloaded automatically. Get them from the
pages of their authors, Sam Johnson and Mark Everingham (University of Leeds), for
research use only:

  LSP (2000 images)           http://sam.johnson.io/research/lsp.html
                              -> lsp_dataset.zip
  LSP-extended (10000 images) http://sam.johnson.io/research/lspet.html
                              -> lspet_dataset.zip

(older copies link from http://www.comp.leeds.ac.uk/mat4saj/lsp.html). Put the zip files,
unchanged, in the project's `data/` folder (or extract them there as `data/lsp_dataset/`
and `data/lspet_dataset/`), then run

  unipose-jax --mode=prepare --manual_dir=data --data_dir=data/tfds
"""


class _LeedsBuilder(
  ArrayRecordBuilderMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True
):
  """Common code of the LSP builders; subclasses set SPEC and the metadata.

  Class attributes:
    SPEC: how the archive is laid out and split (:class:`archives.ArchiveSpec`).
  """

  SPEC: archives.ArchiveSpec
  _DESCRIPTION: str
  _HOMEPAGE: str
  _CITATION: str

  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self._DESCRIPTION,
      features=pose_features(keypoint_sets.LSP.num_joints, box=False),  # box: derived on reading
      disable_shuffling=True,  # examples stay in image-id order
      homepage=self._HOMEPAGE,
      citation=self._CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    source = archives.find_source(dl_manager.manual_dir, self.SPEC)
    if source is None:
      raise archives.DatasetError(
        f"{dl_manager.manual_dir}: neither {self.SPEC.zip_name} nor {self.SPEC.stem}/ found.\n"
        + self.MANUAL_DOWNLOAD_INSTRUCTIONS
      )
    reader = archives.ArchiveReader(source)
    annotations = archives.load_annotations(reader, self.SPEC)
    return {
      split: self._generate_examples(reader, annotations, range(first, last + 1))
      for split, (first, last) in self.SPEC.splits
    }

  def _generate_examples(self, reader, annotations, image_ids):
    for record in archives.iter_records(reader, self.SPEC, annotations, image_ids):
      preemption.check(f"building {self.name}; the incomplete build is not kept")
      yield (
        record.image_id,
        {
          "image": record.jpeg,
          "keypoints": record.keypoints,
          "visible": record.visible,
          "labeled": record.labeled,
          "image_id": record.image_id,
        },
      )


class Lsp(_LeedsBuilder):
  """Leeds Sports Pose: 2000 images, ``train`` = images 1-1000, ``test`` = 1001-2000.

  Every joint is labeled; ``visible`` is ``flag == 0`` of ``joints.mat``.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  SPEC = archives.LSP
  _DESCRIPTION = (
    "Leeds Sports Pose (LSP): 2000 images of people doing sports, 14 joints each. "
    "Keypoints are 0-based pixel centres (MATLAB value - 1); every joint is labeled; "
    "visible = (flag == 0)."
  )
  _HOMEPAGE = "http://sam.johnson.io/research/lsp.html"
  _CITATION = _LSP_CITATION


class LspExtended(_LeedsBuilder):
  """LSP-extended: 10000 training images, split ``train``.

  ``visible`` is ``flag == 1`` of ``joints.mat``; only visible joints are labeled (the
  coordinates of the others may be meaningless and are kept as read).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  SPEC = archives.LSP_EXTENDED
  _DESCRIPTION = (
    "Leeds Sports Pose extended training set: 10000 images, 14 joints each. "
    "Keypoints are 0-based pixel centres (MATLAB value - 1); visible = (flag == 1); "
    "only visible joints are labeled."
  )
  _HOMEPAGE = "http://sam.johnson.io/research/lspet.html"
  _CITATION = _LSPET_CITATION
