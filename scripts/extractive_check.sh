#!/usr/bin/env bash
# The evidence-free default on extractive data (issue: never behind answer-match
# training): QASPER questions answered by one short span copied from the evidence
# (scripts/extractive_spans.py), as your own data: answers are those spans, one per
# question, and no evidence is used for training. On mined candidates of the first N
# such train questions, labelled by SmolLM2, with everything else equal:
#   am       `--loss infonce --positives answer-match` (distant supervision)
#   uae-mu2  `--loss uae --min-utility 2` (the previous evidence-free recipe)
#   auto     `hybrid --positives answer-match --min-utility 2 --gold-weight 0`: what
#            `--loss auto` trained before it compared the two signals' reach (with a
#            bar given it now trains this where the bar reaches fewer questions than
#            answer-match, `uae-mu2` elsewhere; without one, answer-overlap
#            positives: EXTRA="ao|--loss infonce --positives answer-overlap")
# then each, and the base, on the first TEST test questions of the same kind, and
# `uae compare` against answer-match. One epoch, seed 0; nothing is tuned here.
#
#   scripts/extractive_check.sh [N=300] [TEST=200] [OUT=runs/extractive]
#   BASE=0 scripts/extractive_check.sh    # without the base model's evaluation
#   EXTRA="name|flags;name|flags" scripts/extractive_check.sh   # more configurations,
#                                          # each compared with answer-match too
#
# Every step resumes or is skipped when its output exists.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-300}"
test_n="${2:-200}"
out="${3:-runs/extractive}"
data="${UAE_DATA_DIR:-../shared/data/qasper}"
source scripts/uae-bin.sh
mkdir -p "$out"
step() { echo "== $* ($(date +%T))" >&2; }
for s in train test; do
  [[ -f "$out/questions-$s.jsonl" ]] && continue
  step "export $s"
  $uae data export-qasper --split "$s" --data-dir "$data" --out "$out/export-$s" >&2
  python3 scripts/extractive_spans.py "$out/export-$s" "$s" "$out/questions-$s.jsonl.part" 8 "$data" >&2
  mv "$out/questions-$s.jsonl.part" "$out/questions-$s.jsonl"
done
step "mined labels, $n train questions"
$uae label --corpus "$out/export-train/corpus.jsonl" --questions "$out/questions-train.jsonl" \
  --candidates mined --limit "$n" --out "$out/labels" > "$out/summary-labels.json"
configs=(
  "am|--loss infonce --positives answer-match"
  "uae-mu2|--loss uae --min-utility 2"
  "auto|--loss hybrid --positives answer-match --min-utility 2 --gold-weight 0"
)
IFS=';' read -r -a extra <<< "${EXTRA:-}"
configs+=("${extra[@]}")
for c in "${configs[@]}"; do
  name="${c%%|*}"
  [[ -f "$out/$name/model/config.json" && -f "$out/$name.json" ]] && continue
  step "training $name"
  # shellcheck disable=SC2086
  $uae train --labels "$out/labels" ${c#*|} --out "$out/$name" > "$out/$name.json"
done
evaluate() { # name model
  local dir="$out/eval-$1-test"
  [[ -f "$dir/report.json" ]] && return
  step "eval $1 on test"
  $uae eval --corpus "$out/export-test/corpus.jsonl" --questions "$out/questions-test.jsonl" \
    --limit "$test_n" --model "$2" --out "$dir" > "$dir.txt"
}
for c in "${configs[@]}"; do evaluate "${c%%|*}" "$out/${c%%|*}/model"; done
compared=(uae-mu2 auto)
for c in "${extra[@]}"; do compared+=("${c%%|*}"); done
if [[ "${BASE:-1}" == 1 ]]; then
  evaluate base models/all-MiniLM-L6-v2
  compared+=(base)
fi
for m in "${compared[@]}"; do
  $uae compare "$out/eval-am-test" "$out/eval-$m-test" --metrics recall@1,map,ndcg@10 \
    --json "$out/compare-am-$m-test.json" > "$out/compare-am-$m-test.txt"
done
$uae compare "$out/eval-uae-mu2-test" "$out/eval-auto-test" --metrics recall@1,map,ndcg@10 \
  --json "$out/compare-uae-mu2-auto-test.json" > "$out/compare-uae-mu2-auto-test.txt"
step done
