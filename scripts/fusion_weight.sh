#!/usr/bin/env bash
# The convex fusion weight, chosen on QASPER dev, then tested once against reciprocal
# rank fusion (k = 60, untuned), dense and BM25 on QASPER test and SciFact.
#   dev:  the first N dev questions, dense weight 0.1 ... 0.9 (`--fusion convex`),
#         RRF, dense, BM25; the weight with the best dev MAP is kept
#   test: the first N test questions and SciFact (no dev split: the QASPER weight
#         is used as it is), `uae compare` of the kept convex fusion against RRF
#         and against each part.
# Passage embeddings are embedded once per collection (`uae eval --cache`).
#
#   scripts/fusion_weight.sh [N=300] [OUT=runs/fusion] [MODEL=models/all-MiniLM-L6-v2]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-300}"
out="${2:-runs/fusion}"
model="${3:-models/all-MiniLM-L6-v2}"
data="${UAE_DATA_DIR:-../shared/data/qasper}"
scifact="${SCIFACT:-../shared/data/scifact}"
source scripts/uae-bin.sh
mkdir -p "$out"
step() { echo "== $* ($(date +%T))" >&2; }
ev() { # name source-args... (skipped when done)
  local name="$1"
  shift
  [[ -f "$out/$name/report.json" ]] && return
  step "eval $name"
  $uae eval --model "$model" --cache "$out/cache" --out "$out/$name" "$@" > "$out/$name.txt"
}
dev=(--split dev --limit "$n" --data-dir "$data")
ev dev-dense "${dev[@]}" --retriever dense
ev dev-bm25 "${dev[@]}" --retriever bm25
ev dev-rrf "${dev[@]}" --retriever hybrid --fusion rrf
weights=(0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9)
for w in "${weights[@]}"; do
  ev "dev-convex$w" "${dev[@]}" --retriever hybrid --fusion convex --dense-weight "$w"
done
best=$(python3 - "$out" "${weights[@]}" <<'EOF'
import json, sys
out, weights = sys.argv[1], sys.argv[2:]
m = {w: json.load(open(f"{out}/dev-convex{w}/report.json"))["metrics"]["map"] for w in weights}
print(max(weights, key=lambda w: (m[w], -abs(float(w) - 0.5))))
EOF
)
echo "$best" > "$out/best-weight.txt"
step "dev-chosen dense weight: $best"
test=(--split test --limit "$n" --data-dir "$data")
sci=(--beir "$scifact")
for c in "qasper-test|${test[*]}" "scifact|${sci[*]}"; do
  name="${c%%|*}"
  # shellcheck disable=SC2206
  args=(${c#*|})
  ev "$name-dense" "${args[@]}" --retriever dense
  ev "$name-bm25" "${args[@]}" --retriever bm25
  ev "$name-rrf" "${args[@]}" --retriever hybrid --fusion rrf
  ev "$name-convex" "${args[@]}" --retriever hybrid --fusion convex --dense-weight "$best"
  for pair in "rrf convex" "dense convex" "bm25 convex" "dense rrf" "bm25 rrf"; do
    set -- $pair
    $uae compare "$out/$name-$1" "$out/$name-$2" --json "$out/compare-$name-$1-$2.json" \
      > "$out/compare-$name-$1-$2.txt"
  done
done
step "done"
