//! The passage-embedding cache: `cache/emb-KEY.bin`, one file per (model, passage
//! list). The file is `n: u64, dim: u64` then `n * dim` little-endian f32, written
//! whole and renamed into place, so a killed run leaves either nothing or a complete
//! file.

use std::path::{Path, PathBuf};
use uae_core::Result;

/// The files whose sha256s fix a model folder's embeddings (weights, tokenizer,
/// pooling and length settings). The list and its order are part of the cache key:
/// changing them invalidates every cached embedding.
const FINGERPRINT_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// What determines a model folder's embeddings: its files' sha256s.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for f in FINGERPRINT_FILES {
        let p = dir.join(f);
        if p.is_file() {
            parts.push(format!("{f}={}", uae_core::hash::file_sha256(&p)?));
        }
    }
    Ok(parts.join(","))
}

/// One cache entry: the embeddings of a passage list by one model.
#[derive(Debug, Clone)]
pub struct EmbeddingCache {
    pub path: PathBuf,
}

impl EmbeddingCache {
    /// The entry for `texts` embedded by the model with `fingerprint` (bf16
    /// projections keyed apart; f32 keys stay as they always were).
    pub fn new(dir: &Path, fingerprint: &str, bf16: bool, texts: &[&str]) -> Self {
        let mut parts: Vec<&[u8]> = vec![b"passage-embeddings-v1", fingerprint.as_bytes()];
        if bf16 {
            parts.push(b"bf16");
        }
        parts.extend(texts.iter().map(|t| t.as_bytes()));
        EmbeddingCache {
            path: dir.join(format!("emb-{}.bin", uae_core::hash::digest(&parts))),
        }
    }

    /// The cached vectors, if the file holds exactly `n` of dimension `dim`. A
    /// malformed file is reported and treated as absent.
    pub fn load(&self, n: usize, dim: usize) -> Option<Vec<Vec<f32>>> {
        let bytes = std::fs::read(&self.path).ok()?;
        let head = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        if head(0) == Some(n as u64)
            && head(1) == Some(dim as u64)
            && bytes.len() == 16 + n * dim * 4
        {
            let floats: Vec<f32> = bytes[16..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            return Some(floats.chunks(dim.max(1)).map(<[f32]>::to_vec).collect());
        }
        tracing::warn!("{}: malformed, embedding again", self.path.display());
        None
    }

    pub fn save(&self, vecs: &[Vec<f32>], dim: usize) -> Result<()> {
        let mut bytes = Vec::with_capacity(16 + vecs.len() * dim * 4);
        bytes.extend((vecs.len() as u64).to_le_bytes());
        bytes.extend((dim as u64).to_le_bytes());
        for v in vecs {
            for x in v {
                bytes.extend(x.to_le_bytes());
            }
        }
        uae_core::fs::atomic_write(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_shapes() {
        let d = tempfile::tempdir().unwrap();
        let c = EmbeddingCache::new(d.path(), "fp", false, &["a", "b"]);
        assert!(c.load(2, 3).is_none());
        let v = vec![vec![1.0, 2.0, 3.0], vec![-1.0, 0.5, 0.0]];
        c.save(&v, 3).unwrap();
        assert_eq!(c.load(2, 3).unwrap(), v);
        assert!(c.load(3, 3).is_none());
        assert!(c.load(2, 4).is_none());
        std::fs::write(&c.path, b"short").unwrap();
        assert!(c.load(2, 3).is_none());
        // Keys: another model, text or precision is another file.
        let other = |fp, bf16, t: &[&str]| EmbeddingCache::new(d.path(), fp, bf16, t).path;
        assert_ne!(other("fp", true, &["a", "b"]), c.path);
        assert_ne!(other("fq", false, &["a", "b"]), c.path);
        assert_ne!(other("fp", false, &["a", "c"]), c.path);
    }
}

/// Writes `[n, dim]` f32 vectors as a NumPy `.npy` file (format 1.0, little-endian,
/// C order), what `numpy.load` and vector databases' bulk loaders read.
pub fn write_npy(path: &Path, vecs: &[Vec<f32>], dim: usize) -> Result<()> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        vecs.len(),
        dim
    );
    // Magic (6) + version (2) + header length (2) + dict + '\n', padded to 64 bytes.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    let mut bytes = Vec::with_capacity(10 + header.len() + vecs.len() * dim * 4);
    bytes.extend(b"\x93NUMPY\x01\x00");
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in vecs {
        for x in v {
            bytes.extend(x.to_le_bytes());
        }
    }
    uae_core::fs::atomic_write(path, &bytes)
}

/// Reads a `.npy` file written by [`write_npy`]: `(rows, dim, values)`. `None` for
/// any other layout.
pub fn read_npy(path: &Path) -> Result<Option<(usize, usize, Vec<f32>)>> {
    let bytes = std::fs::read(path).map_err(uae_core::Error::io(path))?;
    if bytes.len() < 10 || &bytes[..8] != b"\x93NUMPY\x01\x00" {
        return Ok(None);
    }
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let Some(header) = bytes
        .get(10..10 + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
    else {
        return Ok(None);
    };
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Ok(None);
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| {
            s.split(',')
                .filter(|x| !x.trim().is_empty())
                .map(|x| x.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
        });
    let Some(Ok(shape)) = shape else {
        return Ok(None);
    };
    let [n, dim] = shape[..] else {
        return Ok(None);
    };
    let data = &bytes[10 + hlen..];
    if data.len() != n * dim * 4 {
        return Ok(None);
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Some((n, dim, values)))
}

#[cfg(test)]
mod npy_tests {
    use super::*;

    /// The header is padded so the data starts on a 64-byte boundary (NumPy's rule)
    /// and the values read back.
    #[test]
    fn npy_round_trips_with_an_aligned_header() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.npy");
        write_npy(&p, &[vec![1.0, -2.5], vec![0.25, 3.0], vec![0.0, 1e-3]], 2).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(bytes[10 + hlen - 1], b'\n');
        let (n, dim, v) = read_npy(&p).unwrap().unwrap();
        assert_eq!((n, dim), (3, 2));
        assert_eq!(v, vec![1.0, -2.5, 0.25, 3.0, 0.0, 1e-3]);
    }
}
