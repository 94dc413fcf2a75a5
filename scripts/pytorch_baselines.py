#!/usr/bin/env python3
"""PyTorch reference measurements at the shapes of `uae bench embed|label|train`, and a
check that an exported model folder loads in sentence-transformers.

Not part of the build or the tests: it needs torch, sentence-transformers and
transformers (see BENCHMARKS.md for the versions used), which `uae` itself never does.
Every subcommand prints one JSON object, like `uae bench`.

    python scripts/pytorch_baselines.py embed             # ST encode, 512 x 128 tokens, batch 32
    python scripts/pytorch_baselines.py label             # HF causal LM, 32 x 256 tokens, batch 1 and 8
    python scripts/pytorch_baselines.py train             # one AdamW step, 16 questions x 8 x 128 tokens
    python scripts/pytorch_baselines.py st-load MODEL_DIR # ST loads an export; cosine to `uae embed`
"""

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = os.path.join(ROOT, "models/all-MiniLM-L6-v2")
GGUF_DIR = os.path.join(ROOT, "models/SmolLM2-135M-Instruct")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def qasper(split, data_dir):
    path = os.path.join(data_dir, f"qasper-{split}-v0.3.json.gz")
    with gzip.open(path, "rt") as f:
        return json.load(f)


def paragraphs(papers):
    for paper in papers.values():
        for sec in paper["full_text"]:
            for p in sec["paragraphs"]:
                if p.strip():
                    yield p


def timed(fn, repeats):
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), runs


def embed(a):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(MINILM, device="cpu")
    model.max_seq_length = a.tokens
    tok = model.tokenizer
    texts = []
    for p in paragraphs(qasper("test", a.data_dir)):
        if len(tok(p)["input_ids"]) >= a.tokens:
            texts.append(p)
            if len(texts) == a.passages:
                break
    sec, runs = timed(lambda: model.encode(texts, batch_size=a.batch), a.repeats)
    return {
        "bench": "embed",
        "impl": "sentence-transformers",
        "passages": len(texts),
        "tokens_per_passage": a.tokens,
        "batch": a.batch,
        "seconds_median": sec,
        "tokens_per_s": len(texts) * a.tokens / sec,
        "runs_s": runs,
    }


def label(a):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(GGUF_DIR, gguf_file=GGUF, torch_dtype=torch.float32)
    model.eval()
    seqs = []
    for p in paragraphs(qasper("test", a.data_dir)):
        ids = tok(p, add_special_tokens=False)["input_ids"]
        if len(ids) >= a.tokens:
            seqs.append(ids[: a.tokens])
            if len(seqs) == a.sequences:
                break
    results = []
    for b in a.batches:
        def run():
            with torch.inference_mode():
                for i in range(0, len(seqs), b):
                    x = torch.tensor(seqs[i : i + b])
                    logits = model(x).logits[:, -a.answer - 1 : -1]
                    lp = torch.log_softmax(logits.float(), -1)
                    lp.gather(-1, x[:, -a.answer :, None])

        sec, runs = timed(run, a.repeats)
        results.append({"batch": b, "tokens_per_s": len(seqs) * a.tokens / sec, "seconds_median": sec})
    return {"bench": "label", "impl": "transformers", "sequences": len(seqs), "tokens_per_sequence": a.tokens, "results": results}


def train(a):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MINILM)
    model = AutoModel.from_pretrained(MINILM)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    data = qasper("train", a.data_dir)
    qs, ps = [], []
    for paper in data.values():
        long = [p for sec in paper["full_text"] for p in sec["paragraphs"] if len(p.split()) > a.tokens]
        if len(long) < a.candidates:
            continue
        for q in paper["qas"]:
            qs.append(q["question"])
            ps.extend(long[: a.candidates])
            break
        if len(qs) == a.questions:
            break

    def enc(texts, n):
        b = tok(texts, padding=True, truncation=True, max_length=n, return_tensors="pt")
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        v = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(v, dim=-1), int(b["attention_mask"].sum())

    tokens = [0]

    import contextlib

    # --autocast: PyTorch's CPU mixed precision (bf16 matmuls, f32 weights and
    # optimizer), the counterpart of `uae bench train --mixed-precision`.
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.autocast else contextlib.nullcontext

    def step():
        opt.zero_grad()
        with cast():
            q, nq = enc(qs, 64)
            p, np_ = enc(ps, a.tokens)
        q, p = q.float(), p.float()
        s = q @ p.T / 0.05
        target = torch.zeros_like(s)
        for i in range(len(qs)):
            target[i, i * a.candidates] = 1.0  # the bench's own labels are synthetic too
        loss = -(target * torch.log_softmax(s, -1)).sum(-1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens[0] = nq + np_

    sec, runs = timed(step, a.repeats)
    return {
        "bench": "train",
        "impl": "pytorch",
        "autocast_bf16": a.autocast,
        "questions": len(qs),
        "candidates": a.candidates,
        "tokens_per_passage": a.tokens,
        "tokens_per_step": tokens[0],
        "seconds_per_step_median": sec,
        "tokens_per_s": tokens[0] / sec,
        "runs_s": runs,
    }


def st_load(a):
    from sentence_transformers import SentenceTransformer

    fx = json.load(open(os.path.join(ROOT, "crates/encoder/tests/fixtures/minilm-reference.json")))
    texts = [c["text"] for c in fx["cases"]]
    model = SentenceTransformer(a.model_dir, device="cpu")
    st = model.encode(texts, normalize_embeddings=False)
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
        with open(src, "w") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"id": i, "text": t}) + "\n")
        uae = os.path.join(ROOT, "target/release/uae")
        subprocess.run([uae, "embed", "--model", a.model_dir, "--input", src, "--out", out], check=True)
        ours = [json.loads(line)["embedding"] for line in open(out)]
    cos = []
    for x, y in zip(st, ours):
        y = torch.tensor(y)
        x = torch.tensor(x)
        cos.append(float(torch.nn.functional.cosine_similarity(x, y, dim=0)))
    return {"check": "st-load", "model": a.model_dir, "modules": [type(m).__name__ for m in model], "min_cosine_to_uae": min(cos), "cases": len(cos)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=os.environ.get("UAE_DATA_DIR", os.path.join(ROOT, "../shared/data/qasper")))
    ap.add_argument("--repeats", type=int, default=3)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--passages", type=int, default=512)
    e.add_argument("--tokens", type=int, default=128)
    e.add_argument("--batch", type=int, default=32)
    l = sub.add_parser("label")
    l.add_argument("--sequences", type=int, default=32)
    l.add_argument("--tokens", type=int, default=256)
    l.add_argument("--answer", type=int, default=16)
    l.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    t = sub.add_parser("train")
    t.add_argument("--questions", type=int, default=16)
    t.add_argument("--candidates", type=int, default=8)
    t.add_argument("--tokens", type=int, default=128)
    t.add_argument("--autocast", action="store_true", help="bf16 autocast (CPU mixed precision)")
    s = sub.add_parser("st-load")
    s.add_argument("model_dir")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = {"embed": embed, "label": label, "train": train, "st-load": st_load}[a.cmd](a)
    out.update({"threads": a.threads, "torch": torch.__version__})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
