use crate::common::{count, count_in, named, Bars, DataDir, LmArgs};
use anyhow::{bail, Result};
use std::path::PathBuf;
use uae_artifacts::labels::Shard;
use uae_data::Split;
use uae_label::{
    CandidateMode, LabelConfig, LabelRun, LmSource, PromptFormat, RemoteLm, RemoteOptions, Scorer,
    TemplateChoice,
};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LabelArgs {
    #[command(subcommand)]
    action: Option<LabelAction>,
    /// QASPER split to label (ignored with --questions).
    #[arg(long, default_value = "train")]
    split: Split,
    /// Your own corpus: JSONL, one `{"id", "text", "title"?, "scope"?}` per line, or a
    /// BEIR folder (its corpus.jsonl). Needs --questions.
    #[arg(long, requires = "questions")]
    corpus: Option<PathBuf>,
    /// Your own questions: JSONL, one `{"id"?, "question", "answers": [...] or
    /// "answer", "scope"?, "positives"?: [passage ids]}` per line. Questions without
    /// an answer are skipped (counted in the summary). Needs --corpus.
    #[arg(long, requires = "corpus")]
    questions: Option<PathBuf>,
    /// Label only the first N eligible questions (in file order; >= 1).
    #[arg(long, value_parser = count())]
    limit: Option<usize>,
    /// Output folder: scores.jsonl (durable store), score-plan.json (which scores this run computes: fixed at its first start, so a resumed run batches them alike), labels.jsonl, manifest.json,
    /// summary.json, utility-histogram.svg, cache/ (the mining encoder's passage
    /// embeddings, in pieces). Rerunning the same command resumes, mid-mining too.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Label a deterministic part of the questions: `i/n` (1 <= i <= n) takes the
    /// eligible questions at positions i-1, i-1+n, ... (after --limit) into this
    /// --out; `uae label merge` joins the n folders. For n machines or n servers.
    #[arg(long)]
    shard: Option<Shard>,
    /// Which passages are scored: `gold` (the evidence + hard negatives; questions
    /// with evidence only), `mined` (top dense + BM25 + random, no evidence needed)
    /// or `retrieved` (each question's top --top-k passages in the --ranking run
    /// file: how much a retriever's results help the LLM answer, evidence labels or
    /// not). Default: `gold` for QASPER, `mined` for your own data.
    #[arg(long, value_parser = named::<CandidateMode>(&["gold", "mined", "retrieved"]))]
    candidates: Option<CandidateMode>,
    /// `--candidates retrieved`: a TREC run file (`uae eval --out`'s run.trec) over
    /// the same questions and corpus.
    #[arg(long)]
    ranking: Option<PathBuf>,
    /// `--candidates retrieved`: how many of each question's top passages are
    /// scored, each on its own (1-1000).
    #[arg(long, default_value_t = 1, value_parser = count_in(1, 1000))]
    top_k: usize,
    /// The LLM: a GGUF file or an HF safetensors folder of a Llama (2, 3.x),
    /// Mistral, Qwen2, Qwen3 or Gemma 3 model, run in this process; or the base URL of an LLM server speaking the OpenAI completions API
    /// (`http://HOST:PORT/v1`: vLLM, llama.cpp's server, llama-cpp-python). Repeat
    /// the flag for several servers of the same model; requests are shared out.
    #[arg(long, default_value = uae_label::DEFAULT_LM)]
    lm: Vec<String>,
    /// Local LLM only: keep GGUF weights quantised (less memory, slower prefill).
    #[arg(long, conflicts_with = "bf16")]
    quantized: bool,
    /// Local LLM only: bf16 weights on AMX or AVX512_BF16 (see `uae bench label`).
    #[arg(long)]
    bf16: bool,
    /// Remote LLM: requests in flight per server (1-1024).
    #[arg(long, default_value_t = 8, value_parser = count_in(1, 1024))]
    lm_concurrency: usize,
    /// Remote LLM: seconds one request may take before it is retried (> 0, at most
    /// a day).
    #[arg(long, default_value_t = 120.0, value_parser = seconds)]
    lm_timeout: f32,
    /// Remote LLM: retries of a request after a timeout, a dropped connection, a 429
    /// or a 5xx, with exponential backoff from 0.5 s (0-100). A request out of
    /// retries stops the run; what was scored is kept and a rerun resumes.
    #[arg(long, default_value_t = 6, value_parser = count_in(0, 100))]
    lm_retries: usize,
    /// Remote LLM: bearer token for the servers (vLLM's --api-key).
    #[arg(long, env = "UAE_LM_API_KEY", hide_env_values = true)]
    lm_api_key: Option<String>,
    /// Bi-encoder that mines dense hard negatives.
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    encoder: PathBuf,
    /// Mine dense candidates with the encoder's projections in bf16 (AMX or
    /// AVX512_BF16): mining ~1.5x faster; a candidate can differ from f32 mining where
    /// two passages tie within bf16 rounding. Recorded in the manifest.
    #[arg(long)]
    encoder_bf16: bool,
    /// Top non-gold paragraphs by the base encoder, per question (0 or more).
    #[arg(long, default_value_t = 3, value_parser = count_in(0, u32::MAX as u64))]
    dense_negatives: usize,
    /// Top non-gold paragraphs by BM25, per question (0 or more).
    #[arg(long, default_value_t = 2, value_parser = count_in(0, u32::MAX as u64))]
    bm25_negatives: usize,
    /// Random other paragraphs of the paper, per question (0 or more).
    #[arg(long, default_value_t = 1, value_parser = count_in(0, u32::MAX as u64))]
    random_negatives: usize,
    /// Passage truncation in LLM tokens (>= 1; answers are never truncated).
    #[arg(long, default_value_t = 256, value_parser = count())]
    passage_tokens: usize,
    /// Prompt layout. `auto`: the local model's own chat template (GGUF
    /// `tokenizer.chat_template` or the folder's `chat_template`), one user turn
    /// "Context: ...\n\nQuestion: ..." and the assistant's opening, or `plain` for a
    /// model without one. `chatml`: SmolLM2-Instruct's turn without a system message
    /// (the layout of every figure in BENCHMARKS.md). `plain`: "Context:
    /// ...\n\nQuestion: ...\nAnswer:", for base models. Or a `.jinja` file holding a
    /// chat template (needed for `auto`'s effect with a server, whose template is not
    /// known here). The template's sha256 goes into the manifest and every score key.
    #[arg(long, default_value = "auto")]
    template: TemplateChoice,
    /// Seed for the random negatives.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sequences per LLM forward pass (>= 1).
    #[arg(long, default_value_t = 16, value_parser = count())]
    max_batch: usize,
    /// Tokens per LLM forward pass (>= 1; a longer sequence runs alone).
    #[arg(long, default_value_t = 4096, value_parser = count())]
    max_batch_tokens: usize,
    #[command(flatten)]
    data: DataDir,
}

#[derive(clap::Subcommand)]
enum LabelAction {
    /// Join the shard folders of one run (`uae label --shard i/n`) into one label
    /// folder, in the unsharded order; they must share the LLM, configuration,
    /// questions and corpus, and all n must be there.
    Merge {
        /// The shard folders, in any order.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// The merged label folder (new).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write labels as a dataset for training elsewhere.
    Export {
        /// `sentence-transformers`: train.jsonl and train.parquet with columns
        /// query, positive, negative_1.., label (the utilities, for DistillKLDivLoss),
        /// plus ids.jsonl row for row.
        #[arg(long, value_parser = ["sentence-transformers"], default_value = "sentence-transformers")]
        format: String,
        /// Candidates per row (>= 2; default: the most common number per question).
        /// Questions with fewer are left out; with more, keep their best.
        #[arg(long, value_parser = count_in(2, 100_000))]
        candidates: Option<usize>,
        /// The label folder.
        labels: PathBuf,
        /// The output folder.
        out: PathBuf,
    },
}

fn seconds(s: &str) -> std::result::Result<f32, String> {
    crate::common::float_in(s, 0.0, false, 86_400.0)
}

pub fn run(a: LabelArgs) -> Result<()> {
    match a.action {
        Some(LabelAction::Merge { shards, out }) => {
            let summary = uae_label::merge::merge(&shards, &out)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            return Ok(());
        }
        Some(LabelAction::Export {
            labels,
            out,
            candidates,
            format: _,
        }) => {
            let s = uae_label::export::export_sentence_transformers(&labels, &out, candidates)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            return Ok(());
        }
        None => {}
    }
    let Some(out) = a.out.clone() else {
        bail!("--out is required");
    };
    let mut skipped_rows = Vec::new();
    let (set, split) = match (&a.corpus, &a.questions) {
        (Some(c), Some(q)) => {
            // A bad row is left out and named, not the end of a 100,000-question run.
            let (set, skipped) = uae_data::QaSet::load_skipping(c, q)?;
            skipped_rows = skipped;
            let name = set.name.clone();
            (set, name)
        }
        _ => (a.data.load(a.split)?.qa_set(), a.split.to_string()),
    };
    let default_mode = match a.questions {
        Some(_) => CandidateMode::Mined,
        None => CandidateMode::Gold,
    };
    let candidates = a.candidates.unwrap_or(default_mode);
    let ranking = match (candidates, &a.ranking) {
        (CandidateMode::Retrieved, Some(path)) => Some(uae_label::Ranking::read(path, a.top_k)?),
        (CandidateMode::Retrieved, None) => {
            bail!("--candidates retrieved needs --ranking RUN_FILE")
        }
        (_, Some(_)) => bail!("--ranking is read only with --candidates retrieved"),
        (_, None) => None,
    };
    let source = LmSource::parse(&a.lm)?;
    if matches!(source, LmSource::Servers(_)) && (a.bf16 || a.quantized) {
        bail!("--bf16 and --quantized apply to a local LLM; a server runs the precision it was started with");
    }
    let (local, server);
    let scorer = match source {
        LmSource::Servers(urls) => {
            server = RemoteLm::connect(
                &urls,
                RemoteOptions {
                    concurrency: a.lm_concurrency,
                    timeout: std::time::Duration::from_secs_f32(a.lm_timeout),
                    retries: a.lm_retries as u32,
                    api_key: a.lm_api_key.clone(),
                    ..Default::default()
                },
            )?;
            tracing::info!(model = %server.model, endpoints = server.urls().len(), "scoring on LLM servers");
            Scorer::Remote(&server)
        }
        LmSource::Local(path) => {
            let args = LmArgs {
                lm: path,
                quantized: a.quantized,
                bf16: a.bf16,
            };
            local = args.load()?;
            Scorer::Local(&local)
        }
    };
    let prompts = PromptFormat::resolve(&a.template, &scorer)?;
    tracing::info!(template = %prompts.template().identity(), "prompt layout");
    let config = LabelConfig {
        candidates,
        dense_negatives: a.dense_negatives,
        bm25_negatives: a.bm25_negatives,
        random_negatives: a.random_negatives,
        passage_tokens: a.passage_tokens,
        template: prompts.template().clone(),
        seed: a.seed,
        max_batch: a.max_batch,
        max_batch_tokens: a.max_batch_tokens,
        mining_bf16: a.encoder_bf16,
        retrieved: ranking.as_ref().map(|r| r.config()),
    };
    let run = LabelRun {
        set: &set,
        split,
        corpus_path: a.corpus.clone(),
        limit: a.limit,
        shard: a.shard,
        out,
        scorer,
        lm_name: a.lm.join(" "),
        encoder: a.encoder,
        config,
        prompts: &prompts,
        ranking: ranking.as_ref(),
        skipped_rows,
    };
    let (summary, _) = uae_label::run(&run, &Bars::default())?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
