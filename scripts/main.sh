#!/usr/bin/env bash
# The main job (for now): fetch models, build, evaluate BM25 and the base bi-encoder
# on QASPER test, and print both tables. Usage: scripts/main.sh [QASPER_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${UAE_DATA_DIR:-../shared/data/qasper}}"
[[ -d "$data" ]] || { echo "main: QASPER folder $data not found; pass it as the first argument" >&2; exit 1; }
bash scripts/fetch-models.sh
cargo build --release --locked
./target/release/uae data stats --data-dir "$data"
./target/release/uae eval --split test --retriever bm25 --data-dir "$data" --out runs/eval-bm25-test
./target/release/uae eval --split test --retriever dense --data-dir "$data" --out runs/eval-minilm-test
