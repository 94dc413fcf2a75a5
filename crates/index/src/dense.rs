use crate::{Error, Result};
use rayon::prelude::*;
use uae_core::{rank, Hit};

/// Exact inner-product search over a flat `[n, dim]` matrix of (normalised) vectors.
/// Scores are dot products: with unit vectors, cosine similarity, higher is better.
#[derive(Debug, Clone)]
pub struct DenseIndex {
    dim: usize,
    data: Vec<f32>,
}

impl DenseIndex {
    /// Builds the index from row vectors; all must share one dimension.
    pub fn new(vectors: &[Vec<f32>]) -> Result<Self> {
        let dim = vectors.first().ok_or(Error::Empty)?.len();
        let mut data = Vec::with_capacity(dim * vectors.len());
        for (index, v) in vectors.iter().enumerate() {
            if v.len() != dim {
                return Err(Error::Dim {
                    index,
                    got: v.len(),
                    want: dim,
                });
            }
            data.extend_from_slice(v);
        }
        Ok(DenseIndex { dim, data })
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn vector(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Top-`k` of `candidates` by dot product with `query` (all candidates ranked when
    /// `k` is `None`); ties break by corpus position.
    pub fn search(
        &self,
        query: &[f32],
        candidates: &[usize],
        k: Option<usize>,
    ) -> Result<Vec<Hit>> {
        if query.len() != self.dim {
            return Err(Error::Dim {
                index: 0,
                got: query.len(),
                want: self.dim,
            });
        }
        let score = |&i: &usize| Hit {
            passage: i,
            score: dot(query, self.vector(i)),
        };
        let hits: Vec<Hit> = if candidates.len() > 4096 {
            candidates.par_iter().map(score).collect()
        } else {
            candidates.iter().map(score).collect()
        };
        Ok(rank(hits, k))
    }
}

/// Dot product written as 8 independent lanes so that the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact search equals brute force: score every candidate, sort by (-score, index).
    #[test]
    fn exact_search_equals_brute_force() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let vecs: Vec<Vec<f32>> = (0..300).map(|_| (0..37).map(|_| rnd()).collect()).collect();
        let idx = DenseIndex::new(&vecs).unwrap();
        let q: Vec<f32> = (0..37).map(|_| rnd()).collect();
        let cands: Vec<usize> = (0..300).filter(|i| i % 3 != 0).collect();
        let got = idx.search(&q, &cands, Some(10)).unwrap();
        let mut brute: Vec<(f32, usize)> = cands
            .iter()
            .map(|&i| (vecs[i].iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), i))
            .collect();
        brute.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
        let want: Vec<usize> = brute.iter().take(10).map(|x| x.1).collect();
        assert_eq!(got.iter().map(|h| h.passage).collect::<Vec<_>>(), want);
        for (h, b) in got.iter().zip(&brute) {
            assert!((h.score - b.0).abs() < 1e-5);
        }
    }

    #[test]
    fn dimension_mismatch_is_an_error() {
        assert!(DenseIndex::new(&[vec![1.0, 0.0], vec![1.0]]).is_err());
        let idx = DenseIndex::new(&[vec![1.0, 0.0]]).unwrap();
        assert!(idx.search(&[1.0], &[0], None).is_err());
    }
}
