"""The console form of a compile report (``report.compile_report``'s dict)."""

from __future__ import annotations

from typing import Any

GB = 1e9


def _gb(x) -> str:
  return "-" if x is None else f"{x / GB:.2f}"


def _row(e: dict[str, Any]) -> str:
  name = f"{e['step']} {e['parallelism']}"
  if "skipped" in e:
    return f"{name:11s} skipped: {e['skipped']}"
  if "error" in e:
    return f"{name:11s} {e['per_device_batch']:6d}  does not fit: {e['error']}"
  m, est = e["memory"], e["estimate"]
  used = max(m["total"], m["peak"])
  c = e["collectives_total"]
  return (
    f"{name:11s} {e['per_device_batch']:6d} {_gb(m['argument']):>6s} {_gb(m['output']):>6s} "
    f"{_gb(m['temp']):>7s} {_gb(used):>7s} {_gb(m['usable']):>7s} {'yes' if m['fits'] else 'NO':>4s} "
    f"{e['gflop_per_image']:8.1f} {c['count']:6d} {c['bytes'] / 1e6:8.1f} "
    f"{est['step_s'] * 1e3:8.2f} {est['images_per_s_per_chip']:8.0f} "
    f"{est['images_per_s_per_slice']:9.0f} {e['compile_s']:8.1f}"
  )


def format_table(report: dict[str, Any]) -> str:
  d = report["device"]
  lines = [
    f"{report['config']} on {report['target']}: {d['count']} x {d['chip']} "
    f"({d['hosts']} host{'s' if d['hosts'] > 1 else ''}), {report['model']['dtype']}, "
    f"bn_sync={report['model']['bn_sync']}; per device, GB = 1e9 bytes",
    f"{'program':11s} {'batch':>6s} {'args':>6s} {'output':>6s} {'temp':>7s} {'total':>7s} "
    f"{'usable':>7s} {'fits':>4s} {'GFLOP/im':>8s} {'colls':>6s} {'coll MB':>8s} "
    f"{'est. ms':>8s} {'im/s/chp':>8s} {'im/s/slc':>9s} {'compile':>8s}",
  ]
  lines += [_row(e) for e in report["programs"]]
  for e in report["programs"]:
    if "collectives" not in e:
      continue
    kinds = ", ".join(
      f"{k} {v['count']} x ({v['bytes'] / 1e6:.1f} MB)" for k, v in e["collectives"].items()
    )
    convs = e["convolutions"]
    lowering = ", ".join(f"{k} {v}" for k, v in convs["by_lowering"].items())
    dtypes = ", ".join(f"{k} {v}" for k, v in convs["by_dtype"].items())
    est = e["estimate"]
    lines.append(
      f"{e['step']} {e['parallelism']}: collectives {kinds or 'none'}; convolutions "
      f"{lowering or 'none'} (inputs {dtypes or '-'}); estimate {est['step_s'] * 1e3:.2f} ms = "
      f"max(compute {est['flops_s'] * 1e3:.2f}, HBM {est['hbm_s'] * 1e3:.2f}) + collectives "
      f"{est['collective_bandwidth_s'] * 1e3:.2f} + latency {est['collective_latency_s'] * 1e3:.2f}"
    )
  big = report.get("largest_batch")
  if big:
    probes = ", ".join(
      f"{t['per_device']} {'fits' if t['fits'] else 'no'}"
      + (f" ({t['bytes'] / GB:.1f} GB)" if t["bytes"] else "")
      for t in big["trials"]
    )
    more = "" if big["exact"] else " (at least; the search stopped before the limit)"
    lines.append(
      f"largest training batch that fits: {big['per_device']} per device = {big['global']} "
      f"global{more}; probes: {probes}"
    )
  for f in report["findings"]:
    lines.append(f"FINDING: {f}")
  lines.append(
    "est. = a roofline ESTIMATE of the step time from FLOPs, HBM bytes and collective bytes at "
    "the chip's published peak rates (unipose_jax/aot/targets.py), not a measurement"
  )
  return "\n".join(lines)
