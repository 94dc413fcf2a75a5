#!/usr/bin/env bash
# What a partly filled score store costs: labels the first 100 dev questions once,
# removes 5% of the stored scores (seeded), and times BIN labelling the rest again.
# Run it with the binaries of two commits to compare their batch plans.
#
#   scripts/label_reuse.sh BIN [OUT]      (OUT default: runs/label-reuse)
set -euo pipefail
bin="${1:?usage: scripts/label_reuse.sh BIN [OUT]}"
out="${2:-runs/label-reuse}"
args=(label --split dev --limit 100 --bf16 --template chatml)
mkdir -p "$out"
[[ -f "$out/full/labels.jsonl" ]] || "$bin" "${args[@]}" --out "$out/full" > /dev/null
rm -rf "$out/partial" && mkdir -p "$out/partial"
cp "$out/full/manifest.json" "$out/partial/"
python3 - "$out" <<'PY'
import random, sys
out = sys.argv[1]
lines = open(f"{out}/full/scores.jsonl").read().splitlines(True)
random.seed(0)
drop = set(random.sample(range(len(lines)), len(lines) // 20))
open(f"{out}/partial/scores.jsonl", "w").writelines(l for i, l in enumerate(lines) if i not in drop)
print(f"scores {len(lines)}, removed {len(drop)}")
PY
start=$(date +%s.%N)
"$bin" "${args[@]}" --out "$out/partial" > "$out/partial.json" 2> /dev/null
end=$(date +%s.%N)
python3 - "$out/partial.json" "$start" "$end" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"computed {d['scores_computed']}, tokens {d['tokens_scored']}, scoring {d['seconds']:.1f} s, wall {float(sys.argv[3]) - float(sys.argv[2]):.1f} s")
PY
