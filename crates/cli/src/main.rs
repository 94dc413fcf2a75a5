//! `uae`: utility-aligned dense retrieval. One binary over the workspace libraries.

use clap::Parser;

fn main() -> std::process::ExitCode {
    uae_cli::run(uae_cli::Cli::parse())
}
