use crate::common::{Bars, DataDir};
use anyhow::Result;
use std::path::PathBuf;
use uae_core::flags::unit_interval;
use uae_train::{DevChoice, TrainConfig, TrainRun};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Label folder written by `uae label` (labels.jsonl).
    #[arg(long)]
    labels: PathBuf,
    /// Output: model/ (best by dev MAP, sentence-transformers layout), ckpt/,
    /// metrics.jsonl, manifest.json, loss.svg, dev.svg. Rerunning the same command
    /// resumes.
    #[arg(long)]
    out: PathBuf,
    /// Base bi-encoder to fine-tune.
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    base: PathBuf,
    #[command(flatten)]
    config: TrainConfig,
    #[command(flatten)]
    dev: DevChoice,
    #[command(flatten)]
    data: DataDir,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let dev = a.dev.resolve(&a.labels, &a.data.data_dir)?;
    let run = TrainRun {
        labels: a.labels,
        base: a.base,
        out: a.out,
        config: a.config,
        dev,
    };
    let state = uae_train::run(&run, &Bars::default())?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct InterpolateArgs {
    /// The fine-tuned model folder (`uae train`'s `out/model`).
    #[arg(long)]
    model: PathBuf,
    /// The model it was fine-tuned from.
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    base: PathBuf,
    /// The fine-tuned model's share of every weight (0-1): 1 is the fine-tuned
    /// model, 0 the base. Lower keeps more of the base's accuracy on other domains.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    model_weight: f32,
    /// Output folder (sentence-transformers layout, as `uae train` writes).
    #[arg(long)]
    out: PathBuf,
}

pub fn interpolate(a: InterpolateArgs) -> Result<()> {
    uae_train::interpolate(&a.model, &a.base, a.model_weight, &a.out)?;
    println!("{}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The flags' defaults are the library's: one place for each.
    #[test]
    fn flag_defaults_are_the_config_defaults() {
        let crate::Cmd::Train(a) = crate::parse(&["train", "--labels", "l", "--out", "o"]) else {
            panic!("not train")
        };
        assert_eq!(a.config, uae_train::TrainConfig::default());
        assert_eq!(
            format!("{:?}", a.dev),
            format!("{:?}", uae_train::DevChoice::default())
        );
    }
}
