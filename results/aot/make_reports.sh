#!/usr/bin/env bash
# Regenerates results/aot/: one compile report per (config, target), one compile at a time.
# Each chip gets the batch the config gives one device: dark_lsp_gpu 64, unipose_lsp 8.
# Usage: bash results/aot/make_reports.sh [TARGET ...]  (default: every listed target);
# needs the [aot] extra (here: .venv-aot). ResNet-101 TPU compiles take 10-30 min each on a
# 2-core machine: run it in the background with nice.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv-aot/bin/python}
OUT=results/aot
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(h100x8 a100x8 h200x8 v5e:2x2 v5e:16x16 v4:2x2x1 v4:4x8x8 v5p:2x2x1 v5p:4x8x8 v6e:2x2 v6e:16x16 v5e:2x4 v5e:4x4 v5e:4x8 v5e:8x8 v5e:8x16 v4:2x2x2 v4:2x2x4 v4:2x4x4 v4:4x4x4 v4:4x4x8 v5p:2x2x2 v5p:2x2x4 v5p:2x4x4 v5p:4x4x4 v5p:4x4x8 v6e:2x4 v6e:4x4 v6e:4x8 v6e:8x8 v6e:8x16)
for target in "${targets[@]}"; do
  for pair in dark_lsp_gpu:64 unipose_lsp:8; do
    config=${pair%%:*}; per=${pair##*:}
    file="$OUT/$config/${target/:/_}.json"
    [ -f "$file" ] && continue
    mkdir -p "$OUT/$config"
    echo "[$(date +%H:%M:%S)] $config on $target" >> "$OUT/make_reports.log"
    nice -n 10 "$PY" launch.py --mode=compile --config=configs/$config.py --target="$target" \
      --per_device_batch="$per" --max_batch_compiles="${MAX_BATCH_COMPILES:-6}" --output="$file" > "$OUT/$config/${target/:/_}.txt" 2>&1 \
      || echo "  failed: see $OUT/$config/${target/:/_}.txt" >> "$OUT/make_reports.log"
  done
done
