//! The durable score store: an append-only JSONL file, one record per line.
//!
//! Every batch of records is written with one `write` and `fsync`ed before it is
//! reported. A kill can only leave a torn last line; [`Store::open`] truncates it
//! away. Records are keyed, so a key is stored at most once. The store is generic
//! over the record type: the labeler keeps LLM scores in it, the QASPER benchmark
//! its generated answers and re-ranker scores.

use crate::{Error, Result};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A record that knows its store key.
pub trait Keyed: serde::Serialize + serde::de::DeserializeOwned {
    fn key(&self) -> &str;
}

/// The records of one store file, keyed, with the file open for appends.
pub struct Store<R> {
    path: PathBuf,
    file: File,
    records: HashMap<String, R>,
}

impl<R: Keyed> Store<R> {
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut records = HashMap::new();
        let mut good = 0usize;
        for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            if !line.ends_with(b"\n") {
                break; // torn tail of a killed write
            }
            match serde_json::from_slice::<R>(line) {
                Ok(r) => {
                    records.insert(r.key().to_string(), r);
                    good += line.len();
                }
                Err(e) if good + line.len() == bytes.len() => {
                    tracing::warn!(line = i + 1, "dropping an unreadable last record: {e}");
                    break;
                }
                Err(e) => {
                    return Err(Error::Corrupt {
                        path: path.to_path_buf(),
                        line: i + 1,
                        message: e.to_string(),
                    })
                }
            }
        }
        if good < bytes.len() {
            tracing::info!(
                bytes = bytes.len() - good,
                "truncating a torn record left by an interrupted run"
            );
            file.set_len(good as u64).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        Ok(Store {
            path: path.to_path_buf(),
            file,
            records,
        })
    }

    pub fn get(&self, key: &str) -> Option<&R> {
        self.records.get(key)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends records (new keys only), durable when this returns.
    pub fn append(&mut self, records: Vec<R>) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let mut buf = Vec::new();
        let mut fresh = Vec::new();
        for r in records {
            if self.records.contains_key(r.key()) {
                continue;
            }
            serde_json::to_writer(&mut buf, &r).expect("records serialise; this is a bug");
            buf.push(b'\n');
            fresh.push(r);
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        for r in fresh {
            self.records.insert(r.key().to_string(), r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Record {
        k: String,
        nll: f32,
        lp: Vec<f32>,
    }

    impl Keyed for Record {
        fn key(&self) -> &str {
            &self.k
        }
    }

    fn rec(k: &str) -> Record {
        Record {
            k: k.into(),
            nll: 1.5,
            lp: vec![-1.0, -2.0],
        }
    }

    #[test]
    fn torn_tail_is_truncated_and_duplicates_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.jsonl");
        {
            let mut s = Store::open(&p).unwrap();
            s.append(vec![rec("a"), rec("b")]).unwrap();
            s.append(vec![rec("a")]).unwrap();
        }
        // Simulate a kill in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"k\":\"c\",\"nll\":1.").unwrap();
        drop(f);
        let mut s = Store::open(&p).unwrap();
        assert_eq!(s.len(), 2);
        s.append(vec![rec("c")]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<Record>(l).is_ok()));
    }

    #[test]
    fn corruption_in_the_middle_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.jsonl");
        std::fs::write(&p, "garbage\n{\"k\":\"a\",\"nll\":1.0,\"lp\":[]}\n").unwrap();
        let e = Store::<Record>::open(&p).err().unwrap().to_string();
        assert!(e.contains("s.jsonl:1"), "{e}");
    }
}
