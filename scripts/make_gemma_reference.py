#!/usr/bin/env python3
"""Writes crates/lm/tests/fixtures/gemma3-270m-reference.json: what the reference
implementations make of the real Gemma 3 270M GGUF that scripts/fetch-models.sh
fetches (models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf).

- `tokenize`: llama-cpp-python's tokenization (llama.cpp's SentencePiece tokenizer
  over the GGUF vocabulary; no BOS, special tokens parsed) of texts with accents,
  CJK, emoji, tabs, runs of spaces and newlines, digits and turn markers.
- `cases`: labelling prompts in the layout `uae label --template auto` resolves to
  for this base model (`plain`: "Context: ...\\n\\nQuestion: ...\\nAnswer:", answer
  after a space), BOS first. For each, the per-token log-probabilities of the answer
  from HF transformers loading the GGUF (`gguf_file=`, dequantised to f32, eager
  attention) and from llama-cpp-python (llama.cpp's own kernels, which round
  activations to 8 bits for the quantised matmuls), both on llama.cpp's token ids.
- and llama.cpp on the same weights unquantised (`llama_cpp_f32_logprobs`,
  `llama_cpp_bf16_logprobs`): llama.cpp's own `llama_model_quantize` dequantises the
  GGUF to an f32 and to a bf16 file, evaluated with an f32 KV cache. With f32 weights
  its matmuls take f32 activations; with bf16 weights it rounds activations to bf16
  before each matmul, as `uae label --bf16` does: the like-for-like comparisons.

    python3 scripts/make_gemma_reference.py [GGUF] [OUT]
    python3 scripts/make_gemma_reference.py --llama-cpp-only [GGUF] [OUT]   # adds the
        # unquantised llama.cpp values to an existing OUT (needs llama-cpp-python only)

Needs llama-cpp-python, torch, transformers, gguf (not needed by the tests).
"""
import ctypes
import json
import math
import os
import sys
import tempfile

import llama_cpp

ARGS = [a for a in sys.argv[1:] if a != "--llama-cpp-only"]
GGUF = ARGS[0] if len(ARGS) > 0 else "models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf"
OUT = ARGS[1] if len(ARGS) > 1 else "crates/lm/tests/fixtures/gemma3-270m-reference.json"
GGML_TYPE_F32 = 0
# llama_ftype: all tensors f32 (0), or the matrices in bf16 (32; norms stay f32).
FTYPES = {"f32": 0, "bf16": 32}

TEXTS = [
    "The capital of France is Paris.",
    "Résumé of naïve café owners in 東京, 北京 and Zürich 🙂.",
    "Tabs\tand  two spaces,   three, and\nnew\n\nlines.",
    "Numbers: 3.14159, 2026-12-04, 1,000,000 and x^2+y^2=z^2.",
    "<start_of_turn>user\nWhat is BM25?<end_of_turn>\n<start_of_turn>model\n",
    "  leading spaces and trailing ones  ",
    "ALL CAPS, camelCase, snake_case and kebab-case-words.",
    "Context: We collected 220 human-human dialogs.\n\nQuestion: How many dialogs were collected?\nAnswer:",
]

PASSAGE = (
    "We collected 220 human-human dialogs. The average conversation length is 11.4 "
    "turns, and each dialog was annotated with the intent of every utterance."
)
DISTRACTOR = "The capital of France is Paris, on the Seine."
CASES = [
    (None, "How many dialogs were collected?", "220 human-human dialogs"),
    (PASSAGE, "How many dialogs were collected?", "220 human-human dialogs"),
    (DISTRACTOR, "How many dialogs were collected?", "220 human-human dialogs"),
    (PASSAGE, "What is the average conversation length?", "11.4 turns"),
    (
        "BM25 ranks documents by term frequency, saturated by k1, and document length, normalised by b.",
        "Which parameters does BM25 have?",
        "k1 and b",
    ),
    ("Résumé of naïve café owners in 東京.", "Where are the owners?", "東京 (Tokyo)"),
]


def plain_prompt(passage, question):
    ctx = f"Context: {passage}\n\n" if passage else ""
    return f"{ctx}Question: {question}\nAnswer:"


def log_softmax_at(row, t):
    row = [float(x) for x in row]  # llama.cpp's logits are float32: sum in double
    m = max(row)
    return row[t] - m - math.log(sum(math.exp(x - m) for x in row))


def llama_cpp_logprobs(model_path, cases, f32_cache=True):
    """Per case, the answer tokens' log-probabilities from llama.cpp; its KV cache in
    f32, or in llama.cpp's default (f16) with `f32_cache=False`."""
    cache = {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if f32_cache else {}
    lcpp = llama_cpp.Llama(
        model_path=model_path, n_ctx=1024, logits_all=True, n_threads=os.cpu_count(),
        verbose=False, **cache,
    )
    out = []
    for c in cases:
        p_ids, a_ids = c["prompt_ids"], c["answer_ids"]
        lcpp.reset()
        lcpp.eval(p_ids + a_ids)
        out.append([log_softmax_at(list(lcpp.scores[len(p_ids) - 1 + i]), t) for i, t in enumerate(a_ids)])
    return out


def add_unquantised(cases):
    """llama.cpp on the GGUF's weights dequantised to f32 and to bf16."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, ftype in FTYPES.items():
            path = os.path.join(tmp, f"{name}.gguf")
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            params.allow_requantize = True
            if llama_cpp.llama_model_quantize(GGUF.encode(), path.encode(), ctypes.byref(params)) != 0:
                sys.exit(f"llama_model_quantize could not write {name} weights from {GGUF}")
            for c, lp in zip(cases, llama_cpp_logprobs(path, cases)):
                c[f"llama_cpp_{name}_logprobs"] = lp
                n = len(lp)
                print(f"{c['question'][:40]!r}: nll llama.cpp {name} {-sum(lp)/n:.4f}", file=sys.stderr)


def llama_cpp_only():
    with open(OUT, encoding="utf-8") as f:
        ref = json.load(f)
    add_unquantised(ref["cases"])
    if "unquantised" not in ref["made_by"]:
        ref["made_by"] += f"; unquantised: llama-cpp-python {llama_cpp.__version__}"
    write(ref)


def write(ref):
    """OUT whole or not at all (a failure half-way leaves the old file)."""
    with open(OUT + ".tmp", "w", encoding="utf-8") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
    os.replace(OUT + ".tmp", OUT)


def main():
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    vocab = llama_cpp.Llama(model_path=GGUF, vocab_only=True, verbose=False)
    tok = lambda s: vocab.tokenize(s.encode("utf-8"), add_bos=False, special=True)
    bos = vocab.token_bos()
    tokenize = [{"text": t, "ids": tok(t)} for t in TEXTS]

    hf = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(GGUF) or ".",
        gguf_file=os.path.basename(GGUF),
        dtype=torch.float32,
        attn_implementation="eager",
    ).eval()

    cases = []
    for passage, question, answer in CASES:
        prompt = plain_prompt(passage, question)
        p_ids = [bos] + tok(prompt)
        a_ids = tok(" " + answer)
        ids = p_ids + a_ids
        with torch.no_grad():
            lp = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), dim=-1)
        hf_lp = [lp[len(p_ids) - 1 + i, t].item() for i, t in enumerate(a_ids)]
        cases.append(
            {
                "passage": passage,
                "question": question,
                "answer": answer,
                "prompt": prompt,
                "prompt_ids": p_ids,
                "answer_ids": a_ids,
                "transformers_logprobs": hf_lp,
            }
        )
    # llama.cpp on the quantised file itself, as a user runs it (f16 KV cache).
    for c, cpp_lp in zip(cases, llama_cpp_logprobs(GGUF, cases, f32_cache=False)):
        c["llama_cpp_logprobs"] = cpp_lp
        hf_lp, n = c["transformers_logprobs"], len(cpp_lp)
        print(f"{c['question'][:40]!r}: nll transformers {-sum(hf_lp)/n:.4f} llama.cpp {-sum(cpp_lp)/n:.4f}",
              file=sys.stderr)
    ref = {
        "model": os.path.basename(GGUF),
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "made_by": f"llama-cpp-python {llama_cpp.__version__}, transformers {transformers.__version__}, "
        f"torch {torch.__version__}",
        "tokenize": tokenize,
        "cases": cases,
    }
    add_unquantised(cases)
    write(ref)


if __name__ == "__main__":
    llama_cpp_only() if "--llama-cpp-only" in sys.argv else main()
