//! Tokenizers: from `tokenizer.json`, or rebuilt from GGUF metadata (byte-level BPE:
//! vocab, merges, control tokens, and the pre-tokenizer named by `tokenizer.ggml.pre`).

use crate::{Error, Result};
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

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

/// Builds the tokenizer stored in GGUF metadata; returns it with the EOS ids.
pub(crate) fn from_gguf(md: &HashMap<String, Value>) -> Result<(Tokenizer, Vec<u32>)> {
    let model = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if model != "gpt2" {
        return Err(terr(format!("tokenizer model `{model}` (only byte-level BPE, `gpt2`, can be rebuilt; put a tokenizer.json beside the model)")));
    }
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings(md, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| terr(format!("bad merge `{m}`")))
        })
        .collect::<Result<_>>()?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(terr)?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
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
    // Control (3) and user-defined (4) tokens are matched whole in the input text.
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == 3 || t == 4)
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    tok.add_special_tokens(special).map_err(terr)?;
    let mut eos = Vec::new();
    if let Some(id) = md
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok())
    {
        eos.push(id);
    }
    // ChatML models end a turn with <|im_end|>.
    if let Some(id) = tokens.iter().position(|t| t == "<|im_end|>") {
        eos.push(id as u32);
    }
    Ok((tok, eos))
}
