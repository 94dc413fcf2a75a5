#!/usr/bin/env bash
# Reliability probe: label a questions file with 1% poisoned rows (too long for the
# LLM's context, empty, bad UTF-8, cut JSON, a line over the 16 MiB limit, an
# unknown positive; scripts/poisoned_probe.py) and check that every other question
# is labelled and every poisoned one is named by its line in summary.json. The LLM
# is the tiny random Llama of the parity fixtures (256-token context, so a 400-word
# question cannot fit): this measures the pipeline, not the labels.
#
#   scripts/poisoned_probe.sh [N=10000] [OUT=runs/poisoned-probe]
#
# Prints the peak memory of the run (the oversize line is refused before it is
# parsed) and exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
out="${2:-runs/poisoned-probe}"
source scripts/uae-bin.sh
rm -rf "$out"
python3 scripts/poisoned_probe.py "$out" "$n"
/usr/bin/time -v $uae label --corpus "$out/corpus.jsonl" --questions "$out/questions.jsonl" \
  --lm crates/lm/tests/fixtures/tiny/llama --out "$out/labels" \
  > "$out/summary.json" 2> "$out/label.log"
grep -E 'Maximum resident|Elapsed \(wall' "$out/label.log"
python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
exp = json.load(open(f"{out}/expected.json"))
s = json.load(open(f"{out}/summary.json"))
labelled = [json.loads(l)["question_id"] for l in open(f"{out}/labels/labels.jsonl")]
lines = exp["lines"]
bad = sorted(l for k, v in lines.items() if k != "too_long" for l in v)
long = sorted(lines.get("too_long", []))
want = exp["questions"] - exp["poisoned"]
poisoned_ids = {f"q{l}" for v in lines.values() for l in v}
checks = {
    f"labelled {len(labelled)} questions, want {want}": len(labelled) == want,
    "no poisoned question among the labels": not poisoned_ids & set(labelled),
    f"bad rows named by line: {s.get('skipped_bad_rows')} of {len(bad)}":
        s.get("skipped_bad_lines") == bad,
    f"too-long questions named by line: {s.get('skipped_too_long')} of {len(long)}":
        s.get("skipped_too_long_lines") == long,
}
log = open(f"{out}/label.log").read()
named = sum(f"questions.jsonl:{l}:" in log for l in bad + long[:20])
checks[f"the log names {named} of {len(bad) + len(long[:20])} lines"] = named == len(bad) + len(long[:20])
for k, ok in checks.items():
    print(("ok   " if ok else "FAIL ") + k)
sys.exit(0 if all(checks.values()) else 1)
EOF
