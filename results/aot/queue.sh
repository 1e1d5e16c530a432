#!/usr/bin/env bash
# The order results/aot was produced in on a loaded 2-core machine (one compile at a time,
# at most 3 bisection compiles per report): the GPU nodes, the bn_sync comparison, then
# the 4- and 256-chip slice of each TPU family, then the other slices.
cd "$(dirname "$0")/../.."
PY=${PY:-.venv-aot/bin/python}
[ -n "${WAIT_PID:-}" ] && while kill -0 "$WAIT_PID" 2> /dev/null; do sleep 15; done
export MAX_BATCH_COMPILES=${MAX_BATCH_COMPILES:-3}
bash results/aot/make_reports.sh h100x8 a100x8 h200x8
mkdir -p results/aot/bn_sync
for target in h100x8 v5e:16x16; do
  for mode in global local group:4; do
    f="results/aot/bn_sync/${target/:/_}_${mode/:/}.json"
    [ -f "$f" ] && continue
    [ "$target" = h100x8 ] && [ "$mode" = global ] && continue  # = the h100x8 report's train jit
    echo "[$(date +%H:%M:%S)] bn_sync=$mode on $target" >> results/aot/make_reports.log
    nice -n 10 "$PY" launch.py --mode=compile --config=configs/dark_lsp_gpu.py --target="$target" \
      --per_device_batch=64 --forms=jit --batch_search=false --config.model.bn_sync="$mode" \
      --output="$f" > "${f%.json}.txt" 2>&1 || echo "  failed: ${f%.json}.txt" >> results/aot/make_reports.log
  done
done
bash results/aot/make_reports.sh v5e:2x2 v5e:16x16 v6e:2x2 v6e:16x16 v5p:2x2x1 v5p:4x8x8 v4:2x2x1 v4:4x8x8
bash results/aot/make_reports.sh
