//! Speed benchmarks on real QASPER text: encoder throughput, LLM scoring throughput
//! and training-step throughput. Each returns a report that the binary prints as JSON.

use crate::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use uae_artifacts::labels::{LabeledCandidate, LabeledGroup};
#[cfg(feature = "cli")]
use uae_core::flags;
use uae_data::{Paragraph, Qasper};
use uae_eval::percentile;
use uae_lm::LmSource;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Up to `n` of `passages` that fill `tokens` encoder ids, each cut to exactly that
/// many ([CLS] ... [SEP] kept).
pub(crate) fn encoder_sequences(
    enc: &uae_encoder::Encoder,
    passages: &[uae_core::Passage],
    tokens: usize,
    n: usize,
) -> Result<Vec<Vec<u32>>> {
    let mut seqs = Vec::new();
    for p in passages {
        if seqs.len() == n {
            break;
        }
        let ids = enc.tokenize(&[p.text.as_str()])?.remove(0);
        if ids.len() >= tokens {
            let mut cut = ids[..tokens - 1].to_vec();
            cut.push(*ids.last().expect("non-empty; this is a bug"));
            seqs.push(cut);
        }
    }
    Ok(seqs)
}

/// This machine's GEMM peak, measured now: the best of five 1024^3 products on the
/// rayon pool's threads (f32 through [`uae_kernels::sgemm`], or bf16 through
/// [`uae_kernels::bf16::gemm`] when `bf16` and the CPU has a bf16 unit), GFLOP/s.
/// Every speed bench divides its own FLOP rate by it: the roofline fraction.
pub fn gemm_peak_gflops(bf16: bool) -> f64 {
    use uae_kernels::Mat;
    let n = 1024;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 17) as f32 * 0.01).collect();
    let mut c = vec![0f32; n * n];
    let threads = rayon::current_num_threads();
    let packed = (bf16 && uae_kernels::bf16::backend().is_some()).then(|| {
        uae_kernels::bf16::PackedB::new(
            Mat {
                data: &a,
                rs: n,
                cs: 1,
            },
            n,
            n,
        )
    });
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let m = Mat {
            data: &a,
            rs: n,
            cs: 1,
        };
        match &packed {
            Some(p) => uae_kernels::bf16::gemm(n, m, p, &mut c, n, false, threads),
            None => uae_kernels::sgemm(n, n, n, m, m, &mut c, n, false, threads),
        }
        std::hint::black_box(&c);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best / 1e9
}

/// Forward FLOPs per token of a BERT encoder at sequence length `len`: the linear
/// layers plus attention's two products.
pub fn encoder_flops_per_token(c: &uae_encoder::BertConfig, len: usize) -> f64 {
    let (h, i, l) = (
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.num_hidden_layers as f64,
    );
    2.0 * l * (4.0 * h * h + 2.0 * h * i) + 2.0 * l * 2.0 * len as f64 * h
}

/// Forward FLOPs of a causal LM over one sequence of `len` tokens whose last
/// `scored` go through the LM head (causal attention: half the square).
fn lm_flops_per_sequence(c: &uae_lm::LmConfig, len: usize, scored: usize) -> f64 {
    let (h, l, f) = (c.hidden as f64, c.layers as f64, c.ffn as f64);
    let (q, kv) = (
        (c.heads * c.head_dim) as f64,
        (c.kv_heads * c.head_dim) as f64,
    );
    let per_token = 2.0 * l * (h * (q + 2.0 * kv) + q * h + 3.0 * h * f);
    let attention = 2.0 * l * 2.0 * q * (len as f64 * (len as f64 + 1.0) / 2.0);
    per_token * len as f64 + attention + 2.0 * h * c.vocab as f64 * scored as f64
}

fn invalid(what: &'static str, message: String) -> Error {
    Error::Invalid { what, message }
}

/// `uae bench embed`: `passages` test paragraphs cut to exactly `tokens` ids,
/// embedded `batch` at a time; the median of `repeats` timed passes after a warm-up.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct EmbedBench {
    /// The bi-encoder folder.
    #[cfg_attr(feature = "cli", arg(long, default_value = uae_search::DEFAULT_ENCODER))]
    pub model: PathBuf,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub precision: uae_encoder::EncoderPrecision,
    /// Paragraphs embedded per pass (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <EmbedBench as Default>::default().passages, value_parser = flags::count()))]
    pub passages: usize,
    /// Tokens per passage, [CLS] and [SEP] included (2-512).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <EmbedBench as Default>::default().tokens, value_parser = flags::count_in(2, 512)))]
    pub tokens: usize,
    /// Passages per forward pass (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <EmbedBench as Default>::default().batch, value_parser = flags::count()))]
    pub batch: usize,
    /// Timed repeats after one warm-up pass (1-1000).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <EmbedBench as Default>::default().repeats, value_parser = flags::count_in(1, 1000)))]
    pub repeats: usize,
}

impl Default for EmbedBench {
    fn default() -> Self {
        EmbedBench {
            model: PathBuf::from(uae_search::DEFAULT_ENCODER),
            precision: Default::default(),
            passages: 512,
            tokens: 128,
            batch: 32,
            repeats: 3,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EmbedReport {
    pub bench: &'static str,
    pub model: String,
    pub bf16: bool,
    pub passages: usize,
    pub tokens_per_passage: usize,
    pub batch: usize,
    pub threads: usize,
    pub seconds_median: f64,
    pub tokens_per_s: f64,
    pub passages_per_s: f64,
    pub gflops_per_s: f64,
    /// The measured GEMM peak of this machine in the bench's precision, GFLOP/s.
    pub gemm_peak_gflops: f64,
    pub roofline_fraction: f64,
    pub runs_s: Vec<f64>,
}

pub fn embed(b: &EmbedBench, q: &Qasper) -> Result<EmbedReport> {
    if b.tokens < 2 || b.passages == 0 || b.batch == 0 || b.repeats == 0 {
        return Err(invalid(
            "bench embed",
            "--tokens must be >= 2 and --passages, --batch, --repeats >= 1".into(),
        ));
    }
    let enc = uae_search::load_encoder(&b.model, b.precision.bf16)?;
    let seqs = encoder_sequences(&enc, &q.passages(), b.tokens, b.passages)?;
    if seqs.len() < b.passages {
        return Err(invalid(
            "bench embed",
            format!(
                "only {} test paragraphs have {} tokens",
                seqs.len(),
                b.tokens
            ),
        ));
    }
    let mut runs = Vec::new();
    for r in 0..=b.repeats {
        let t = Instant::now();
        for chunk in seqs.chunks(b.batch) {
            let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            let v = enc.forward_t(&enc.batch(&refs)?, None)?;
            std::hint::black_box(v.to_vec2::<f32>().map_err(uae_encoder::Error::from)?);
        }
        if r > 0 {
            runs.push(t.elapsed().as_secs_f64());
        }
    }
    let s = median(runs.clone());
    let flops =
        (b.passages * b.tokens) as f64 * encoder_flops_per_token(&enc.model.config, b.tokens);
    let peak = gemm_peak_gflops(b.precision.bf16);
    Ok(EmbedReport {
        bench: "embed",
        model: b.model.display().to_string(),
        bf16: b.precision.bf16,
        passages: b.passages,
        tokens_per_passage: b.tokens,
        batch: b.batch,
        threads: rayon::current_num_threads(),
        seconds_median: s,
        tokens_per_s: (b.passages * b.tokens) as f64 / s,
        passages_per_s: b.passages as f64 / s,
        gflops_per_s: flops / s / 1e9,
        gemm_peak_gflops: peak,
        roofline_fraction: flops / s / 1e9 / peak,
        runs_s: runs,
    })
}

/// `uae bench label`: `sequences` test paragraphs cut to `tokens` LLM tokens, the
/// last `answer` of them scored (LM head on those only), at each batch size.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct LabelBench {
    /// The LLM: a GGUF file or an HF safetensors folder.
    #[cfg_attr(feature = "cli", arg(long, default_value = uae_label::DEFAULT_LM))]
    pub lm: PathBuf,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub precision: uae_lm::LmPrecision,
    /// Sequences scored per pass (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <LabelBench as Default>::default().sequences, value_parser = flags::count()))]
    pub sequences: usize,
    /// Tokens per sequence (2-8192).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <LabelBench as Default>::default().tokens, value_parser = flags::count_in(2, 8192)))]
    pub tokens: usize,
    /// Scored tokens at the end of each sequence (1 to --tokens - 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <LabelBench as Default>::default().answer, value_parser = flags::count()))]
    pub answer: usize,
    /// Batch sizes to measure, comma separated (each >= 1).
    #[cfg_attr(feature = "cli", arg(long, default_values_t = <LabelBench as Default>::default().batches, value_delimiter = ',', value_parser = flags::count()))]
    pub batches: Vec<usize>,
    /// Timed repeats after one warm-up pass (1-1000).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <LabelBench as Default>::default().repeats, value_parser = flags::count_in(1, 1000)))]
    pub repeats: usize,
}

impl Default for LabelBench {
    fn default() -> Self {
        LabelBench {
            lm: PathBuf::from(uae_label::DEFAULT_LM),
            precision: Default::default(),
            sequences: 32,
            tokens: 256,
            answer: 16,
            batches: vec![1, 8],
            repeats: 3,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LabelReport {
    pub bench: &'static str,
    pub lm: String,
    pub bf16: bool,
    pub sequences: usize,
    pub tokens_per_sequence: usize,
    pub answer_tokens: usize,
    pub threads: usize,
    /// The measured GEMM peak of this machine in the bench's precision, GFLOP/s.
    pub gemm_peak_gflops: f64,
    /// One row per batch size.
    pub results: Vec<LabelRow>,
}

#[derive(Debug, Serialize)]
pub struct LabelRow {
    pub batch: usize,
    pub tokens_per_s: f64,
    pub sequences_per_s: f64,
    pub seconds_median: f64,
    pub gflops_per_s: f64,
    pub roofline_fraction: f64,
}

pub fn label(b: &LabelBench, q: &Qasper) -> Result<LabelReport> {
    if b.answer == 0 || b.answer >= b.tokens {
        return Err(invalid(
            "bench label",
            "--answer must be between 1 and --tokens - 1".into(),
        ));
    }
    if b.sequences == 0 || b.repeats == 0 || b.batches.is_empty() || b.batches.contains(&0) {
        return Err(invalid(
            "bench label",
            "--sequences, --repeats and every --batches value must be >= 1".into(),
        ));
    }
    let model = LmSource::open(&b.lm, b.precision)?;
    let mut seqs: Vec<Vec<u32>> = Vec::new();
    for p in q.passages() {
        let ids = model.encode(&p.text)?;
        if ids.len() >= b.tokens {
            seqs.push(ids[..b.tokens].to_vec());
            if seqs.len() == b.sequences {
                break;
            }
        }
    }
    if seqs.len() < b.sequences {
        return Err(invalid(
            "bench label",
            format!(
                "only {} test paragraphs have {} tokens",
                seqs.len(),
                b.tokens
            ),
        ));
    }
    let split = b.tokens - b.answer;
    let peak = gemm_peak_gflops(b.precision.bf16);
    let mut results = Vec::new();
    for &batch in &b.batches {
        let mut runs = Vec::new();
        for r in 0..=b.repeats {
            let t = Instant::now();
            for chunk in seqs.chunks(batch) {
                let reqs: Vec<uae_lm::ScoreRequest> = chunk
                    .iter()
                    .map(|s| uae_lm::ScoreRequest {
                        context: &s[..split],
                        targets: &s[split..],
                    })
                    .collect();
                std::hint::black_box(model.score(&reqs)?);
            }
            if r > 0 {
                runs.push(t.elapsed().as_secs_f64());
            }
        }
        let s = median(runs);
        let flops = b.sequences as f64 * lm_flops_per_sequence(&model.config, b.tokens, b.answer);
        results.push(LabelRow {
            batch,
            tokens_per_s: (b.sequences * b.tokens) as f64 / s,
            sequences_per_s: b.sequences as f64 / s,
            seconds_median: s,
            gflops_per_s: flops / s / 1e9,
            roofline_fraction: flops / s / 1e9 / peak,
        });
    }
    Ok(LabelReport {
        bench: "label",
        lm: b.lm.display().to_string(),
        bf16: b.precision.bf16,
        sequences: b.sequences,
        tokens_per_sequence: b.tokens,
        answer_tokens: b.answer,
        threads: rayon::current_num_threads(),
        gemm_peak_gflops: peak,
        results,
    })
}

/// `uae bench train`: optimizer steps at the default shape on real train questions,
/// each with `candidates` paragraphs of its paper cut to `tokens`, `uae` loss, AdamW.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TrainBench {
    /// The bi-encoder folder.
    #[cfg_attr(feature = "cli", arg(long, default_value = uae_search::DEFAULT_ENCODER))]
    pub model: PathBuf,
    /// Questions per step (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <TrainBench as Default>::default().questions, value_parser = flags::count()))]
    pub questions: usize,
    /// Paragraphs per question (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <TrainBench as Default>::default().candidates, value_parser = flags::count()))]
    pub candidates: usize,
    /// Tokens per paragraph (2-512).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <TrainBench as Default>::default().tokens, value_parser = flags::count_in(2, 512)))]
    pub tokens: usize,
    /// Timed steps after one warm-up step (1-1000).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <TrainBench as Default>::default().steps, value_parser = flags::count_in(1, 1000)))]
    pub steps: usize,
    /// Texts per micro-batch (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <TrainBench as Default>::default().micro_batch, value_parser = flags::count()))]
    pub micro_batch: usize,
    /// GradCache's first pass in bf16 (see `uae train --bf16-first-pass`).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <TrainBench as Default>::default().bf16_first_pass, action = clap::ArgAction::Set))]
    pub bf16_first_pass: bool,
    /// Memory for graphs kept from the first pass, MiB (see `uae train --graph-memory-mb`).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <TrainBench as Default>::default().graph_memory_mb, value_parser = flags::count_in(0, 1 << 30)))]
    pub graph_memory_mb: usize,
    /// bf16 GEMMs with f32 weights and gradients (see `uae train --mixed-precision`).
    #[cfg_attr(feature = "cli", arg(long))]
    pub mixed_precision: bool,
}

impl Default for TrainBench {
    fn default() -> Self {
        TrainBench {
            model: PathBuf::from(uae_search::DEFAULT_ENCODER),
            questions: 16,
            candidates: 8,
            tokens: 128,
            steps: 3,
            micro_batch: 32,
            bf16_first_pass: true,
            graph_memory_mb: uae_train::trainer::DEFAULT_GRAPH_MEMORY_MB,
            mixed_precision: false,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TrainReport {
    pub bench: &'static str,
    pub model: String,
    pub questions: usize,
    pub candidates: usize,
    pub tokens_per_passage: usize,
    pub micro_batch: usize,
    pub bf16_first_pass: bool,
    pub graph_memory_mb: usize,
    pub mixed_precision: bool,
    pub threads: usize,
    pub tokens_per_step: usize,
    /// Tokens encoded a second time per step (GradCache's second pass, for the
    /// micro-batches whose graph did not fit `graph_memory_mb`).
    pub reencoded_tokens_per_step: usize,
    /// Peak resident memory of the process (Linux `VmHWM`), MiB.
    pub peak_rss_mib: Option<f64>,
    pub seconds_per_step_median: f64,
    pub tokens_per_s: f64,
    pub gflops_per_s: f64,
    /// The measured f32 GEMM peak of this machine, GFLOP/s.
    pub gemm_peak_gflops: f64,
    pub roofline_fraction: f64,
    pub runs_s: Vec<f64>,
}

/// Up to `questions` train questions whose papers have `candidates` paragraphs of
/// more than `tokens` words, with made-up descending utilities.
fn train_groups(
    q: &Qasper,
    questions: usize,
    candidates: usize,
    tokens: usize,
) -> Vec<LabeledGroup> {
    let mut groups = Vec::new();
    for question in &q.questions {
        let paper = &q.papers[question.paper];
        let long: Vec<&Paragraph> = paper
            .paragraphs
            .iter()
            .filter(|p| p.text.split_whitespace().count() > tokens)
            .take(candidates)
            .collect();
        if long.len() < candidates {
            continue;
        }
        groups.push(LabeledGroup {
            question_id: question.id.clone(),
            paper_id: question.paper_id.clone(),
            question: question.text.clone(),
            answers: vec![],
            nll_without: vec![],
            candidates: long
                .iter()
                .enumerate()
                .map(|(i, p)| LabeledCandidate {
                    passage_id: paper.passage_id(p.n),
                    text: p.text.clone(),
                    is_gold: i == 0,
                    source: "bench".into(),
                    utility: 1.0 - i as f32 * 0.3,
                    per_answer: vec![],
                })
                .collect(),
        });
        if groups.len() == questions {
            break;
        }
    }
    groups
}

pub fn train(b: &TrainBench, q: &Qasper) -> Result<TrainReport> {
    if b.questions == 0 || b.candidates == 0 || b.tokens < 2 || b.steps == 0 || b.micro_batch == 0 {
        return Err(invalid(
            "bench train",
            "--tokens must be >= 2 and --questions, --candidates, --steps, --micro-batch >= 1"
                .into(),
        ));
    }
    let mut enc = uae_encoder::Encoder::load(&b.model, &uae_encoder::Device::Cpu, true)?;
    enc.model.set_bf16_gemms(b.mixed_precision)?;
    let groups = train_groups(q, b.questions, b.candidates, b.tokens);
    if groups.len() < b.questions {
        return Err(invalid(
            "bench train",
            format!(
                "only {} train questions have {} paragraphs of more than {} words",
                groups.len(),
                b.candidates,
                b.tokens
            ),
        ));
    }
    let cfg = uae_train::TrainConfig {
        micro_batch: b.micro_batch,
        bf16_first_pass: b.bf16_first_pass,
        graph_memory_mb: b.graph_memory_mb,
        max_passage_tokens: b.tokens,
        ..Default::default()
    };
    let vars = enc.model.vars().to_vec();
    let mut opt = uae_train::AdamW::new(cfg.adamw);
    let refs: Vec<&LabeledGroup> = groups.iter().collect();
    let mut runs = Vec::new();
    let mut tok = 0;
    let mut again = 0;
    for s in 0..=b.steps {
        let t = Instant::now();
        let out = uae_train::trainer::step(&enc, &vars, &mut opt, &refs, &cfg, 1e-5, s as u64)?;
        if s > 0 {
            runs.push(t.elapsed().as_secs_f64());
            tok = out.tokens;
            again = out.reencoded_tokens;
        }
    }
    let sec = median(runs.clone());
    // A step is forward + backward (3x forward), plus GradCache's re-encoding (1x)
    // of the micro-batches whose graph was not kept.
    let fwd = encoder_flops_per_token(&enc.model.config, b.tokens);
    let flops = (tok as f64 * 3.0 + again as f64) * fwd;
    // Mixed precision is measured against the bf16 peak, the unit its GEMMs run on.
    let peak = gemm_peak_gflops(b.mixed_precision);
    Ok(TrainReport {
        bench: "train",
        model: b.model.display().to_string(),
        questions: b.questions,
        candidates: b.candidates,
        tokens_per_passage: b.tokens,
        micro_batch: b.micro_batch,
        bf16_first_pass: b.bf16_first_pass,
        graph_memory_mb: b.graph_memory_mb,
        mixed_precision: b.mixed_precision,
        threads: rayon::current_num_threads(),
        tokens_per_step: tok,
        reencoded_tokens_per_step: again,
        peak_rss_mib: crate::mine::peak_rss_mib(),
        seconds_per_step_median: sec,
        tokens_per_s: tok as f64 / sec,
        gflops_per_s: flops / sec / 1e9,
        gemm_peak_gflops: peak,
        roofline_fraction: flops / sec / 1e9 / peak,
        runs_s: runs,
    })
}

/// `uae bench query`: `queries` real test questions embedded one at a time, as a
/// server sees them (tokenising included), through the single-query path and, for
/// comparison, through the batch path with a batch of one.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct QueryBench {
    /// The bi-encoder folder.
    #[cfg_attr(feature = "cli", arg(long, default_value = uae_search::DEFAULT_ENCODER))]
    pub model: PathBuf,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub precision: uae_encoder::EncoderPrecision,
    /// Test questions, each embedded alone (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <QueryBench as Default>::default().queries, value_parser = flags::count()))]
    pub queries: usize,
    /// Timed passes over the questions after one warm-up pass (1-100).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <QueryBench as Default>::default().repeats, value_parser = flags::count_in(1, 100)))]
    pub repeats: usize,
}

impl Default for QueryBench {
    fn default() -> Self {
        QueryBench {
            model: PathBuf::from(uae_search::DEFAULT_ENCODER),
            precision: Default::default(),
            queries: 200,
            repeats: 1,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct QueryReport {
    pub bench: &'static str,
    pub model: String,
    pub bf16: bool,
    pub queries: usize,
    pub threads: usize,
    /// Median question length in encoder tokens ([CLS] and [SEP] included).
    pub tokens_p50: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub batch_path_p50_ms: f64,
    pub batch_path_p95_ms: f64,
    /// Largest |difference| between the two paths' vectors (f32 rounding).
    pub max_abs_diff: f32,
    /// FLOP rate of the single-query path at its median latency and length.
    pub gflops_per_s: f64,
    pub gemm_peak_gflops: f64,
    pub roofline_fraction: f64,
}

pub fn query(b: &QueryBench, q: &Qasper) -> Result<QueryReport> {
    if b.queries == 0 || b.repeats == 0 {
        return Err(invalid(
            "bench query",
            "--queries and --repeats must be >= 1".into(),
        ));
    }
    let enc = uae_search::load_encoder(&b.model, b.precision.bf16)?;
    let texts: Vec<&str> = q
        .questions
        .iter()
        .take(b.queries)
        .map(|x| x.text.as_str())
        .collect();
    if texts.len() < b.queries {
        return Err(invalid(
            "bench query",
            format!("the split has only {} questions", texts.len()),
        ));
    }
    let threads = rayon::current_num_threads();
    enc.prepare_query_path()?;
    let mut lens: Vec<usize> = enc.tokenize(&texts)?.iter().map(Vec::len).collect();
    lens.sort_unstable();
    // Each path runs over all questions on its own, so neither evicts the other's
    // weights from the cache between two timed queries.
    let time = |single_path: bool| -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
        let (mut ms, mut vecs) = (Vec::new(), Vec::new());
        for r in 0..=b.repeats {
            for t in &texts {
                let start = Instant::now();
                let v = if single_path {
                    enc.embed_query(t, threads)?
                } else {
                    enc.embed(&[*t])?.remove(0)
                };
                if r > 0 {
                    ms.push(start.elapsed().as_secs_f64());
                } else {
                    vecs.push(v);
                }
            }
        }
        Ok((ms, vecs))
    };
    let (single, a) = time(true)?;
    let (batch, v) = time(false)?;
    let max_abs_diff = a
        .iter()
        .flatten()
        .zip(v.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let ms = |v: &[f64], p: f64| percentile(v, p) * 1e3;
    let p50 = ms(&single, 50.0);
    let tokens = lens[lens.len() / 2];
    let flops = tokens as f64 * encoder_flops_per_token(&enc.model.config, tokens);
    let peak = gemm_peak_gflops(b.precision.bf16);
    Ok(QueryReport {
        bench: "query",
        model: b.model.display().to_string(),
        bf16: b.precision.bf16,
        queries: b.queries,
        threads,
        tokens_p50: lens[lens.len() / 2],
        p50_ms: p50,
        p95_ms: ms(&single, 95.0),
        p99_ms: ms(&single, 99.0),
        batch_path_p50_ms: ms(&batch, 50.0),
        batch_path_p95_ms: ms(&batch, 95.0),
        max_abs_diff,
        gflops_per_s: flops / (p50 / 1e3) / 1e9,
        gemm_peak_gflops: peak,
        roofline_fraction: flops / (p50 / 1e3) / 1e9 / peak,
    })
}
