#!/usr/bin/env bash
# The whole QASPER pipeline on the full train split, timed end to end (issue 17's
# 45-minute goal): label every train question that has evidence (gold candidates:
# evidence + dense, BM25 and random negatives, mined with the base MiniLM), train
# `uae` for one epoch, evaluate on all 1,309 test questions. Prints each stage's
# seconds and writes them, with the CPU model, to OUT/timing.json.
#
# Usage: scripts/pipeline.sh [--bf16] [OUT]      (OUT defaults to runs/pipeline)
#   --bf16   mine and label with the encoder's and the LLM's projections in bf16 (AMX
#            or AVX512_BF16; answer NLLs within 0.02 nats of f32), and train in mixed
#            precision (`uae train --mixed-precision`: bf16 GEMMs, f32 weights; dev
#            metrics within 0.0002 of f32). Evaluation stays f32.
# Env:  UAE_PIPELINE_LIMIT  a smoke test: the first N train questions, dev and test
#                           questions only
#       UAE_DATA_DIR        QASPER folder (default ../shared/data/qasper)
#       UAE_BIN             a `uae` binary instead of building this checkout
# Every stage resumes, so a rerun after an interruption finishes the work, but its
# timing then covers only what was left: time a run from an empty OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
label_args=()
train_args=()
if [[ "${1:-}" == "--bf16" ]]; then
  label_args+=(--bf16 --encoder-bf16)
  train_args+=(--mixed-precision)
  shift
fi
out="${1:-runs/pipeline}"
data="${UAE_DATA_DIR:-../shared/data/qasper}"
[[ -d "$data" ]] || { echo "pipeline: QASPER folder $data not found (set UAE_DATA_DIR)" >&2; exit 1; }
dev_limit=100
eval_args=()
if [[ -n "${UAE_PIPELINE_LIMIT:-}" ]]; then
  label_args+=(--limit "$UAE_PIPELINE_LIMIT")
  eval_args+=(--limit "$UAE_PIPELINE_LIMIT")
  dev_limit="$UAE_PIPELINE_LIMIT"
fi
source scripts/uae-bin.sh
mkdir -p "$out"
t0=$(date +%s)
last=$t0
stages=()
stage() {
  local now
  now=$(date +%s)
  stages+=("\"$1\": $((now - last))")
  echo "== $1 done: $((now - last)) s (total $((now - t0)) s)" >&2
  last=$now
}
# --template chatml: the layout of BENCHMARKS' figures (auto would add SmolLM2's system turn).
$uae label --split train --template chatml --data-dir "$data" --out "$out/labels" "${label_args[@]}" > /dev/null
stage label
$uae train --labels "$out/labels" --loss uae --data-dir "$data" --dev-limit "$dev_limit" --out "$out/uae" "${train_args[@]}" > /dev/null
stage train
$uae eval --split test --data-dir "$data" --model "$out/uae/model" --out "$out/eval-test" "${eval_args[@]}" > /dev/null
stage eval
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
flags=$(grep -m1 "^flags" /proc/cpuinfo | grep -o -w -E "avx512f|avx512_bf16|amx_bf16" | sort -u | paste -sd, -)
{
  echo "{"
  echo "  \"cpu\": \"$cpu\", \"flags\": \"$flags\", \"threads\": $(nproc), \"bf16_labels\": $([[ " ${label_args[*]} " == *" --bf16 "* ]] && echo true || echo false), \"mixed_precision_train\": $([[ ${#train_args[@]} -gt 0 ]] && echo true || echo false),"
  for s in "${stages[@]}"; do echo "  $s,"; done
  echo "  \"total\": $(( $(date +%s) - t0 ))"
  echo "}"
} > "$out/timing.json"
cat "$out/timing.json"
jq -c '{"recall@1": .metrics["recall@1"], map: .metrics.map, "ndcg@10": .metrics["ndcg@10"]}' "$out/eval-test/report.json"
