#!/usr/bin/env python3
"""Writes the tiny-checkpoint parity fixtures of crates/lm/tests/fixtures/tiny/.

For each family (llama with Llama 3 rope scaling, mistral with a sliding window,
qwen2, qwen3, gemma3) a random checkpoint of a few layers is made by HF transformers
(`AutoConfig` + `from_config`, no download), saved as an HF folder
(`save_pretrained`, f32 safetensors), and written again as a GGUF file with the
`gguf` package's writer under llama.cpp's names and conventions (llama q/k permuted,
Gemma norms stored as 1 + w, Llama 3 scaling as `rope_freqs.weight`). transformers
then scores token sequences in f32 (eager attention) and the per-token
log-probabilities go to `reference.json`, which `crates/lm/tests/families.rs`
compares against.

    python3 scripts/make_lm_fixtures.py [OUT]   # default: crates/lm/tests/fixtures/tiny

Needs torch, transformers, gguf, tokenizers (not needed by the tests themselves).
"""
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
import gguf
from tokenizers import Tokenizer, models, pre_tokenizers, decoders

VOCAB = 128
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

FAMILIES = {
    "llama": dict(
        model_type="llama",
        rope_theta=10000.0,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=32,
        ),
    ),
    "mistral": dict(model_type="mistral", rope_theta=10000.0, sliding_window=5),
    "qwen2": dict(model_type="qwen2", rope_theta=1000000.0),
    "qwen3": dict(model_type="qwen3", rope_theta=1000000.0, tie_word_embeddings=True),
    "gemma3": dict(
        model_type="gemma3_text",
        num_hidden_layers=6,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        sliding_window=5,
        # = head_dim, as in every Gemma 3 but 27B: llama.cpp scales by the head size.
        query_pre_attn_scalar=8,
        hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        # llama.cpp's fixed Gemma 3 pattern: five sliding layers, then a global one.
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
    ),
}

GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3"}


def make_config(name):
    kw = dict(COMMON)
    kw.update(FAMILIES[name])
    model_type = kw.pop("model_type")
    return AutoConfig.for_model(model_type, **kw)


def randomise(model, family, gen):
    """Weights large enough that the logits are far from uniform; norms random too."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                base = 0.0 if family == "gemma3" else 1.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.35 * torch.randn(p.shape, generator=gen))


def byte_tokenizer():
    """A byte-level tokenizer over VOCAB tokens, the last formed by one merge (the
    tests feed ids directly; the GGUF loader needs a merge list)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())[: VOCAB - 1]
    alphabet.append(alphabet[0] + alphabet[1])
    vocab = {t: i for i, t in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(alphabet[0], alphabet[1])]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok, alphabet


def permute(w, n_head, n_head_kv=None):
    """llama.cpp's q/k permutation for llama (convert_hf_to_gguf.LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def llama3_factors(cfg):
    rs = cfg.rope_scaling if getattr(cfg, "rope_scaling", None) else cfg.rope_parameters
    base = rs.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    dim = cfg.head_dim
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    out = []
    for f in freqs.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < old / hi:
            out.append(1.0)
        elif wavelen > old / lo:
            out.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(path, family, cfg, sd, alphabet):
    arch = GGUF_ARCH[family]
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:
        rp = cfg.rope_parameters
        theta = rp.get("full_attention", rp).get("rope_theta")
    w.add_rope_freq_base(theta)
    if family == "gemma3":
        w.add_sliding_window(cfg.sliding_window)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(alphabet)
    w.add_token_types([1] * len(alphabet))
    w.add_token_merges([f"{alphabet[0]} {alphabet[1]}"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def t(name, x):
        w.add_tensor(name, np.ascontiguousarray(x.numpy().astype(np.float32)))

    shift = 1.0 if family == "gemma3" else 0.0
    t("token_embd.weight", sd["model.embed_tokens.weight"])
    if family == "llama":
        t("rope_freqs.weight", torch.from_numpy(llama3_factors(cfg)))
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        if family == "llama":
            q = permute(q, cfg.num_attention_heads)
            k = permute(k, cfg.num_attention_heads, cfg.num_key_value_heads)
        t(f"blk.{l}.attn_q.weight", q)
        t(f"blk.{l}.attn_k.weight", k)
        t(f"blk.{l}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        t(f"blk.{l}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        if family == "qwen2":
            for x in "qkv":
                t(f"blk.{l}.attn_{x}.bias", sd[p + f"self_attn.{x}_proj.bias"])
        if family in ("qwen3", "gemma3"):
            t(f"blk.{l}.attn_q_norm.weight", sd[p + "self_attn.q_norm.weight"] + shift)
            t(f"blk.{l}.attn_k_norm.weight", sd[p + "self_attn.k_norm.weight"] + shift)
        t(f"blk.{l}.attn_norm.weight", sd[p + "input_layernorm.weight"] + shift)
        if family == "gemma3":
            t(f"blk.{l}.post_attention_norm.weight", sd[p + "post_attention_layernorm.weight"] + shift)
            t(f"blk.{l}.ffn_norm.weight", sd[p + "pre_feedforward_layernorm.weight"] + shift)
            t(f"blk.{l}.post_ffw_norm.weight", sd[p + "post_feedforward_layernorm.weight"] + shift)
        else:
            t(f"blk.{l}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        t(f"blk.{l}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        t(f"blk.{l}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        t(f"blk.{l}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    t("output_norm.weight", sd["model.norm.weight"] + shift)
    if not cfg.tie_word_embeddings:
        t("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cases(gen):
    """(context, targets) id sequences: short, and long enough for the sliding window."""
    out = []
    for ctx_len, tgt_len in [(3, 2), (9, 5), (17, 8)]:
        ids = torch.randint(3, VOCAB, (ctx_len + tgt_len,), generator=gen).tolist()
        out.append((ids[:ctx_len], ids[ctx_len:]))
    return out


def score(model, context, targets):
    ids = torch.tensor([context + targets])
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    return [lp[len(context) - 1 + i, t].item() for i, t in enumerate(targets)]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "crates/lm/tests/fixtures/tiny"
    os.makedirs(out, exist_ok=True)
    tok, alphabet = byte_tokenizer()
    ref = {
        "made_by": f"transformers {transformers.__version__}, torch {torch.__version__}, "
        f"gguf {getattr(gguf, '__version__', '?')}, f32, eager attention",
        "families": {},
    }
    for i, family in enumerate(FAMILIES):
        gen = torch.Generator().manual_seed(1000 + i)
        cfg = make_config(family)
        torch.manual_seed(1000 + i)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
        randomise(model, family, gen)
        if cfg.tie_word_embeddings:
            model.tie_weights()
        folder = os.path.join(out, family)
        model.save_pretrained(folder, safe_serialization=True)
        tok.save(os.path.join(folder, "tokenizer.json"))
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        entry = {"cases": []}
        if family in GGUF_ARCH:
            write_gguf(os.path.join(out, f"{family}.gguf"), family, cfg, sd, alphabet)
            entry["gguf"] = f"{family}.gguf"
        for context, targets in cases(gen):
            entry["cases"].append(
                {"context": context, "targets": targets, "logprobs": score(model, context, targets)}
            )
        ref["families"][family] = entry
        print(family, "ok", file=sys.stderr)
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


if __name__ == "__main__":
    main()
