use crate::common::{count, Bars};
use anyhow::Result;
use std::path::PathBuf;
use uae_data::{SourceArgs, Split};
use uae_search::EvalOptions;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Output folder: run.trec, qrels.trec, report.json.
    #[arg(long)]
    out: PathBuf,
    /// What to evaluate on: a QASPER split (--split, default test), a BEIR folder
    /// (--beir, corpus-wide search) or your own --corpus and --questions (those with
    /// `positives` are scored).
    #[command(flatten)]
    source: SourceArgs,
    /// Evaluate the first N questions only (and their papers), as `uae train
    /// --dev-limit` does (>= 1).
    #[arg(long, value_parser = count())]
    limit: Option<usize>,
    /// Also report every metric per value of this field of the questions (QASPER:
    /// `answer_type`, each question's extractive / abstractive / yes_no /
    /// unanswerable annotations; your questions file: any field of its rows, a list
    /// putting a question in each of its values' groups; `answer_type` finds
    /// `answer_types`). Writes groups.json for `uae compare --by`.
    #[arg(long, value_name = "FIELD")]
    by: Option<String>,
    #[command(flatten)]
    options: EvalOptions,
    #[command(flatten)]
    select: uae_search::SelectOptions,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let source = a.source.source(Split::Test);
    let mut coll = source.collection()?;
    if let Some(n) = a.limit {
        uae_search::limit_queries(&mut coll, n);
    }
    let groups = match &a.by {
        Some(field) => Some(uae_search::query_groups(&source, &coll, field)?),
        None => None,
    };
    let retriever = a.options.retriever();
    let labels = match &a.select.labels {
        Some(dir) => Some((dir, uae_artifacts::labels::LabeledGroup::read_all(dir)?)),
        None => None,
    };
    let extras = uae_search::Extras {
        groups: groups.as_ref(),
        selection: a.select.selection(),
        labels: labels.as_ref().map(|(d, g)| (d.as_path(), g.as_slice())),
    };
    let report = uae_search::evaluate(&coll, &retriever, &a.out, &extras, &Bars::default())?;
    let tag = retriever.tag();
    println!(
        "{} on {}: {} evaluable of {} queries ({} without matched text evidence skipped), {} passages\n",
        tag, report.collection, report.evaluable_queries, report.queries, report.skipped_queries, report.passages
    );
    print!("{}", uae_eval::table(&tag, &report.metrics));
    if let Some(by) = &report.by {
        println!();
        print!(
            "{}",
            uae_eval::groups::table(&by.field, &by.groups, &uae_search::compare::RUN_METRICS)
        );
    }
    if let Some(s) = &report.selection {
        println!("\n{s}");
    }
    if let Some(c) = &report.calibration {
        println!("\n{c}");
    }
    Ok(())
}

pub fn calibrate(a: uae_search::calibrate::CalibrateArgs) -> Result<()> {
    let summary = uae_search::calibrate::run(&a, &Bars::default())?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn flag_defaults_are_the_options_defaults() {
        let crate::Cmd::Eval(a) = crate::parse(&["eval", "--out", "o"]) else {
            panic!("not eval")
        };
        let want = uae_search::EvalOptions::default();
        assert_eq!(format!("{:?}", a.options), format!("{want:?}"));
        let crate::Cmd::Eval(a) = crate::parse(&["eval", "--out", "o", "--beir", "b"]) else {
            panic!("not eval")
        };
        assert!(matches!(
            a.source.source(uae_data::Split::Test),
            uae_data::Source::Beir { .. }
        ));
    }
}
