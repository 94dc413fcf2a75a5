use crate::common::{count, count_in, Bars};
use anyhow::{bail, Result};
use std::path::PathBuf;
use uae_artifacts::labels::Shard;
use uae_data::{SourceArgs, Split};
use uae_label::{LabelOptions, LabelTarget};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LabelArgs {
    #[command(subcommand)]
    action: Option<LabelAction>,
    /// Questions to label: a QASPER split (--split, default train), or your own
    /// --corpus and --questions (questions without an answer are skipped and
    /// counted; a row that cannot be read is skipped and named).
    #[command(flatten)]
    source: SourceArgs,
    /// Label only the first N eligible questions (in file order; >= 1).
    #[arg(long, value_parser = count())]
    limit: Option<usize>,
    /// Output folder: scores.jsonl (durable store), score-plan.json (which scores
    /// this run computes: fixed at its first start, so a resumed run batches them
    /// alike), labels.jsonl, manifest.json, summary.json, utility-histogram.svg,
    /// cache/ (the mining encoder's passage embeddings, in pieces). Rerunning the
    /// same command resumes, mid-mining too.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Label a deterministic part of the questions: `i/n` (1 <= i <= n) takes the
    /// eligible questions at positions i-1, i-1+n, ... (after --limit) into this
    /// --out; `uae label merge` joins the n folders. For n machines or n servers.
    #[arg(long)]
    shard: Option<Shard>,
    #[command(flatten)]
    options: LabelOptions,
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

pub fn run(a: LabelArgs) -> Result<()> {
    let summary = match a.action {
        Some(LabelAction::Merge { shards, out }) => {
            serde_json::to_value(uae_label::merge::merge(&shards, &out)?)?
        }
        Some(LabelAction::Export {
            labels,
            out,
            candidates,
            format: _,
        }) => serde_json::to_value(uae_label::export::export_sentence_transformers(
            &labels, &out, candidates,
        )?)?,
        None => {
            let Some(out) = a.out else {
                bail!("--out is required");
            };
            let target = LabelTarget {
                source: a.source.source(Split::Train),
                limit: a.limit,
                shard: a.shard,
                out,
            };
            serde_json::to_value(uae_label::label_command(
                &a.options,
                &target,
                &Bars::default(),
            )?)?
        }
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn flag_defaults_are_the_options_defaults() {
        let crate::Cmd::Label(a) = crate::parse(&["label", "--out", "o"]) else {
            panic!("not label")
        };
        let want = uae_label::LabelOptions::default();
        assert_eq!(format!("{:?}", a.options), format!("{want:?}"));
        assert_eq!(
            a.source.source(uae_data::Split::Train),
            uae_data::Source::Qasper {
                dir: a.source.data_dir.clone(),
                split: uae_data::Split::Train
            }
        );
    }
}
