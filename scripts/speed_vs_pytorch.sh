#!/usr/bin/env bash
# Same-machine, same-window speed comparison: uae (f32 and bf16) against PyTorch at the
# shapes of `uae bench embed|label|train`, alternating the two so that drift in the
# machine's speed hits both. Needs a venv with torch, sentence-transformers,
# transformers, accelerate and gguf (PY=path/to/python), and an idle machine.
#   PY=/root/st-venv/bin/python scripts/speed_vs_pytorch.sh [ROUNDS] [embed|label|train ...]
# With workload names after ROUNDS, only those rows run (default: all three).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
ROUNDS=${1:-2}
shift || true
WHAT=" ${*:-embed label train} "
has() { [[ $WHAT == *" $1 "* ]]; }
UAE=./target/release/uae
PT="$PY scripts/pytorch_baselines.py"
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  if has embed; then
    echo "embed uae-f32 $($UAE bench embed 2>/dev/null | jq .tokens_per_s)"
    echo "embed pytorch $($PT embed 2>/dev/null | jq .tokens_per_s)"
    echo "embed uae-bf16 $($UAE bench embed --bf16 2>/dev/null | jq .tokens_per_s)"
  fi
  if has label; then
    echo "label uae-f32 $($UAE bench label 2>/dev/null | jq -c '[.results[].tokens_per_s]')"
    echo "label pytorch $($PT label 2>/dev/null | jq -c '[.results[].tokens_per_s]')"
    echo "label uae-bf16 $($UAE bench label --bf16 2>/dev/null | jq -c '[.results[].tokens_per_s]')"
  fi
  if has train; then
    echo "train uae-f32 $($UAE bench train --steps 2 2>/dev/null | jq .tokens_per_s)"
    echo "train pytorch $($PT train 2>/dev/null | jq .tokens_per_s)"
    # Mixed precision on both sides (bf16 GEMMs, f32 weights); skipped without a bf16 unit.
    if $UAE bench train --steps 1 --questions 1 --candidates 1 --tokens 8 --mixed-precision >/dev/null 2>&1; then
      echo "train uae-mixed $($UAE bench train --steps 2 --mixed-precision 2>/dev/null | jq .tokens_per_s)"
      echo "train pytorch-autocast $($PT train --autocast 2>/dev/null | jq .tokens_per_s)"
    fi
  fi
done
