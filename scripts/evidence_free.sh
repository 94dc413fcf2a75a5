#!/usr/bin/env bash
# Evidence-free training on QASPER, per answer type (issue: never behind answer-match
# training). Mined candidates (no evidence used) of the first N answerable train
# questions, labelled by SmolLM2; then, on those labels, with everything else equal:
#   uae-mu2    `--loss uae --min-utility 2` (the previous evidence-free recipe)
#   am         `--loss infonce --positives answer-match` (distant supervision)
#   auto       `hybrid --positives answer-match --min-utility 2 --gold-weight 0`
#              (utility where the LLM is sure, answer-match positives where it is
#              not): what `--loss auto` trained on mined candidates before it
#              compared the two signals' reach. The name is kept for the runs already
#              made; `--loss auto` now trains `infonce --positives answer-overlap`
#              (`ao` in BENCHMARKS.md's EXTRA line), and this or `uae-mu2` only when
#              a utility bar is given.
# each evaluated on the first DEV dev questions, split by answer type (`uae eval --by
# answer_type`), and compared with `uae compare --by answer_type` against answer-match.
# Then on test, once, the models named in TEST (default: base, uae-mu2, am, auto), on
# the first TEST_LIMIT test questions (default: all). The base model is evaluated the
# same way. scripts/evidence_free_table.py prints the tables.
# Where the CPU has a bf16 unit (AMX or AVX512_BF16), labels are scored in bf16 and
# training runs in mixed precision (scripts/bf16.sh; BF16=0 keeps f32).
# One epoch, seed 0; training evaluates five dev questions only (`--dev-limit 5`: with
# one epoch the last model is the one kept, and `uae eval` does the dev numbers).
#
#   scripts/evidence_free.sh [N=400] [DEV=300] [OUT=runs/evidence-free]
#   TEST_LIMIT=300 scripts/evidence_free.sh    # what BENCHMARKS.md's table ran (2-core Zen 1)
#
# Every step resumes (labels, checkpoints) or is skipped when its output exists.
# EXTRA="name|flags;..." adds configurations (trained and evaluated on dev).
# UAE_TEST=0 stops before test (tune on dev first).
# LABELLER=gemma labels with Gemma 3 270M (`--template auto`: plain, a base model)
# instead of SmolLM2-135M-Instruct (its own chat template).
# SHARE_FROM=DIR (an earlier run with the same N) copies its mined candidates, so both
# labellers score the same passages, and its `am` model and evaluations: answer-match
# training reads the candidates and the answers, never a utility, so it is the same
# model whichever LLM labelled (the script checks the candidates are the same file).
# MEAN_WITH=DIR (another labeller's run on the same candidates) averages the two
# labellers' utilities (scripts/compare-labels.py --mean: OUT/labels-mean, their
# agreement in OUT/agreement.json) and trains `auto-mean`: the `hybrid` target of
# `auto` above on the ensemble.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-400}"
dev="${2:-300}"
out="${3:-runs/evidence-free}"
data="${UAE_DATA_DIR:-../shared/data/qasper}"
source scripts/uae-bin.sh
source scripts/bf16.sh
case "${LABELLER:-smollm2}" in
  smollm2) lm=() ;;
  gemma) lm=(--lm models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf --template auto) ;;
  *) echo "evidence_free.sh: LABELLER is smollm2 or gemma, not '$LABELLER'" >&2; exit 2 ;;
esac
mkdir -p "$out/labels"
step() { echo "== $* ($(date +%T))" >&2; }
share="${SHARE_FROM:-}"
if [[ -n "$share" ]]; then
  [[ -f "$out/labels/candidates.jsonl" ]] || cp "$share/labels/candidates.jsonl" "$out/labels/"
  cmp -s "$share/labels/candidates.jsonl" "$out/labels/candidates.jsonl" || {
    echo "evidence_free.sh: $out and $share mined different candidates; not sharing am" >&2
    exit 2
  }
fi
step "mined labels, $n train questions"
$uae label --split train --candidates mined --limit "$n" "${lm[@]}" "${bf16_label[@]}" --data-dir "$data" \
  --out "$out/labels" > "$out/summary-labels.json"
if [[ -n "${MEAN_WITH:-}" && ! -f "$out/labels-mean/manifest.json" ]]; then
  python3 scripts/compare-labels.py "$MEAN_WITH/labels" "$out/labels" --mean "$out/labels-mean" \
    > "$out/agreement.json"
fi
if [[ -n "$share" && ! -d "$out/am" ]]; then
  cp -r "$share/am" "$share/am.json" "$out/"
  for e in "$share"/eval-am-*; do cp -r "$e" "$out/"; done
fi
configs=(
  "uae-mu2|--loss uae --min-utility 2"
  "am|--loss infonce --positives answer-match"
  "auto|--loss hybrid --positives answer-match --min-utility 2 --gold-weight 0"
)
# More configurations to try on dev: EXTRA="name|flags;name|flags" (evaluated on dev
# and compared with answer-match there; on test only if named in TEST).
IFS=';' read -r -a extra <<< "${EXTRA:-}"
configs+=("${extra[@]}")
[[ -n "${MEAN_WITH:-}" ]] && configs+=("auto-mean|--loss hybrid --positives answer-match --min-utility 2 --gold-weight 0")
for c in "${configs[@]}"; do
  name="${c%%|*}"
  # shellcheck disable=SC2086
  [[ -f "$out/$name/model/config.json" && -f "$out/$name.json" ]] || {
    step "training $name"
    labels="$out/labels"
    [[ "$name" == *-mean ]] && labels="$out/labels-mean"
    $uae train --labels "$labels" ${c#*|} "${bf16_train[@]}" --data-dir "$data" --dev-limit 5 \
      --out "$out/$name" > "$out/$name.json"
  }
done
evaluate() { # name model split [limit]
  local dir="$out/eval-$1-$3"
  [[ -f "$dir/report.json" ]] && return
  step "eval $1 on $3"
  $uae eval --split "$3" ${4:+--limit "$4"} --model "$2" --by answer_type \
    --data-dir "$data" --out "$dir" > "$dir.txt"
}
models=(base)
for c in "${configs[@]}"; do models+=("${c%%|*}"); done
model_dir() { [[ "$1" == base ]] && echo models/all-MiniLM-L6-v2 || echo "$out/$1/model"; }
for m in "${models[@]}"; do evaluate "$m" "$(model_dir "$m")" dev "$dev"; done
for m in "${models[@]}"; do
  [[ "$m" == am || "$m" == base ]] && continue
  $uae compare "$out/eval-am-dev" "$out/eval-$m-dev" --by answer_type --metrics recall@1,map,ndcg@10 \
    --json "$out/compare-am-$m-dev.json" > "$out/compare-am-$m-dev.txt"
done
[[ "${UAE_TEST:-1}" == 0 ]] && exit 0
read -r -a tested <<< "${TEST:-base uae-mu2 am auto}"
for m in "${tested[@]}"; do evaluate "$m" "$(model_dir "$m")" test "${TEST_LIMIT:-}"; done
for m in "${tested[@]}"; do
  [[ "$m" == am ]] && continue
  $uae compare "$out/eval-am-test" "$out/eval-$m-test" --by answer_type --metrics recall@1,map,ndcg@10 \
    --json "$out/compare-am-$m-test.json" > "$out/compare-am-$m-test.txt"
done
# The new default against the previous evidence-free recipe.
$uae compare "$out/eval-uae-mu2-test" "$out/eval-auto-test" --by answer_type \
  --metrics recall@1,map,ndcg@10 --json "$out/compare-uae-mu2-auto-test.json" \
  > "$out/compare-uae-mu2-auto-test.txt"
step "done"
