#!/usr/bin/env python3
"""Writes a corpus and a questions file with 1% poisoned rows, for the reliability
probe (scripts/poisoned_probe.sh): N questions (default 10,000) over a small
synthetic corpus, of which 1% cannot be used, each kind on known lines:

  too_long     a 400-word question: longer than the probe LLM's context even with
               the passage cut (labelling skips it, `skipped_too_long_lines`)
  empty        an empty question                      (a bad row, `skipped_bad_lines`)
  bad_utf8     invalid UTF-8 bytes in the question    (a bad row)
  bad_json     a row cut in the middle of its JSON    (a bad row)
  oversize     one line over the 16 MiB line limit    (a bad row, refused unread)
  bad_positive a positive that is no passage id       (a bad row)

Writes corpus.jsonl, questions.jsonl and expected.json (the lines of each kind) into
OUT.

    python3 scripts/poisoned_probe.py OUT [N]
"""
import json
import random
import sys
from pathlib import Path

out = Path(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
things = ["cat", "river", "engine", "violin", "glacier", "lantern", "falcon", "copper",
          "orchard", "comet", "harbor", "meadow", "quartz", "bridge", "tundra", "saddle"]
verbs = ["guards", "feeds", "cools", "lights", "carries", "bends", "warms", "hides"]
corpus = []
for i in range(300):
    a, b = rng.sample(things, 2)
    v = rng.choice(verbs)
    corpus.append({"id": f"p{i}", "text": f"The {a} {v} the {b} at dawn. Note {i}."})
with open(out / "corpus.jsonl", "w") as f:
    for p in corpus:
        f.write(json.dumps(p) + "\n")

poison = n // 100
kinds = (["too_long"] * (poison * 20 // 100) + ["empty"] * (poison * 20 // 100)
         + ["bad_utf8"] * (poison * 20 // 100) + ["bad_json"] * (poison * 20 // 100)
         + ["oversize"] * 1)
kinds += ["bad_positive"] * (poison - len(kinds))
lines = rng.sample(range(1, n + 1), len(kinds))
at = dict(zip(lines, kinds))
expected = {k: [] for k in set(kinds)}
with open(out / "questions.jsonl", "wb") as f:
    for line in range(1, n + 1):
        p = corpus[rng.randrange(len(corpus))]
        words = p["text"].split()
        row = {"id": f"q{line}", "question": f"What does the {words[1]} do?",
               "answer": words[2]}
        kind = at.get(line)
        if kind:
            expected[kind].append(line)
        if kind == "too_long":
            row["question"] = " ".join(rng.choice(things) for _ in range(400)) + "?"
        elif kind == "empty":
            row["question"] = ""
        elif kind == "bad_positive":
            row["positives"] = ["no-such-passage"]
        if kind == "bad_utf8":
            data = json.dumps(row).encode().replace(b"What", b"Wh\xff\xfet")
        elif kind == "bad_json":
            data = json.dumps(row).encode()[:25]
        elif kind == "oversize":
            row["question"] = "x" * (16 * 1024 * 1024 + 10)
            data = json.dumps(row).encode()
        else:
            data = json.dumps(row).encode()
        f.write(data + b"\n")
with open(out / "expected.json", "w") as f:
    json.dump({"questions": n, "poisoned": len(kinds),
               "lines": {k: sorted(v) for k, v in expected.items()}}, f, indent=1)
print(f"{n} questions, {len(kinds)} poisoned: "
      + ", ".join(f"{k} {len(v)}" for k, v in sorted(expected.items())))
