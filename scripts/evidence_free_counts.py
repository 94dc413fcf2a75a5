#!/usr/bin/env python3
"""What each evidence-free training signal covers, per QASPER answer type: for a label
folder of mined candidates, how many questions have an answer-match candidate (one
that contains a reference answer as the trainer matches it: whole tokens after Token
F1's normalisation, "yes" and "no" matching nothing), how many clear
the utility bar, and how often each signal's pick is the gold evidence.

    scripts/evidence_free_counts.py LABELS_DIR [SPLIT=train] [BAR=2] [DATA=../shared/data/qasper]

A question with several answer types counts under each. Prints one JSON object.
"""
import gzip
import json
import re
import string
import sys
from collections import defaultdict


def normalise(s):
    s = s.lower()
    s = "".join(c for c in s if c not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def contains_answer(passage, answers):
    """The trainer's answer-match (`uae_eval::f1::contains_answer`): a reference answer
    as a run of whole tokens of the passage after normalisation; answers that
    normalise to nothing, "yes" or "no" match nothing."""
    pt = normalise(passage).split()
    for a in answers:
        at = normalise(a).split()
        if not at or at in (["yes"], ["no"]):
            continue
        if any(pt[i:i + len(at)] == at for i in range(len(pt) - len(at) + 1)):
            return True
    return False


def answer_types(data_dir, split):
    with gzip.open(f"{data_dir}/qasper-{split}-v0.3.json.gz", "rt") as f:
        papers = json.load(f)
    out = {}
    for paper in papers.values():
        for qa in paper["qas"]:
            types = []
            for a in qa["answers"]:
                a = a["answer"]
                if a["unanswerable"]:
                    t = "unanswerable"
                elif a["extractive_spans"]:
                    t = "extractive"
                elif a["free_form_answer"].strip():
                    t = "abstractive"
                else:
                    t = "yes_no"
                if t not in types:
                    types.append(t)
            out[qa["question_id"]] = types
    return out


def main():
    labels = sys.argv[1]
    split = sys.argv[2] if len(sys.argv) > 2 else "train"
    bar = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    data = sys.argv[4] if len(sys.argv) > 4 else "../shared/data/qasper"
    types = answer_types(data, split)
    rows = defaultdict(lambda: defaultdict(int))
    for line in open(f"{labels}/labels.jsonl"):
        g = json.loads(line)
        cands = g["candidates"]
        if not cands:
            continue
        am = [c for c in cands if contains_answer(c["text"], g["answers"])]
        best = max(cands, key=lambda c: c["utility"])
        sure = best["utility"] >= bar
        for t in types.get(g["question_id"], ["(none)"]) + ["all"]:
            r = rows[t]
            r["questions"] += 1
            r["answer_match"] += bool(am)
            r["answer_match_has_gold"] += any(c["is_gold"] for c in am)
            r["best_utility_at_least_bar"] += sure
            r["best_utility_is_gold"] += best["is_gold"]
            r["sure_and_gold"] += sure and best["is_gold"]
            r["either_signal"] += sure or bool(am)
            r["gold_mined"] += any(c["is_gold"] for c in cands)
    print(json.dumps({"bar": bar, "by_answer_type": rows,
                      "below_bar_answer_match": below_bar_answer_match(labels, bar)}, indent=1))


def below_bar_answer_match(labels, bar):
    """Questions under the bar with an answer-match candidate, by the utility of their
    best such candidate (what `--min-match-utility` cuts): how many, and how many of
    them have the evidence among their answer-match candidates."""
    bins = [(-1e9, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, bar)]
    out = {f"{lo:g}..{hi:g}" if lo > -1e9 else f"<{hi:g}": {"questions": 0, "has_gold": 0}
           for lo, hi in bins}
    for line in open(f"{labels}/labels.jsonl", encoding="utf-8"):
        g = json.loads(line)
        cands = g["candidates"]
        if not cands or max(c["utility"] for c in cands) >= bar:
            continue
        am = [c for c in cands if contains_answer(c["text"], g["answers"])]
        if not am:
            continue
        u = max(c["utility"] for c in am)
        for (lo, hi), key in zip(bins, out):
            if lo <= u < hi:
                out[key]["questions"] += 1
                out[key]["has_gold"] += any(c["is_gold"] for c in am)
    return out


if __name__ == "__main__":
    main()
