//! The question-level term of a calibration: whether a passage helps depends less on
//! the passage's cosine than on the question. When the LLM already finds the answer
//! likely without context, no passage lowers its NLL by a nat; when the answer is
//! long and unlikely, the evidence does. A server cannot ask the LLM at query time,
//! but it has the query's embedding, and that predicts the LLM's no-context NLL:
//!
//! - **difficulty**: a ridge regression from the (unit-normalised) query embedding to
//!   the LLM's no-context NLL of the reference answer (its smallest over references),
//!   fitted on labelled questions, the ridge weight chosen by 5-fold cross-validation;
//! - **p(helps)** = `sigmoid(a * cosine + c * difficulty + b)`, fitted on the
//!   labelled pairs with each question's difficulty predicted out of fold (stacking:
//!   so the logistic sees the same kind of prediction a new question gets, not an
//!   in-sample one that fits too well).
//!
//! [`QuestionTerm::fit`] keeps the term only when it lowers the log loss, held out by
//! question (every pair of a fifth of the questions), against a logistic on the
//! cosine alone fitted on the same pairs.

use crate::calibrate::{log_loss, sigmoid, Logistic};
use serde::{Deserialize, Serialize};

/// Folds of the cross-validation, by question.
pub(crate) const FOLDS: usize = 5;
/// Ridge weights tried (on unit vectors; the intercept is not penalised).
const LAMBDAS: [f64; 6] = [0.3, 1.0, 3.0, 10.0, 30.0, 100.0];

/// `y = w . (x / |x|) + b`, fitted by ridge regression (closed form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ridge {
    pub w: Vec<f32>,
    pub b: f64,
    pub lambda: f64,
}

fn unit(x: &[f32]) -> Vec<f64> {
    let n = x.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt();
    let n = if n > 0.0 { n } else { 1.0 };
    x.iter().map(|&a| a as f64 / n).collect()
}

impl Ridge {
    /// Fits `ys` on `xs` (equal dimensions, at least two rows). `None` when the rows
    /// are fewer than two, of different lengths, or not finite.
    pub fn fit(xs: &[&[f32]], ys: &[f64], lambda: f64) -> Option<Ridge> {
        let d = xs.first()?.len();
        if xs.len() < 2 || xs.len() != ys.len() || d == 0 || xs.iter().any(|x| x.len() != d) {
            return None;
        }
        let rows: Vec<Vec<f64>> = xs.iter().map(|x| unit(x)).collect();
        let n = rows.len() as f64;
        let mean_y = ys.iter().sum::<f64>() / n;
        let mut mean_x = vec![0.0; d];
        for r in &rows {
            mean_x.iter_mut().zip(r).for_each(|(m, v)| *m += v / n);
        }
        // (Xc^T Xc + lambda I) w = Xc^T yc, with Xc, yc centred.
        let mut a = vec![0.0f64; d * d];
        let mut rhs = vec![0.0f64; d];
        let mut c = vec![0.0f64; d];
        for (r, &y) in rows.iter().zip(ys) {
            c.iter_mut()
                .zip(r)
                .zip(&mean_x)
                .for_each(|((c, v), m)| *c = v - m);
            let yc = y - mean_y;
            for i in 0..d {
                rhs[i] += c[i] * yc;
                let row = &mut a[i * d..i * d + i + 1];
                for (j, v) in row.iter_mut().enumerate() {
                    *v += c[i] * c[j];
                }
            }
        }
        for i in 0..d {
            a[i * d + i] += lambda;
        }
        let w = cholesky_solve(&mut a, &rhs, d)?;
        let b = mean_y - w.iter().zip(&mean_x).map(|(w, m)| w * m).sum::<f64>();
        (b.is_finite() && w.iter().all(|v| v.is_finite())).then(|| Ridge {
            w: w.iter().map(|&v| v as f32).collect(),
            b,
            lambda,
        })
    }

    /// The prediction for `x`; a vector of another dimension than the fit's gets the
    /// intercept (callers check dimensions where they load: [`QuestionTerm::dim`]).
    pub fn predict(&self, x: &[f32]) -> f64 {
        if x.len() != self.w.len() {
            return self.b;
        }
        self.b
            + unit(x)
                .iter()
                .zip(&self.w)
                .map(|(a, &w)| a * w as f64)
                .sum::<f64>()
    }
}

/// Solves `A x = b` for symmetric positive definite `A` (its lower triangle, row
/// major, `d` x `d`; overwritten by the factor). `None` when `A` is not positive
/// definite.
fn cholesky_solve(a: &mut [f64], b: &[f64], d: usize) -> Option<Vec<f64>> {
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if s.is_nan() || s <= 0.0 {
            return None;
        }
        let l = s.sqrt();
        a[j * d + j] = l;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / l;
        }
    }
    let mut y = vec![0.0; d];
    for i in 0..d {
        let s: f64 = (0..i).map(|k| a[i * d + k] * y[k]).sum();
        y[i] = (b[i] - s) / a[i * d + i];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| a[k * d + i] * x[k]).sum();
        x[i] = (y[i] - s) / a[i * d + i];
    }
    Some(x)
}

/// `p = sigmoid(a * score + c * difficulty + b)` as `[a, c, b]`.
fn fit_logistic2(rows: &[(f64, f64, bool)]) -> Option<[f64; 3]> {
    let rows: Vec<(Vec<f64>, bool)> = rows.iter().map(|&(s, d, y)| (vec![s, d], y)).collect();
    let t = fit_logistic(&rows)?;
    Some([t[0], t[1], t[2]])
}

/// `p = sigmoid(w . x + b)` over rows of features `x` (all of one length), as `w`
/// followed by `b`, by Newton's method with a small ridge (separable data stays
/// finite). `None` without rows or when the features are degenerate.
pub(crate) fn fit_logistic(rows: &[(Vec<f64>, bool)]) -> Option<Vec<f64>> {
    let n = rows.first()?.0.len() + 1;
    let ridge = 1e-3;
    let mut t = vec![0.0f64; n];
    for _ in 0..100 {
        let mut g: Vec<f64> = t.iter().map(|v| ridge * v).collect();
        let mut h = vec![0.0f64; n * n];
        (0..n).for_each(|i| h[i * n + i] = ridge);
        for (x, y) in rows {
            let z: f64 = x.iter().zip(&t).map(|(a, w)| a * w).sum::<f64>() + t[n - 1];
            let p = sigmoid(z);
            let w = (p * (1.0 - p)).max(1e-12);
            let r = p - if *y { 1.0 } else { 0.0 };
            let xi = |i: usize| if i + 1 == n { 1.0 } else { x[i] };
            for i in 0..n {
                g[i] += r * xi(i);
                for j in 0..n {
                    h[i * n + j] += w * xi(i) * xi(j);
                }
            }
        }
        let step = cholesky_solve(&mut h, &g, n)?;
        t.iter_mut().zip(&step).for_each(|(v, s)| *v -= s);
        if step.iter().map(|v| v.abs()).sum::<f64>() < 1e-10 {
            break;
        }
    }
    t.iter().all(|v| v.is_finite()).then_some(t)
}

/// A labelled question, for the question term: its embedding and the LLM's
/// no-context NLL of its answer (nats).
#[derive(Debug, Clone, Copy)]
pub struct QuestionRow<'a> {
    pub vector: &'a [f32],
    pub difficulty: f64,
}

/// A labelled pair: the model's score, whether it helped, and its question (an index
/// into the calibration questions).
#[derive(Debug, Clone, Copy)]
pub struct PairRow {
    pub score: f32,
    pub helps: bool,
    pub question: usize,
}

/// (score, out-of-fold difficulty, helps, fold) of one pair.
type Row = (f64, f64, bool, usize);

/// p(helps | cosine, predicted difficulty of the question).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionTerm {
    /// The LLM's no-context NLL, predicted from the query embedding.
    pub difficulty: Ridge,
    /// `p = sigmoid(a * cosine + c * difficulty + b)`.
    pub a: f64,
    pub c: f64,
    pub b: f64,
    /// Log loss held out by question: this map, and a logistic on the cosine alone.
    pub held_out_log_loss: (f64, f64),
    /// Questions the difficulty ridge was fitted on (the calibration's and any
    /// difficulty-only ones).
    pub questions: usize,
    /// Correlation of the out-of-fold predicted and the true difficulty of the
    /// calibration questions.
    pub difficulty_r: f64,
}

impl QuestionTerm {
    /// The query embedding's dimension it expects.
    pub fn dim(&self) -> usize {
        self.difficulty.w.len()
    }

    /// p(helps) of a passage scored `score` for a question of predicted `difficulty`.
    pub fn p_helps(&self, score: f32, difficulty: f64) -> f64 {
        sigmoid(self.a * score as f64 + self.c * difficulty + self.b)
    }

    /// Fits the term on `pairs` of the calibration `questions`, the ridge also on
    /// `extra` questions (labelled, with no pairs used: training questions, say).
    /// `None` when there are too few questions (fewer than 2 per fold), or when it
    /// does not lower the held-out log loss below the cosine-only logistic's.
    pub fn fit(
        pairs: &[PairRow],
        questions: &[QuestionRow],
        extra: &[QuestionRow],
    ) -> Option<QuestionTerm> {
        Self::fit_stacked(pairs, questions, extra).map(|(t, _)| t)
    }

    /// [`QuestionTerm::fit`], with each calibration question's difficulty predicted
    /// out of fold (what the term was fitted on, and what a term stacked on it reads).
    pub fn fit_stacked(
        pairs: &[PairRow],
        questions: &[QuestionRow],
        extra: &[QuestionRow],
    ) -> Option<(QuestionTerm, Vec<f64>)> {
        if questions.iter().filter(|q| usable(q)).count() < 2 * FOLDS {
            return None;
        }
        let (lambda, oof) = difficulty_out_of_fold(questions, extra)?;
        let extra: Vec<&QuestionRow> = extra.iter().filter(|q| usable(q)).collect();
        let rows: Vec<Row> = pairs
            .iter()
            .filter(|p| p.score.is_finite() && oof.get(p.question).is_some_and(|d| d.is_finite()))
            .map(|p| (p.score as f64, oof[p.question], p.helps, fold(p.question)))
            .collect();
        let held_out_log_loss = held_out(&rows)?;
        if held_out_log_loss.0 >= held_out_log_loss.1 {
            return None;
        }
        let t = fit_logistic2(&rows.iter().map(|r| (r.0, r.1, r.2)).collect::<Vec<_>>())?;
        let (xs, ys): (Vec<&[f32]>, Vec<f64>) = extra
            .iter()
            .copied()
            .chain(questions.iter().filter(|q| usable(q)))
            .map(|q| (q.vector, q.difficulty))
            .unzip();
        let difficulty = Ridge::fit(&xs, &ys, lambda)?;
        let truth: Vec<(f64, f64)> = oof
            .iter()
            .zip(questions)
            .filter(|(p, _)| p.is_finite())
            .map(|(&p, q)| (p, q.difficulty))
            .collect();
        let term = QuestionTerm {
            difficulty,
            a: t[0],
            c: t[1],
            b: t[2],
            held_out_log_loss,
            questions: xs.len(),
            difficulty_r: pearson(&truth),
        };
        Some((term, oof))
    }
}

/// Each calibration question's difficulty predicted out of fold (NaN where
/// unusable), by the ridge weight that predicts it best, and that weight: what the
/// question term is fitted on, and what a further term stacked on it reads.
fn difficulty_out_of_fold(
    questions: &[QuestionRow],
    extra: &[QuestionRow],
) -> Option<(f64, Vec<f64>)> {
    let extra: Vec<&QuestionRow> = extra.iter().filter(|q| usable(q)).collect();
    LAMBDAS
        .iter()
        .filter_map(|&l| out_of_fold(questions, &extra, l).map(|o| (l, o)))
        .min_by(|a, b| mse(&a.1, questions).total_cmp(&mse(&b.1, questions)))
}

/// The fold of a calibration question (by its index), for every held-out check.
pub(crate) fn fold(question: usize) -> usize {
    question % FOLDS
}

/// A question with a difficulty to learn from and a vector to learn it on.
fn usable(q: &QuestionRow) -> bool {
    q.difficulty.is_finite() && !q.vector.is_empty()
}

/// Each calibration question's difficulty predicted by a ridge (weight `lambda`)
/// fitted on `extra` and the other folds' questions (NaN where unusable).
fn out_of_fold(questions: &[QuestionRow], extra: &[&QuestionRow], lambda: f64) -> Option<Vec<f64>> {
    let mut oof = vec![f64::NAN; questions.len()];
    for f in 0..FOLDS {
        let others = questions
            .iter()
            .enumerate()
            .filter(|(i, q)| fold(*i) != f && usable(q))
            .map(|(_, q)| q);
        let (xs, ys): (Vec<&[f32]>, Vec<f64>) = extra
            .iter()
            .copied()
            .chain(others)
            .map(|q| (q.vector, q.difficulty))
            .unzip();
        let r = Ridge::fit(&xs, &ys, lambda)?;
        for (i, q) in questions.iter().enumerate() {
            if fold(i) == f && usable(q) {
                oof[i] = r.predict(q.vector);
            }
        }
    }
    Some(oof)
}

/// Mean squared error of out-of-fold predictions against the questions' difficulty.
fn mse(oof: &[f64], questions: &[QuestionRow]) -> f64 {
    let v: Vec<f64> = oof
        .iter()
        .zip(questions)
        .filter(|(p, _)| p.is_finite())
        .map(|(p, q)| (p - q.difficulty).powi(2))
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Log loss held out by question (each fold's pairs predicted by maps fitted on the
/// rest): of the (cosine, difficulty) logistic and of the cosine alone. `None` when a
/// fit fails or nothing is held out.
fn held_out(rows: &[Row]) -> Option<(f64, f64)> {
    let (mut p_term, mut p_cos, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
    for f in 0..FOLDS {
        let (fit, held): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| r.3 != f);
        if held.is_empty() {
            continue;
        }
        let t = fit_logistic2(&fit.iter().map(|r| (r.0, r.1, r.2)).collect::<Vec<_>>())?;
        let (s, h): (Vec<f32>, Vec<bool>) = fit.iter().map(|r| (r.0 as f32, r.2)).unzip();
        let cos = Logistic::fit(&s, &h)?;
        for r in held {
            p_term.push(sigmoid(t[0] * r.0 + t[1] * r.1 + t[2]));
            p_cos.push(cos.predict(r.0 as f32));
            outcomes.push(r.2);
        }
    }
    (!outcomes.is_empty()).then(|| (log_loss(&p_term, &outcomes), log_loss(&p_cos, &outcomes)))
}

fn pearson(xy: &[(f64, f64)]) -> f64 {
    let n = xy.len().max(1) as f64;
    let (mx, my) = (
        xy.iter().map(|p| p.0).sum::<f64>() / n,
        xy.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in xy {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
    }
    let r = sxy / (sxx * syy).sqrt();
    if r.is_finite() {
        r
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uae_core::SplitMix64;

    fn uniform(rng: &mut SplitMix64) -> f64 {
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(rng: &mut SplitMix64) -> f64 {
        let (u, v) = (uniform(rng).max(1e-12), uniform(rng));
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    #[test]
    fn ridge_recovers_a_linear_map_and_cholesky_refuses_indefinite() {
        let mut rng = SplitMix64::new(3);
        let d = 8;
        let w: Vec<f64> = (0..d).map(|i| i as f64 - 3.5).collect();
        let xs: Vec<Vec<f32>> = (0..400)
            .map(|_| {
                let v: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
                let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
                v.iter().map(|a| (a / n) as f32).collect()
            })
            .collect();
        let ys: Vec<f64> = xs
            .iter()
            .map(|x| 2.0 + x.iter().zip(&w).map(|(&a, w)| a as f64 * w).sum::<f64>())
            .collect();
        let refs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        let r = Ridge::fit(&refs, &ys, 1e-6).unwrap();
        for (x, y) in xs.iter().zip(&ys).take(20) {
            assert!((r.predict(x) - y).abs() < 1e-3, "{} vs {y}", r.predict(x));
        }
        // Scale does not matter: vectors are normalised.
        let doubled: Vec<f32> = xs[0].iter().map(|a| a * 2.0).collect();
        assert!((r.predict(&doubled) - ys[0]).abs() < 1e-3);
        assert_eq!(r.predict(&[1.0]), r.b, "a vector of another dimension");
        let mut a = vec![1.0, 0.0, 2.0, 1.0];
        assert!(cholesky_solve(&mut a, &[1.0, 1.0], 2).is_none());
        assert!(Ridge::fit(&refs[..1], &ys[..1], 1.0).is_none());
    }

    /// Questions whose difficulty is a linear function of their vector decide whether
    /// a passage helps more than its cosine does: the term is kept, its held-out log
    /// loss is lower, and it recovers the generating coefficients' signs and scale.
    /// With difficulty unrelated to the vectors, no term is kept.
    fn rows_of<'a>(vecs: &'a [Vec<f32>], diff: &[f64]) -> Vec<QuestionRow<'a>> {
        vecs.iter()
            .zip(diff)
            .map(|(v, &difficulty)| QuestionRow {
                vector: v,
                difficulty,
            })
            .collect()
    }

    #[test]
    fn keeps_a_question_term_only_when_the_question_predicts_help() {
        let mut rng = SplitMix64::new(11);
        let d = 16;
        let dir: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
        let make = |rng: &mut SplitMix64, informative: bool| {
            let mut vecs = Vec::new();
            let mut diff = Vec::new();
            let mut pairs = Vec::new();
            for q in 0..600 {
                let v: Vec<f64> = (0..d).map(|_| normal(rng)).collect();
                let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
                let v: Vec<f32> = v.iter().map(|a| (a / n) as f32).collect();
                let proj: f64 = v.iter().zip(&dir).map(|(&a, b)| a as f64 * b).sum();
                let true_d = if informative {
                    3.0 + 2.0 * proj
                } else {
                    3.0 + 2.0 * normal(rng) * 0.25
                };
                vecs.push(v);
                diff.push(true_d + 0.1 * normal(rng));
                for _ in 0..5 {
                    let s = (uniform(rng) * 0.8) as f32;
                    let p = sigmoid(2.0 * s as f64 + 1.5 * (true_d - 3.0) - 1.0);
                    pairs.push(PairRow {
                        score: s,
                        helps: uniform(rng) < p,
                        question: q,
                    });
                }
            }
            (vecs, diff, pairs)
        };
        let (vecs, diff, pairs) = make(&mut rng, true);
        let rows = rows_of(&vecs, &diff);
        let t = QuestionTerm::fit(&pairs, &rows, &[]).expect("an informative question term");
        assert!(
            t.held_out_log_loss.0 < t.held_out_log_loss.1 - 0.02,
            "{t:?}"
        );
        assert!(t.difficulty_r > 0.8, "{t:?}");
        assert!(t.c > 0.8 && t.c < 2.5 && t.a > 0.5, "{t:?}");
        assert_eq!((t.dim(), t.questions), (d, 600));
        // Hard questions get a higher p(helps) at the same cosine.
        let (easy, hard) = (t.p_helps(0.4, 2.0), t.p_helps(0.4, 4.0));
        assert!(hard > easy + 0.3, "{easy} {hard}");

        let (vecs, diff, pairs) = make(&mut rng, false);
        let rows = rows_of(&vecs, &diff);
        assert!(QuestionTerm::fit(&pairs, &rows, &[]).is_none());
        assert!(
            QuestionTerm::fit(&pairs, &rows[..5], &[]).is_none(),
            "too few questions"
        );
    }
}
