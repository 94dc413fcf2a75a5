#!/usr/bin/env python3
"""What each evidence-free training signal covers, per QASPER answer type: for a label
folder of mined candidates, how many questions have an answer-match candidate (one
that contains a reference answer as the trainer matches it: whole tokens after Token
F1's normalisation, "yes" and "no" matching nothing), how many have answer-overlap
positives (the candidates holding the most of an answer's IDF-weighted words, at
least MIN_OVERLAP, as `--positives answer-overlap` marks them), how many clear the
utility bar, and how often each signal's pick is the gold evidence.

    scripts/evidence_free_counts.py LABELS_DIR [SPLIT=train] [BAR=2] [DATA=../shared/data/qasper] [MIN_OVERLAP=0.5]

A question with several answer types counts under each. Prints one JSON object.
"""
import gzip
import json
import math
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


class TokenIdf:
    """`uae_eval::f1::TokenIdf`: ln(1 + N / (1 + df)) over distinct passages."""

    def __init__(self, passages):
        self.n = 0
        self.df = defaultdict(int)
        for p in passages:
            self.n += 1
            for t in set(normalise(p).split()):
                self.df[t] += 1

    def idf(self, t):
        return math.log(1 + self.n / (1 + self.df.get(t, 0)))


def answer_overlap(passage, answers, idf):
    """`uae_eval::f1::answer_overlap`: the IDF-weighted share of an answer's distinct
    tokens the passage holds, best over answers; None where no answer has a token
    other than a bare yes/no."""
    pt = set(normalise(passage).split())
    best = None
    for a in answers:
        na = normalise(a)
        if na in ("yes", "no"):
            continue
        at = set(na.split())
        if not at:
            continue
        total = sum(idf.idf(t) for t in at)
        o = sum(idf.idf(t) for t in at if t in pt) / total if total > 0 else 0.0
        best = o if best is None else max(best, o)
    return best


def overlap_positives(groups, min_overlap):
    """`uae_train::answer_overlap`: per question, the candidates with the highest
    overlap where it is at least `min_overlap` (IDF over every distinct candidate)."""
    idf = TokenIdf(sorted({c["text"] for g in groups for c in g["candidates"]}))
    out = {}
    for g in groups:
        o = [answer_overlap(c["text"], g["answers"], idf) or 0.0 for c in g["candidates"]]
        best = max(o, default=0.0)
        out[g["question_id"]] = [c for c, x in zip(g["candidates"], o)
                                 if best > 0 and x >= best and x >= min_overlap]
    return out


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
    min_overlap = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
    rows = defaultdict(lambda: defaultdict(int))
    groups = [json.loads(line) for line in open(f"{labels}/labels.jsonl", encoding="utf-8")]
    overlap = overlap_positives(groups, min_overlap)
    for g in groups:
        cands = g["candidates"]
        if not cands:
            continue
        ao = overlap[g["question_id"]]
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
            r["answer_overlap"] += bool(ao)
            r["answer_overlap_has_gold"] += any(c["is_gold"] for c in ao)
            r["bar_or_overlap"] += sure or bool(ao)
            r["overlap_below_bar"] += bool(ao) and not sure
            r["overlap_below_bar_has_gold"] += (not sure) and any(c["is_gold"] for c in ao)
            r["gold_mined"] += any(c["is_gold"] for c in cands)
    print(json.dumps({"bar": bar, "min_answer_overlap": min_overlap, "by_answer_type": rows,
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
