#!/usr/bin/env python3
"""Which features of a retriever's ranking predict that a passage helps the LLM
(utility >= 1 nat), and how much the question itself decides it.

For labelled (question, passage) pairs (`uae label --candidates retrieved`) and a
model's TREC run over the same questions (`uae eval`'s run.trec: cosine and rank of
each passage), fits a logistic regression of "helps" on several feature sets and
reports held-out log loss, AUC and ECE (10 bins), and the spread of the predicted
probabilities. Features: the cosine (what calibration.json uses today), the rank,
the margin to the question's top hit, the top hit's cosine; and, as an oracle no
retriever has at query time, the answer's NLL without any passage (how hard the
question is for the LLM).

    scripts/calibration_features.py FIT_LABELS FIT_RUN [CHECK_LABELS CHECK_RUN]
    QUESTION_VECTORS=q.jsonl DIFFICULTY_LABELS=DIR[,DIR...] scripts/calibration_features.py ...
    BM25_RUNS=FIT_BM25_RUN[,CHECK_BM25_RUN] scripts/calibration_features.py ...

With one pair, two-fold cross-validation by question (even and odd question ids in
sorted order). With QUESTION_VECTORS (`uae embed` output over the questions: one
{"id", "embedding"} per question id) and DIFFICULTY_LABELS (label folders of other
questions), one more feature that a server could compute: the no-context NLL
predicted from the question's embedding alone, by ridge regression (lambda 10)
fitted on the DIFFICULTY_LABELS questions and FIT_LABELS' (never the checked ones).
With BM25_RUNS (`uae eval --retriever bm25` run.trec over the same questions, every
passage of each question's scope), what a hybrid search knows beside the cosine: the
passage's BM25 score as a share of its question's best, and its BM25 rank.
numpy only; prints a markdown table.
"""
import os
import json
import math
import re
import sys

import numpy as np

HELPS = 1.0
# Words too common to say a passage answers a question (for the corpus-free overlap).
STOP = set(
    "a an the of in on for to and or is are was were be by with what which who how do does did "
    "they their this that these those it its from as at we our us whose why when where there "
    "than then can could would should has have had not no yes any all".split()
)


def words(text):
    """`uae`'s BM25 tokens: lowercase alphanumeric runs."""
    return set(re.findall(r"[^\W_]+", text.lower()))


def read_run(path):
    run = {}
    for line in open(path):
        q, _, p, rank, score, _ = line.split()
        run[(q, p)] = (int(rank), float(score))
    return run


def load(labels_dir, run_path, bm25_path=None):
    run = read_run(run_path)
    bm25 = read_run(bm25_path) if bm25_path else {}
    best, ranked = {}, {}
    for (q, _), (_, s) in bm25.items():
        best[q] = max(best.get(q, 0.0), s)
        ranked[q] = ranked.get(q, 0) + 1
    rows = []
    for line in open(f"{labels_dir}/labels.jsonl"):
        g = json.loads(line)
        q = g["question_id"]
        if not g["candidates"] or not all((q, c["passage_id"]) in run for c in g["candidates"]):
            continue
        hits = [(run[(q, c["passage_id"])], c["utility"]) for c in g["candidates"]]
        top = max(s for (_, s), _ in hits)
        hard = min(g["nll_without"])
        content = words(g["question"]) - STOP
        for c, ((rank, score), u) in zip(g["candidates"], hits):
            # A passage BM25 did not rank shares no word with the question: below
            # every one it ranked.
            b_rank, b = bm25.get((q, c["passage_id"]), (ranked.get(q, 0) + 1, 0.0))
            rows.append(
                {"q": q, "cos": score, "rank": rank, "margin": top - score, "top": top,
                 "bm25": b / best[q] if best.get(q, 0.0) > 0 else 0.0,
                 "bm25_log_rank": math.log(b_rank),
                 "overlap": len(content & words(c["text"])) / max(1, len(content)),
                 "nll_without": hard, "y": float(u >= HELPS)}
            )
    return rows


FEATURES = {
    "cosine (today)": ["cos"],
    "cosine + log rank": ["cos", "log_rank"],
    "cosine + margin to top": ["cos", "margin"],
    "cosine + top cosine": ["cos", "top"],
    "cosine + margin + log rank": ["cos", "margin", "log_rank"],
    "oracle: cosine + NLL without context": ["cos", "nll_without"],
    "cosine + share of the question's non-stop words in the passage (word share)": ["cos", "overlap"],
}


def matrix(rows, names):
    get = {"log_rank": lambda r: math.log(r["rank"])}
    return np.array([[1.0] + [get[n](r) if n in get else r[n] for n in names] for r in rows])


def fit(x, y, l2=1e-3, steps=100):
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        g = x.T @ (p - y) / len(y) + l2 * w
        h = (x.T * (p * (1 - p))) @ x / len(y) + l2 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def log_loss(p, y):
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc(p, y):
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(np.mean([(a > neg).mean() + 0.5 * (a == neg).mean() for a in pos]))


def ece(p, y, bins=10):
    e = 0.0
    for i in range(bins):
        m = (p >= i / bins) & ((p < (i + 1) / bins) if i < bins - 1 else (p <= 1))
        if m.any():
            e += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return float(e)


def evaluate(folds, names):
    ps, ys = [], []
    for train, test in folds:
        w = fit(matrix(train, names), np.array([r["y"] for r in train]))
        ps.append(1 / (1 + np.exp(-matrix(test, names) @ w)))
        ys.append(np.array([r["y"] for r in test]))
    p, y = np.concatenate(ps), np.concatenate(ys)
    return log_loss(p, y), auc(p, y), ece(p, y), float(p.min()), float(p.max()), float(p.std())


def question_difficulty(rows_sets, fit_dirs):
    """Adds `predicted_nll` to every row: ridge regression of the no-context NLL on
    the question's embedding, fitted on the questions of `fit_dirs`."""
    vectors = {}
    for line in open(os.environ["QUESTION_VECTORS"]):
        r = json.loads(line)
        vectors[r["id"]] = np.array(r["embedding"] + [1.0])
    x, y = [], []
    for d in fit_dirs:
        for line in open(f"{d}/labels.jsonl"):
            g = json.loads(line)
            if g["candidates"] and g["question_id"] in vectors:
                x.append(vectors[g["question_id"]])
                y.append(min(g["nll_without"]))
    x, y = np.array(x), np.array(y)
    w = np.linalg.solve(x.T @ x + 10.0 * np.eye(x.shape[1]), x.T @ y)
    for rows in rows_sets:
        for r in rows:
            r["predicted_nll"] = float(vectors[r["q"]] @ w)
    # Its correlation with the true no-context NLL over the checked questions.
    checked = {r["q"]: (r["predicted_nll"], r["nll_without"]) for r in rows_sets[-1]}
    pred, true = np.array(list(checked.values())).T
    print(
        f"question difficulty: ridge fitted on {len(y)} questions of {', '.join(fit_dirs)}; "
        f"correlation with the true no-context NLL on the {len(checked)} checked questions: "
        f"{np.corrcoef(pred, true)[0, 1]:.3f}\n"
    )


def main():
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__)
    bm25 = [r for r in os.environ.get("BM25_RUNS", "").split(",") if r]
    if bm25:
        # Over the whole scope, the passage's BM25 rank.
        if len(bm25) != (len(sys.argv) - 1) // 2:
            sys.exit("BM25_RUNS needs one run per labels folder given, in the same order")
        FEATURES["cosine + BM25 share of the best"] = ["cos", "bm25"]
        FEATURES["cosine + BM25 log rank"] = ["cos", "bm25_log_rank"]
        FEATURES["cosine + BM25 share + BM25 log rank"] = ["cos", "bm25", "bm25_log_rank"]
    bm25 += [None, None]
    fit_rows = load(sys.argv[1], sys.argv[2], bm25[0])
    if os.environ.get("QUESTION_VECTORS"):
        if len(sys.argv) != 5:
            sys.exit("QUESTION_VECTORS needs CHECK_LABELS CHECK_RUN (the difficulty fit must not see them)")
        FEATURES["cosine + predicted NLL without context (from the question)"] = ["cos", "predicted_nll"]
        FEATURES["cosine + predicted NLL + word share"] = ["cos", "predicted_nll", "overlap"]
        if os.environ.get("BM25_RUNS"):
            FEATURES["cosine + predicted NLL + BM25 log rank"] = ["cos", "predicted_nll", "bm25_log_rank"]
        dirs = [d for d in os.environ.get("DIFFICULTY_LABELS", "").split(",") if d] + [sys.argv[1]]
    if len(sys.argv) == 5:
        check = load(sys.argv[3], sys.argv[4], bm25[1])
        if os.environ.get("QUESTION_VECTORS"):
            question_difficulty([fit_rows, check], dirs)
        folds = [(fit_rows, check)]
        how = f"fitted on {sys.argv[1]}, checked on {sys.argv[3]}"
    else:
        qs = sorted({r["q"] for r in fit_rows})
        even = set(qs[::2])
        a = [r for r in fit_rows if r["q"] in even]
        b = [r for r in fit_rows if r["q"] not in even]
        folds = [(a, b), (b, a)]
        how = f"two-fold cross-validation by question on {sys.argv[1]}"
    pairs = sum(len(t) for _, t in folds)
    base = np.mean([r["y"] for _, t in folds for r in t])
    print(f"{how}: {pairs} held-out pairs, {100 * base:.1f}% help (utility >= {HELPS} nat)\n")
    print("| features | log loss | AUC | ECE | p(helps) range | sd |")
    print("|---|---|---|---|---|---|")
    for name, names in FEATURES.items():
        ll, a, e, lo, hi, sd = evaluate(folds, names)
        print(f"| {name} | {ll:.4f} | {a:.3f} | {e:.3f} | {lo:.2f}-{hi:.2f} | {sd:.3f} |")


if __name__ == "__main__":
    main()
