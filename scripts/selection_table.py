#!/usr/bin/env python3
"""Tables of scripts/selection.sh's output: the calibration checked on held-out test
labels, and adaptive selection against fixed k (context tokens, evidence recall,
questions given nothing).

    python3 scripts/selection_table.py runs/selection
"""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/selection")
evals = sorted(out.glob("eval-*-test/report.json"))
print("| model | retriever | fitted on (dev pairs) | in-sample ECE | test pairs | helped | ECE | Brier | log loss | utility MAE (nats) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for rep in evals:
    r = json.loads(rep.read_text())
    name, retriever = rep.parent.name[len("eval-"):-len("-test")].rsplit("-", 1)
    cal = json.loads((out / f"calibrate-{name}.json").read_text())
    c = r.get("calibration")
    if not c:
        continue
    print(f"| {name} | {retriever} | {cal['pairs']} ({cal['p_helps_map']}) | {cal['ece']:.3f} | "
          f"{c['pairs']} | {c['helped']:.2f} | {c['ece']:.3f} | {c['brier']:.3f} | "
          f"{c['log_loss']:.3f} | {c['utility_mae']:.2f} |")


def short(s):
    parts = [f"k={s['k']}"] if s["k"] != 10 or len(s) == 1 else []
    for key, label in [("min_p_helps", "p>="), ("min_utility", "u>="), ("max_context_tokens", "tokens<=")]:
        if key in s:
            parts.append(f"{label}{s[key]}")
    if s.get("budget_order") == "value_per_token":
        parts.append("by value/token")
    return ", ".join(parts) or "k=10"


for rep in evals:
    sel = json.loads((rep.parent / "selection.json").read_text())
    r = json.loads(rep.read_text())
    rows = sel["rows"]
    name = rep.parent.name[len("eval-"):-len("-test")]
    n_with, n_without = rows[0]["with_evidence"], rows[0]["without_evidence"]
    print(f"\n{name} on test ({n_with} questions with evidence, {n_without} without), R@1 {r['metrics']['recall@1']:.4f}:\n")
    print("| rule | passages | tokens | evidence recall | any evidence | nothing, with evidence | nothing, without | tokens, without |")
    print("|---|---|---|---|---|---|---|---|")
    for x in rows:
        if x["family"] == "requested":
            continue
        print(f"| {short(x['selection'])} | {x['mean_passages']:.2f} | {x['mean_tokens']:.0f} | "
              f"{x['evidence_recall']:.3f} | {x['evidence_hit']:.3f} | {x['empty_with_evidence']:.3f} | "
              f"{x['empty_without_evidence']:.3f} | {x['tokens_without_evidence']:.0f} |")
    # Fewest tokens at which an adaptive rule reaches each fixed k's evidence recall.
    fixed = [x for x in rows if x["family"] == "k"]
    adaptive = [x for x in rows if x["family"] not in ("k", "requested")]
    print()
    for f in fixed:
        ok = [a for a in adaptive if a["evidence_recall"] >= f["evidence_recall"]]
        if not ok:
            print(f"- k={f['selection']['k']} (recall {f['evidence_recall']:.3f}, {f['mean_tokens']:.0f} tokens): no rule reaches its recall")
            continue
        best = min(ok, key=lambda a: a["mean_tokens"])
        change = best["mean_tokens"] / f["mean_tokens"] - 1 if f["mean_tokens"] else 0
        print(f"- k={f['selection']['k']} (recall {f['evidence_recall']:.3f}, {f['mean_tokens']:.0f} tokens): "
              f"{short(best['selection'])} reaches {best['evidence_recall']:.3f} with {best['mean_tokens']:.0f} tokens "
              f"({100 * change:+.0f}% tokens: {'fewer' if change < 0 else 'more'} than k)")
