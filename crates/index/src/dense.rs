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

/// Queries per block of [`DenseIndex::search_all`].
const QUERY_BLOCK: usize = 128;
/// Passages per block of [`DenseIndex::search_all`] (a 128 x 4096 score block: 2 MB).
const PASSAGE_BLOCK: usize = 4096;

impl DenseIndex {
    /// The top `k` passages of the whole index for each of `queries`, best first:
    /// exact, as [`DenseIndex::search`] over every passage, but computed block by
    /// block with GEMMs (queries x passages) while a per-query buffer keeps only
    /// what can still reach the top `k`. Memory stays at one score block per worker
    /// plus `O(k)` per query, whatever the corpus size. Parallel over query blocks.
    pub fn search_all(&self, queries: &[Vec<f32>], k: usize) -> Result<Vec<Vec<Hit>>> {
        if let Some((index, q)) = queries
            .iter()
            .enumerate()
            .find(|(_, q)| q.len() != self.dim)
        {
            return Err(Error::Dim {
                index,
                got: q.len(),
                want: self.dim,
            });
        }
        let (n, dim) = (self.len(), self.dim);
        if k == 0 || n == 0 {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let flat: Vec<f32> = queries.iter().flatten().copied().collect();
        let blocks: Vec<&[f32]> = flat.chunks(QUERY_BLOCK * dim).collect();
        // Few query blocks: let each GEMM use the threads; many: one block a thread.
        let inner = if blocks.len() >= rayon::current_num_threads() {
            1
        } else {
            rayon::current_num_threads()
        };
        let per_block: Vec<Vec<Vec<Hit>>> = blocks
            .par_iter()
            .map(|qb| self.block_top(qb, k, inner))
            .collect();
        Ok(per_block.into_iter().flatten().collect())
    }

    fn block_top(&self, qb: &[f32], k: usize, threads: usize) -> Vec<Vec<Hit>> {
        let (n, dim) = (self.len(), self.dim);
        let m = qb.len() / dim;
        let mut best: Vec<Vec<Hit>> = vec![Vec::with_capacity(2 * k); m];
        let mut floor = vec![f32::NEG_INFINITY; m];
        let mut scores = vec![0f32; m * PASSAGE_BLOCK];
        for p0 in (0..n).step_by(PASSAGE_BLOCK) {
            let pn = PASSAGE_BLOCK.min(n - p0);
            uae_kernels::sgemm(
                m,
                pn,
                dim,
                uae_kernels::Mat {
                    data: qb,
                    rs: dim,
                    cs: 1,
                },
                uae_kernels::Mat {
                    data: &self.data[p0 * dim..(p0 + pn) * dim],
                    rs: 1,
                    cs: dim,
                },
                &mut scores,
                pn,
                false,
                threads,
            );
            for (qi, row) in scores.chunks(pn).take(m).enumerate() {
                let (buf, fl) = (&mut best[qi], &mut floor[qi]);
                for (j, &score) in row.iter().enumerate() {
                    // A passage scoring at the floor ranks after the floor's (ties
                    // go to the lower position), so only strictly higher can enter.
                    if score > *fl || buf.len() < k {
                        buf.push(Hit {
                            passage: p0 + j,
                            score,
                        });
                    }
                }
                if buf.len() >= 2 * k {
                    let kept = rank(std::mem::take(buf), Some(k));
                    *fl = kept.last().map_or(f32::NEG_INFINITY, |h| h.score);
                    *buf = kept;
                }
            }
        }
        best.into_iter().map(|b| rank(b, Some(k))).collect()
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

    /// Blocked search over the whole index gives the one-query search's top k, for
    /// k below, inside and past a block, with ties between equal vectors.
    #[test]
    fn blocked_search_all_equals_one_query_search() {
        let mut seed = 11u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut vecs: Vec<Vec<f32>> = (0..9000)
            .map(|_| (0..24).map(|_| rnd()).collect())
            .collect();
        vecs[8500] = vecs[17].clone(); // an exact tie across blocks
        let idx = DenseIndex::new(&vecs).unwrap();
        let queries: Vec<Vec<f32>> = (0..300).map(|_| (0..24).map(|_| rnd()).collect()).collect();
        let all: Vec<usize> = (0..vecs.len()).collect();
        for k in [1, 10, 5000, 20000] {
            let got = idx.search_all(&queries, k).unwrap();
            assert_eq!(got.len(), queries.len());
            for (q, hits) in queries.iter().zip(&got) {
                let want = idx.search(q, &all, Some(k)).unwrap();
                assert_eq!(hits.len(), want.len());
                // GEMM and dot sum in different orders: scores equal to rounding;
                // a passage may differ only where two scores are that close.
                for (a, b) in hits.iter().zip(&want) {
                    assert!((a.score - b.score).abs() < 1e-5, "k {k}");
                }
                let tie = hits.iter().position(|h| h.passage == 17);
                let twin = hits.iter().position(|h| h.passage == 8500);
                if let (Some(t), Some(w)) = (tie, twin) {
                    assert!(t < w, "equal vectors keep corpus order");
                }
            }
        }
        assert!(idx.search_all(&[vec![0.0; 3]], 5).is_err());
        assert!(idx
            .search_all(&queries, 0)
            .unwrap()
            .iter()
            .all(Vec::is_empty));
    }

    #[test]
    fn dimension_mismatch_is_an_error() {
        assert!(DenseIndex::new(&[vec![1.0, 0.0], vec![1.0]]).is_err());
        let idx = DenseIndex::new(&[vec![1.0, 0.0]]).unwrap();
        assert!(idx.search(&[1.0], &[0], None).is_err());
    }
}
