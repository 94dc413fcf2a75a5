use crate::common::{DataDir, DEFAULT_ENCODER};
use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use uae_data::Split;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// The QASPER benchmark: BM25, base MiniLM, fine-tuned MiniLMs and LLM re-rankers;
    /// retrieval metrics, Token F1 of the LLM's answers from each top-k, latency.
    /// Writes report.json, report.md, chart.{svg,png}, answers and TREC runs; resumable.
    Qasper(crate::bench_qasper::QasperBenchArgs),
    /// Encoder throughput: N real QASPER paragraphs truncated to a fixed token
    /// length, embedded in batches; reports tokens/s (median of repeats).
    Embed {
        #[arg(long, default_value = DEFAULT_ENCODER)]
        model: PathBuf,
        #[arg(long, help = crate::common::ENCODER_BF16_HELP)]
        bf16: bool,
        #[arg(long, default_value_t = 512)]
        passages: usize,
        /// Tokens per passage, [CLS] and [SEP] included.
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Timed repeats after one warm-up pass.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[command(flatten)]
        data: DataDir,
    },
    /// Training-step throughput at the default shape: real train questions, each with
    /// 8 paragraphs of its paper cut to 128 tokens, `uae` loss, AdamW.
    Train {
        #[arg(long, default_value = DEFAULT_ENCODER)]
        model: PathBuf,
        #[arg(long, default_value_t = 16)]
        questions: usize,
        #[arg(long, default_value_t = 8)]
        candidates: usize,
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        /// Timed steps after one warm-up step.
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Texts per micro-batch.
        #[arg(long, default_value_t = 32)]
        micro_batch: usize,
        /// GradCache's first pass in bf16 on AMX (see `uae train --bf16-first-pass`).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        bf16_first_pass: bool,
        /// Machine matmul peak used for the roofline fraction (GFLOP/s; PERF-NOTES: MKL 390,
        /// gemm x86-v4 330 on this machine).
        #[arg(long, default_value_t = 330.0)]
        peak_gflops: f64,
        #[command(flatten)]
        data: DataDir,
    },
    /// LLM scoring throughput: sequences of real QASPER text cut to a fixed length,
    /// the last `answer` tokens scored (LM head on those only), at several batch sizes.
    Label {
        #[command(flatten)]
        lm: crate::common::LmArgs,
        #[arg(long, default_value_t = 32)]
        sequences: usize,
        #[arg(long, default_value_t = 256)]
        tokens: usize,
        #[arg(long, default_value_t = 16)]
        answer: usize,
        /// Batch sizes to measure, comma separated.
        #[arg(long, default_value = "1,8", value_delimiter = ',')]
        batches: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Serialize)]
struct LabelBench {
    bench: &'static str,
    lm: String,
    bf16: bool,
    sequences: usize,
    tokens_per_sequence: usize,
    answer_tokens: usize,
    threads: usize,
    /// Per batch size: (batch, tokens/s, sequences/s, seconds median).
    results: Vec<LabelRow>,
}

#[derive(Serialize)]
struct LabelRow {
    batch: usize,
    tokens_per_s: f64,
    sequences_per_s: f64,
    seconds_median: f64,
}

#[derive(Serialize)]
struct EmbedBench {
    bench: &'static str,
    model: String,
    bf16: bool,
    passages: usize,
    tokens_per_passage: usize,
    batch: usize,
    threads: usize,
    seconds_median: f64,
    tokens_per_s: f64,
    passages_per_s: f64,
    runs_s: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Qasper(a) => crate::bench_qasper::run(a),
        BenchCmd::Train {
            model,
            questions,
            candidates,
            tokens,
            steps,
            micro_batch,
            bf16_first_pass,
            peak_gflops,
            data,
        } => {
            let enc = uae_encoder::Encoder::load(&model, &candle_core::Device::Cpu, true)?;
            let q = data.load(Split::Train)?;
            let mut groups = Vec::new();
            for question in &q.questions {
                let paper = &q.papers[question.paper];
                let long: Vec<&uae_data::Paragraph> = paper
                    .paragraphs
                    .iter()
                    .filter(|p| p.text.split_whitespace().count() > tokens)
                    .take(candidates)
                    .collect();
                if long.len() < candidates {
                    continue;
                }
                groups.push(uae_label::LabeledGroup {
                    question_id: question.id.clone(),
                    paper_id: question.paper_id.clone(),
                    question: question.text.clone(),
                    answers: vec![],
                    nll_without: vec![],
                    candidates: long
                        .iter()
                        .enumerate()
                        .map(|(i, p)| uae_label::LabeledCandidate {
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
            anyhow::ensure!(
                groups.len() == questions,
                "not enough train questions with {candidates} long paragraphs"
            );
            let cfg = uae_train::TrainConfig {
                micro_batch,
                bf16_first_pass,
                max_passage_tokens: tokens,
                ..Default::default()
            };
            let vars = enc.model.vars().to_vec();
            let mut opt = uae_train::AdamW::new(cfg.adamw);
            let refs: Vec<&uae_label::LabeledGroup> = groups.iter().collect();
            let mut runs = Vec::new();
            let mut tok = 0;
            for s in 0..=steps.max(1) {
                let t = Instant::now();
                let (_, _, n) =
                    uae_train::trainer::step(&enc, &vars, &mut opt, &refs, &cfg, 1e-5, s as u64)?;
                if s > 0 {
                    runs.push(t.elapsed().as_secs_f64());
                    tok = n;
                }
            }
            let sec = median(runs.clone());
            let c = &enc.model.config;
            let (h, i, l) = (
                c.hidden_size as f64,
                c.intermediate_size as f64,
                c.num_hidden_layers as f64,
            );
            // Forward FLOPs per token (linear layers + attention at this length); a step
            // is forward + backward (3x forward) plus GradCache's re-encoding (1x).
            let fwd = 2.0 * l * (4.0 * h * h + 2.0 * h * i) + 2.0 * l * 2.0 * tokens as f64 * h;
            let flops = tok as f64 * fwd * 4.0;
            let out = serde_json::json!({
                "bench": "train",
                "model": model.display().to_string(),
                "questions": questions,
                "candidates": candidates,
                "tokens_per_passage": tokens,
                "micro_batch": micro_batch,
                "bf16_first_pass": bf16_first_pass,
                "threads": rayon::current_num_threads(),
                "tokens_per_step": tok,
                "seconds_per_step_median": sec,
                "tokens_per_s": tok as f64 / sec,
                "gflops_per_s": flops / sec / 1e9,
                "roofline_fraction": flops / sec / 1e9 / peak_gflops,
                "runs_s": runs,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        BenchCmd::Label {
            lm,
            sequences,
            tokens,
            answer,
            batches,
            repeats,
            data,
        } => {
            anyhow::ensure!(
                answer > 0 && answer < tokens,
                "--answer must be between 1 and --tokens - 1"
            );
            let model = lm.load()?;
            let q = data.load(Split::Test)?;
            let mut seqs: Vec<Vec<u32>> = Vec::new();
            for p in q.passages() {
                let ids = model.encode(&p.text)?;
                if ids.len() >= tokens {
                    seqs.push(ids[..tokens].to_vec());
                    if seqs.len() == sequences {
                        break;
                    }
                }
            }
            anyhow::ensure!(
                seqs.len() == sequences,
                "only {} test paragraphs have {tokens} tokens",
                seqs.len()
            );
            let mut results = Vec::new();
            for &b in &batches {
                let mut runs = Vec::new();
                for r in 0..=repeats.max(1) {
                    let t = Instant::now();
                    for chunk in seqs.chunks(b.max(1)) {
                        let reqs: Vec<uae_lm::ScoreRequest> = chunk
                            .iter()
                            .map(|s| uae_lm::ScoreRequest {
                                context: &s[..tokens - answer],
                                targets: &s[tokens - answer..],
                            })
                            .collect();
                        std::hint::black_box(model.score(&reqs)?);
                    }
                    if r > 0 {
                        runs.push(t.elapsed().as_secs_f64());
                    }
                }
                let s = median(runs);
                results.push(LabelRow {
                    batch: b,
                    tokens_per_s: (sequences * tokens) as f64 / s,
                    sequences_per_s: sequences as f64 / s,
                    seconds_median: s,
                });
            }
            let out = LabelBench {
                bench: "label",
                lm: lm.lm.display().to_string(),
                bf16: lm.bf16,
                sequences,
                tokens_per_sequence: tokens,
                answer_tokens: answer,
                threads: rayon::current_num_threads(),
                results,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        BenchCmd::Embed {
            model,
            bf16,
            passages,
            tokens,
            batch,
            repeats,
            data,
        } => {
            let enc = crate::common::load_encoder_in(&model, bf16)?;
            let q = data.load(Split::Test)?;
            // Paragraphs long enough to fill `tokens`, cut to exactly that many ids.
            let mut seqs: Vec<Vec<u32>> = Vec::new();
            for p in q.passages() {
                let ids = enc.tokenize(&[p.text.as_str()])?.remove(0);
                if ids.len() >= tokens {
                    let mut cut = ids[..tokens - 1].to_vec();
                    cut.push(*ids.last().expect("non-empty; this is a bug"));
                    seqs.push(cut);
                    if seqs.len() == passages {
                        break;
                    }
                }
            }
            anyhow::ensure!(
                seqs.len() == passages,
                "only {} test paragraphs have {tokens} tokens",
                seqs.len()
            );
            let mut runs = Vec::new();
            for r in 0..=repeats.max(1) {
                let t = Instant::now();
                for chunk in seqs.chunks(batch) {
                    let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
                    let v = enc.forward_t(&enc.batch(&refs)?, None)?;
                    std::hint::black_box(v.to_vec2::<f32>()?);
                }
                if r > 0 {
                    runs.push(t.elapsed().as_secs_f64());
                }
            }
            let s = median(runs.clone());
            let out = EmbedBench {
                bench: "embed",
                model: model.display().to_string(),
                bf16,
                passages,
                tokens_per_passage: tokens,
                batch,
                threads: rayon::current_num_threads(),
                seconds_median: s,
                tokens_per_s: (passages * tokens) as f64 / s,
                passages_per_s: passages as f64 / s,
                runs_s: runs,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}
