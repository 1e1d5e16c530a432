#!/usr/bin/env bash
# One lent-GPU session in phases (results/gpu_plan.md): run on the device machine, from the
# repository root, one phase per call, the calls back to back (a warm machine keeps the
# ignored folder .gpu_state/ between calls; it is lost 30 s after a call returns).
#
#   bash benchmarks/gpu_session.sh bench  PART        # call 1: wheels, data part, benchmarks
#   bash benchmarks/gpu_session.sh upload PART WORKERS [CONFIG RATE]  # data part, input_bench
#   bash benchmarks/gpu_session.sh train  PART SECONDS  # call 4: last part, shortened training
# The DARK ablation of configs/lsp_fast_gpu.py (results/gpu_plan.md, "Session C"):
#   bash benchmarks/gpu_session.sh install PART WORKERS   # call 1: wheels, part, input_bench
#   bash benchmarks/gpu_session.sh upload  PART           # calls 2, 3: a data part
#   bash benchmarks/gpu_session.sh ablation PART SECONDS [CONFIG [OVERRIDE ...]]  # call 4
#
# PART is a file of .gpu/data/ (parts of one tar, in order: lsp first, then lsp_extended;
# session A/B's tar also held synthetic; "-" for none); results are written under $OUT as they are produced (they come back even
# after a timeout). $GPU_STATE (default .gpu_state) is the folder kept between calls, $PY
# the Python (default python3): the test suite dry-runs the ablation phase with both set.
set -uo pipefail
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=1
S=${GPU_STATE:-.gpu_state}
PY=${PY:-python3}
mkdir -p "$S/tfds"
S=$(cd "$S" && pwd)
OUT=${OUT:-$S/out}
mkdir -p "$OUT"
export PYTHONPATH=$S/site:$PWD
T0=$(date +%s)
stamp() { echo "[gpu_session +$(($(date +%s) - T0))s] $*" | tee -a "$OUT/session.log"; }

add_part() {  # append a data part (once: a repeated call skips it) and extract the tar so far
  [ "$1" = - ] && return 0
  grep -qxF "$1" "$S/parts.txt" 2>/dev/null && { stamp "data part $1 already added"; return 0; }
  cat ".gpu/data/$1" >>"$S/tfds.tar" || exit 1
  echo "$1" >>"$S/parts.txt"
  tar -xf "$S/tfds.tar" -C "$S/tfds" 2>/dev/null  # a partial tar: complete members only
  stamp "data part $1: $(du -sh "$S/tfds.tar" | cut -f1) so far; $(ls "$S/tfds" | tr '\n' ' ')"
}

phase=$1
shift
case $phase in
bench)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$S/site" .gpu/whl/*.whl || exit 1
  add_part "$1"
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    $PY --version
    $PY -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda13-plugin|flax|optax|orbax-checkpoint|numpy|torch|grain|tensorflow-datasets|opencv-python-headless) '
    nproc
  } 2>&1 | tee "$OUT/env.txt"
  stamp "smoke: the whole training loop on the GPU (tiny network, synthetic set)"
  timeout 150 $PY launch.py --mode=train --config=configs/smoke.py --workdir="$S/smoke" \
    --config.data.data_dir="$S/tfds" --config.num_train_steps=40 --config.log_every=20 \
    --config.checkpoint_every=40 >"$OUT/smoke.log" 2>&1
  stamp "smoke rc=$? ($(grep -c . "$OUT/smoke.log") lines)"
  B=benchmarks
  timeout 300 $PY $B/train_bench.py --config=dark_lsp_gpu --dtype=bfloat16 \
    --batch_sizes=32,64,128 --steps=10 2>"$OUT/train_bench.err" | tee "$OUT/train_bench.jsonl"
  stamp "train_bench bfloat16 rc=$?"
  cp "$OUT/train_bench.jsonl" "$S/"
  timeout 100 $PY $B/torch_train_bench.py --dtype=bfloat16 --batch_sizes=32,64,128 \
    --steps=10 2>"$OUT/torch_train_bench.err" | tee "$OUT/torch_train_bench.jsonl"
  stamp "torch_train_bench rc=$?"
  timeout 80 $PY $B/model_bench.py --dtype=bfloat16 --batch_sizes=64 --repeats=10 \
    --dark_share_only 2>>"$OUT/train_bench.err" | tee "$OUT/model_bench.jsonl"
  stamp "model_bench rc=$?"
  timeout 100 $PY $B/train_bench.py --config=dark_lsp_gpu --dtype=float32 --batch_sizes=64 \
    --steps=5 2>>"$OUT/train_bench.err" | tee -a "$OUT/train_bench.jsonl"
  stamp "train_bench float32 rc=$?"
  cp "$OUT/train_bench.jsonl" "$S/"
  ;;
install)  # call 1 of the ablation: wheels into $S/site, the first part, the host, and the
  # input pipeline at 256 px (LSP alone: its images are the larger ones, a lower bound for
  # the mix) against the measured training step of configs/lsp_fast_gpu.py at batch 256
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$S/site" .gpu/whl/*.whl || exit 1
  add_part "$1"
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    $PY -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda13-plugin|flax|optax|orbax-checkpoint|numpy|grain|tensorflow-datasets) '
    nproc
  } 2>&1 | tee "$OUT/env.txt"
  timeout 120 $PY benchmarks/input_bench.py --data_dir="$S/tfds" --train_sources=lsp \
    --pipeline_config=lsp_fast_gpu --workers="$2" --seconds=6 --batch=256 \
    --step_config=lsp_fast_gpu --step_batch=256 --step_dtype=bfloat16 --step_steps=10 \
    2>"$S/input_bench.err" | tee "$OUT/input_bench.jsonl"
  stamp "input_bench lsp_fast_gpu workers=$2 rc=$?"
  cp "$OUT/input_bench.jsonl" "$S/input_bench.jsonl"
  ;;
upload)  # a data part; with WORKERS (not "-"), input_bench on LSP at that worker count
  add_part "$1"
  [ "${2:--}" = - ] && { stamp "done"; exit 0; }
  config=${3:-dark_lsp_gpu}
  rate=${4:-$($PY -c "
import json
rows = [json.loads(l) for l in open('$S/train_bench.jsonl') if l.startswith('{')]
print(next((r['images_per_s'] for r in rows if r.get('dtype') == 'bfloat16' and r.get('batch') == 64), 0))" 2>/dev/null || echo 0)}
  timeout 75 $PY benchmarks/input_bench.py --data_dir="$S/tfds" --train_sources=lsp \
    --pipeline_config="$config" --workers="$2" --seconds=6 --batch=64 --step_rate="$rate" \
    2>"$OUT/input_bench.err" | tee "$OUT/input_bench.jsonl"
  stamp "input_bench $config workers=$2 rc=$?"
  cat "$OUT/input_bench.jsonl" >>"$S/input_bench.jsonl"
  ;;
ablation)
  # Two trainings of one config, unbiased then quantized encoding (same seed, data order and
  # schedule), each evaluated with every decoder and the flip test as it trains; under $OUT:
  # unbiased.tgz and quantized.tgz (eval_metrics.json, predictions.csv, validation_curve.csv
  # and .png, train.log, metrics.jsonl, config.json, command.txt) and release/ (the unbiased
  # run's release folder, parameters in $RELEASE_DTYPE, default bfloat16: 4 files), with
  # session.log 7 files, under the 8 that come back.
  add_part "$1"
  seconds=$2
  config=${3:-configs/lsp_fast_gpu.py}
  shift 3 2>/dev/null || shift $#
  # The schedule: the config's, unless the step measured in call 1 ($S/input_bench.jsonl,
  # same config) says two runs of it do not fit: then fewer steps for both (never more).
  read -r -a schedule < <($PY -c "
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location('c', '$config'); m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m); c = m.get_config()
try:
  rows = [json.loads(l) for l in open('$S/input_bench.jsonl') if l.startswith('{')]
  rate = next(r['images_per_s'] for r in rows if r.get('name') == 'train_step'
              and r.get('config', '').endswith('$(basename "$config")') and r.get('batch') == c.batch_size)
except (OSError, StopIteration, ValueError):
  sys.exit(0)
per_run = ($seconds - 40) / 2 - 75  # 75 s a run: start-up, compilations, evaluations, calibration
steps = int(per_run * rate * 0.95 / c.batch_size) // 100 * 100
if steps < c.num_train_steps:
  print(f'--config.num_train_steps={steps} --config.eval_every={max(100, steps // 4 // 100 * 100)} '
        f'--config.checkpoint_every={max(100, steps // 4 // 100 * 100)}')
" 2>>"$OUT/session.log")
  [ ${#schedule[@]} -gt 0 ] && stamp "the measured step does not fit the config's schedule twice: ${schedule[*]}"
  for enc in unbiased quantized; do
    wd=$S/ablation_$enc
    calibrate=$([ $enc = unbiased ] && echo True || echo False)  # the release needs it
    cmd=("$PY" launch.py --mode=train --config="$config" --workdir="$wd"
      --config.data.data_dir="$S/tfds" --config.codec.encoding=$enc
      --config.calibrate_presence=$calibrate --config.flip_test=True "${schedule[@]}" "$@")
    # The unbiased run gets half of the time, the quantized one what is left (20 s kept for
    # its packing; the release is made between the two).
    left=$((seconds - 20 - ($(date +%s) - T0)))
    limit=$([ $enc = unbiased ] && echo $(((seconds - 40) / 2)) || echo $left)
    if [ "$limit" -lt 30 ]; then
      stamp "no time left for the $enc run (${limit}s)"
      continue
    fi
    stamp "training $enc (at most ${limit}s): ${cmd[*]}"
    timeout "$limit" "${cmd[@]}" >"$S/train_$enc.log" 2>&1
    stamp "train $enc rc=$?: $(grep -c . "$S/train_$enc.log") log lines"
    pack=$S/pack_$enc
    rm -rf "$pack" && mkdir -p "$pack"
    echo "${cmd[*]}" >"$pack/command.txt"
    cp "$S/train_$enc.log" "$pack/train.log"
    final=$(ls "$wd/eval" 2>/dev/null | grep '^step_' | sort -t_ -k2 -n | tail -1)
    cp "$wd/eval_metrics.json" "$wd/config.json" "$wd/metrics.jsonl" "$pack/" 2>/dev/null
    [ -n "$final" ] && cp "$wd/eval/$final/predictions.csv" "$pack/" 2>/dev/null
    $PY results/validation_curve.py "$wd" --csv="$pack/validation_curve.csv" \
      --png="$pack/validation_curve.png" >>"$OUT/session.log" 2>&1
    tar -C "$pack" -czf "$OUT/$enc.tgz" . && stamp "$enc.tgz: $(ls "$pack" | tr '\n' ' ')"
    if [ $enc = unbiased ]; then  # the release first: it must not wait for the second run
      timeout 60 "$PY" launch.py --mode=export --format=release --workdir="$wd" \
        --release_dtype="${RELEASE_DTYPE:-bfloat16}" --output="$OUT/release" >"$S/release.log" 2>&1
      stamp "release rc=$?: $(tail -1 "$S/release.log")"
    fi
  done
  ;;
train)
  add_part "$1"
  seconds=$2
  # Steps that fit: the measured bf16 step rate at batch 64 (or 600 images/s), 85 % of it
  # (the input pipeline and logging), after ~150 s of start-up, compilation and evaluations.
  read -r steps every < <($PY -c "
import json
rows = [json.loads(l) for l in open('$S/train_bench.jsonl') if l.startswith('{')]
ips = next((r['images_per_s'] for r in rows if r.get('dtype') == 'bfloat16' and r.get('batch') == 64), 600)
steps = int(max(200, ($seconds - 150) * ips * 0.85 / 64) // 100 * 100)
print(steps, max(100, steps // 4 // 100 * 100))")
  stamp "training $steps steps, evaluation every $every"
  echo "python3 launch.py --mode=train --config=configs/dark_lsp_gpu.py --workdir=$S/run --config.data.data_dir=$S/tfds --config.num_train_steps=$steps --config.optimizer.warmup_steps=200 --config.eval_every=$every --config.checkpoint_every=$every" >"$OUT/command.txt"
  timeout $((seconds - 15)) $PY launch.py --mode=train --config=configs/dark_lsp_gpu.py \
    --workdir="$S/run" --config.data.data_dir="$S/tfds" --config.num_train_steps="$steps" \
    --config.optimizer.warmup_steps=200 --config.eval_every="$every" \
    --config.checkpoint_every="$every" 2>&1 | tee "$OUT/train.log"
  stamp "train rc=$?"
  tar -C "$S/run" --exclude=checkpoints -czf "$OUT/run.tgz" . && stamp "run.tgz $(du -sh "$OUT/run.tgz" | cut -f1)"
  ;;
*)
  echo "unknown phase $phase" >&2
  exit 2
  ;;
esac
stamp "done"
