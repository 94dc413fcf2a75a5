//! What the integration tests share: the repository root and the `uae` binary.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

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

/// Runs `uae` with `args`, asserts it failed with a one-line `error:` holding every
/// needle, and that nothing panicked.
pub fn fails_with(args: &[&str], needles: &[&str]) {
    fails_with_cmd(uae().args(args), needles);
}

/// [`fails_with`] for a prepared command (environment, paths).
pub fn fails_with_cmd(cmd: &mut Command, needles: &[&str]) {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let out = cmd.output().expect("uae runs");
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {err}"));
    for n in needles {
        assert!(line.contains(n), "`{line}` should mention `{n}`");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// A `uae serve` or `uae explore` process, killed when dropped.
pub struct Server {
    pub child: Child,
    /// HOST:PORT it listens on.
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server command (stdout piped, stderr dropped) and waits for its first
/// line, `listening on http://ADDR`.
pub fn listening(cmd: &mut Command) -> Server {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("uae starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("uae prints a line");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server { child, addr }
}

/// One request on a fresh connection (`Connection: close`): (status, lower-cased
/// head, body). `headers`: extra header lines, each ending in CRLF.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("the server accepts");
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("a timeout can be set");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("the request is sent");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("the answer arrives");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, head.to_lowercase(), body.to_string())
}
