#!/usr/bin/env python3
"""How far two label folders' utilities differ, candidate by candidate.

Reads each folder's labels.jsonl, matches candidates by (question id, passage id)
and prints how many matched and the largest, 99th-percentile and median absolute
difference in nats. For two precisions (f32 and bf16 folders of the same questions)
or two versions of the scorer.

    python3 scripts/utility_diff.py DIR_A DIR_B
"""
import json
import sys


def utilities(folder):
    out = {}
    with open(f"{folder}/labels.jsonl") as f:
        for line in f:
            g = json.loads(line)
            for c in g["candidates"]:
                out[(g["question_id"], c["passage_id"])] = c["utility"]
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: scripts/utility_diff.py DIR_A DIR_B")
    a, b = utilities(sys.argv[1]), utilities(sys.argv[2])
    keys = [k for k in a if k in b]
    if not keys:
        sys.exit("utility_diff: the two folders share no (question, passage) pair")
    d = sorted(abs(a[k] - b[k]) for k in keys)
    print(f"utilities compared {len(keys)}: largest difference {d[-1]:.4f} nats, "
          f"p99 {d[int(0.99 * len(d))]:.4f}, median {d[len(d) // 2]:.5f}")


if __name__ == "__main__":
    main()
