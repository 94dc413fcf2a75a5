#!/usr/bin/env python3
"""The tables of scripts/evidence_free.sh's folder: R@1 / MAP / nDCG@10 per answer type
for each model (dev: the first DEV questions; devall: every dev question, folders
`eval-NAME-devall`; test), and the paired comparisons against answer-match.

    scripts/evidence_free_table.py [OUT=runs/evidence-free]
"""
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "runs/evidence-free"
# The four configurations first, then any other the folder holds (EXTRA, auto-mean).
models = ["base", "am", "uae-mu2", "auto"]
found = {d[len("eval-"):].rsplit("-", 1)[0] for d in os.listdir(out) if d.startswith("eval-")}
models += sorted(found - set(models))
types = ["all", "extractive", "abstractive", "yes_no"]
names = {"recall@1": "R@1", "map": "MAP", "ndcg@10": "nDCG@10"}

for split in ["dev", "devall", "test"]:
    rows = []
    for m in models:
        p = f"{out}/eval-{m}-{split}/report.json"
        if not os.path.exists(p):
            continue
        r = json.load(open(p))
        by = {g["value"]: g for g in r.get("by", {}).get("groups", [])}
        cells = []
        for t in types:
            if t == "all":
                met, n = r["metrics"], r["evaluable_queries"]
            elif t in by:
                met, n = by[t]["metrics"], by[t]["queries"]
            else:
                cells.append("")
                continue
            cells.append(f"{met['recall@1']:.4f} / {met['map']:.4f} / {met['ndcg@10']:.4f}")
        rows.append((m, cells, n))
    if not rows:
        continue
    counts = {}
    r = json.load(open(f"{out}/eval-{rows[0][0]}-{split}/report.json"))
    counts["all"] = r["evaluable_queries"]
    for g in r.get("by", {}).get("groups", []):
        counts[g["value"]] = g["queries"]
    print(f"\n{split}: R@1 / MAP / nDCG@10\n")
    print("| model | " + " | ".join(f"{t} ({counts.get(t, '?')})" for t in types) + " |")
    print("|---" * (len(types) + 1) + "|")
    for m, cells, _ in rows:
        print(f"| {m} | " + " | ".join(cells) + " |")
    for m in models:
        p = f"{out}/compare-am-{m}-{split}.json"
        if not os.path.exists(p):
            continue
        c = json.load(open(p))
        print(f"\n{split}, `{m}` against answer-match (B - A, relative % [95% CI], p)\n")
        print("| group | questions | " + " | ".join(names.values()) + " |")
        print("|---" * (len(names) + 2) + "|")
        groups = [("all", c)] + [(g["value"], g["comparison"]) for g in c.get("by", [])]
        for value, g in groups:
            if value not in types:
                continue
            ms = {x["metric"]: x for x in g["metrics"]}
            cells = []
            for k in names:
                x = ms[k]
                cells.append(f"{x['rel_pct']:+.1f}% [{x['rel_pct_ci'][0]:+.1f}, {x['rel_pct_ci'][1]:+.1f}], p {x['p_value']:.3f}")
            print(f"| {value} | {g['queries']} | " + " | ".join(cells) + " |")
