//! `uae`: utility-aligned dense retrieval. One binary over the workspace libraries.

use clap::Parser;

fn main() -> std::process::ExitCode {
    uae_kernels::tune_allocator();
    uae_cli::run(uae_cli::Cli::parse())
}
