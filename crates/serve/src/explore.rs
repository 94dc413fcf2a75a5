//! The explorer: one page, served from the binary, that shows what the LLM found
//! useful. `uae serve` always serves it (its search view calls `/search`, and
//! `/against/search` where a base model is served beside); `uae serve --labels` and
//! `uae explore LABELS_DIR` add a label folder, `--compare A B` two evaluations.
//!
//! Routes (GET; JSON unless said; the API key, when set, applies to every one):
//! - `/` (HTML), `/explorer.js`, `/explorer.css`: the page;
//! - `/api/explore`: what is loaded ([`Overview`]);
//! - `/api/labels?offset&limit&filter&bar&q`: a page of labelled questions
//!   ([`LabelPage`]; `filter`: `all`, `below` (best utility under `bar` nats, default
//!   2), `gold_not_best`, `none_helps` (no candidate lowers the NLL by 1 nat));
//! - `/api/labels/{n}`: question `n` in full, candidates best first ([`LabelDetail`]);
//! - `/api/labels/histogram`: utilities in bins ([`Histograms`]);
//! - `/api/compare`: the paired comparison `uae compare` prints ([`CompareSummary`]);
//! - `/api/compare/questions?offset&limit&metric`: the questions where A and B
//!   differ most ([`DisagreementPage`]);
//! - `/api/compare/questions/{id}`: both rankings of one question ([`Rankings`]).
//!
//! No route takes a path: label and evaluation folders are those given on the
//! command line, and a question is named by its number or id. Long lists are pages
//! (at most [`MAX_PAGE`] rows); a question's passages are read from the file when it
//! is opened, so a folder of 100,000 questions is never sent whole.

use crate::api::ApiError;
use crate::{Against, Deployment, RunError, ServeConfig};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as RoutePath, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uae_artifacts::labels::{LabelIndex, LabelRow, LabeledGroup};
use uae_eval::compare::{CompareOptions, Comparison, Run};

/// The most rows one page of a list holds.
pub const MAX_PAGE: usize = 200;

const PAGE: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/explorer.js");
const STYLE: &str = include_str!("../web/explorer.css");

/// What the explorer shows beside the served model's search.
#[derive(Default)]
pub struct Explorer {
    pub labels: Option<LabelsView>,
    pub compare: Option<CompareView>,
    /// The served model's name (search is offered when set).
    pub model: Option<String>,
    /// The base model searched at `/against/search`, when one is served beside.
    pub against: Option<String>,
}

/// A label folder, outlined.
pub struct LabelsView {
    pub name: String,
    pub index: LabelIndex,
}

impl LabelsView {
    pub fn open(dir: &Path) -> uae_core::Result<LabelsView> {
        Ok(LabelsView {
            name: folder_name(dir),
            index: LabelIndex::open(dir)?,
        })
    }
}

fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// Two evaluations (or two utility label folders) compared question by question.
pub struct CompareView {
    summary: CompareSummary,
    names: Vec<&'static str>,
    va: BTreeMap<String, Vec<f64>>,
    vb: BTreeMap<String, Vec<f64>>,
    rankings: Sides,
}

enum Sides {
    Runs(uae_search::compare::RunPair),
    Labels { a: Outline, b: Outline },
}

/// A utility folder's questions by id.
struct Outline {
    index: LabelIndex,
    by_id: HashMap<String, usize>,
}

impl Outline {
    fn open(dir: &Path) -> uae_core::Result<Outline> {
        let index = LabelIndex::open(dir)?;
        let by_id = index
            .rows
            .iter()
            .map(|r| (r.question_id.clone(), r.n))
            .collect();
        Ok(Outline { index, by_id })
    }
}

impl CompareView {
    /// Compares B against A as `uae compare A B` does (the same checks and numbers).
    pub fn open(a: &Path, b: &Path) -> uae_search::Result<CompareView> {
        let opts = CompareOptions::default();
        let p = uae_search::compare::paired(a, b, None)?;
        let comparison = uae_eval::compare::compare_values(&p.names, &p.a, &p.b, opts);
        let rankings = match p.runs {
            Some(runs) => Sides::Runs(runs),
            None => Sides::Labels {
                a: Outline::open(a)?,
                b: Outline::open(b)?,
            },
        };
        Ok(CompareView {
            summary: CompareSummary {
                a: folder_name(a),
                b: folder_name(b),
                utility: p.utility,
                comparison,
            },
            names: p.names,
            va: p.a,
            vb: p.b,
            rankings,
        })
    }
}

/// `GET /api/explore`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Overview {
    /// The served model, when search is offered.
    pub model: Option<String>,
    /// The base model served at `/against/search`.
    pub against: Option<String>,
    /// The label folder's name and question count.
    pub labels: Option<LabelsOverview>,
    /// The two compared folders.
    pub compare: Option<[String; 2]>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LabelsOverview {
    pub name: String,
    pub questions: usize,
    pub candidates: usize,
}

/// Which questions a label page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    /// The best candidate's utility is under `bar`.
    Below,
    /// A candidate is evidence, but not the most useful one.
    GoldNotBest,
    /// No candidate lowers the NLL by 1 nat.
    NoneHelps,
}

/// The query of `GET /api/labels`.
#[derive(Debug)]
pub struct LabelQuery {
    pub offset: usize,
    pub limit: usize,
    pub filter: Filter,
    /// For `below` (nats; default 2).
    pub bar: f32,
    /// Case-insensitive text the question must contain.
    pub q: String,
}

impl LabelQuery {
    fn parse(raw: Option<String>) -> Api<LabelQuery> {
        let mut p = Params::parse(raw, &["offset", "limit", "filter", "bar", "q"])?;
        let (offset, limit) = p.page()?;
        let filter = match p.take("filter").as_deref() {
            None | Some("all") => Filter::All,
            Some("below") => Filter::Below,
            Some("gold_not_best") => Filter::GoldNotBest,
            Some("none_helps") => Filter::NoneHelps,
            Some(f) => {
                return Err(ApiError::validation(format!(
                    "unknown filter `{f}` (all, below, gold_not_best, none_helps)"
                )))
            }
        };
        let bar = match p.take("bar") {
            None => 2.0,
            Some(b) => b
                .parse::<f32>()
                .ok()
                .filter(|b| b.is_finite())
                .ok_or_else(|| {
                    ApiError::validation(format!("`bar` must be a number of nats, not `{b}`"))
                })?,
        };
        Ok(LabelQuery {
            offset,
            limit,
            filter,
            bar,
            q: p.take("q").unwrap_or_default(),
        })
    }
}

/// A URL query's parameters, percent-decoded; a name not in the route's list, or
/// given twice, is refused.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(raw: Option<String>, known: &[&str]) -> Api<Params> {
        let mut out = HashMap::new();
        for pair in raw
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| ApiError::validation("the query is not UTF-8"))
            };
            let (k, v) = (decode(k)?, decode(v)?);
            if !known.contains(&k.as_str()) {
                return Err(ApiError::validation(format!(
                    "unknown parameter `{k}` (this route takes {})",
                    known.join(", ")
                )));
            }
            if out.insert(k.clone(), v).is_some() {
                return Err(ApiError::validation(format!("`{k}` given twice")));
            }
        }
        Ok(Params(out))
    }

    fn take(&mut self, k: &str) -> Option<String> {
        self.0.remove(k)
    }

    /// `offset` (default 0) and `limit` (1-[`MAX_PAGE`], default 50).
    fn page(&mut self) -> Api<(usize, usize)> {
        let mut num = |k: &str, default: usize| -> Api<usize> {
            match self.take(k) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    ApiError::validation(format!("`{k}` must be a whole number >= 0, not `{v}`"))
                }),
            }
        };
        let (offset, limit) = (num("offset", 0)?, num("limit", 50)?);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::validation(format!(
                "`limit` must be between 1 and {MAX_PAGE}"
            )));
        }
        Ok((offset, limit))
    }
}

/// `GET /api/labels`: one page of the questions that pass the filter.
#[derive(Debug, Serialize)]
pub struct LabelPage<'a> {
    /// Questions that pass the filter, over all pages.
    pub total: usize,
    pub offset: usize,
    pub rows: Vec<&'a LabelRow>,
}

/// `GET /api/labels/{n}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LabelDetail {
    pub n: usize,
    pub question_id: String,
    pub scope: String,
    pub question: String,
    pub answers: Vec<AnswerNll>,
    /// Best utility first.
    pub candidates: Vec<CandidateView>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AnswerNll {
    pub text: String,
    /// Mean NLL per answer token without a passage.
    pub nll_without: f32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CandidateView {
    pub passage_id: String,
    /// The passage as the LLM saw it (after truncation to the passage budget).
    pub text: String,
    pub is_gold: bool,
    /// How it was mined: gold, dense, bm25, random or retrieved.
    pub source: String,
    /// Mean over answers of the NLL it removes (nats).
    pub utility: f32,
    /// Mean over answers of the NLL with the passage.
    pub nll_with: f32,
    /// Per answer: the NLL with the passage.
    pub nll_with_per_answer: Vec<f32>,
}

impl LabelDetail {
    fn of(n: usize, g: LabeledGroup) -> LabelDetail {
        let mut candidates: Vec<CandidateView> = g
            .candidates
            .into_iter()
            .map(|c| {
                let with: Vec<f32> = g
                    .nll_without
                    .iter()
                    .zip(&c.per_answer)
                    .map(|(w, u)| w - u)
                    .collect();
                CandidateView {
                    nll_with: with.iter().sum::<f32>() / with.len().max(1) as f32,
                    nll_with_per_answer: with,
                    passage_id: c.passage_id,
                    text: c.text,
                    is_gold: c.is_gold,
                    source: c.source,
                    utility: c.utility,
                }
            })
            .collect();
        candidates.sort_by(|a, b| b.utility.total_cmp(&a.utility));
        LabelDetail {
            n,
            question_id: g.question_id,
            scope: g.paper_id,
            question: g.question,
            answers: g
                .answers
                .into_iter()
                .zip(g.nll_without)
                .map(|(text, nll_without)| AnswerNll { text, nll_without })
                .collect(),
            candidates,
        }
    }
}

/// `GET /api/labels/histogram`: every candidate's utility, and each question's best.
#[derive(Debug, Serialize, Deserialize)]
pub struct Histograms {
    /// Bin edges in nats (the first and last bins take everything beyond).
    pub edges: Vec<f32>,
    pub all: Vec<usize>,
    pub best: Vec<usize>,
}

/// Counts of `v` in bins of width 0.5 from -1 to 5 nats (ends open).
fn histogram(v: impl Iterator<Item = f32>) -> (Vec<f32>, Vec<usize>) {
    let edges: Vec<f32> = (0..=12).map(|i| -1.0 + 0.5 * i as f32).collect();
    let mut counts = vec![0; edges.len() + 1];
    for x in v {
        counts[edges.partition_point(|&e| e <= x)] += 1;
    }
    (edges, counts)
}

/// `GET /api/compare`.
#[derive(Debug, Clone, Serialize)]
pub struct CompareSummary {
    pub a: String,
    pub b: String,
    /// Utility label folders (else retrieval runs).
    pub utility: bool,
    pub comparison: Comparison,
}

/// `GET /api/compare/questions`: questions by `|B - A|`, largest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct DisagreementPage {
    pub metric: String,
    pub total: usize,
    pub offset: usize,
    pub rows: Vec<Disagreement>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Disagreement {
    pub question_id: String,
    pub a: f64,
    pub b: f64,
}

/// `GET /api/compare/questions/{id}`: the top of both rankings.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rankings {
    pub question_id: String,
    pub a: Vec<Ranked>,
    pub b: Vec<Ranked>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Ranked {
    pub passage_id: String,
    /// Runs: the qrels grade (0: not judged relevant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relevant: Option<u32>,
    /// Utility folders: the passage's utility (nats).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utility: Option<f32>,
    /// Where the passage is in the other ranking (1-based), if it is there.
    pub other_rank: Option<usize>,
}

/// How deep each ranking of a compared question is shown.
const SHOWN: usize = 10;

type Api<T> = std::result::Result<T, ApiError>;

/// A route's one path parameter; one that is not valid percent-encoded UTF-8 is a
/// JSON 422 like every other bad input.
fn segment(p: std::result::Result<RoutePath<String>, PathRejection>) -> Api<String> {
    p.map(|RoutePath(s)| s)
        .map_err(|e| ApiError::validation(format!("bad path: {}", e.body_text())))
}

fn not_loaded(what: &str, flag: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no {what} loaded (start the server with {flag})"),
    )
}

impl Explorer {
    fn labels(&self) -> Api<&LabelsView> {
        self.labels
            .as_ref()
            .ok_or_else(|| not_loaded("label folder", "--labels DIR"))
    }

    fn compared(&self) -> Api<&CompareView> {
        self.compare
            .as_ref()
            .ok_or_else(|| not_loaded("comparison", "--compare A B"))
    }
}

/// The page and its API, to merge into the server's router (under its auth layer).
pub fn routes<S>(x: Arc<Explorer>) -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/explorer.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/explorer.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/api/explore", get(overview))
        .route("/api/labels", get(label_page))
        .route("/api/labels/histogram", get(histograms))
        .route("/api/labels/{n}", get(label_detail))
        .route("/api/compare", get(compare_summary))
        .route("/api/compare/questions", get(disagreements))
        .route("/api/compare/questions/{id}", get(rankings))
        .with_state(x)
}

/// A page asset, with a content security policy that allows only this origin's
/// script and style: text from the corpus can never run, even if it were put into
/// the page as markup.
fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn overview(State(x): State<Arc<Explorer>>) -> Json<Overview> {
    Json(Overview {
        model: x.model.clone(),
        against: x.against.clone(),
        labels: x.labels.as_ref().map(|l| LabelsOverview {
            name: l.name.clone(),
            questions: l.index.rows.len(),
            candidates: l.index.utilities.len(),
        }),
        compare: x
            .compare
            .as_ref()
            .map(|c| [c.summary.a.clone(), c.summary.b.clone()]),
    })
}

async fn label_page(State(x): State<Arc<Explorer>>, RawQuery(raw): RawQuery) -> Api<Response> {
    let q = LabelQuery::parse(raw)?;
    let l = x.labels()?;
    let needle = q.q.to_lowercase();
    let keep = |r: &&LabelRow| {
        let best = r.best_utility.unwrap_or(f32::NEG_INFINITY);
        let pass = match q.filter {
            Filter::All => true,
            Filter::Below => best < q.bar,
            Filter::GoldNotBest => r.has_gold && !r.best_is_gold,
            Filter::NoneHelps => best < uae_eval::calibrate::HELPS_NATS,
        };
        pass && (needle.is_empty() || r.question.to_lowercase().contains(&needle))
    };
    let matching: Vec<&LabelRow> = l.index.rows.iter().filter(keep).collect();
    let rows = matching
        .iter()
        .skip(q.offset)
        .take(q.limit)
        .copied()
        .collect();
    Ok(Json(LabelPage {
        total: matching.len(),
        offset: q.offset,
        rows,
    })
    .into_response())
}

async fn label_detail(
    State(x): State<Arc<Explorer>>,
    n: std::result::Result<RoutePath<String>, PathRejection>,
) -> Api<Json<LabelDetail>> {
    let n = segment(n)?;
    let l = x.labels()?;
    let n: usize = n
        .parse()
        .map_err(|_| ApiError::validation(format!("`{n}` is not a question number (0, 1, ...)")))?;
    let total = l.index.rows.len();
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no question {n}: the folder has {total} (numbered from 0)"),
        )
    };
    let g = l
        .index
        .group(n)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(missing)?;
    Ok(Json(LabelDetail::of(n, g)))
}

async fn histograms(State(x): State<Arc<Explorer>>) -> Api<Json<Histograms>> {
    let l = x.labels()?;
    let (edges, all) = histogram(l.index.utilities.iter().copied());
    let (_, best) = histogram(l.index.rows.iter().filter_map(|r| r.best_utility));
    Ok(Json(Histograms { edges, all, best }))
}

async fn compare_summary(State(x): State<Arc<Explorer>>) -> Api<Json<CompareSummary>> {
    Ok(Json(x.compared()?.summary.clone()))
}

async fn disagreements(
    State(x): State<Arc<Explorer>>,
    RawQuery(raw): RawQuery,
) -> Api<Json<DisagreementPage>> {
    let mut p = Params::parse(raw, &["offset", "limit", "metric"])?;
    let (offset, limit) = p.page()?;
    let c = x.compared()?;
    let default = if c.summary.utility {
        "utility@1"
    } else {
        "map"
    };
    let asked = p.take("metric");
    let metric = asked.as_deref().unwrap_or(default);
    let col = c.names.iter().position(|m| *m == metric).ok_or_else(|| {
        ApiError::validation(format!(
            "unknown metric `{metric}` (one of {})",
            c.names.join(", ")
        ))
    })?;
    let mut rows: Vec<Disagreement> =
        c.va.iter()
            .filter_map(|(qid, a)| {
                let b = c.vb.get(qid)?;
                Some(Disagreement {
                    question_id: qid.clone(),
                    a: a[col],
                    b: b[col],
                })
            })
            .collect();
    rows.sort_by(|x, y| {
        (y.b - y.a)
            .abs()
            .total_cmp(&(x.b - x.a).abs())
            .then_with(|| x.question_id.cmp(&y.question_id))
    });
    let total = rows.len();
    Ok(Json(DisagreementPage {
        metric: metric.to_string(),
        total,
        offset,
        rows: rows.into_iter().skip(offset).take(limit).collect(),
    }))
}

async fn rankings(
    State(x): State<Arc<Explorer>>,
    id: std::result::Result<RoutePath<String>, PathRejection>,
) -> Api<Json<Rankings>> {
    let id = segment(id)?;
    let c = x.compared()?;
    let missing = || ApiError::new(StatusCode::NOT_FOUND, format!("no question `{id}`"));
    let with_other = |a: Vec<Ranked>, b: &[String]| -> Vec<Ranked> {
        a.into_iter()
            .map(|mut r| {
                r.other_rank = b.iter().position(|p| *p == r.passage_id).map(|i| i + 1);
                r
            })
            .collect()
    };
    let (a, b) = match &c.rankings {
        Sides::Runs(uae_search::compare::RunPair { a, b, qrels }) => {
            if !a.contains_key(&id) && !b.contains_key(&id) {
                return Err(missing());
            }
            let judged = qrels.get(&id);
            let top = |r: &Run| -> Vec<String> {
                r.get(&id)
                    .map(|v| v.iter().take(SHOWN).cloned().collect())
                    .unwrap_or_default()
            };
            let ranked = |ids: &[String]| -> Vec<Ranked> {
                ids.iter()
                    .map(|p| Ranked {
                        passage_id: p.clone(),
                        relevant: Some(judged.and_then(|j| j.get(p)).copied().unwrap_or(0)),
                        utility: None,
                        other_rank: None,
                    })
                    .collect()
            };
            let (ta, tb) = (top(a), top(b));
            (with_other(ranked(&ta), &tb), with_other(ranked(&tb), &ta))
        }
        Sides::Labels { a, b } => {
            let read = |o: &Outline| -> Api<Vec<Ranked>> {
                let Some(&n) = o.by_id.get(&id) else {
                    return Ok(Vec::new());
                };
                let g = o
                    .index
                    .group(n)
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                    .ok_or_else(missing)?;
                Ok(g.candidates
                    .into_iter()
                    .take(SHOWN)
                    .map(|c| Ranked {
                        passage_id: c.passage_id,
                        relevant: None,
                        utility: Some(c.utility),
                        other_rank: None,
                    })
                    .collect())
            };
            let (ra, rb) = (read(a)?, read(b)?);
            if ra.is_empty() && rb.is_empty() {
                return Err(missing());
            }
            let ids = |r: &[Ranked]| r.iter().map(|x| x.passage_id.clone()).collect::<Vec<_>>();
            let (ia, ib) = (ids(&ra), ids(&rb));
            (with_other(ra, &ib), with_other(rb, &ia))
        }
    };
    Ok(Json(Rankings {
        question_id: id,
        a,
        b,
    }))
}

/// What the page shows beside the served model's search (`uae serve`'s flags with the
/// `cli` feature).
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ExploreFlags {
    /// A label folder (`uae label --out`) to browse on the page: every question's
    /// candidates by utility, filters, histograms.
    #[cfg_attr(feature = "cli", arg(long))]
    pub labels: Option<PathBuf>,
    /// A second bi-encoder (e.g. the base model) searched over the same corpus at
    /// /against/search: the page shows both rankings side by side, moved passages
    /// marked.
    #[cfg_attr(feature = "cli", arg(long))]
    pub against: Option<PathBuf>,
    /// Two `uae eval` folders (or two `uae label --candidates retrieved` folders) to
    /// compare on the page, as `uae compare A B` does, with the questions where they
    /// differ most.
    #[cfg_attr(feature = "cli", arg(long, num_args = 2, value_names = ["A", "B"]))]
    pub compare: Vec<PathBuf>,
}

impl ExploreFlags {
    /// The explorer's label folder and comparison, and the `--against` model.
    pub fn open(&self, bf16: bool) -> std::result::Result<(Explorer, Option<Against>), RunError> {
        let labels = match &self.labels {
            Some(dir) => Some(LabelsView::open(dir)?),
            None => None,
        };
        let compare = match self.compare.as_slice() {
            [a, b] => Some(CompareView::open(a, b)?),
            _ => None,
        };
        let against = match &self.against {
            Some(dir) => Some(Against {
                encoder: uae_search::load_encoder(dir, bf16)?,
                dir: dir.clone(),
                name: crate::model_name(dir),
            }),
            None => None,
        };
        let explorer = Explorer {
            labels,
            compare,
            ..Default::default()
        };
        Ok((explorer, against))
    }
}

/// `uae explore` (its flags with the `cli` feature): the page over a label folder,
/// searching its labelled passages with a model; no corpus server needed.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ExploreConfig {
    /// The label folder (`uae label --out`).
    pub labels: PathBuf,
    /// Bi-encoder that searches the folder's labelled passages on the page.
    #[cfg_attr(feature = "cli", arg(long, default_value = uae_search::DEFAULT_ENCODER))]
    pub model: PathBuf,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub precision: uae_encoder::EncoderPrecision,
    /// A second bi-encoder searched beside --model (e.g. the base model), both
    /// rankings side by side.
    #[cfg_attr(feature = "cli", arg(long))]
    pub against: Option<PathBuf>,
    /// Two `uae eval` (or `uae label --candidates retrieved`) folders to compare.
    #[cfg_attr(feature = "cli", arg(long, num_args = 2, value_names = ["A", "B"]))]
    pub compare: Vec<PathBuf>,
    /// Address to listen on: loopback unless you say otherwise (port 0: any free
    /// port). The line `listening on URL` on stdout says which.
    #[cfg_attr(feature = "cli", arg(long, default_value = "127.0.0.1:8090"))]
    pub addr: String,
    /// Where the passages' embeddings are cached (default: LABELS/explore-cache).
    #[cfg_attr(feature = "cli", arg(long))]
    pub cache_dir: Option<PathBuf>,
    /// Require this key on the page and every route: `Authorization: Bearer KEY`, or
    /// the browser's password prompt (any user name).
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "UAE_API_KEY", hide_env_values = true)
    )]
    pub api_key: Option<String>,
}

/// Serves the explorer over `c.labels` (and `c.compare`), its search over the
/// folder's passages with `c.model`, until SIGTERM or SIGINT ([`crate::run`]).
pub fn serve_labels(
    c: ExploreConfig,
    progress: &(dyn uae_core::Progress + Send),
    on_ready: impl FnOnce(&str),
) -> std::result::Result<(), RunError> {
    let flags = ExploreFlags {
        labels: Some(c.labels.clone()),
        against: c.against.clone(),
        compare: c.compare.clone(),
    };
    let (explorer, against) = flags.open(c.precision.bf16)?;
    let passages = match &explorer.labels {
        Some(l) => l.index.passages()?,
        None => Vec::new(),
    };
    if passages.is_empty() {
        return Err(RunError::NothingToExplore(c.labels));
    }
    let enc = uae_search::load_encoder(&c.model, c.precision.bf16)?;
    let calibration = uae_artifacts::calibration::CalibrationFile::read(&c.model)?;
    let cfg = ServeConfig {
        model_name: crate::model_name(&c.model),
        calibration: calibration.map(|f| f.calibrator),
        api_key: c.api_key,
        ..ServeConfig::default()
    };
    let d = Deployment {
        addr: c.addr,
        model_dir: c.model,
        passages,
        cache_dir: c
            .cache_dir
            .unwrap_or_else(|| c.labels.join("explore-cache")),
        workers: 2,
        explorer,
        against,
    };
    crate::run(enc, d, cfg, progress, on_ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded_and_checked() {
        let q = LabelQuery::parse(Some("filter=below&bar=1.5&q=what+is%20it&offset=50".into()))
            .unwrap();
        assert_eq!(
            (q.filter, q.bar, q.q.as_str(), q.offset, q.limit),
            (Filter::Below, 1.5, "what is it", 50, 50)
        );
        let bad = |s: &str| LabelQuery::parse(Some(s.into())).unwrap_err().message;
        assert!(bad("limit=0").contains("between 1 and 200"));
        assert!(bad("limit=201").contains("between 1 and 200"));
        assert!(bad("offset=-1").contains("whole number"));
        assert!(bad("bar=nan").contains("number of nats"));
        assert!(bad("filter=x").contains("unknown filter"));
        assert!(bad("path=../../etc").contains("unknown parameter `path`"));
        assert!(bad("q=a&q=b").contains("twice"));
        assert!(bad("q=%FF").contains("UTF-8"));
        assert_eq!(LabelQuery::parse(None).unwrap().filter, Filter::All);
    }

    #[test]
    fn histogram_bins_are_half_nats_with_open_ends() {
        let (edges, counts) = histogram([-5.0, -1.0, 0.2, 0.4, 4.99, 5.0, 80.0].into_iter());
        assert_eq!(edges.len(), 13);
        assert_eq!(counts.len(), 14);
        assert_eq!(counts[0], 1); // below -1
        assert_eq!(counts[1], 1); // [-1, -0.5)
        assert_eq!(counts[3], 2); // [0, 0.5)
        assert_eq!(counts[12], 1); // [4.5, 5)
        assert_eq!(counts[13], 2); // 5 and beyond
        assert_eq!(counts.iter().sum::<usize>(), 7);
    }
}
