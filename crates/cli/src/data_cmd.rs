use crate::common::DataDir;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use uae_data::Split;

#[derive(Subcommand)]
pub enum DataCmd {
    /// Papers, questions, evaluable questions (with matched text evidence) and
    /// paragraphs per QASPER split; JSON on stdout with --json.
    Stats {
        /// train, dev, test, or all.
        #[arg(long, default_value = "all")]
        split: String,
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// Writes a QASPER split as your-own-data files: DIR/corpus.jsonl (ids
    /// `{paper_id}#{n}`, scope = paper) and DIR/questions.jsonl (answers = the
    /// answerable references, positives = the matched gold evidence).
    ExportQasper {
        #[arg(long)]
        split: Split,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        data: DataDir,
    },
}

pub fn run(cmd: DataCmd) -> Result<()> {
    match cmd {
        DataCmd::ExportQasper { split, out, data } => {
            let set = data.load(split)?.qa_set();
            set.write(&out)?;
            println!(
                "{}: {} passages, {} questions ({} with positives) in {}",
                set.name,
                set.corpus.len(),
                set.questions.len(),
                set.questions
                    .iter()
                    .filter(|q| !q.positives.is_empty())
                    .count(),
                out.display()
            );
            Ok(())
        }
        DataCmd::Stats { split, data, json } => {
            let splits: Vec<Split> = if split == "all" {
                vec![Split::Train, Split::Dev, Split::Test]
            } else {
                vec![split.parse()?]
            };
            let all = (splits.into_iter().map(|s| Ok(data.load(s)?.stats())))
                .collect::<Result<Vec<_>>>()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print!("{}", uae_data::QasperStats::table(&all));
            }
            Ok(())
        }
    }
}
