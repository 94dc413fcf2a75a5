#!/bin/sh
# Dense, BM25 and hybrid (reciprocal rank fusion, k = 60) on the first N QASPER test
# questions and on SciFact (BEIR test), then `uae compare` between them.
# Usage: scripts/hybrid.sh [N] [OUT]   (defaults: 200 runs/hybrid)
set -e
N=${1:-200}
OUT=${2:-runs/hybrid}
U=${UAE:-./target/release/uae}
SCIFACT=${SCIFACT:-../shared/data/scifact}
for r in bm25 dense hybrid; do
  $U eval --retriever "$r" --fusion rrf --split test --limit "$N" --out "$OUT/qasper-test$N-$r"
  $U eval --retriever "$r" --fusion rrf --beir "$SCIFACT" --out "$OUT/scifact-$r"
done
for d in "qasper-test$N" scifact; do
  for pair in "bm25 hybrid" "dense hybrid" "bm25 dense"; do
    set -- $pair
    echo "== $d: $1 -> $2"
    $U compare "$OUT/$d-$1" "$OUT/$d-$2"
  done
done
