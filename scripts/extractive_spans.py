#!/usr/bin/env python3
"""An extractive QA set cut from QASPER: answers are short spans copied from the
evidence paragraph, one reference answer per question (SQuAD's kind of data, where
answer-match positives are nearly the evidence).

From a split exported by `uae data export-qasper` (corpus.jsonl, questions.jsonl) and
the official annotations, keep a question when one of its annotations answers with
exactly one extractive span of at most MAX_WORDS words that occurs, after Token F1's
normalisation, in one of its evidence paragraphs. The question's answer becomes that
span alone; its positives, the evidence paragraphs that contain it. Abstractive and
yes/no answers, and multi-span ones, are left out.

    scripts/extractive_spans.py EXPORT_DIR SPLIT OUT_QUESTIONS [MAX_WORDS=8] [DATA=../shared/data/qasper]

Prints one JSON object of counts.
"""
import gzip
import json
import re
import string
import sys

PUNCT = set(string.punctuation)


def normalise(s):
    s = s.lower()
    s = "".join(c for c in s if c not in PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    export, split, out = sys.argv[1:4]
    max_words = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    data = sys.argv[5] if len(sys.argv) > 5 else "../shared/data/qasper"
    with gzip.open(f"{data}/qasper-{split}-v0.3.json.gz", "rt") as f:
        papers = json.load(f)
    spans = {}
    for paper in papers.values():
        for qa in paper["qas"]:
            single = []
            for a in qa["answers"]:
                a = a["answer"]
                if not a["unanswerable"] and len(a["extractive_spans"]) == 1:
                    s = a["extractive_spans"][0].strip()
                    if s and len(s.split()) <= max_words:
                        single.append(s)
            spans[qa["question_id"]] = single
    passages = {}
    with open(f"{export}/corpus.jsonl") as f:
        for line in f:
            p = json.loads(line)
            passages[p["id"]] = normalise(p["text"])
    counts = {"questions_in": 0, "kept": 0, "no_single_short_span": 0, "span_not_in_evidence": 0}
    words = 0
    with open(f"{export}/questions.jsonl") as f, open(out, "w") as w:
        for line in f:
            q = json.loads(line)
            counts["questions_in"] += 1
            candidates = spans.get(q["id"], [])
            if not candidates:
                counts["no_single_short_span"] += 1
                continue
            kept = None
            for s in candidates:
                n = normalise(s)
                hits = [p for p in q.get("positives", []) if n and n in passages.get(p, "")]
                if hits:
                    kept = (s, hits)
                    break
            if kept is None:
                counts["span_not_in_evidence"] += 1
                continue
            s, hits = kept
            words += len(s.split())
            counts["kept"] += 1
            row = {
                "id": q["id"],
                "question": q["question"],
                "answers": [s],
                "scope": q["scope"],
                "positives": hits,
                "answer_types": ["extractive"],
            }
            w.write(json.dumps(row) + "\n")
    counts["mean_answer_words"] = round(words / max(counts["kept"], 1), 2)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
