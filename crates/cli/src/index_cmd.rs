use crate::common::{Bars, ModelCorpus};
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum IndexCmd {
    /// Writes a corpus's passage vectors for bulk loading into a vector database:
    /// OUT/vectors.npy (`[n, dim]` float32, NumPy format) and OUT/ids.jsonl
    /// (`{"id", "scope"?}` per row, in the same order).
    Export {
        #[command(flatten)]
        mc: ModelCorpus,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: IndexCmd) -> Result<()> {
    let IndexCmd::Export { mc, out } = cmd;
    let (n, dim) =
        uae_search::export_index(&mc.encoder()?, &mc.passages()?, &out, &Bars::default())?;
    println!("{n} vectors of dimension {dim} in {}", out.display());
    Ok(())
}
