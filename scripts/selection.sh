#!/usr/bin/env bash
# Calibration out of sample, and adaptive selection against fixed k, on QASPER.
#   1. Label held-out candidates: each of the first N dev and the first N test
#      questions' top 5 passages under the base model (`--candidates retrieved`).
#   2. Calibrate each model on the dev labels (calibration.json, in a folder of
#      links to the model, so the model folder itself is not touched).
#   3. Evaluate each on the first EVAL test questions (dense and hybrid), checking
#      the calibration on the test labels (ECE, Brier, reliability.svg) and sweeping
#      selection rules (selection.json/.svg).
# Models: NAME=FOLDER pairs (default: the base MiniLM only).
#
#   scripts/selection.sh [N=150] [EVAL=300] [OUT=runs/selection] [NAME=MODEL ...]
#   scripts/selection.sh 150 300 runs/selection base=models/all-MiniLM-L6-v2 \
#     auto=runs/evidence-free/auto/model am=runs/evidence-free/am/model
#
# DIFFICULTY=DIR[,DIR...]: label folders of the same LLM and template (the training
# labels, say) whose questions' no-context NLLs also fit p(helps)'s question term
# (`uae calibrate --difficulty-labels`). Labels are scored in bf16 where the CPU has
# a bf16 unit (scripts/bf16.sh; BF16=0 keeps f32).
#
# CALIBRATE="--cosine-only" (or other `uae calibrate` flags) for every model named.
#
# Every step is skipped when its output exists (labels resume).
# python3 scripts/selection_table.py OUT prints the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-150}"
evaln="${2:-300}"
out="${3:-runs/selection}"
shift $(( $# < 3 ? $# : 3 ))
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=("base=models/all-MiniLM-L6-v2")
data="${UAE_DATA_DIR:-../shared/data/qasper}"
source scripts/uae-bin.sh
source scripts/bf16.sh
difficulty=()
IFS=',' read -r -a dirs <<< "${DIFFICULTY:-}"
for d in "${dirs[@]}"; do difficulty+=(--difficulty-labels "$d"); done
mkdir -p "$out"
step() { echo "== $* ($(date +%T))" >&2; }
base=models/all-MiniLM-L6-v2
for split in dev test; do
  ranking="$out/base-ranking-$split"
  [[ -f "$ranking/run.trec" ]] || {
    step "base ranking, $split"
    $uae eval --split "$split" --limit "$n" --model "$base" --data-dir "$data" \
      --cache "$out/cache" --out "$ranking" > /dev/null
  }
  [[ -f "$out/labels-$split/labels.jsonl" ]] || {
    step "labels, $split: top 5 of the first $n questions"
    $uae label --split "$split" --limit "$n" --candidates retrieved \
      --ranking "$ranking/run.trec" --top-k 5 "${bf16_label[@]}" --data-dir "$data" \
      --out "$out/labels-$split" > "$out/summary-labels-$split.json"
  }
done
for m in "${models[@]}"; do
  name="${m%%=*}"
  dir="${m#*=}"
  cal="$out/$name-model"
  if [[ ! -f "$cal/calibration.json" ]]; then
    step "calibrating $name on dev"
    mkdir -p "$cal"
    for f in "$dir"/*; do ln -sfn "$(realpath "$f")" "$cal/$(basename "$f")"; done
    # shellcheck disable=SC2086  # CALIBRATE holds flags: split on purpose
    $uae calibrate --model "$cal" --labels "$out/labels-dev" "${difficulty[@]}" ${CALIBRATE:-} > "$out/calibrate-$name.json"
  fi
  for retriever in dense hybrid; do
    e="$out/eval-$name-$retriever-test"
    [[ -f "$e/report.json" ]] && continue
    step "eval $name ($retriever) on test"
    # The calibration check is the same for both retrievers (it scores the labelled
    # pairs): run once, with dense.
    check=()
    [[ "$retriever" == dense ]] && check=(--labels "$out/labels-test")
    $uae eval --split test --limit "$evaln" --model "$cal" --retriever "$retriever" \
      "${check[@]}" --min-p-helps 0.2 --data-dir "$data" \
      --cache "$out/cache" --out "$e" > "$e.txt"
  done
done
step "done"
