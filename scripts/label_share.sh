#!/usr/bin/env bash
# What sharing prompt prefixes saves: labels the first N questions of a split (train
# unless UAE_SPLIT says otherwise; gold candidates unless the extra flags say
# otherwise) with two `uae` binaries, one after the other, and prints each run's
# scoring seconds, tokens and shared tokens, then how far their scores differ.
# Give the binaries of two commits (before and after a change to the batch plan).
#
#   scripts/label_share.sh BIN_A BIN_B [N] [OUT] [-- extra label flags, e.g. --bf16]
#   (N default 200, OUT default runs/label-share)
#   UAE_SPLIT=test scripts/label_share.sh A B 100 OUT -- --bf16 \
#       --candidates retrieved --ranking runs/eval-minilm-test/run.trec --top-k 5
set -euo pipefail
a="${1:?usage: scripts/label_share.sh BIN_A BIN_B [N] [OUT] [-- flags]}"
b="${2:?usage: scripts/label_share.sh BIN_A BIN_B [N] [OUT] [-- flags]}"
shift 2
n=200
out=runs/label-share
[[ $# -gt 0 && "$1" != "--" ]] && { n="$1"; shift; }
[[ $# -gt 0 && "$1" != "--" ]] && { out="$1"; shift; }
[[ "${1:-}" == "--" ]] && shift
mkdir -p "$out"
for side in a b; do
  bin=$a
  [[ $side == b ]] && bin=$b
  rm -rf "${out:?}/$side"
  "$bin" label --split "${UAE_SPLIT:-train}" --limit "$n" "$@" --out "$out/$side" > "$out/$side.json" 2> /dev/null
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for side in "ab":
    d = json.load(open(f"{out}/{side}.json"))
    print(f"{side}: scores {d['scores_computed']}, tokens {d['tokens_scored']}, "
          f"shared {d.get('tokens_shared', 0)}, scoring {d['seconds']:.1f} s")
def nll(side):
    return {json.loads(l)["k"]: json.loads(l)["nll"] for l in open(f"{out}/{side}/scores.jsonl")}
x, y = nll("a"), nll("b")
assert x.keys() == y.keys(), "the two runs scored different keys"
d = [abs(x[k] - y[k]) for k in x]
print(f"scores equal bit for bit: {sum(v == 0 for v in d)} of {len(d)}; largest difference {max(d):.3g} nats")
PY
python3 "$(dirname "$0")/utility_diff.py" "$out/a" "$out/b"
