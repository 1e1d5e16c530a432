"""Re-score a committed predictions.csv against LSP's own annotations, independently of unipose_jax.

  python results/score_predictions.py results/<run>/predictions.csv [--lsp_zip data/lsp_dataset.zip]

Reads joints.mat straight from the archive (MATLAB 1-based pixels; minus 1 gives the
0-based pixel-centre frame the predictions are in), and prints, per decoder, PCK at
0.2/0.1/0.05 of the torso (left shoulder 9 to right hip 2), AUC of PCK over
[0, 0.2] (41 thresholds, trapezoid / 0.2) and PCKh@0.5 with the neck (12) to
head-top (13) length. Only numpy, scipy and the standard library.
"""

import argparse
import csv
import io
import json
import zipfile
from collections import defaultdict

import numpy as np
import scipy.io


def lsp_annotations(zip_path):
  """(2000, 14, 2) float64 annotations in 0-based pixels, indexed by image_id - 1."""
  with zipfile.ZipFile(zip_path) as z:
    name = next(n for n in z.namelist() if n.endswith("joints.mat"))
    joints = scipy.io.loadmat(io.BytesIO(z.read(name)))["joints"]  # (3, 14, 2000)
  return np.transpose(joints[:2], (2, 1, 0)) - 1.0


def score(pred, gt):
  d = np.linalg.norm(pred - gt, axis=-1)  # (N, 14)
  torso = np.linalg.norm(gt[:, 9] - gt[:, 2], axis=-1)[:, None]
  head = np.linalg.norm(gt[:, 12] - gt[:, 13], axis=-1)[:, None]
  thresholds = np.arange(41) / 200.0
  curve = np.array([(d <= a * torso).mean() for a in thresholds])
  auc = float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(thresholds)) / 0.2)
  return {
    "pck@0.2": float((d <= 0.2 * torso).mean()),
    "pck@0.1": float((d <= 0.1 * torso).mean()),
    "pck@0.05": float((d <= 0.05 * torso).mean()),
    "auc@0.2": auc,
    "pckh@0.5": float((d <= 0.5 * head).mean()),
    "images": int(d.shape[0]),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("predictions")
  p.add_argument("--lsp_zip", default="data/lsp_dataset.zip")
  a = p.parse_args()
  gt_all = lsp_annotations(a.lsp_zip)
  preds = defaultdict(dict)
  with open(a.predictions, newline="") as f:
    for row in csv.DictReader(f):
      preds[row["decoder"]].setdefault(int(row["image_id"]), np.zeros((14, 2)))[
        int(row["joint"])
      ] = (float(row["x"]), float(row["y"]))
  out = {}
  for decoder, by_image in preds.items():
    ids = sorted(by_image)
    out[decoder] = score(np.stack([by_image[i] for i in ids]), gt_all[np.array(ids) - 1])
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
