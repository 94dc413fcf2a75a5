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

With one pair, two-fold cross-validation by question (even and odd question ids in
sorted order). With QUESTION_VECTORS (`uae embed` output over the questions: one
{"id", "embedding"} per question id) and DIFFICULTY_LABELS (label folders of other
questions), one more feature that a server could compute: the no-context NLL
predicted from the question's embedding alone, by ridge regression (lambda 10)
fitted on the DIFFICULTY_LABELS questions and FIT_LABELS' (never the checked ones).
numpy only; prints a markdown table.
"""
import os
import json
import math
import sys

import numpy as np

HELPS = 1.0


def load(labels_dir, run_path):
    run = {}
    for line in open(run_path):
        q, _, p, rank, score, _ = line.split()
        run[(q, p)] = (int(rank), float(score))
    rows = []
    for line in open(f"{labels_dir}/labels.jsonl"):
        g = json.loads(line)
        q = g["question_id"]
        if not g["candidates"] or not all((q, c["passage_id"]) in run for c in g["candidates"]):
            continue
        hits = [(run[(q, c["passage_id"])], c["utility"]) for c in g["candidates"]]
        top = max(s for (_, s), _ in hits)
        hard = min(g["nll_without"])
        for (rank, score), u in hits:
            rows.append(
                {"q": q, "cos": score, "rank": rank, "margin": top - score, "top": top,
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
    fit_rows = load(sys.argv[1], sys.argv[2])
    if os.environ.get("QUESTION_VECTORS"):
        if len(sys.argv) != 5:
            sys.exit("QUESTION_VECTORS needs CHECK_LABELS CHECK_RUN (the difficulty fit must not see them)")
        FEATURES["cosine + predicted NLL without context (from the question)"] = ["cos", "predicted_nll"]
        dirs = [d for d in os.environ.get("DIFFICULTY_LABELS", "").split(",") if d] + [sys.argv[1]]
    if len(sys.argv) == 5:
        check = load(sys.argv[3], sys.argv[4])
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
