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
#                 configuration tried on the gold candidates"); MU=1.5 trains
#                 uae-NAME-mu1.5 beside it (a bar re-tuned for another LLM's scale)
#   infonce-gold  `--loss infonce` on the gold evidence (once, from any label folder)
# then `uae eval --split test` of each and `uae compare infonce-gold uae-NAME`; with
# DEV=N, first on the first N dev questions (tuning: eval-*-dev, compare-*-dev), and
# UAE_TEST=0 stops there.
# With both labellers done, MEAN=1 also trains on their mean (uae-mean).
# MODELS="uae-mean ..." trains and evaluates only those (default: every one above).
# Every step resumes or is skipped when its output exists.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-gemma}"
out="${2:-runs/labeller-full}"
mu="${MU:-2}"
sfx=""  # another bar is another model: uae-NAME-muMU
[[ "$mu" != 2 ]] && sfx="-mu$mu"
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
evaluate() { # model split [limit]
  local dir="$out/eval-$1-$2"
  [[ -f "$dir/report.json" ]] && return
  step "eval $1 on $2"
  mkdir -p "$dir"
  $uae eval --split "$2" ${3:+--limit "$3"} --model "$out/$1/model" --by answer_type --data-dir "$data" \
    --out "$dir" > "$dir.txt"
}
compare() { # split
  for m in "${models[@]}"; do
    [[ "$m" == infonce-gold || ! -f "$out/eval-infonce-gold-$1/report.json" ]] && continue
    $uae compare "$out/eval-infonce-gold-$1" "$out/eval-$m-$1" \
      --metrics recall@1,map,ndcg@10 --json "$out/compare-infonce-gold-$m-$1.json" \
      | tee "$out/compare-infonce-gold-$m-$1.txt"
  done
}
models=("uae-$name$sfx" infonce-gold)
if [[ "${MEAN:-0}" == 1 ]]; then
  [[ -f "$out/labels-mean/labels.jsonl" ]] || python3 scripts/compare-labels.py \
    "$out/labels-smollm2" "$out/labels-gemma" --mean "$out/labels-mean" > "$out/agreement.json"
  models+=("uae-mean$sfx")
fi
read -r -a models <<< "${MODELS:-${models[*]}}"
for m in "${models[@]}"; do
  case "$m" in
    infonce-gold) train "$m" "labels-$name" --loss infonce ;;
    "uae-mean$sfx") train "$m" labels-mean --loss hybrid --gold-weight 0 --min-utility "$mu" ;;
    "uae-$name$sfx") train "$m" "labels-$name" --loss hybrid --gold-weight 0 --min-utility "$mu" ;;
    *) echo "labeller_full.sh: no model '$m' (uae-$name$sfx, infonce-gold, uae-mean$sfx)" >&2; exit 2 ;;
  esac
done
if [[ -n "${DEV:-}" ]]; then
  for m in "${models[@]}"; do evaluate "$m" dev "$DEV"; done
  compare dev
  [[ "${UAE_TEST:-1}" == 0 ]] && exit 0
fi
for m in "${models[@]}"; do evaluate "$m" test; done
compare test
step "done"
