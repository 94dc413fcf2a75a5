#!/usr/bin/env bash
# One labeller on the whole QASPER train split (gold candidates), against InfoNCE on
# the human evidence of the same candidates, on all test questions with paired
# intervals (issue: a second real labeller, measured).
#
#   scripts/labeller_full.sh [NAME=gemma] [OUT=runs/labeller-full]
#
# NAME picks the LLM: gemma (Gemma 3 270M, `--template auto`, i.e. plain: a base
# model) or smollm2 (SmolLM2-135M-Instruct, `--template chatml`). Labels are scored in
# bf16 where the CPU has AMX or AVX512_BF16 (BF16=0 for f32: labels and
# training). Candidates are mined
# once into OUT/candidates.jsonl and shared by every labeller, so two labellers score
# the same passages and `scripts/compare-labels.py --mean` can average them.
# Trained (seed 0, one epoch, mixed precision where the CPU has a bf16 unit):
#   uae-NAME      `--loss hybrid --gold-weight 0 --min-utility MU` (MU=2: the best
#                 configuration on dev with SmolLM2's utilities; "Every training
#                 configuration tried on the gold candidates")
#   infonce-gold  `--loss infonce` on the gold evidence (once, from any label folder)
# then `uae eval --split test` of each and `uae compare infonce-gold uae-NAME`.
# With both labellers done, MEAN=1 also trains on their mean (uae-mean).
# MODELS="uae-mean ..." trains and evaluates only those (default: every one above).
# Every step resumes or is skipped when its output exists.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-gemma}"
out="${2:-runs/labeller-full}"
mu="${MU:-2}"
data="${UAE_DATA_DIR:-../shared/data/qasper}"
source scripts/uae-bin.sh
case "$name" in
  gemma) lm=(--lm models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf --template auto) ;;
  smollm2) lm=(--template chatml) ;;
  *) echo "labeller_full.sh: NAME is gemma or smollm2, not '$name'" >&2; exit 2 ;;
esac
source scripts/bf16.sh
mkdir -p "$out/labels-$name"
step() { echo "== $* ($(date +%T))" >&2; }
for other in "$out"/labels-*/candidates.jsonl; do
  [[ -f "$other" && ! -f "$out/labels-$name/candidates.jsonl" ]] && cp "$other" "$out/labels-$name/"
done
step "$name labels, the train split"
$uae label --split train "${lm[@]}" "${bf16_label[@]}" --data-dir "$data" \
  --out "$out/labels-$name" > "$out/summary-$name.json"
train() { # model labels flags...
  local model="$1" labels="$2"
  shift 2
  [[ -f "$out/$model/model/config.json" ]] && return
  step "training $model"
  $uae train --labels "$out/$labels" "$@" "${bf16_train[@]}" --data-dir "$data" --dev-limit 5 \
    --out "$out/$model" > "$out/$model.json"
}
evaluate() { # model
  [[ -f "$out/eval-$1-test/report.json" ]] && return
  step "eval $1 on test"
  mkdir -p "$out/eval-$1-test"
  $uae eval --split test --model "$out/$1/model" --by answer_type --data-dir "$data" \
    --out "$out/eval-$1-test" > "$out/eval-$1-test.txt"
}
models=("uae-$name" infonce-gold)
if [[ "${MEAN:-0}" == 1 ]]; then
  [[ -f "$out/labels-mean/labels.jsonl" ]] || python3 scripts/compare-labels.py \
    "$out/labels-smollm2" "$out/labels-gemma" --mean "$out/labels-mean" > "$out/agreement.json"
  models+=(uae-mean)
fi
read -r -a models <<< "${MODELS:-${models[*]}}"
for m in "${models[@]}"; do
  case "$m" in
    infonce-gold) train "$m" "labels-$name" --loss infonce ;;
    uae-mean) train "$m" labels-mean --loss hybrid --gold-weight 0 --min-utility "$mu" ;;
    "uae-$name") train "$m" "labels-$name" --loss hybrid --gold-weight 0 --min-utility "$mu" ;;
    *) echo "labeller_full.sh: no model '$m' (uae-$name, infonce-gold, uae-mean)" >&2; exit 2 ;;
  esac
done
for m in "${models[@]}"; do evaluate "$m"; done
for m in "${models[@]}"; do
  [[ "$m" == infonce-gold || ! -f "$out/eval-infonce-gold-test/report.json" ]] && continue
  $uae compare "$out/eval-infonce-gold-test" "$out/eval-$m-test" \
    --metrics recall@1,map,ndcg@10 --json "$out/compare-infonce-gold-$m-test.json" \
    | tee "$out/compare-infonce-gold-$m-test.txt"
done
step "done"
