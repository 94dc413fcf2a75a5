#!/usr/bin/env python3
"""Which questions a utility bar keeps, and how often their best candidate is the
evidence, for a label folder of mined candidates: the fixed bar (`--min-utility B`:
the best candidate's utility at least B nats) against bars relative to each
question's own scale, the gap between its best and second-best candidate
(`--min-gap G`) and the two together. The evidence (`is_gold`) is only counted
here, never used to choose; the choice is made on dev.

    scripts/bar_rules.py LABELS_DIR

Prints one JSON object: per rule, the questions kept, how many of them have the
evidence as their best candidate, and that share.
"""
import json
import sys


def rules():
    out = [(f"best>={b:g}", b, None) for b in (1.0, 1.5, 2.0, 2.5, 3.0)]
    out += [(f"gap>={g:g}", None, g) for g in (0.5, 1.0, 1.5, 2.0)]
    out += [(f"best>={b:g},gap>={g:g}", b, g) for b in (1.0, 1.5) for g in (0.5, 1.0)]
    return out


def keeps(best, gap, bar, min_gap):
    return (bar is None or best >= bar) and (min_gap is None or gap >= min_gap)


def main():
    groups = []
    with open(f"{sys.argv[1]}/labels.jsonl", encoding="utf-8") as f:
        for line in f:
            g = json.loads(line)
            c = sorted(g["candidates"], key=lambda c: c["utility"], reverse=True)
            if not c:
                continue
            second = c[1]["utility"] if len(c) > 1 else float("-inf")
            groups.append((c[0]["utility"], c[0]["utility"] - second, c[0]["is_gold"]))
    table = {}
    for name, bar, gap in rules():
        kept = [gold for best, g, gold in groups if keeps(best, g, bar, gap)]
        table[name] = {"questions": len(kept), "best_is_gold": sum(kept),
                       "share": round(sum(kept) / max(len(kept), 1), 3)}
    print(json.dumps({"questions": len(groups), "rules": table}, indent=1))


if __name__ == "__main__":
    main()
