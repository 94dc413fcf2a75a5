//! Text files read line by line, the way every input reader of `uae` must: a UTF-8
//! byte-order mark at the start is dropped (Windows editors write one), `\r\n` ends a
//! line like `\n`, a line that is not UTF-8 or is longer than [`MAX_LINE_BYTES`] is a
//! [`LineError`] naming its 1-based line, and a huge line is refused before it is
//! held whole in memory (at most the limit plus one read buffer is kept).

use std::io::BufRead;

/// The longest line any input file may have: 16 MiB. A passage, question or label
/// row is far shorter; a longer line is a broken or hostile file, refused before it
/// is parsed or tokenised.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line {line}: {source}")]
    Io {
        line: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: not valid UTF-8 (byte {byte} of the line)")]
    Utf8 { line: usize, byte: usize },
    #[error("line {line}: longer than {limit} bytes (the limit for one line)")]
    TooLong { line: usize, limit: usize },
}

impl LineError {
    /// The 1-based line the error is on.
    pub fn line(&self) -> usize {
        match self {
            LineError::Io { line, .. }
            | LineError::Utf8 { line, .. }
            | LineError::TooLong { line, .. } => *line,
        }
    }

    /// The message without the line (for errors that print `path:line: message`).
    pub fn reason(&self) -> String {
        let full = self.to_string();
        match full.strip_prefix(&format!("line {}: ", self.line())) {
            Some(rest) => rest.to_string(),
            None => full,
        }
    }

    /// Whether reading may go on after this error (the next line is intact): a bad
    /// line can be skipped, a failing read cannot.
    pub fn is_line_local(&self) -> bool {
        !matches!(self, LineError::Io { .. })
    }
}

/// The lines of a reader, each `(1-based number, text)`, with the rules of the module.
/// After an [`LineError::Io`] the iterator ends.
pub struct Lines<R> {
    reader: R,
    line: usize,
    limit: usize,
    buf: Vec<u8>,
    done: bool,
}

/// [`Lines`] of `reader` with the [`MAX_LINE_BYTES`] limit.
pub fn lines<R: BufRead>(reader: R) -> Lines<R> {
    lines_with_limit(reader, MAX_LINE_BYTES)
}

/// [`Lines`] with another limit (tests use a small one).
pub fn lines_with_limit<R: BufRead>(reader: R, limit: usize) -> Lines<R> {
    Lines {
        reader,
        line: 0,
        limit,
        buf: Vec::new(),
        done: false,
    }
}

impl<R: BufRead> Lines<R> {
    /// Reads up to and including the next `\n` into `buf`, stopping to store bytes
    /// past the limit (they are consumed, not kept). Returns (bytes seen, too long).
    fn read_line(&mut self) -> std::io::Result<(usize, bool)> {
        self.buf.clear();
        let mut seen = 0usize;
        let mut too_long = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok((seen, too_long));
            }
            let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if !too_long {
                if self.buf.len() + take > self.limit + 2 {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(&chunk[..take]);
                }
            }
            seen += take;
            self.reader.consume(take);
            if end {
                return Ok((seen, too_long));
            }
        }
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = std::result::Result<(usize, String), LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.line += 1;
        let line = self.line;
        let (seen, too_long) = match self.read_line() {
            Ok(r) => r,
            Err(source) => {
                self.done = true;
                return Some(Err(LineError::Io { line, source }));
            }
        };
        if seen == 0 {
            self.done = true;
            return None;
        }
        if too_long {
            return Some(Err(LineError::TooLong {
                line,
                limit: self.limit,
            }));
        }
        let mut bytes: &[u8] = &self.buf;
        if line == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.len() > self.limit {
            return Some(Err(LineError::TooLong {
                line,
                limit: self.limit,
            }));
        }
        Some(match std::str::from_utf8(bytes) {
            Ok(s) => Ok((line, s.to_string())),
            Err(e) => Err(LineError::Utf8 {
                line,
                byte: e.valid_up_to() + 1,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(bytes: &[u8], limit: usize) -> Vec<std::result::Result<(usize, String), String>> {
        lines_with_limit(bytes, limit)
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn bom_crlf_bad_utf8_and_long_lines_are_named_by_line() {
        let text = b"\xEF\xBB\xBFfirst\r\nsecond\n\xFFbad\nok\n0123456789abc\nlast";
        let got = all(text, 10);
        assert_eq!(got[0], Ok((1, "first".into())));
        assert_eq!(got[1], Ok((2, "second".into())));
        assert_eq!(
            got[2],
            Err("line 3: not valid UTF-8 (byte 1 of the line)".into())
        );
        assert_eq!(got[3], Ok((4, "ok".into())));
        assert!(got[4].as_ref().unwrap_err().starts_with("line 5: longer"));
        assert_eq!(got[5], Ok((6, "last".into())));
        assert_eq!(got.len(), 6);
        // A BOM later than the first line is text, not a marker.
        let got = all(b"a\n\xEF\xBB\xBFb\n", 10);
        assert_eq!(got[1], Ok((2, "\u{feff}b".into())));
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_read() {
        let got = all(b"0123456789\r\n", 10);
        assert_eq!(got, vec![Ok((1, "0123456789".into()))]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_give_lines_or_line_errors(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let n = bytes.iter().filter(|&&b| b == b'\n').count()
                + usize::from(!bytes.is_empty() && bytes.last() != Some(&b'\n'));
            let got: Vec<_> = lines_with_limit(&bytes[..], 16).collect();
            prop_assert_eq!(got.len(), n);
            for (i, r) in got.iter().enumerate() {
                match r {
                    Ok((line, _)) => prop_assert_eq!(*line, i + 1),
                    Err(e) => prop_assert_eq!(e.line(), i + 1),
                }
            }
        }
    }
}
