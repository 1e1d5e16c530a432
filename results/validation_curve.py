"""The validation curve of a training run: PCK on the evaluation split over training steps.

  python results/validation_curve.py RUN_DIR --csv=validation_curve.csv [--png=curve.png]

Reads every evaluation the training made, ``<run>/eval/step_<N>/eval_metrics.json``
(``config.eval_every`` and the end), and writes one CSV row per (step, decoder):
``step, decoder, pck@0.2, pck@0.1, pck@0.05, auc@0.2, pckh@0.5, num_joints`` (fractions in
[0, 1]), steps ascending, decoders in the file's order. ``--png`` draws PCK@0.2 of each
decoder against the step (matplotlib). Exits with a message naming the folder when it
holds no evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

COLUMNS = ("pck@0.2", "pck@0.1", "pck@0.05", "auc@0.2", "pckh@0.5", "num_joints")
_STEP = re.compile(r"^step_(\d+)$")


def read_curve(run_dir: str) -> list[dict]:
  """Rows ``{"step", "decoder", *COLUMNS}`` of every ``eval/step_<N>`` of ``run_dir``,
  steps ascending (a folder without its eval_metrics.json, i.e. unfinished, is skipped)."""
  root = os.path.join(run_dir, "eval")
  steps = sorted(
    int(m.group(1)) for m in map(_STEP.match, os.listdir(root) if os.path.isdir(root) else []) if m
  )
  rows = []
  for step in steps:
    path = os.path.join(root, f"step_{step}", "eval_metrics.json")
    if not os.path.isfile(path):
      continue
    with open(path, encoding="utf-8") as f:
      metrics = json.load(f)
    for decoder, values in metrics.items():
      rows.append({"step": step, "decoder": decoder, **{c: values.get(c) for c in COLUMNS}})
  return rows


def write_csv(rows: list[dict], path: str) -> None:
  from unipose_jax import files  # noqa: PLC0415

  files.write_csv(path, ("step", "decoder", *COLUMNS),
                  ([r["step"], r["decoder"], *(r[c] for c in COLUMNS)] for r in rows))  # fmt: skip


def write_png(rows: list[dict], path: str, title: str) -> None:
  from unipose_jax import charts, files  # noqa: PLC0415

  curves: dict[str, tuple[list, list]] = {}
  for r in rows:
    steps, values = curves.setdefault(f"{r['decoder']} PCK@0.2", ([], []))
    steps.append(r["step"])
    values.append(r["pck@0.2"] if r["pck@0.2"] is not None else float("nan"))
  fig = charts.pck_curve_figure(curves, title=title, xlabel="training step")
  import io  # noqa: PLC0415

  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  files.atomic_write(path, buffer.getvalue())


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("run_dir")
  p.add_argument("--csv", required=True, help="the CSV to write")
  p.add_argument("--png", default="", help="also a PNG of PCK@0.2 against the step")
  a = p.parse_args(argv)
  rows = read_curve(a.run_dir)
  if not rows:
    print(f"error: {a.run_dir}/eval holds no step_<N>/eval_metrics.json", file=sys.stderr)
    return 1
  write_csv(rows, a.csv)
  if a.png:
    name = os.path.basename(os.path.normpath(a.run_dir))
    write_png(rows, a.png, title=f"validation PCK@0.2 over training, {name}")
  steps = sorted({r["step"] for r in rows})
  print(f"wrote {a.csv}{' and ' + a.png if a.png else ''}: {len(steps)} evaluations, steps {steps}")
  return 0


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sys.exit(main())
