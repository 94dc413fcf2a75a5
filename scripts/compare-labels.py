#!/usr/bin/env python3
"""Agreement of two label folders on the same candidates (two labellers, or a local
and a remote run), matched by (question id, passage id): Spearman rank correlation of
all utilities pooled and their mean absolute difference (nats); per question (those
with 3 or more common candidates), the mean Spearman of the candidates' utilities and
how often both put the same candidate first; and how often each one's best candidate
is gold evidence (questions with a gold candidate).
With `--mean OUT`, also writes OUT/labels.jsonl: the candidates both scored, each
with the mean of the two utilities (an ensemble of two labellers; `uae train --labels
OUT` reads it), and, where both folders have one for the same candidates, a
manifest.json: A's, its LLM named as the mean of the two (so `--loss auto` knows mined
candidates from gold ones, and the labels' fingerprint names both LLMs).
Usage: scripts/compare-labels.py LABELS_A LABELS_B [--mean OUT]"""
import json
import sys


def groups(d):
    with open(f"{d}/labels.jsonl") as f:
        return [json.loads(line) for line in f]


def utilities(d):
    return {(g["question_id"], c["passage_id"]): c["utility"] for g in groups(d) for c in g["candidates"]}


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


def spearman(x, y):
    rx, ry = ranks(x), ranks(y)
    n = len(x)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((p - mx) * (q - my) for p, q in zip(rx, ry))
    var = (sum((p - mx) ** 2 for p in rx) * sum((q - my) ** 2 for q in ry)) ** 0.5
    return cov / var if var > 0 else None


def per_question(ga, gb):
    """Mean per-question Spearman, top-1 agreement, and best-is-gold rates."""
    by_q = {g["question_id"]: g for g in gb}
    rhos, same_top, n_top = [], 0, 0
    gold_a = gold_b = gold_both = n_gold = 0
    for g in ga:
        h = by_q.get(g["question_id"])
        if h is None:
            continue
        ua = {c["passage_id"]: c for c in g["candidates"]}
        ub = {c["passage_id"]: c for c in h["candidates"]}
        common = sorted(set(ua) & set(ub))
        if len(common) < 2:
            continue
        x, y = [ua[p]["utility"] for p in common], [ub[p]["utility"] for p in common]
        if len(common) >= 3:
            r = spearman(x, y)
            if r is not None:
                rhos.append(r)
        best_a, best_b = max(common, key=lambda p: ua[p]["utility"]), max(common, key=lambda p: ub[p]["utility"])
        n_top += 1
        same_top += best_a == best_b
        if any(ua[p]["is_gold"] for p in common):
            n_gold += 1
            gold_a += ua[best_a]["is_gold"]
            gold_b += ub[best_b]["is_gold"]
            gold_both += ua[best_a]["is_gold"] and ub[best_b]["is_gold"]
    return {
        "questions": n_top,
        "mean_question_spearman": round(sum(rhos) / len(rhos), 4) if rhos else None,
        "top1_agreement": round(same_top / n_top, 4) if n_top else None,
        "questions_with_gold": n_gold,
        "best_is_gold_a": round(gold_a / n_gold, 4) if n_gold else None,
        "best_is_gold_b": round(gold_b / n_gold, 4) if n_gold else None,
        "best_is_gold_both": round(gold_both / n_gold, 4) if n_gold else None,
    }


def write_mean(ga, gb, out):
    import os
    os.makedirs(out, exist_ok=True)
    by_q = {g["question_id"]: g for g in gb}
    with open(f"{out}/labels.jsonl", "w") as f:
        for g in ga:
            h = by_q.get(g["question_id"])
            if h is None:
                continue
            ub = {c["passage_id"]: c["utility"] for c in h["candidates"]}
            cands = []
            for c in g["candidates"]:
                if c["passage_id"] in ub:
                    c = dict(c, utility=(c["utility"] + ub[c["passage_id"]]) / 2, per_answer=[])
                    cands.append(c)
            f.write(json.dumps(dict(g, candidates=cands, nll_without=[])) + "\n")


def write_mean_manifest(dir_a, dir_b, out):
    import os
    paths = [f"{d}/manifest.json" for d in (dir_a, dir_b)]
    if not all(os.path.isfile(p) for p in paths):
        return
    ma, mb = (json.load(open(p)) for p in paths)
    if ma["config"]["candidates"] != mb["config"]["candidates"]:
        return
    ma["lm"] = f"mean of {ma['lm']} and {mb['lm']}"
    ma["lm_sha256"] = f"mean({ma['lm_sha256']},{mb['lm_sha256']})"
    with open(f"{out}/manifest.json", "w") as f:
        json.dump(ma, f, indent=2)


if "--mean" in sys.argv:
    i = sys.argv.index("--mean")
    write_mean(groups(sys.argv[1]), groups(sys.argv[2]), sys.argv[i + 1])
    write_mean_manifest(sys.argv[1], sys.argv[2], sys.argv[i + 1])
    del sys.argv[i : i + 2]
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
    **per_question(groups(sys.argv[1]), groups(sys.argv[2])),
}))
