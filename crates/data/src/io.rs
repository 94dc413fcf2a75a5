use crate::{Error, Result};
use serde::de::DeserializeOwned;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Opens a file for reading, transparently decompressing it when it is gzip
/// (detected by the magic bytes, not the extension).
pub fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(io)?;
    let f = File::open(path).map_err(io)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            f,
        ))))
    } else {
        Ok(Box::new(BufReader::new(f)))
    }
}

/// Reads a JSON-lines file (blank lines skipped) into `T`s; errors name the line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    Ok(read_jsonl_lines(path)?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// [`read_jsonl`], each value with its 1-based line number. A byte-order mark is
/// dropped; a line that is not UTF-8, is over [`uae_core::lines::MAX_LINE_BYTES`] or
/// is not a `T` is an error naming the line.
pub fn read_jsonl_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<(usize, T)>> {
    let (rows, mut bad) = read_jsonl_lenient(path, false)?;
    match bad.pop() {
        Some((line, message)) => Err(Error::JsonLine {
            path: path.to_path_buf(),
            line,
            message,
        }),
        None => Ok(rows),
    }
}

/// Rows that parsed, each with its line, and `(line, reason)` for each that did not.
pub type LenientRows<T> = (Vec<(usize, T)>, Vec<(usize, String)>);

/// The rows of a JSON-lines file that parse as `T`, and `(line, reason)` for each one
/// that does not. With `keep_going` false, reading stops at the first bad line (it is
/// the one returned). A failing read (not a bad line) is an error either way.
pub fn read_jsonl_lenient<T: DeserializeOwned>(
    path: &Path,
    keep_going: bool,
) -> Result<LenientRows<T>> {
    let reader = open_maybe_gz(path)?;
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for item in uae_core::lines::lines(reader) {
        let (line, text) = match item {
            Ok(l) => l,
            Err(e) if e.is_line_local() => {
                bad.push((e.line(), e.reason()));
                if keep_going {
                    continue;
                }
                break;
            }
            Err(e) => {
                return Err(Error::JsonLine {
                    path: path.to_path_buf(),
                    line: e.line(),
                    message: e.reason(),
                })
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&text) {
            Ok(v) => rows.push((line, v)),
            Err(e) => {
                bad.push((line, e.to_string()));
                if !keep_going {
                    break;
                }
            }
        }
    }
    Ok((rows, bad))
}
