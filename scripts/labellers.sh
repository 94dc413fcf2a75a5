#!/usr/bin/env bash
# Two labellers on the same candidates: SmolLM2-135M-Instruct (`--template chatml`, the
# layout of every other figure) and Gemma 3 270M (`--template auto`: a base model
# without a chat template, so `plain`). Gold candidates of the first N train
# questions; their agreement (scripts/compare-labels.py); then `uae` trained on each
# labeller's utilities and on their mean, and InfoNCE on the gold evidence, each
# scored on the first DEV dev questions (the trainer's in-memory evaluation).
#
#   scripts/labellers.sh [N=400] [DEV=300] [OUT=runs/labellers]
#
# Every step resumes when rerun. Prints the agreement, then one JSON line per model:
# best dev metrics. UAE_TRAIN=0 stops after the agreement (labelling is the long part:
# on a 2-core Zen 1 each labeller scores ~100 questions in 20 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-400}"
dev="${2:-300}"
out="${3:-runs/labellers}"
data="${UAE_DATA_DIR:-../shared/data/qasper}"
source scripts/uae-bin.sh
gemma=models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf
mkdir -p "$out"
step() { echo "== $* ($(date +%T))" >&2; }
step "SmolLM2 labels, $n questions"
$uae label --split train --limit "$n" --template chatml --data-dir "$data" \
  --out "$out/labels-smollm2" > "$out/summary-smollm2.json"
step "Gemma 3 labels, $n questions"
# The same candidates, mined once: a folder that holds candidates.jsonl reuses it.
mkdir -p "$out/labels-gemma"
[[ -f "$out/labels-gemma/candidates.jsonl" ]] || cp "$out/labels-smollm2/candidates.jsonl" "$out/labels-gemma/"
$uae label --split train --limit "$n" --lm "$gemma" --data-dir "$data" \
  --out "$out/labels-gemma" > "$out/summary-gemma.json"
python3 scripts/compare-labels.py "$out/labels-smollm2" "$out/labels-gemma" \
  --mean "$out/labels-mean" | tee "$out/agreement.json"
[[ "${UAE_TRAIN:-1}" == 0 ]] && exit 0
for run in "uae-smollm2 labels-smollm2 uae" "uae-gemma labels-gemma uae" \
  "uae-mean labels-mean uae" "infonce labels-smollm2 infonce"; do
  read -r name labels loss <<< "$run"
  step "training $name"
  $uae train --labels "$out/$labels" --loss "$loss" --data-dir "$data" --dev-limit "$dev" \
    --out "$out/$name" > "$out/$name.json"
done
for name in uae-smollm2 uae-gemma uae-mean infonce; do
  python3 - "$out/$name/metrics.jsonl" "$name" <<'PY'
import json, sys
dev = [r for r in map(json.loads, open(sys.argv[1])) if "dev_metric" in r]
best = max(dev, key=lambda r: r["dev_metric"])["dev"]
keys = ["recall@1", "map", "ndcg@10", "mrr"]
print(json.dumps({"model": sys.argv[2], **{k: round(best[k], 4) for k in keys}}))
PY
done
