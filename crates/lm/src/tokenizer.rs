//! Tokenizers: from `tokenizer.json`, or rebuilt from GGUF metadata: byte-level BPE
//! (`gpt2`: vocab, merges, control tokens, and the pre-tokenizer named by
//! `tokenizer.ggml.pre`) or SentencePiece (`llama`: Gemma, Llama 2, Mistral; pieces
//! with scores and no merges).

use crate::{ChatTemplate, Error, Result};
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};
use tokenizers::{DecoderWrapper, NormalizerWrapper};

fn terr(message: impl ToString) -> Error {
    Error::Tokenizer {
        message: message.to_string(),
    }
}

pub(crate) fn from_json(path: &Path) -> Result<Tokenizer> {
    if !path.is_file() {
        return Err(Error::Load {
            path: path.to_path_buf(),
            message: "missing tokenizer.json".into(),
        });
    }
    Tokenizer::from_file(path).map_err(|e| Error::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    let arr = md
        .get(key)
        .ok_or_else(|| terr(format!("missing {key}")))?
        .to_vec()
        .map_err(terr)?;
    arr.iter()
        .map(|v| v.to_string().cloned().map_err(terr))
        .collect()
}

/// Qwen2 / GPT-4 style split, with single digits.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3 style split, digits in groups of up to three.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer rebuilt from GGUF metadata, with its special tokens.
pub(crate) struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    pub eos: Vec<u32>,
    /// The BOS id where the model adds one (`tokenizer.ggml.add_bos_token`; llama.cpp's
    /// default: on for SentencePiece vocabularies, off for byte-level BPE).
    pub bos: Option<u32>,
    /// What a chat template's `bos_token` / `eos_token` print.
    pub bos_text: String,
    pub eos_text: String,
}

/// Builds the tokenizer stored in GGUF metadata.
pub(crate) fn from_gguf(md: &HashMap<String, Value>) -> Result<GgufTokenizer> {
    let model = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(terr)?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let id = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
    let flag = |key: &str| md.get(key).and_then(|v| v.to_bool().ok());
    let (mut tok, add_bos_default) = match model.as_str() {
        "gpt2" => (byte_level_bpe(md, &tokens)?, false),
        "llama" => (sentencepiece(md, &tokens, &types)?, true),
        other => {
            return Err(terr(format!("tokenizer model `{other}` (byte-level BPE `gpt2` and SentencePiece `llama` can be rebuilt; put a tokenizer.json beside the model)")))
        }
    };
    // Control (3) and user-defined (4) tokens are matched whole in the input text.
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == 3 || t == 4)
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    tok.add_special_tokens(special).map_err(terr)?;
    let mut eos = Vec::new();
    let eos_id = id("tokenizer.ggml.eos_token_id");
    eos.extend(eos_id);
    // ChatML models end a turn with <|im_end|>, Gemma with <end_of_turn>.
    for end in ["<|im_end|>", "<end_of_turn>", "<|eot_id|>"] {
        if let Some(i) = tokens.iter().position(|t| t == end) {
            if !eos.contains(&(i as u32)) {
                eos.push(i as u32);
            }
        }
    }
    let bos_id = id("tokenizer.ggml.bos_token_id");
    let text = |i: Option<u32>| {
        i.and_then(|i| tokens.get(i as usize))
            .cloned()
            .unwrap_or_default()
    };
    let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(add_bos_default);
    Ok(GgufTokenizer {
        tokenizer: tok,
        eos,
        bos: if add_bos { bos_id } else { None },
        bos_text: text(bos_id),
        eos_text: text(eos_id),
    })
}

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`): vocab, merges and the pre-tokenizer
/// named by `tokenizer.ggml.pre`.
fn byte_level_bpe(md: &HashMap<String, Value>, tokens: &[String]) -> Result<Tokenizer> {
    let merges: Vec<(String, String)> = strings(md, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| terr(format!("bad merge `{m}`")))
        })
        .collect::<Result<_>>()?;
    let vocab: ahash::AHashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(terr)?;
    let mut tok = Tokenizer::new(bpe);
    let pre = md
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "default".into());
    let byte_level = ByteLevel::new(false, true, true);
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(
            SplitPattern::Regex(pattern.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(terr)?
        .into())
    };
    let pre_tok: PreTokenizerWrapper = match pre.as_str() {
        // SmolLM / StarCoder: every digit on its own, then GPT-2's byte-level regex.
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        "qwen2" => Sequence::new(vec![
            split(QWEN2_PATTERN)?,
            ByteLevel::new(false, true, false).into(),
        ])
        .into(),
        "llama-bpe" | "llama3" => Sequence::new(vec![
            split(LLAMA3_PATTERN)?,
            ByteLevel::new(false, true, false).into(),
        ])
        .into(),
        "gpt2" | "default" => byte_level.into(),
        other => {
            return Err(terr(format!(
                "pre-tokenizer `{other}` is not known; put a tokenizer.json beside the model"
            )))
        }
    };
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tok)
}

/// SentencePiece BPE (`tokenizer.ggml.model = llama`) from its pieces and scores, as
/// llama.cpp's SPM tokenizer applies it: spaces become `▁` (and one is prepended when
/// `tokenizer.ggml.add_space_prefix`), adjacent symbols merge into the piece of
/// highest score first, and characters outside the vocabulary fall back to their
/// `<0xXX>` byte pieces. Expressed as a `tokenizers` BPE whose merges are ranked by
/// the score of the piece they form (transformers' SentencePiece extractor builds
/// the same list).
fn sentencepiece(
    md: &HashMap<String, Value>,
    tokens: &[String],
    types: &[i32],
) -> Result<Tokenizer> {
    let scores: Vec<f32> = match md.get("tokenizer.ggml.scores") {
        Some(v) => v
            .to_vec()
            .map_err(terr)?
            .iter()
            .map(|s| s.to_f32().unwrap_or(0.0))
            .collect(),
        None => {
            return Err(terr(
                "SentencePiece vocabulary without tokenizer.ggml.scores",
            ))
        }
    };
    if scores.len() != tokens.len() {
        return Err(terr(format!(
            "{} scores for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    let vocab: ahash::AHashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    // Only normal (1) and user-defined (4) pieces are formed by merges; control,
    // unknown, unused and byte pieces never are.
    let mergeable = |i: usize| matches!(types.get(i), Some(1) | Some(4) | None);
    let mut merges: Vec<(f32, String, String)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !mergeable(i) || t.chars().nth(1).is_none() {
            continue;
        }
        let mut local: Vec<(u32, u32, &str, &str)> = Vec::new();
        for (k, _) in t.char_indices().skip(1) {
            let (a, b) = t.split_at(k);
            if let (Some(&ia), Some(&ib)) = (vocab.get(a), vocab.get(b)) {
                local.push((ia, ib, a, b));
            }
        }
        local.sort_unstable();
        merges.extend(
            local
                .into_iter()
                .map(|(_, _, a, b)| (scores[i], a.to_string(), b.to_string())),
        );
    }
    // Stable: equal scores keep the order of the pieces they form.
    merges.sort_by(|x, y| y.0.total_cmp(&x.0));
    let merges: Vec<(String, String)> = merges.into_iter().map(|(_, a, b)| (a, b)).collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(unk) = md
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.to_u32().ok())
        .and_then(|i| tokens.get(i as usize))
    {
        builder = builder.unk_token(unk.clone());
    }
    let bpe = builder.build().map_err(terr)?;
    let mut tok = Tokenizer::new(bpe);
    let prefix = md
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(true);
    let replace = Replace::new(" ", "▁").map_err(terr)?;
    let normalizer: NormalizerWrapper = if prefix {
        tokenizers::normalizers::Sequence::new(vec![
            Prepend::new("▁".into()).into(),
            replace.into(),
        ])
        .into()
    } else {
        replace.into()
    };
    tok.with_normalizer(Some(normalizer)).map_err(terr)?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(terr)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

/// The tokenizer of an HF folder and what its config says about special tokens.
pub(crate) struct HfTokenizer {
    pub tokenizer: Tokenizer,
    pub eos: Vec<u32>,
    pub bos: Option<u32>,
    pub chat_template: Option<ChatTemplate>,
}

/// `tokenizer.json`, plus `tokenizer_config.json` (`bos_token`, `eos_token`,
/// `chat_template`) and `chat_template.jinja` where present. Whether the model wants
/// a BOS is read off the tokenizer itself: the token its post-processor puts in front
/// of a text encoded with special tokens.
pub(crate) fn from_hf_folder(dir: &Path) -> Result<HfTokenizer> {
    let tokenizer = from_json(&dir.join("tokenizer.json"))?;
    let with = tokenizer.encode("a", true).map_err(terr)?;
    let without = tokenizer.encode("a", false).map_err(terr)?;
    let (w, wo) = (with.get_ids(), without.get_ids());
    let bos = if w.len() > wo.len() && w[1..].starts_with(wo) {
        w.first().copied()
    } else {
        None
    };
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| Error::Load {
            path: cfg_path.clone(),
            message: format!("invalid JSON: {e}"),
        })?,
        Err(_) => serde_json::Value::Null,
    };
    // A special token is a string, or `{"content": ...}` in older configs.
    let special = |k: &str| -> String {
        match cfg.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        }
    };
    let jinja = dir.join("chat_template.jinja");
    let source = if jinja.is_file() {
        Some(std::fs::read_to_string(&jinja).map_err(|e| Error::Load {
            path: jinja.clone(),
            message: e.to_string(),
        })?)
    } else {
        match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: the one called "default".
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        }
    };
    let chat_template = match source {
        Some(src) => Some(
            ChatTemplate::new(&src, &special("bos_token"), &special("eos_token")).map_err(|e| {
                Error::Load {
                    path: dir.to_path_buf(),
                    message: e.to_string(),
                }
            })?,
        ),
        None => None,
    };
    let eos = tokenizer
        .token_to_id(&special("eos_token"))
        .into_iter()
        .collect();
    Ok(HfTokenizer {
        tokenizer,
        eos,
        bos,
        chat_template,
    })
}
