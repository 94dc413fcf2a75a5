use crate::common::{load_encoder, DataDir, DEFAULT_ENCODER};
use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use uae_data::Split;
use uae_encoder::BatchOptions;

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
                    let v = enc.forward_t(&enc.batch(&refs)?, false)?;
                    std::hint::black_box(v.to_vec2::<f32>()?);
                }
                if r > 0 {
                    runs.push(t.elapsed().as_secs_f64());
                }
            }
            let s = median(runs.clone());
            let _ = BatchOptions::default();
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
