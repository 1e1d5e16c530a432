"""Charts (matplotlib, Agg canvas only: importing this module or drawing never loads pyplot
or changes the global backend): the PCK curve of an evaluation."""

from __future__ import annotations

import io
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from unipose_jax import files

PathLike = str | os.PathLike


def pck_curve_figure(
  curves: Mapping[str, tuple[Any, Any]], *,
  title: str = "PCK (LSP, torso-normalised)",
  xlabel: str = "threshold (fraction of torso: left shoulder to right hip)",
  figsize: tuple[float, float] = (7.5, 4.5), dpi: int = 100,
):  # fmt: skip
  """A matplotlib ``Figure``: PCK (%) against the normalised threshold, one line per label.

  ``curves`` is ``{label: (thresholds (T,), pck (T,))}`` with pck in [0, 1] (e.g. one per
  decoder from ``metrics.pck_curve``), drawn in insertion order. The legend sits outside
  the axes, to their right, where it hides no curve; each entry gives the PCK at the
  largest threshold (``dark  26.1 % at 0.2``), the value the curves' right ends are read for.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
  from matplotlib.figure import Figure  # noqa: PLC0415

  if not curves:
    raise ValueError("curves is empty: nothing to plot")
  fig = Figure(figsize=figsize, dpi=dpi)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  x_max = 0.0
  for label, (thresholds, values) in curves.items():
    t = np.asarray(thresholds, np.float64)
    v = np.asarray(values, np.float64)
    if t.ndim != 1 or t.shape != v.shape:
      raise ValueError(f"curve {label!r}: thresholds {t.shape}, values {v.shape}: need equal 1-D")
    end = f"  {100.0 * v[-1]:.1f} % at {t[-1]:g}" if t.size else ""
    ax.plot(t, 100.0 * v, label=f"{label}{end}", linewidth=1.5)
    if t.size:
      x_max = max(x_max, float(np.nanmax(t)))
  ax.set(xlim=(0.0, x_max if x_max > 0 else 1.0), ylim=(0.0, 100.0), title=title)
  ax.set(xlabel=xlabel, ylabel="PCK (%)")
  ax.grid(True, alpha=0.3)
  ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
  fig.tight_layout()
  return fig


def save_pck_curve(path: PathLike, curves: Mapping[str, tuple[Any, Any]], **kwargs) -> pathlib.Path:
  """Writes :func:`pck_curve_figure` (same arguments) as a PNG, atomically; returns the path.
  The image is ``figsize * dpi`` pixels."""
  fig = pck_curve_figure(curves, **kwargs)
  buffer = io.BytesIO()
  fig.canvas.print_png(buffer)
  return files.atomic_write(path, buffer.getvalue())


def roc_figure(
  curves: Mapping[str, tuple[Any, Any]], *, chosen: str, point: tuple[float, float],
  point_label: str, target_fpr: float, title: str,
  figsize: tuple[float, float] = (12.0, 4.8), dpi: int = 100,
):  # fmt: skip
  """A matplotlib ``Figure`` of ROC curves: the true-positive rate against the
  false-positive rate, on linear axes and, beside them, on a log false-positive axis
  (where low rates are read).

  ``curves`` is ``{label: (fpr (T,), tpr (T,))}`` (e.g. ``presence.roc_curve``), drawn in
  insertion order; ``chosen`` (a label) is drawn bold and black, ``point`` ``(fpr, tpr)``
  is marked with ``point_label``, and ``target_fpr`` is a dotted vertical line. The
  legend sits outside the axes, to the right, where it hides no curve.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
  from matplotlib.figure import Figure  # noqa: PLC0415

  if chosen not in curves:
    raise ValueError(f"chosen curve {chosen!r} is not one of {', '.join(curves)}")
  fig = Figure(figsize=figsize, dpi=dpi)
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 2)
  low = 1.0
  for label, (fpr, tpr) in curves.items():
    f, t = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    if f.ndim != 1 or f.shape != t.shape:
      raise ValueError(f"curve {label!r}: fpr {f.shape}, tpr {t.shape}: need equal 1-D")
    low = min([low, *f[f > 0]])
    style = {"linewidth": 2.6, "color": "black", "zorder": 4} if label == chosen else {}
    for ax in axes:
      ax.plot(f, t, label=label if ax is axes[0] else None, **{"linewidth": 1.2, **style})
  for ax in axes:
    ax.plot(*point, "o", color="red", markersize=8, zorder=5,
            label=point_label if ax is axes[0] else None)  # fmt: skip
    ax.axvline(target_fpr, color="red", linestyle=":", linewidth=1,
               label=f"target FPR {target_fpr:g}" if ax is axes[0] else None)  # fmt: skip
    ax.set(xlabel="false-positive rate (images without a person)", ylim=(0.0, 1.01))
    ax.set(ylabel="true-positive rate (images with a person)")
    ax.grid(True, alpha=0.3)
  axes[0].plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
  axes[0].set(xlim=(0.0, 1.0), title=title)
  axes[1].set(xscale="log", xlim=(low / 2, 1.0), title="the same, log false-positive rate")
  fig.legend(loc="upper left", bbox_to_anchor=(0.79, 0.93), fontsize="small")
  fig.tight_layout(rect=(0.0, 0.0, 0.78, 1.0))
  return fig


def save_roc_curve(path: PathLike, curves: Mapping[str, tuple[Any, Any]], **kwargs):
  """Writes :func:`roc_figure` (same arguments) as a PNG, atomically; returns the path."""
  fig = roc_figure(curves, **kwargs)
  buffer = io.BytesIO()
  fig.canvas.print_png(buffer)
  return files.atomic_write(path, buffer.getvalue())
