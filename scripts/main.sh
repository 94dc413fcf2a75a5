#!/usr/bin/env bash
# The main job on the embedded default (SmolLM2-135M labels MiniLM): fetch the models,
# build, label a subset of QASPER train (gold candidates and, separately, mined
# candidates without evidence), train MiniLM with the `uae` and `infonce` losses,
# then run `uae bench qasper --quick` and print its table.
#
# Usage: scripts/main.sh [QASPER_DIR]
# Env:   UAE_MAIN_QUESTIONS  train questions to label (default 160; the whole split
#                            is 2,098 with evidence and takes ~80 min to label)
#        UAE_RUNS            output folder (default runs/main)
#        UAE_BENCH_ARGS      bench subset flags (default --quick)
#        UAE_BIN             a `uae` binary to run instead of building this checkout
#                            (to compare two versions on the same inputs)
# Every step resumes: rerun the same command after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${UAE_DATA_DIR:-../shared/data/qasper}}"
[[ -d "$data" ]] || { echo "main: QASPER folder $data not found; pass it as the first argument" >&2; exit 1; }
n="${UAE_MAIN_QUESTIONS:-160}"
r="${UAE_RUNS:-runs/main}"
read -r -a bench_args <<< "${UAE_BENCH_ARGS:---quick}"
source scripts/uae-bin.sh
start=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - start )) s)" >&2; }
step "QASPER statistics"
$uae data stats --data-dir "$data"
# SmolLM2's ChatML turn without the system message its own template adds: the layout
# of every figure in BENCHMARKS.md (`--template auto`, the default, renders the model's).
tmpl=(--template chatml)
step "labeling $n train questions, gold candidates"
$uae label --split train --limit "$n" "${tmpl[@]}" --data-dir "$data" --out "$r/labels-gold" > /dev/null
step "labeling $n train questions, mined candidates (no evidence)"
$uae label --split train --limit "$n" "${tmpl[@]}" --candidates mined --data-dir "$data" --out "$r/labels-mined" > /dev/null
for run in "uae labels-gold uae" "infonce labels-gold infonce" "uae-mined labels-mined uae"; do
  read -r name labels loss <<< "$run"
  step "training $name"
  $uae train --labels "$r/$labels" --loss "$loss" --data-dir "$data" --dev-limit 100 --out "$r/$name" > /dev/null
done
step "benchmark"
$uae bench qasper "${bench_args[@]}" --data-dir "$data" --out "$r/bench" \
  --uae "$r/uae/model" --infonce "$r/infonce/model" --uae-mined "$r/uae-mined/model"
step "done; table in $r/bench/table.md"
