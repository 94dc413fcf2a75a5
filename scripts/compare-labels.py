#!/usr/bin/env python3
"""Agreement of two label folders on the same candidates: Spearman rank correlation of
the utilities and their mean absolute difference (nats), matched by (question id,
passage id). Usage: scripts/compare-labels.py LABELS_A LABELS_B"""
import json
import sys


def utilities(d):
    out = {}
    with open(f"{d}/labels.jsonl") as f:
        for line in f:
            g = json.loads(line)
            for c in g["candidates"]:
                out[(g["question_id"], c["passage_id"])] = c["utility"]
    return out


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            r[k] = (i + j) / 2
        i = j + 1
    return r


a, b = utilities(sys.argv[1]), utilities(sys.argv[2])
keys = sorted(set(a) & set(b))
if not keys:
    sys.exit("no candidate in common")
x, y = [a[k] for k in keys], [b[k] for k in keys]
rx, ry = ranks(x), ranks(y)
n = len(keys)
mx, my = sum(rx) / n, sum(ry) / n
cov = sum((p - mx) * (q - my) for p, q in zip(rx, ry))
var = (sum((p - mx) ** 2 for p in rx) * sum((q - my) ** 2 for q in ry)) ** 0.5
print(json.dumps({
    "candidates": n,
    "only_in_a": len(set(a) - set(b)),
    "only_in_b": len(set(b) - set(a)),
    "spearman": round(cov / var, 4),
    "mean_abs_diff_nats": round(sum(abs(p - q) for p, q in zip(x, y)) / n, 4),
}))
