#!/usr/bin/env bash
# One lent-GPU session in phases (results/gpu_plan.md): run on the device machine, from the
# repository root, one phase per call, the calls back to back (a warm machine keeps the
# ignored folder .gpu_state/ between calls; it is lost 30 s after a call returns).
#
#   bash benchmarks/gpu_session.sh bench  PART        # call 1: wheels, data part, benchmarks
#   bash benchmarks/gpu_session.sh upload PART WORKERS  # calls 2, 3: data part, input_bench
#   bash benchmarks/gpu_session.sh train  PART SECONDS  # call 4: last part, shortened training
#
# PART is a file of .gpu/data/ (parts of one tar: lsp and synthetic first, then lsp_extended);
# results are written under $OUT as they are produced (they come back even after a timeout).
set -uo pipefail
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=1
S=.gpu_state
OUT=${OUT:-$S/out}
mkdir -p "$S/tfds" "$OUT"
export PYTHONPATH=$PWD/$S/site:$PWD
T0=$(date +%s)
stamp() { echo "[gpu_session +$(($(date +%s) - T0))s] $*" | tee -a "$OUT/session.log"; }

add_part() {  # append a data part and extract what the tar holds so far
  cat ".gpu/data/$1" >>"$S/tfds.tar" || exit 1
  tar -xf "$S/tfds.tar" -C "$S/tfds" 2>/dev/null  # a partial tar: complete members only
  stamp "data part $1: $(du -sh "$S/tfds.tar" | cut -f1) so far; $(ls "$S/tfds" | tr '\n' ' ')"
}

phase=$1
shift
case $phase in
bench)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$S/site" .gpu/whl/*.whl || exit 1
  add_part "$1"
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 --version
    python3 -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda13-plugin|flax|optax|orbax-checkpoint|numpy|torch|grain|tensorflow-datasets|opencv-python-headless) '
    nproc
  } 2>&1 | tee "$OUT/env.txt"
  stamp "smoke: the whole training loop on the GPU (tiny network, synthetic set)"
  timeout 150 python3 launch.py --mode=train --config=configs/smoke.py --workdir="$S/smoke" \
    --config.data.data_dir="$S/tfds" --config.num_train_steps=40 --config.log_every=20 \
    --config.checkpoint_every=40 >"$OUT/smoke.log" 2>&1
  stamp "smoke rc=$? ($(grep -c . "$OUT/smoke.log") lines)"
  B=benchmarks
  timeout 300 python3 $B/train_bench.py --config=dark_lsp_gpu --dtype=bfloat16 \
    --batch_sizes=32,64,128 --steps=10 2>"$OUT/train_bench.err" | tee "$OUT/train_bench.jsonl"
  stamp "train_bench bfloat16 rc=$?"
  cp "$OUT/train_bench.jsonl" "$S/"
  timeout 100 python3 $B/torch_train_bench.py --dtype=bfloat16 --batch_sizes=32,64,128 \
    --steps=10 2>"$OUT/torch_train_bench.err" | tee "$OUT/torch_train_bench.jsonl"
  stamp "torch_train_bench rc=$?"
  timeout 80 python3 $B/model_bench.py --dtype=bfloat16 --batch_sizes=64 --repeats=10 \
    --dark_share_only 2>>"$OUT/train_bench.err" | tee "$OUT/model_bench.jsonl"
  stamp "model_bench rc=$?"
  timeout 100 python3 $B/train_bench.py --config=dark_lsp_gpu --dtype=float32 --batch_sizes=64 \
    --steps=5 2>>"$OUT/train_bench.err" | tee -a "$OUT/train_bench.jsonl"
  stamp "train_bench float32 rc=$?"
  cp "$OUT/train_bench.jsonl" "$S/"
  ;;
upload)
  add_part "$1"
  rate=$(python3 -c "
import json
rows = [json.loads(l) for l in open('$S/train_bench.jsonl') if l.startswith('{')]
print(next((r['images_per_s'] for r in rows if r.get('dtype') == 'bfloat16' and r.get('batch') == 64), 0))" 2>/dev/null || echo 0)
  timeout 75 python3 benchmarks/input_bench.py --data_dir="$S/tfds" --train_sources=lsp \
    --workers="$2" --seconds=6 --batch=64 --step_rate="$rate" 2>"$OUT/input_bench.err" |
    tee "$OUT/input_bench.jsonl"
  stamp "input_bench workers=$2 rc=$?"
  cat "$OUT/input_bench.jsonl" >>"$S/input_bench.jsonl"
  ;;
train)
  add_part "$1"
  seconds=$2
  # Steps that fit: the measured bf16 step rate at batch 64 (or 600 images/s), 85 % of it
  # (the input pipeline and logging), after ~150 s of start-up, compilation and evaluations.
  read -r steps every < <(python3 -c "
import json
rows = [json.loads(l) for l in open('$S/train_bench.jsonl') if l.startswith('{')]
ips = next((r['images_per_s'] for r in rows if r.get('dtype') == 'bfloat16' and r.get('batch') == 64), 600)
steps = int(max(200, ($seconds - 150) * ips * 0.85 / 64) // 100 * 100)
print(steps, max(100, steps // 4 // 100 * 100))")
  stamp "training $steps steps, evaluation every $every"
  echo "python3 launch.py --mode=train --config=configs/dark_lsp_gpu.py --workdir=$S/run --config.data.data_dir=$S/tfds --config.num_train_steps=$steps --config.optimizer.warmup_steps=200 --config.eval_every=$every --config.checkpoint_every=$every" >"$OUT/command.txt"
  timeout $((seconds - 15)) python3 launch.py --mode=train --config=configs/dark_lsp_gpu.py \
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
