use crate::common::{load_encoder, DataDir, DEFAULT_ENCODER};
use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use uae_data::Split;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Encoder throughput: N real QASPER paragraphs truncated to a fixed token
    /// length, embedded in batches; reports tokens/s (median of repeats).
    Embed {
        #[arg(long, default_value = DEFAULT_ENCODER)]
        model: PathBuf,
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
    /// LLM scoring throughput: sequences of real QASPER text cut to a fixed length,
    /// the last `answer` tokens scored (LM head on those only), at several batch sizes.
    Label {
        #[arg(long, default_value = crate::label_cmd::DEFAULT_LM)]
        lm: PathBuf,
        #[arg(long)]
        quantized: bool,
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
        BenchCmd::Label {
            lm,
            quantized,
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
            let model = uae_lm::CausalLm::load(&uae_lm::LmSource {
                path: lm.clone(),
                quantized,
            })?;
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
                lm: lm.display().to_string(),
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
            passages,
            tokens,
            batch,
            repeats,
            data,
        } => {
            let enc = load_encoder(&model)?;
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
