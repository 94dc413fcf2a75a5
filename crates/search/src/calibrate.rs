//! Fitting a model's calibration on labelled held-out questions: each candidate's
//! cosine to its question under the model, against its utility.

use crate::{load_encoder, Result};
use std::collections::HashSet;
use std::path::Path;
use uae_artifacts::calibration::CalibrationFile;
use uae_artifacts::labels::{LabelManifest, LabeledGroup};
use uae_core::Progress;
use uae_encoder::Encoder;
use uae_eval::calibrate::{brier, ece, ece_interval, Calibrator, QueryCalibration, HELPS_NATS};
use uae_eval::lexical::{ranks_in, LexicalRow, LexicalTerm, LEXICAL_DEPTH};
use uae_eval::question::{PairRow, QuestionRow, QuestionTerm};

/// Why a calibration cannot be fitted.
#[derive(Debug, thiserror::Error)]
#[error(
    "{labels}: {pairs} scored candidates with finite utilities; a calibration needs at least 10"
)]
pub struct TooFewPairs {
    pub labels: String,
    pub pairs: usize,
}

/// The labelled candidates of a label folder under a model, with their questions.
#[derive(Debug, Clone, Default)]
pub struct ScoredPairs {
    /// Per pair: the model's cosine of the question and the candidate, its utility,
    /// and its question (an index into `queries`).
    pub scores: Vec<f32>,
    pub utilities: Vec<f32>,
    pub question: Vec<usize>,
    /// Per question with candidates: the model's unit query vector, and the LLM's
    /// no-context NLL of its answer (the smallest over its references; NaN without).
    pub queries: Vec<Vec<f32>>,
    pub difficulty: Vec<f64>,
    /// Per pair: the candidate's BM25 rank for its question in the label folder's
    /// corpus (`None` inside: below the top [`LEXICAL_DEPTH`]); `None` when that
    /// corpus could not be ranked ([`label_ranks`]).
    pub ranks: Option<Vec<Option<usize>>>,
}

/// The LLM's no-context NLL of a question's answer: the smallest over references.
fn difficulty(g: &LabeledGroup) -> f64 {
    g.nll_without
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| v as f64)
        .fold(f64::NAN, f64::min)
}

/// Where a label folder's questions and passages came from, by its manifest.
fn label_source(labels: &Path) -> std::result::Result<uae_data::Source, String> {
    let m = LabelManifest::read(labels)
        .map_err(|e| e.to_string())?
        .ok_or("no manifest.json")?;
    let data = std::path::PathBuf::from(&m.data_file);
    Ok(match m.corpus {
        Some(corpus) => uae_data::Source::Files {
            corpus: corpus.into(),
            questions: data,
        },
        None => uae_data::Source::Qasper {
            dir: data.parent().unwrap_or(Path::new(".")).to_path_buf(),
            split: m
                .split
                .parse()
                .map_err(|e: uae_data::Error| e.to_string())?,
        },
    })
}

/// Each labelled candidate's BM25 rank for its question (its scope, or the corpus),
/// in the corpus the label folder's manifest names, ranked as `uae eval` and
/// `/search` rank: one entry per candidate of the groups with candidates, in order.
/// `None`, with a warning, when the corpus cannot be read or does not hold every
/// candidate: the lexical term is then left out.
pub fn label_ranks(labels: &Path, groups: &[LabeledGroup]) -> Option<Vec<Option<usize>>> {
    let warn = |why: String| {
        tracing::warn!(labels = %labels.display(), "no BM25 ranks for the labelled candidates ({why}): p(helps) will not read them");
    };
    let coll = match label_source(labels).and_then(|s| s.collection().map_err(|e| e.to_string())) {
        Ok(c) => c,
        Err(e) => {
            warn(e);
            return None;
        }
    };
    let at: std::collections::HashMap<&str, usize> = coll
        .passages
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let bm25 = uae_index::ScopedBm25::with_global(&coll.passages, uae_index::Bm25Params::default());
    let mut out = Vec::new();
    for g in groups.iter().filter(|g| !g.candidates.is_empty()) {
        let mut idx = Vec::with_capacity(g.candidates.len());
        for c in &g.candidates {
            match at.get(c.passage_id.as_str()) {
                Some(&i) => idx.push(i),
                None => {
                    warn(format!("passage `{}` is not in its corpus", c.passage_id));
                    return None;
                }
            }
        }
        let query = uae_core::Query {
            id: g.question_id.clone(),
            text: g.question.clone(),
            scope: (!g.paper_id.is_empty()).then(|| g.paper_id.clone()),
            gold: Vec::new(),
        };
        out.extend(ranks_in(
            &bm25.search(&query, Some(LEXICAL_DEPTH)),
            &idx,
            LEXICAL_DEPTH,
        ));
    }
    Some(out)
}

fn embed_unit(
    enc: &Encoder,
    texts: &[&str],
    what: &str,
    progress: &dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    let mut v = crate::embed_texts(
        enc,
        texts,
        uae_encoder::BatchOptions::default(),
        what,
        progress,
    )?;
    for x in &mut v {
        let n = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        if n > 0.0 {
            x.iter_mut().for_each(|a| *a /= n);
        }
    }
    Ok(v)
}

/// Every labelled candidate of `groups` under `enc`. Questions and candidates are
/// embedded together, in length-sorted batches.
pub fn score_pairs(
    enc: &Encoder,
    groups: &[LabeledGroup],
    progress: &dyn Progress,
) -> Result<ScoredPairs> {
    let groups: Vec<&LabeledGroup> = groups.iter().filter(|g| !g.candidates.is_empty()).collect();
    let mut texts: Vec<&str> = Vec::new();
    for g in &groups {
        texts.push(g.question.as_str());
        texts.extend(g.candidates.iter().map(|c| c.text.as_str()));
    }
    let v = embed_unit(enc, &texts, "scoring labelled candidates", progress)?;
    let mut out = ScoredPairs::default();
    let mut at = 0;
    for (qi, g) in groups.into_iter().enumerate() {
        let q = &v[at];
        for (p, c) in v[at + 1..].iter().zip(&g.candidates) {
            out.scores.push(uae_index::dot(q, p));
            out.utilities.push(c.utility);
            out.question.push(qi);
        }
        out.queries.push(q.clone());
        out.difficulty.push(difficulty(g));
        at += 1 + g.candidates.len();
    }
    Ok(out)
}

/// `c` applied to each of `queries` (embedded by `enc`, the calibrated model, when
/// its p(helps) reads the question; otherwise nothing is embedded).
pub fn for_queries<'a>(
    enc: &Encoder,
    c: &'a Calibrator,
    queries: &[&str],
    progress: &dyn Progress,
) -> Result<Vec<QueryCalibration<'a>>> {
    if !c.reads_query() {
        return Ok(queries.iter().map(|_| c.for_query(&[])).collect());
    }
    let v = embed_unit(enc, queries, "embedding questions", progress)?;
    Ok(v.iter().map(|q| c.for_query(q)).collect())
}

/// What a calibration is fitted on, and where it goes.
pub struct Calibration<'a> {
    /// The model folder whose scores are calibrated.
    pub model: &'a Path,
    /// The held-out label folder and its groups.
    pub labels: &'a Path,
    pub groups: &'a [LabeledGroup],
    /// Labelled questions of the same LLM whose no-context NLL also trains the
    /// question term's difficulty ridge (their candidates are not used): the
    /// training labels, say. May be empty.
    pub difficulty: &'a [LabeledGroup],
    /// Where calibration.json goes (usually the model folder itself).
    pub out: &'a Path,
    /// Try the question term, then the lexical term (each kept only when it holds
    /// out better).
    pub question_term: bool,
}

/// Fits the calibration `c` describes and writes it to `c.out/calibration.json`.
pub fn calibrate(
    c: &Calibration,
    progress: &dyn Progress,
) -> std::result::Result<CalibrationFile, CalibrateError> {
    let enc = load_encoder(c.model, false)?;
    let mut pairs = score_pairs(&enc, c.groups, progress)?;
    let mut fitted =
        Calibrator::fit(&pairs.scores, &pairs.utilities).ok_or_else(|| TooFewPairs {
            labels: c.labels.display().to_string(),
            pairs: pairs.scores.len(),
        })?;
    let extra_groups = outside_held_out(c.difficulty, c.groups);
    let extra_texts: Vec<&str> = extra_groups.iter().map(|g| g.question.as_str()).collect();
    let extra_vecs = if extra_texts.is_empty() || !c.question_term {
        Vec::new()
    } else {
        embed_unit(
            &enc,
            &extra_texts,
            "embedding difficulty questions",
            progress,
        )?
    };
    let extra: Vec<QuestionRow> = extra_vecs
        .iter()
        .zip(&extra_groups)
        .map(|(v, g)| QuestionRow {
            vector: v,
            difficulty: difficulty(g),
        })
        .collect();
    if c.question_term {
        let (question, oof) =
            QuestionTerm::fit_stacked(&pair_rows(&pairs), &question_rows(&pairs), &extra).unzip();
        fitted.question = question;
        pairs.ranks = label_ranks(c.labels, c.groups);
        if let Some(ranks) = &pairs.ranks {
            // Stacked on the question term when kept: its out-of-fold difficulty.
            fitted.lexical = LexicalTerm::fit(&lexical_rows(&pairs, ranks), oof.as_deref());
        }
    }
    let probs: Vec<f64> = predictions(&fitted, &pairs)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let helps: Vec<bool> = pairs.utilities.iter().map(|&u| u >= HELPS_NATS).collect();
    let (e, bins) = ece(&probs, &helps, 10);
    let file = CalibrationFile {
        version: CalibrationFile::VERSION,
        score: "cosine".into(),
        labels: c.labels.display().to_string(),
        questions: c.groups.len(),
        helps_nats: HELPS_NATS,
        calibrator: fitted,
        ece: e,
        brier: brier(&probs, &helps),
        bins,
    };
    file.write(c.out).map_err(crate::Error::from)?;
    Ok(file)
}

/// The difficulty questions with a finite no-context NLL that are not among the
/// held-out ones (same id or same text): the held-out questions judge whether the
/// question term is kept, so the ridge must not have seen their NLLs.
fn outside_held_out<'g>(
    extra: &'g [LabeledGroup],
    held_out: &[LabeledGroup],
) -> Vec<&'g LabeledGroup> {
    let ids: HashSet<&str> = held_out.iter().map(|g| g.question_id.as_str()).collect();
    let texts: HashSet<&str> = held_out.iter().map(|g| g.question.trim()).collect();
    let (kept, seen): (Vec<&LabeledGroup>, Vec<&LabeledGroup>) = extra
        .iter()
        .filter(|g| difficulty(g).is_finite())
        .partition(|g| !ids.contains(g.question_id.as_str()) && !texts.contains(g.question.trim()));
    if !seen.is_empty() {
        tracing::warn!(
            questions = seen.len(),
            "difficulty labels hold questions of the held-out labels: left out of the question term's ridge"
        );
    }
    kept
}

fn pair_rows(p: &ScoredPairs) -> Vec<PairRow> {
    p.scores
        .iter()
        .zip(&p.utilities)
        .zip(&p.question)
        .map(|((&score, &u), &question)| PairRow {
            score,
            helps: u >= HELPS_NATS,
            question,
        })
        .collect()
}

fn lexical_rows(p: &ScoredPairs, ranks: &[Option<usize>]) -> Vec<LexicalRow> {
    pair_rows(p)
        .into_iter()
        .zip(ranks)
        .map(|(r, &rank)| LexicalRow {
            score: r.score,
            rank,
            helps: r.helps,
            question: r.question,
        })
        .collect()
}

fn question_rows(p: &ScoredPairs) -> Vec<QuestionRow<'_>> {
    p.queries
        .iter()
        .zip(&p.difficulty)
        .map(|(v, &difficulty)| QuestionRow {
            vector: v,
            difficulty,
        })
        .collect()
}

/// (expected utility, p(helps)) of every pair, each read with its question (and its
/// BM25 rank, where known).
fn predictions(c: &Calibrator, p: &ScoredPairs) -> Vec<(f64, f64)> {
    let per_query: Vec<_> = p.queries.iter().map(|q| c.for_query(q)).collect();
    p.scores
        .iter()
        .zip(&p.question)
        .enumerate()
        .map(|(i, (&s, &q))| match &p.ranks {
            Some(r) => per_query[q].predict_lexical(s, r[i]),
            None => per_query[q].predict(s),
        })
        .collect()
}

/// Whether two label folders were scored by the same LLM (f32 or bf16 alike) under
/// the same prompt template, so their no-context NLLs share a scale. Folders without
/// a manifest are taken to agree.
pub fn same_llm(a: &Path, b: &Path) -> Result<bool> {
    let key = |dir: &Path| -> Result<Option<(String, String)>> {
        Ok(LabelManifest::read(dir)?.map(|m| {
            let lm = m.lm_sha256.trim_end_matches("+bf16").to_string();
            (lm, m.config.template.identity())
        }))
    };
    Ok(match (key(a)?, key(b)?) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    })
}

/// The groups of each label folder in `dirs`, for the difficulty ridge of a
/// calibration on `labels`: an error when one was scored by another LLM or under
/// another prompt template (its no-context NLLs would be on another scale).
pub fn difficulty_groups(labels: &Path, dirs: &[std::path::PathBuf]) -> Result<Vec<LabeledGroup>> {
    let mut out = Vec::new();
    for dir in dirs {
        if !same_llm(labels, dir)? {
            return Err(crate::Error::OtherLlm {
                labels: labels.to_path_buf(),
                other: dir.clone(),
            });
        }
        out.extend(LabeledGroup::read_all(dir)?);
    }
    Ok(out)
}

/// `uae calibrate`: what to calibrate, on what, and where the file goes.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CalibrateArgs {
    /// The model folder (a sentence-transformers bi-encoder, e.g. `uae train`'s
    /// `out/model`).
    #[cfg_attr(feature = "cli", arg(long, default_value = crate::DEFAULT_ENCODER))]
    pub model: std::path::PathBuf,
    /// A label folder of held-out questions (`uae label` on dev questions): each
    /// candidate's utility is what the model's score is calibrated against.
    #[cfg_attr(feature = "cli", arg(long))]
    pub labels: std::path::PathBuf,
    /// More label folders of the same LLM and template (the training labels, say;
    /// repeatable): only their questions' no-context NLLs are read, to fit how hard
    /// a question is for the LLM from its embedding (p(helps)'s question term; more
    /// questions fit it better). Their candidates are not used, nor any question also
    /// in --labels (same id or text): those judge the term, so the ridge never sees them.
    #[cfg_attr(feature = "cli", arg(long = "difficulty-labels"))]
    pub difficulty_labels: Vec<std::path::PathBuf>,
    /// Where calibration.json goes (default: the model folder).
    #[cfg_attr(feature = "cli", arg(long))]
    pub out: Option<std::path::PathBuf>,
    /// p(helps) from the cosine alone: no question term and no lexical term (the
    /// candidates' BM25 ranks in the corpus the labels name) even where they would
    /// hold out better (to measure what they add).
    #[cfg_attr(feature = "cli", arg(long))]
    pub cosine_only: bool,
}

/// Runs `uae calibrate`: reads the label folders, fits and writes the calibration.
pub fn run(
    a: &CalibrateArgs,
    progress: &dyn Progress,
) -> std::result::Result<CalibrationSummary, CalibrateError> {
    let groups = LabeledGroup::read_all(&a.labels).map_err(crate::Error::from)?;
    let difficulty = difficulty_groups(&a.labels, &a.difficulty_labels)?;
    let out = a.out.clone().unwrap_or_else(|| a.model.clone());
    let c = Calibration {
        model: &a.model,
        labels: &a.labels,
        groups: &groups,
        difficulty: &difficulty,
        out: &out,
        question_term: !a.cosine_only,
    };
    let file = calibrate(&c, progress)?;
    Ok(CalibrationSummary::of(&file, &out))
}

/// What `uae calibrate` prints: where the file went and how the fit went.
#[derive(Debug, serde::Serialize)]
pub struct CalibrationSummary {
    pub calibration: std::path::PathBuf,
    pub pairs: usize,
    pub questions: usize,
    /// `isotonic` or `logistic`: the p(helps) map kept.
    pub p_helps_map: &'static str,
    /// Held-out log loss of the isotonic and the logistic p(helps) map.
    pub held_out_log_loss_isotonic: f64,
    pub held_out_log_loss_logistic: f64,
    /// The question term, when kept: its log loss held out by question against the
    /// cosine-only logistic's on the same folds, and how well the query embedding
    /// predicts the LLM's no-context NLL (out-of-fold correlation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question_term: Option<QuestionSummary>,
    /// The lexical term (the passage's BM25 rank), when kept: its log loss held
    /// out by question against the same map without the rank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical_term: Option<LexicalSummary>,
    pub ece: f64,
    pub brier: f64,
}

impl CalibrationSummary {
    /// The summary of `file`, written into `out`.
    pub fn of(file: &CalibrationFile, out: &Path) -> CalibrationSummary {
        let (iso, logistic) = file.calibrator.held_out_log_loss;
        CalibrationSummary {
            calibration: out.join(CalibrationFile::FILE),
            pairs: file.calibrator.pairs,
            questions: file.questions,
            p_helps_map: match file.calibrator.p_helps {
                uae_eval::calibrate::HelpsMap::Isotonic(_) => "isotonic",
                uae_eval::calibrate::HelpsMap::Logistic(_) => "logistic",
            },
            held_out_log_loss_isotonic: iso,
            held_out_log_loss_logistic: logistic,
            question_term: file.calibrator.question.as_ref().map(|t| QuestionSummary {
                held_out_log_loss: t.held_out_log_loss.0,
                held_out_log_loss_cosine_only: t.held_out_log_loss.1,
                difficulty_r: t.difficulty_r,
                difficulty_questions: t.questions,
            }),
            lexical_term: file.calibrator.lexical.as_ref().map(|t| LexicalSummary {
                held_out_log_loss: t.held_out_log_loss.0,
                held_out_log_loss_without_rank: t.held_out_log_loss.1,
                rank_weight: t.e,
                reads_difficulty: t.reads_difficulty,
            }),
            ece: file.ece,
            brier: file.brier,
        }
    }
}

/// The question term of a calibration, in [`CalibrationSummary`].
#[derive(Debug, serde::Serialize)]
pub struct QuestionSummary {
    pub held_out_log_loss: f64,
    pub held_out_log_loss_cosine_only: f64,
    pub difficulty_r: f64,
    pub difficulty_questions: usize,
}

/// The lexical term of a calibration, in [`CalibrationSummary`].
#[derive(Debug, serde::Serialize)]
pub struct LexicalSummary {
    pub held_out_log_loss: f64,
    pub held_out_log_loss_without_rank: f64,
    /// The weight of ln(BM25 rank) in p(helps)'s logit (negative: a better-ranked
    /// passage is likelier to help).
    pub rank_weight: f64,
    pub reads_difficulty: bool,
}

/// Why [`calibrate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Search(#[from] crate::Error),
    #[error(transparent)]
    TooFew(#[from] TooFewPairs),
}

/// How well a model's calibration predicts on labelled questions it was not fitted
/// on (`uae eval --labels`): p(helps) against whether each candidate helped.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrationCheck {
    /// The held-out label folder, and what the calibration was fitted on.
    pub labels: String,
    pub calibrated_on: String,
    pub questions: usize,
    pub pairs: usize,
    /// Share of the pairs that help (utility >= `helps_nats`).
    pub helped: f64,
    /// p(helps): expected calibration error (10 equal bins), Brier score, log loss.
    pub ece: f64,
    /// A 95% interval of the ECE, resampling the questions (1,000 rounds).
    #[serde(default)]
    pub ece_interval: [f64; 2],
    pub brier: f64,
    pub log_loss: f64,
    /// With a question or lexical term: the cosine-only map's ECE, Brier score and
    /// log loss on the same pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosine_only: Option<[f64; 3]>,
    /// Mean |expected utility - utility| in nats.
    pub utility_mae: f64,
    pub bins: Vec<uae_eval::calibrate::Bin>,
}

impl std::fmt::Display for CalibrationCheck {
    /// One line: where it was fitted and checked, and how well it predicts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "calibration (fitted on {}) on {}: {} pairs, ECE {:.4} [{:.4}, {:.4}], Brier {:.4}, log loss {:.4}, expected utility off by {:.3} nats on average",
            self.calibrated_on,
            self.labels,
            self.pairs,
            self.ece,
            self.ece_interval[0],
            self.ece_interval[1],
            self.brier,
            self.log_loss,
            self.utility_mae
        )?;
        match self.cosine_only {
            Some([e, b, l]) => write!(
                f,
                " (p(helps) reads more than the cosine; by the cosine alone: ECE {e:.4}, Brier {b:.4}, log loss {l:.4})"
            ),
            None => Ok(()),
        }
    }
}

impl CalibrationCheck {
    /// The reliability diagram, beside the report.
    pub const SVG: &'static str = "reliability.svg";
}

/// Checks `file` (the calibration of the model `enc` holds) on the held-out label
/// folder `labels` (its groups `groups`) and writes the reliability diagram into
/// `out`.
pub fn check(
    enc: &Encoder,
    file: &CalibrationFile,
    labels: &Path,
    groups: &[LabeledGroup],
    out: &Path,
    progress: &dyn Progress,
) -> Result<CalibrationCheck> {
    let mut pairs = score_pairs(enc, groups, progress)?;
    if file.calibrator.reads_lexical() {
        pairs.ranks = label_ranks(labels, groups);
    }
    let (mut probs, mut helps, mut abs_err) = (Vec::new(), Vec::new(), 0.0);
    let (mut cosine_only, mut question) = (Vec::new(), Vec::new());
    let predicted = predictions(&file.calibrator, &pairs);
    let each = pairs
        .scores
        .iter()
        .zip(&pairs.utilities)
        .zip(&pairs.question);
    for (((&s, &u), &q), (expected, p)) in each.zip(predicted) {
        if !(s.is_finite() && u.is_finite()) {
            continue;
        }
        probs.push(p);
        question.push(q);
        cosine_only.push(file.calibrator.p_helps.predict(s));
        helps.push(u >= file.helps_nats);
        abs_err += (expected - u as f64).abs();
    }
    let n = probs.len();
    let (e, bins) = ece(&probs, &helps, 10);
    let svg = reliability_svg(&bins);
    let path = out.join(CalibrationCheck::SVG);
    std::fs::write(&path, svg).map_err(uae_core::Error::io(&path))?;
    Ok(CalibrationCheck {
        labels: labels.display().to_string(),
        calibrated_on: file.labels.clone(),
        questions: groups.iter().filter(|g| !g.candidates.is_empty()).count(),
        pairs: n,
        helped: helps.iter().filter(|&&h| h).count() as f64 / n.max(1) as f64,
        ece: e,
        ece_interval: ece_interval(&probs, &helps, &question, 10, 1000),
        brier: brier(&probs, &helps),
        log_loss: uae_eval::calibrate::log_loss(&probs, &helps),
        cosine_only: (file.calibrator.reads_query() || file.calibrator.reads_lexical()).then(
            || {
                [
                    ece(&cosine_only, &helps, 10).0,
                    brier(&cosine_only, &helps),
                    uae_eval::calibrate::log_loss(&cosine_only, &helps),
                ]
            },
        ),
        utility_mae: abs_err / n.max(1) as f64,
        bins,
    })
}

/// Observed share helping against mean predicted p(helps), per bin, beside the
/// diagonal of a perfect calibration.
pub fn reliability_svg(bins: &[uae_eval::calibrate::Bin]) -> String {
    let observed: Vec<(f64, f64)> = bins
        .iter()
        .map(|b| (b.mean_predicted, b.observed))
        .collect();
    uae_plot::lines_svg(
        "predicted p(helps) (y: share that helped)",
        &[
            uae_plot::Series {
                name: "perfect",
                color: "#999999",
                values: vec![(0.0, 0.0), (1.0, 1.0)],
            },
            uae_plot::Series {
                name: "observed",
                color: "#4c78a8",
                values: observed,
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, question: &str, nll: f32) -> LabeledGroup {
        LabeledGroup {
            question_id: id.into(),
            paper_id: String::new(),
            question: question.into(),
            answers: vec!["a".into()],
            nll_without: vec![nll],
            candidates: Vec::new(),
        }
    }

    #[test]
    fn difficulty_questions_never_include_the_held_out_ones() {
        let held_out = [group("d1", "What is BM25?", 2.0)];
        let extra = [
            group("d1", "another text, same id", 1.0),
            group("t9", "  What is BM25?\n", 1.0),
            group("t1", "How many layers?", f32::NAN),
            group("t2", "How many layers?", 3.0),
        ];
        let kept: Vec<&str> = outside_held_out(&extra, &held_out)
            .iter()
            .map(|g| g.question_id.as_str())
            .collect();
        assert_eq!(kept, ["t2"]);
    }
}
