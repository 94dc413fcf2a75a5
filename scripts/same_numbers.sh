#!/usr/bin/env bash
# Do two `uae` binaries give the same numbers? Runs the README's main job, small
# (40 train questions, 15 test questions, no answer generation), and a 20-step
# training on its gold labels with each binary, then compares labels, scores,
# training logs and the benchmark's metrics (wall times left out).
#
# Usage: scripts/same_numbers.sh BIN_BEFORE BIN_AFTER [OUT]   (OUT default runs/same)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { echo "usage: $0 BIN_BEFORE BIN_AFTER [OUT]" >&2; exit 2; }
before=$1 after=$2 out=${3:-runs/same}
for v in before after; do
  bin=$([[ $v == before ]] && echo "$before" || echo "$after")
  UAE_BIN="$bin" UAE_RUNS="$out/main-$v" UAE_MAIN_QUESTIONS=40 \
    UAE_BENCH_ARGS="--questions 15 --latency-queries 3 --no-answers" scripts/main.sh > "$out-main-$v.log" 2>&1
  "$bin" train --labels "$out/main-$v/labels-gold" --batch-questions 4 --epochs 2 --dev-limit 10 \
    --checkpoint-every 5 --out "$out/train20-$v" > /dev/null
done
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
def lines(p):
    rows = []
    for l in open(p):
        d = json.loads(l); d.pop("seconds", None); rows.append(d)
    return rows
def table(v):
    d = f"{out}/main-{v}/bench"
    f = next(x for x in ("table.json", "report.json") if os.path.exists(f"{d}/{x}"))
    return json.load(open(f"{d}/{f}"))["rows"]
for f in ("labels-gold", "labels-mined"):
    a, b = (lines(f"{out}/main-{v}/{f}/labels.jsonl") for v in ("before", "after"))
    sa, sb = ({r["k"]: r["nll"] for r in lines(f"{out}/main-{v}/{f}/scores.jsonl")} for v in ("before", "after"))
    print(f"{f}: labels.jsonl identical {a == b}; scores {len(sa)} / {len(sb)}, identical {sa == sb}")
for f in ("uae", "infonce", "uae-mined", "../train20"):
    a, b = (lines(f"{out}/main-{v}/{f}/metrics.jsonl".replace(f"main-{v}/../train20", f"train20-{v}")) for v in ("before", "after"))
    steps = lambda r: [x for x in r if "loss" in x]
    dev = lambda r: [x for x in r if "dev" in x]
    worst = max([abs(x["dev"][k] - y["dev"][k]) for x, y in zip(dev(a), dev(b)) for k in x["dev"]] or [0.0])
    print(f"{f.strip('./')}: step lines identical {steps(a) == steps(b)} ({len(steps(a))}); dev metrics largest difference {worst:.1e}")
ra, rb = table("before"), table("after")
worst = max(abs(v - s["metrics"][k]) for r, s in zip(ra, rb) for k, v in (r.get("metrics") or {}).items())
print(f"benchmark: {len(ra)} / {len(rb)} rows, largest metric difference {worst}")
PY
