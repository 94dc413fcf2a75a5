//! What the integration tests share: the repository root and the `uae` binary.

#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::Command;

/// The repository root (models/ and the data are found from there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// The `uae` binary, run from the repository root with quiet logs.
pub fn uae() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uae"));
    c.current_dir(root()).env("RUST_LOG", "warn");
    c
}

/// Runs `uae` with `args`, asserts it succeeded, returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = uae().args(args).output().expect("uae runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
