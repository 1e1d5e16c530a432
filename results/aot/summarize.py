"""The tables of results/aot/README.md from the committed compile reports.

python results/aot/summarize.py   # prints Markdown: one table per config, the bn_sync one
"""

from __future__ import annotations

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = ("dark_lsp_gpu", "unipose_lsp", "dark_mpii", "dark_coco")


def _train(report, form="jit"):
  return next(
    (p for p in report["programs"] if p["step"] == "train" and p["parallelism"] == form), None
  )


def _cell(p) -> tuple[str, ...]:
  if p is None or "skipped" in p:
    return ("-",) * 6
  if "error" in p:
    return ("no", "-", "-", "-", "-", "-")
  m, est, c = p["memory"], p["estimate"], p["collectives_total"]
  used = max(m["total"], m["peak"]) / 1e9
  return (
    f"{'yes' if m['fits'] else 'NO'} ({used:.1f} / {m['usable'] / 1e9:.0f} GB)",
    f"{p['gflop_per_image']:.1f}",
    f"{c['count']} ({c['bytes'] / 1e6:.0f} MB)",
    f"{est['step_s'] * 1e3:.1f}",
    f"{est['images_per_s_per_chip']:.0f}",
    f"{est['images_per_s_per_slice']:.0f}",
  )


def config_table(config: str) -> str:
  rows = [
    "| target | chips (hosts) | batch/chip | fits (train jit, per device) | largest batch/chip "
    "| GFLOP/image | collectives/step (bytes) | est. step ms | est. images/s/chip "
    "| est. images/s/slice | pmap | compile s |",
    "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
  ]
  for path in sorted((HERE / config).glob("*.json"), key=lambda p: _order(p.stem)):
    r = json.loads(path.read_text())
    p = _train(r)
    pm = _train(r, "pmap")
    big = r.get("largest_batch") or {}
    largest = f"{big.get('per_device', '-')}{'' if big.get('exact') else '+'}" if big else "-"
    pmap = (
      "multi-host: n/a"
      if pm and "skipped" in pm
      else ("fits" if pm and pm["memory"]["fits"] else "-")
    )
    fits, gflop, colls, ms, chip, slc = _cell(p)
    d = r["device"]
    rows.append(
      f"| {r['target']} | {d['count']} ({d['hosts']}) | {r['batch']['per_device']} | {fits} "
      f"| {largest} | {gflop} | {colls} | {ms} | {chip} | {slc} | {pmap} "
      f"| {p.get('compile_s', '-') if p else '-'} |"
    )
  return "\n".join(rows)


def _order(stem: str):
  family, _, shape = stem.partition("_")
  size = 1
  for part in shape.replace("x", " ").split():
    size *= int(part) if part.isdigit() else 1
  gpu = family.startswith(("h1", "h2", "a1"))
  return (not gpu, family, size)


def bn_sync_table() -> str:
  rows = [
    "| config | target | batch/chip | bn_sync | all-reduces/step | all-reduce MB/step | est. step ms "
    "| of which collectives ms | est. images/s/slice |",
    "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
  ]
  files = sorted((HERE / "bn_sync").glob("*.json"))
  base = HERE / "dark_lsp_gpu" / "h100x8.json"
  entries = ([(base, "global")] if base.exists() else []) + [
    (f, json.loads(f.read_text())["model"]["bn_sync"]) for f in files
  ]
  for path, mode in entries:
    r = json.loads(path.read_text())
    p = _train(r)
    ar = p["collectives"].get("all-reduce", {"count": 0, "bytes": 0})
    est = p["estimate"]
    coll = (est["collective_bandwidth_s"] + est["collective_latency_s"]) * 1e3
    rows.append(
      f"| {pathlib.Path(r['config']).stem} | {r['target']} | {p['per_device_batch']} | {mode} "
      f"| {ar['count']} "
      f"| {ar['bytes'] / 1e6:.1f} | {est['step_s'] * 1e3:.2f} | {coll:.2f} "
      f"| {est['images_per_s_per_slice']:.0f} |"
    )
  return "\n".join(rows)


if __name__ == "__main__":
  for config in CONFIGS:
    print(f"### configs/{config}.py\n\n{config_table(config)}\n")
  print(
    f"### model.bn_sync (the training step, jit; images per chip as listed)\n\n{bn_sync_table()}"
  )
