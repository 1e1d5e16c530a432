"""Evaluation of UniPose-LSTM: every test video whole, frame by frame, the LSTM's state
carried from its first frame to its last (not windows of T), with Penn Action's protocol.

Frames. The test source's records are grouped by ``video_id`` and sorted by ``frame`` (the
source's cheap metadata read when it has one). Each frame is letterboxed as the image
evaluation does (``transforms.transform_eval``: whole frame, aspect kept, centred; the
same affine for every frame of a video). ``G`` videos (the global ``eval_batch_size``)
go through at once, one frame of each per jitted step (``UniPoseLSTM.step_with_trunk``);
a group runs for its longest video's frames, shorter ones padded with invalid frames.

What is measured, per decoder of the run (``codec.eval_decodings``), on the same frames:

* the video model (the LSTM's heatmaps);
* the single-frame path of the same network: the trunk's own K + 1 maps of each frame
  (what the network gives without its temporal stage), under ``single_frame/``.

The protocol (``metrics.penn``): joint ``k`` correct when its distance to the annotation
is ``<= alpha x max(box w, box h)`` (the annotated ``box`` of the frame, original pixels),
visible joints only, every test frame. Summary keys per decoder: ``pck@0.2`` (pooled over
every visible joint: the table's Mean), ``pck@0.1``, ``pck@0.05``, the paper's columns
(``Head`` .. ``Ankle``, ``Mean``), per joint ``pck@0.2/<joint name>``; the same under
``single_frame/``; ``frames`` and ``videos``. Predictions (``predictions.csv``) keep
``image_id`` = the record's (Penn Action: ``video_id * 10000 + frame``). No flip test (a
flipped video would need its own state; said once when the config asks for one).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unipose_jax import distributed, preemption, run_config, skeleton, transforms
from unipose_jax.evaluate import EvalResult
from unipose_jax.inference import decode_to_original
from unipose_jax.metrics.pck_tables import box_sizes, column_table, normalised_counts
from unipose_jax.models import UniPoseLSTM, normalize
from unipose_jax.models.unipose_lstm import LSTMState, initial_state

#: Thresholds of the summary (fractions of the box's larger side); the first is the protocol's.
ALPHAS = (0.2, 0.1, 0.05)
#: The prefix of the single-frame path's metrics.
SINGLE = "single_frame"
#: With ``progress``, a console line at most this often (seconds).
PROGRESS_EVERY_S = 10.0

FRAME_KEYS = ("image", "inverse_affine", "keypoints_orig", "visible", "box", "valid")


def group_videos(source, metadata=None) -> list[tuple[Hashable, list[int]]]:
  """``[(video_id, record indices in frame order)]``, videos sorted by id; ``metadata``
  ``[(video_id, frame)]`` per record (else read from the records)."""
  from unipose_jax.clip_pipeline import _scalar  # noqa: PLC0415

  if metadata is None:
    metadata = [(source[i]["video_id"], source[i]["frame"]) for i in range(len(source))]
  by_video: dict[Hashable, list[tuple[int, int]]] = {}
  for i, (vid, frame) in enumerate(metadata):
    by_video.setdefault(_scalar(vid), []).append((int(_scalar(frame)), i))
  return [(v, [i for _, i in sorted(by_video[v])]) for v in sorted(by_video)]


def video_eval_step(variables, state, frames, *, model: UniPoseLSTM, codec, decodings):
  """One frame of each of G videos: ``frames`` (``FRAME_KEYS``: ``image`` (G, S, S, 3)
  uint8, ``inverse_affine`` (G, 2, 3), ``keypoints_orig`` (G, K, 2), ``visible`` (G, K),
  ``box`` (G, 4) original pixels, ``valid`` (G,)), the LSTM state before it ->
  ``(out, state)``: ``out[path][decoder]`` = ``keypoints`` (G, K, 2) original pixels,
  ``scores`` (G, K), ``correct`` (len(ALPHAS), K), ``total`` (K,) for path "video" and
  "single_frame"."""
  x = normalize(frames["image"], model.dtype)
  heatmaps, trunk_maps, state = model.apply(variables, x, state, method=UniPoseLSTM.step_with_trunk)
  k = model.num_joints
  mask = jnp.logical_and(frames["valid"][:, None], frames["visible"].astype(bool))
  sizes = box_sizes(frames["box"])
  out: dict[str, Any] = {}
  for path, maps in (("video", heatmaps), (SINGLE, trunk_maps)):
    out[path] = {}
    joints = skeleton.split_maps(maps, num_joints=k)[1]  # (G, h, w, K): background dropped
    for decoding in decodings:
      kp, sc = decode_to_original(codec, joints, frames["inverse_affine"], decoding)
      c = normalised_counts(kp, frames["keypoints_orig"], mask, sizes, ALPHAS)
      out[path][decoding] = {"keypoints": kp, "scores": sc, **c}
  return out, state


def summarize(counts, keypoint_set) -> dict[str, float]:
  """The summary keys of one decoder (module doc) from merged ``{path: {"correct", "total"}}``."""
  out: dict[str, float] = {}
  for path, prefix in (("video", ""), (SINGLE, f"{SINGLE}/")):
    correct, total = np.asarray(counts[path]["correct"]), np.asarray(counts[path]["total"])
    table = column_table(correct[0], total, keypoint_set)
    for i, alpha in enumerate(ALPHAS):
      out[f"{prefix}pck@{alpha:g}"] = column_table(correct[i], total, keypoint_set)["Mean"]
    out.update({f"{prefix}{col}": v for col, v in table.items()})
    per_joint = np.where(total > 0, correct[0] / np.maximum(total, 1), np.nan)
    for name, v in zip(keypoint_set.joint_names, per_joint):
      out[f"{prefix}pck@0.2/{name}"] = float(v)
  return out


@dataclasses.dataclass
class _Group:
  videos: list[tuple[Hashable, list[int]]]

  @property
  def length(self) -> int:
    return max((len(ix) for _, ix in self.videos), default=0)


class VideoEvaluator:
  """Evaluates a ``UniPoseLSTM``'s variables on a video test source (module doc); the
  counterpart of ``evaluate.Evaluator`` (same ``run`` signature and ``EvalResult``)."""

  def __init__(self, model, codec, source, mesh, *, decodings, batch_size: int, input_size: int,
               keypoint_set, metadata=None):  # fmt: skip
    self.model, self.codec, self.source, self.mesh = model, codec, source, mesh
    self.decodings, self.input_size, self.keypoint_set = tuple(decodings), input_size, keypoint_set
    self.global_videos = int(batch_size)
    distributed.per_process_batch_size(self.global_videos, mesh)  # divisible: checked here
    self.videos = group_videos(source, metadata)
    self._step = jax.jit(
      functools.partial(video_eval_step, model=model, codec=codec, decodings=self.decodings)
    )

  @classmethod
  def from_run(cls, run, mesh, model=None) -> VideoEvaluator:
    """The evaluator of a video ``run.Run``: its evaluation source, decoders, keypoint set
    and ``eval_batch_size`` (videos at once)."""
    from unipose_jax.train_video import source_metadata  # noqa: PLC0415

    config = run.config
    if config.flip_test:
      run.say_once("note: video evaluation runs without the flip test (flip_test is ignored)")
    source = run.eval_source
    metadata = source_metadata(source)
    if metadata is None and hasattr(source, "metadata"):
      raise run_config.ConfigError(
        f"data.eval_source={config.data.eval_source!r} is an image dataset (no video_id / "
        "frame): a UniPose-LSTM run is evaluated on a video dataset such as 'penn_action'"
      )
    return cls(
      model or run.model(), run.codec, source, mesh, decodings=run.eval_decodings,
      batch_size=config.eval_batch_size, input_size=config.data.input_size,
      keypoint_set=run.keypoint_set, metadata=metadata,
    )  # fmt: skip

  def _frames(self, group: _Group, t: int, rows: range) -> tuple[dict[str, np.ndarray], list]:
    """This process's rows of frame ``t`` of a group: the batch and the image ids (None
    for padding)."""
    recs, ids, template = [], [], None
    for r in rows:
      indices = group.videos[r][1] if r < len(group.videos) else []
      if t < len(indices):
        record = self.source[indices[t]]
        rec = transforms.transform_eval(record, input_size=self.input_size)
        rec["box"] = np.asarray(record["box"], np.float32)
        template = template or rec
        recs.append(rec)
        ids.append(int(rec["image_id"]))
      else:
        recs.append(None)
        ids.append(-1)
    if template is None:  # a step where this process has no frame: any shapes will do
      template = self._blank()
    batch = {}
    for key in FRAME_KEYS:
      batch[key] = np.stack(
        [r[key] if r is not None else np.zeros_like(template[key]) for r in recs]
      )
    batch["valid"] = np.array([r is not None for r in recs])
    batch["box"][~batch["valid"]] = [0, 0, 1, 1]
    return batch, np.array(ids, np.int64)

  def _blank(self) -> dict[str, np.ndarray]:
    s, k = self.input_size, self.keypoint_set.num_joints
    return {
      "image": np.zeros((s, s, 3), np.uint8), "inverse_affine": np.eye(2, 3, dtype=np.float32),
      "keypoints_orig": np.zeros((k, 2), np.float32), "visible": np.zeros((k,), bool),
      "box": np.array([0, 0, 1, 1], np.float32), "valid": np.bool_(False),
    }  # fmt: skip

  def run(self, variables, examples: bool = True, should_stop: Callable[[], bool] | None = None,
          progress: bool = False) -> EvalResult:  # fmt: skip
    """Evaluate ``variables`` (on the mesh) on every test video; ``examples`` is accepted
    for ``Evaluator``'s signature (no example pictures for videos). ``should_stop``: asked
    before every video group (True raises ``preemption.Preempted``)."""
    del examples
    g = self.global_videos
    local = distributed.per_process_batch_size(g, self.mesh)
    rows = range(jax.process_index() * local, (jax.process_index() + 1) * local)
    groups = [_Group(self.videos[i : i + g]) for i in range(0, len(self.videos), g)]
    k = self.keypoint_set.num_joints
    zero = {"correct": np.zeros((len(ALPHAS), k), np.int64), "total": np.zeros((k,), np.int64)}
    counts = {d: {p: dict(zero) for p in ("video", SINGLE)} for d in self.decodings}
    preds = {f"{p}{d}": [] for d in self.decodings for p in ("", f"{SINGLE}/")}
    start = last = time.perf_counter()
    frames_done = 0
    for gi, group in enumerate(groups):
      if should_stop is not None and should_stop():
        raise preemption.preempted(
          f"video evaluation, after {gi} of {len(groups)} groups of videos; no results written"
        )
      state = initial_state(g, self.input_size, self.input_size, k)
      state = distributed.global_batch(
        {f: np.asarray(v) for f, v in state._asdict().items()}, self.mesh
      )
      state = LSTMState(**state)
      for t in range(group.length):
        batch, ids = self._frames(group, t, rows)
        out, state = self._step(variables, state, distributed.global_batch(batch, self.mesh))
        host = distributed.to_host(out)
        ids_all = np.asarray(
          distributed.to_host(distributed.global_batch({"id": ids}, self.mesh))["id"]
        )
        valid = ids_all >= 0
        frames_done += int(valid.sum())
        for d in self.decodings:
          for path, prefix in (("video", ""), (SINGLE, f"{SINGLE}/")):
            h = host[path][d]
            counts[d][path] = {
              "correct": counts[d][path]["correct"] + np.asarray(h["correct"]),
              "total": counts[d][path]["total"] + np.asarray(h["total"]),
            }
            preds[f"{prefix}{d}"].append(
              (ids_all[valid], h["keypoints"][valid], h["scores"][valid], None)
            )
      now = time.perf_counter()
      if progress and distributed.is_primary() and (gi == 0 or now - last >= PROGRESS_EVERY_S):
        last = now
        print(
          f"evaluated video group {gi + 1}/{len(groups)} ({frames_done} frames, "
          f"{now - start:.1f} s)",
          flush=True,
        )
    summary = {}
    for d in self.decodings:
      summary[d] = summarize(counts[d], self.keypoint_set)
      summary[d].update(frames=float(frames_done), videos=float(len(self.videos)))
    # ``counts`` stays empty: the image PCK curve (pck_curve.png) is not Penn Action's.
    return EvalResult(summary, {}, preds, [], self.decodings[-1], self.keypoint_set)


def evaluate_video_checkpoint(run, step: int | None = None) -> dict[str, dict[str, float]]:
  """``--mode=eval`` of a video run: its checkpoint (``step``, else the best, else the
  newest intact one) or, with ``model.init_from`` and no checkpoint folder, an original
  UniPose-LSTM ``.pth``; files in ``<workdir>/eval/<checkpoint_N | original_NAME>/``
  (``reports.write_eval``: ``eval_metrics.json`` per decoder, ``predictions.csv``) and the
  Penn Action table (video model beside its single-frame path) on the console. A
  checkpoint of a single-frame network is refused in one line."""
  import os  # noqa: PLC0415

  from unipose_jax import models, reports, train_video  # noqa: PLC0415

  config = run.config
  mesh = distributed.data_mesh()
  model = run.model()
  if config.model.init_from and not os.path.isdir(run.checkpoint_dir) and not run.is_release:
    template = jax.device_get(
      train_video.init_variables(model, config.seed, config.data.input_size)
    )
    variables, report = models.load_original_unipose_lstm(config.model.init_from, template)
    print(f"loaded {config.model.init_from}: {report}", flush=True)
    name = "original_" + os.path.splitext(os.path.basename(config.model.init_from))[0]
    title = f"{config.model.init_from} (an original UniPose-LSTM checkpoint)"
  else:
    variables, step = run.load_variables(step)
    train_video.check_kind(variables, video=True, what=f"checkpoint {step} of {run.workdir}")
    if distributed.is_primary():
      print(f"evaluating checkpoint {step} of {run.workdir}, video by video", flush=True)
    name, title = f"checkpoint_{step}", f"checkpoint {step} of {run.workdir}"
  variables = distributed.replicate(variables, mesh)
  stop = functools.partial(distributed.any_process, preemption.should_stop)
  result = VideoEvaluator.from_run(run, mesh, model).run(variables, should_stop=stop,
                                                         progress=True)  # fmt: skip
  reports.write_eval(os.path.join(run.workdir, "eval", name), result)
  if distributed.is_primary():
    print(f"{title}:")
    for d in result.summary:
      print(format_table(result.summary, run.keypoint_set, d), flush=True)
  return result.summary


def format_table(summary, keypoint_set, decoding: str) -> str:
  """The paper's Penn Action table of one decoder: the video model and the single-frame
  path, one row each (percentages)."""
  cols = [c for c, _ in keypoint_set.table_columns] + ["Mean"]
  r = summary[decoding]
  head = f"{'':14s} " + " ".join(f"{c:>8s}" for c in cols)
  rows = [
    f"{label:14s} " + " ".join(f"{100 * r[prefix + c]:8.2f}" for c in cols)
    for label, prefix in (("UniPose-LSTM", ""), ("single frame", f"{SINGLE}/"))
  ]
  note = "PCK@0.2: distance <= 0.2 x max(box w, box h), visible joints, every frame"
  return "\n".join([f"{decoding}: {int(r['frames'])} frames of {int(r['videos'])} videos", head,
                    *rows, note])  # fmt: skip


__all__ = ["ALPHAS", "SINGLE", "VideoEvaluator", "format_table", "group_videos", "summarize",
           "video_eval_step"]  # fmt: skip
