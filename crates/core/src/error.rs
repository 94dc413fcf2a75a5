//! Errors of the shared plumbing: file I/O and corrupt records, each with its path.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} is in use by another uae run{holder}: two runs writing one folder would interleave their files; wait for it to end or give another folder")]
    Locked { dir: PathBuf, holder: String },
    #[error("{path}:{line}: corrupt record: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl Error {
    /// A closure turning an `io::Error` into [`Error::Io`] for `path`.
    pub fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
