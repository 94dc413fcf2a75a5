//! `uae label`'s options and policy: which candidates a source gets by default,
//! which options go together, and the LLM (in-process or servers) they name. With
//! the `cli` feature [`LabelOptions`] is the command's flags; [`label`] is the
//! whole command.

use crate::{
    CandidateMode, Error, LabelConfig, LabelRun, LabelSummary, LmSource, PromptFormat, Ranking,
    RemoteLm, RemoteOptions, Result, Scorer, TemplateChoice,
};
use std::path::PathBuf;
use std::time::Duration;
use uae_artifacts::labels::Shard;
#[cfg(feature = "cli")]
use uae_core::flags;
use uae_core::Progress;
use uae_data::Source;

/// How to label: candidates, the LLM, prompts and batching. Every default is
/// [`LabelOptions::default`]'s.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct LabelOptions {
    /// Which passages are scored: `gold` (the evidence + hard negatives; questions
    /// with evidence only), `mined` (top dense + BM25 + random, no evidence needed)
    /// or `retrieved` (each question's top --top-k passages in the --ranking run
    /// file: how much a retriever's results help the LLM answer, evidence labels or
    /// not). Default: `gold` for QASPER, `mined` for your own data.
    #[cfg_attr(feature = "cli", arg(long, value_enum))]
    pub candidates: Option<CandidateMode>,
    /// `--candidates retrieved`: a TREC run file (`uae eval --out`'s run.trec) over
    /// the same questions and corpus.
    #[cfg_attr(feature = "cli", arg(long))]
    pub ranking: Option<PathBuf>,
    /// `--candidates retrieved`: how many of each question's top passages are
    /// scored, each on its own (1-1000).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().top_k, value_parser = flags::count_in(1, 1000)))]
    pub top_k: usize,
    /// The LLM: a GGUF file or an HF safetensors folder of a Llama (2, 3.x), Mistral,
    /// Qwen2, Qwen3 or Gemma 3 model, run in this process; or the base URL of an LLM
    /// server speaking the OpenAI completions API (`http://HOST:PORT/v1`: vLLM,
    /// llama.cpp's server, llama-cpp-python). Repeat the flag for several servers of
    /// the same model; requests are shared out.
    #[cfg_attr(feature = "cli", arg(long, default_value = crate::DEFAULT_LM))]
    pub lm: Vec<String>,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub precision: uae_lm::LmPrecision,
    /// Remote LLM: requests in flight per server (1-1024).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().lm_concurrency, value_parser = flags::count_in(1, 1024)))]
    pub lm_concurrency: usize,
    /// Remote LLM: seconds one request may take before it is retried (> 0, at most
    /// a day).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().lm_timeout, value_parser = flags::seconds))]
    pub lm_timeout: f32,
    /// Remote LLM: retries of a request after a timeout, a dropped connection, a 429
    /// or a 5xx, with exponential backoff from 0.5 s (0-100). A request out of
    /// retries stops the run; what was scored is kept and a rerun resumes.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().lm_retries, value_parser = flags::count_in(0, 100)))]
    pub lm_retries: usize,
    /// Remote LLM: bearer token for the servers (vLLM's --api-key).
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "UAE_LM_API_KEY", hide_env_values = true)
    )]
    pub lm_api_key: Option<String>,
    /// Bi-encoder that mines dense hard negatives.
    #[cfg_attr(feature = "cli", arg(long, default_value = uae_search::DEFAULT_ENCODER))]
    pub encoder: PathBuf,
    /// Mine dense candidates with the encoder's projections in bf16 (AMX or
    /// AVX512_BF16): mining ~1.5x faster; a candidate can differ from f32 mining where
    /// two passages tie within bf16 rounding. Recorded in the manifest.
    #[cfg_attr(feature = "cli", arg(long))]
    pub encoder_bf16: bool,
    /// Top non-gold paragraphs by the base encoder, per question (0 or more).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().dense_negatives, value_parser = flags::count_in(0, u32::MAX as u64)))]
    pub dense_negatives: usize,
    /// Top non-gold paragraphs by BM25, per question (0 or more).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().bm25_negatives, value_parser = flags::count_in(0, u32::MAX as u64)))]
    pub bm25_negatives: usize,
    /// Random other paragraphs of the paper, per question (0 or more).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().random_negatives, value_parser = flags::count_in(0, u32::MAX as u64)))]
    pub random_negatives: usize,
    /// Passage truncation in LLM tokens (>= 1; answers are never truncated).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().passage_tokens, value_parser = flags::count()))]
    pub passage_tokens: usize,
    /// Prompt layout. `auto`: the local model's own chat template (GGUF
    /// `tokenizer.chat_template` or the folder's `chat_template`), one user turn
    /// "Context: ...\n\nQuestion: ..." and the assistant's opening, or `plain` for a
    /// model without one. `chatml`: SmolLM2-Instruct's turn without a system message
    /// (the layout of every figure in BENCHMARKS.md). `plain`: "Context:
    /// ...\n\nQuestion: ...\nAnswer:", for base models. Or a `.jinja` file holding a
    /// chat template (needed for `auto`'s effect with a server, whose template is not
    /// known here). The template's sha256 goes into the manifest and every score key.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().template))]
    pub template: TemplateChoice,
    /// Seed for the random negatives.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().seed))]
    pub seed: u64,
    /// Sequences per LLM forward pass (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_batch, value_parser = flags::count()))]
    pub max_batch: usize,
    /// Tokens per LLM forward pass (>= 1; a longer sequence runs alone).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_batch_tokens, value_parser = flags::count()))]
    pub max_batch_tokens: usize,
}

impl Default for LabelOptions {
    fn default() -> Self {
        LabelOptions {
            candidates: None,
            ranking: None,
            top_k: 1,
            lm: vec![crate::DEFAULT_LM.to_string()],
            precision: Default::default(),
            lm_concurrency: 8,
            lm_timeout: 120.0,
            lm_retries: 6,
            lm_api_key: None,
            encoder: PathBuf::from(uae_search::DEFAULT_ENCODER),
            encoder_bf16: false,
            dense_negatives: 3,
            bm25_negatives: 2,
            random_negatives: 1,
            passage_tokens: 256,
            template: TemplateChoice::Auto,
            seed: 0,
            max_batch: 16,
            max_batch_tokens: 4096,
        }
    }
}

#[cfg(feature = "cli")]
fn d() -> LabelOptions {
    LabelOptions::default()
}

/// The LLM a run scores with, owned: a model in this process, or servers.
pub enum Llm {
    Local(Box<uae_lm::CausalLm>),
    Remote(Box<RemoteLm>),
}

impl Llm {
    pub fn scorer(&self) -> Scorer<'_> {
        match self {
            Llm::Local(lm) => Scorer::Local(lm),
            Llm::Remote(r) => Scorer::Remote(r),
        }
    }
}

impl LabelOptions {
    /// The candidate mode: as given, or `gold` for QASPER and `mined` for other data.
    pub fn candidate_mode(&self, source: &Source) -> CandidateMode {
        self.candidates.unwrap_or(if source.is_qasper() {
            CandidateMode::Gold
        } else {
            CandidateMode::Mined
        })
    }

    /// The `--ranking` of `retrieved` mode; an error where the two do not go together.
    pub fn ranking(&self, mode: CandidateMode) -> Result<Option<Ranking>> {
        match (mode, &self.ranking) {
            (CandidateMode::Retrieved, Some(path)) => Ok(Some(Ranking::read(path, self.top_k)?)),
            (CandidateMode::Retrieved, None) => Err(Error::Invalid(
                "--candidates retrieved needs --ranking RUN_FILE".into(),
            )),
            (_, Some(_)) => Err(Error::Invalid(
                "--ranking is read only with --candidates retrieved".into(),
            )),
            (_, None) => Ok(None),
        }
    }

    /// Loads the local LLM or connects to the servers `--lm` names.
    pub fn llm(&self) -> Result<Llm> {
        match LmSource::parse(&self.lm)? {
            LmSource::Servers(urls) => {
                if self.precision != uae_lm::LmPrecision::default() {
                    return Err(Error::Invalid("--bf16 and --quantized apply to a local LLM; a server runs the precision it was started with".into()));
                }
                let server = RemoteLm::connect(
                    &urls,
                    RemoteOptions {
                        concurrency: self.lm_concurrency,
                        timeout: Duration::from_secs_f32(self.lm_timeout),
                        retries: self.lm_retries as u32,
                        api_key: self.lm_api_key.clone(),
                        ..Default::default()
                    },
                )?;
                tracing::info!(model = %server.model, endpoints = server.urls().len(), "scoring on LLM servers");
                Ok(Llm::Remote(Box::new(server)))
            }
            LmSource::Local(path) => {
                let lm = uae_lm::LmSource::open(&path, self.precision)?;
                Ok(Llm::Local(Box::new(lm)))
            }
        }
    }

    /// The configuration recorded in the manifest, once the prompt layout is known.
    pub fn config(
        &self,
        mode: CandidateMode,
        prompts: &PromptFormat,
        ranking: Option<&Ranking>,
    ) -> LabelConfig {
        LabelConfig {
            candidates: mode,
            dense_negatives: self.dense_negatives,
            bm25_negatives: self.bm25_negatives,
            random_negatives: self.random_negatives,
            passage_tokens: self.passage_tokens,
            template: prompts.template().clone(),
            seed: self.seed,
            max_batch: self.max_batch,
            max_batch_tokens: self.max_batch_tokens,
            mining_bf16: self.encoder_bf16,
            retrieved: ranking.map(|r| r.config()),
        }
    }
}

/// What to label and where: the questions, a subset, the output folder.
#[derive(Debug, Clone)]
pub struct LabelTarget {
    pub source: Source,
    /// Only the first N eligible questions (in file order).
    pub limit: Option<usize>,
    /// Only this part of the eligible questions (after `limit`).
    pub shard: Option<Shard>,
    pub out: PathBuf,
}

/// `uae label`: reads the questions (bad rows of your own file skipped and named),
/// checks the options, loads the LLM, resolves the prompt layout and runs
/// [`crate::run`].
pub fn label(
    opts: &LabelOptions,
    target: &LabelTarget,
    progress: &dyn Progress,
) -> Result<LabelSummary> {
    let (set, skipped_rows) = target
        .source
        .qa_set()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let mode = opts.candidate_mode(&target.source);
    let ranking = opts.ranking(mode)?;
    let llm = opts.llm()?;
    let scorer = llm.scorer();
    let prompts = PromptFormat::resolve(&opts.template, &scorer)?;
    tracing::info!(template = %prompts.template().identity(), "prompt layout");
    let run = LabelRun {
        set: &set,
        split: target.source.name(),
        corpus_path: target.source.corpus_path().map(|p| p.to_path_buf()),
        limit: target.limit,
        shard: target.shard,
        out: target.out.clone(),
        scorer,
        lm_name: opts.lm.join(" "),
        encoder: opts.encoder.clone(),
        config: opts.config(mode, &prompts, ranking.as_ref()),
        prompts: &prompts,
        ranking: ranking.as_ref(),
        skipped_rows,
    };
    Ok(crate::run(&run, progress)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_default_by_source_and_ranking_goes_with_retrieved() {
        let o = LabelOptions::default();
        let q = Source::Qasper {
            dir: "d".into(),
            split: uae_data::Split::Train,
        };
        let f = Source::Files {
            corpus: "c".into(),
            questions: "q".into(),
        };
        assert_eq!(o.candidate_mode(&q), CandidateMode::Gold);
        assert_eq!(o.candidate_mode(&f), CandidateMode::Mined);
        let e = o
            .ranking(CandidateMode::Retrieved)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("needs --ranking"), "{e}");
        let with = LabelOptions {
            ranking: Some("run.trec".into()),
            ..LabelOptions::default()
        };
        let e = with.ranking(CandidateMode::Gold).err().unwrap().to_string();
        assert!(e.contains("only with --candidates retrieved"), "{e}");
        assert!(o.ranking(CandidateMode::Mined).unwrap().is_none());
    }

    #[test]
    fn precision_flags_are_refused_for_servers() {
        let o = LabelOptions {
            lm: vec!["http://127.0.0.1:9/v1".into()],
            precision: uae_lm::LmPrecision {
                bf16: true,
                quantized: false,
            },
            ..LabelOptions::default()
        };
        let e = o.llm().err().unwrap().to_string();
        assert!(e.contains("apply to a local LLM"), "{e}");
    }
}
