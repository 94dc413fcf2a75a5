use std::path::PathBuf;

/// Errors from reading datasets; each names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid QASPER JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}:{line}: {message}")]
    JsonLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: bad qrels row: {message}")]
    Qrels {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: passage id `{id}` appears twice in the corpus")]
    DuplicateId {
        path: PathBuf,
        line: usize,
        id: String,
    },
    #[error("{path}: {what} is empty")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: BEIR queries carry no answers; labelling needs questions with answers (--corpus and --questions)")]
    NoAnswers { path: PathBuf },
    #[error("{source_name}: no question has a field `{field}` (or `{field}s`) to group by")]
    NoField { source_name: String, field: String },
    #[error("unknown split `{name}` (expected train, dev or test)")]
    UnknownSplit { name: String },
    #[error("{path}: no such file (QASPER files are looked up as qasper-{{split}}-v0.3.json[.gz]; set --data-dir or UAE_DATA_DIR)")]
    MissingSplit { path: PathBuf },
}

pub type Result<T> = std::result::Result<T, Error>;
