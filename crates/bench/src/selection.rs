//! `uae bench qasper --selection`: what adaptive selection is worth to the LLM's
//! answers. For each dense system whose model folder holds `calibration.json`, the
//! LLM answers every question from the passages each rule of
//! [`uae_search::select::sweep`] keeps (fixed k = 1, 2, 3, 5, thresholds on
//! p(helps) and on expected utility, token budgets in rank order; all over the top
//! [`DEPTH`]); a rule that keeps nothing sends the question alone. Token F1 against
//! the references and the context tokens sent are kept per question, so each rule
//! is compared with the fixed k nearest in tokens and with the best fixed k by a
//! paired bootstrap. Writes `selection-f1.json`, `selection-f1.md` and
//! `selection-f1.svg` (Token F1 against context tokens).

use crate::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use uae_artifacts::calibration::CalibrationFile;
use uae_core::{Hit, Progress};
use uae_data::Collection;
use uae_encoder::Encoder;
use uae_eval::compare::{compare_values, CompareOptions, Comparison};
use uae_eval::f1::max_f1;
use uae_eval::select::Selection;
use uae_rag::{cached_answers, AnswerRecord, Rag, Store};
use uae_search::select::{sweep, Family, Valued};

/// The rules look at the top this many hits (the largest fixed k).
pub const DEPTH: usize = 5;

/// A calibrated dense system's rankings.
pub struct Calibrated<'a> {
    pub name: &'a str,
    pub calibration: CalibrationFile,
    pub rankings: &'a [Vec<Hit>],
    /// Each question's unit vector under the system's model, when its p(helps)
    /// reads the question (empty otherwise).
    pub queries: Vec<Vec<f32>>,
}

/// One rule's answers over every question.
#[derive(Debug, Clone, Serialize)]
pub struct RuleF1 {
    pub family: Family,
    pub selection: Selection,
    pub name: String,
    pub mean_passages: f64,
    pub mean_tokens: f64,
    pub token_f1: f64,
    /// Share of questions sent no passage.
    pub empty: f64,
    /// Against the fixed k whose mean tokens are nearest (value rules only):
    /// metrics `token_f1` and `context_tokens`, B = this rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against_nearest_k: Option<Against>,
    /// Against the fixed k with the best Token F1 (value rules only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against_best_k: Option<Against>,
}

/// A paired comparison with one fixed k.
#[derive(Debug, Clone, Serialize)]
pub struct Against {
    pub k: usize,
    pub comparison: Comparison,
}

/// One system's rules.
#[derive(Debug, Clone, Serialize)]
pub struct SystemSelection {
    pub system: String,
    /// The label folder its calibration was fitted on.
    pub calibrated_on: String,
    pub rules: Vec<RuleF1>,
}

/// `selection-f1.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SelectionF1Report {
    pub questions: usize,
    pub depth: usize,
    /// How context tokens are counted.
    pub tokens: String,
    pub systems: Vec<SystemSelection>,
}

impl SelectionF1Report {
    pub const FILE: &'static str = "selection-f1.json";
    pub const MARKDOWN: &'static str = "selection-f1.md";
    pub const CHART: &'static str = "selection-f1.svg";
}

/// The rules measured: the sweep over the top [`DEPTH`], budgets in rank order only
/// (by value per token sent less evidence at every budget on QASPER dev and test).
fn rules() -> Vec<(Family, Selection)> {
    sweep(DEPTH)
        .into_iter()
        .filter(|(f, _)| *f != Family::MaxContextTokensByValue)
        .collect()
}

/// Per question of one rule: (tokens, Token F1).
type PerQuestion = Vec<(f64, f64)>;

/// What the selection rows are measured on.
pub struct SelectionRun<'a> {
    pub rag: &'a Rag<'a>,
    pub coll: &'a Collection,
    /// `refs[q]`: query `q`'s reference answers.
    pub refs: &'a [Vec<String>],
    /// Counts the passages' tokens.
    pub enc: &'a Encoder,
    /// Where the report goes.
    pub out: &'a Path,
}

/// Answers every question under every rule of every system (answers from and into
/// `store`) and writes the report.
fn measure(
    run: &SelectionRun,
    systems: &[Calibrated],
    store: &mut Store<AnswerRecord>,
    progress: &dyn Progress,
) -> Result<SelectionF1Report> {
    let SelectionRun {
        rag,
        coll,
        refs,
        enc,
        out,
    } = *run;
    let rules = rules();
    // Every (system, rule, question) prompt, in that order.
    let mut prompts = Vec::new();
    let mut picks = Vec::new();
    for s in systems {
        let c = &s.calibration.calibrator;
        let per_query: Vec<_> = s.queries.iter().map(|q| c.for_query(q)).collect();
        let lexical = uae_search::select::lexical_ranks(coll, c);
        let value = |q: usize, h: &Hit| {
            // Without a question term no query was embedded.
            let pq = per_query
                .get(q)
                .copied()
                .unwrap_or_else(|| c.for_query(&[]));
            uae_search::select::hit_value(&pq, lexical.as_ref(), q, h, h.score)
        };
        let valued = Valued::new(coll, s.rankings, value, enc, DEPTH)?;
        for (_, rule) in &rules {
            let p = valued.picks(*rule);
            for (q, pick) in coll.queries.iter().zip(&p) {
                let ctx: Vec<&str> = pick
                    .passages
                    .iter()
                    .map(|&i| coll.passages[i].text.as_str())
                    .collect();
                prompts.push(rag.answer_prompt(&q.text, &ctx)?);
            }
            picks.push(p);
        }
    }
    let answers = cached_answers(rag, &prompts, store, progress)?;
    let n = coll.queries.len();
    let mut report = SelectionF1Report {
        questions: n,
        depth: DEPTH,
        tokens: "whole passages in the bi-encoder's tokenizer (the prompt cuts each to --passage-tokens LLM tokens)".into(),
        systems: Vec::new(),
    };
    let mut chunk = 0;
    for s in systems {
        let mut per: Vec<PerQuestion> = Vec::new();
        let mut rows = Vec::new();
        for (family, rule) in &rules {
            let p = &picks[chunk];
            let a = &answers[chunk * n..(chunk + 1) * n];
            chunk += 1;
            let q: PerQuestion = p
                .iter()
                .zip(a)
                .zip(refs)
                .map(|((pick, ans), r)| (pick.tokens as f64, max_f1(ans, r)))
                .collect();
            let mean =
                |f: &dyn Fn(&(f64, f64)) -> f64| q.iter().map(f).sum::<f64>() / n.max(1) as f64;
            rows.push(RuleF1 {
                family: *family,
                selection: *rule,
                name: rule.name(),
                mean_passages: p.iter().map(|x| x.passages.len() as f64).sum::<f64>()
                    / n.max(1) as f64,
                mean_tokens: mean(&|x| x.0),
                token_f1: mean(&|x| x.1),
                empty: p.iter().filter(|x| x.passages.is_empty()).count() as f64 / n.max(1) as f64,
                against_nearest_k: None,
                against_best_k: None,
            });
            per.push(q);
        }
        compare_with_k(coll, &mut rows, &per);
        report.systems.push(SystemSelection {
            system: s.name.to_string(),
            calibrated_on: s.calibration.labels.clone(),
            rules: rows,
        });
    }
    uae_core::fs::write_json(&out.join(SelectionF1Report::FILE), &report)?;
    uae_core::fs::atomic_write(
        &out.join(SelectionF1Report::MARKDOWN),
        markdown(&report).as_bytes(),
    )?;
    uae_core::fs::atomic_write(
        &out.join(SelectionF1Report::CHART),
        chart(&report).as_bytes(),
    )?;
    Ok(report)
}

/// Fills each value rule's comparisons with the fixed k nearest in mean tokens and
/// with the best fixed k (`per[i]`: rule `i`'s per-question tokens and F1).
fn compare_with_k(coll: &Collection, rows: &mut [RuleF1], per: &[PerQuestion]) {
    let fixed: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].family == Family::K)
        .collect();
    let Some(&best) = fixed
        .iter()
        .max_by(|&&a, &&b| rows[a].token_f1.total_cmp(&rows[b].token_f1))
    else {
        return;
    };
    let column = |i: usize| -> BTreeMap<String, Vec<f64>> {
        coll.queries
            .iter()
            .zip(&per[i])
            .map(|(q, &(t, f))| (q.id.clone(), vec![f, t]))
            .collect()
    };
    let against = |k: usize, i: usize| Against {
        k: rows[k].selection.k,
        comparison: compare_values(
            &["token_f1", "context_tokens"],
            &column(k),
            &column(i),
            CompareOptions::default(),
        ),
    };
    let found: Vec<(usize, Against, Against)> = (0..rows.len())
        .filter(|&i| rows[i].family != Family::K)
        .map(|i| {
            let nearest = *fixed
                .iter()
                .min_by(|&&a, &&b| {
                    let d = |k: usize| (rows[k].mean_tokens - rows[i].mean_tokens).abs();
                    d(a).total_cmp(&d(b))
                })
                .expect("the sweep has fixed k rows; this is a bug");
            (i, against(nearest, i), against(best, i))
        })
        .collect();
    for (i, nearest, best) in found {
        rows[i].against_nearest_k = Some(nearest);
        rows[i].against_best_k = Some(best);
    }
}

/// `relative % [low, high]` of one metric of a comparison.
fn rel(c: &Comparison, metric: &str) -> String {
    c.metric(metric).map_or_else(String::new, |m| m.relative())
}

fn markdown(r: &SelectionF1Report) -> String {
    let mut s = format!(
        "Token F1 of the LLM's answers under each selection rule ({} questions, the top {} hits; tokens: {}).\n",
        r.questions, r.depth, r.tokens
    );
    for sys in &r.systems {
        s += &format!(
            "\n{} (calibrated on {})\n\n| rule | passages | tokens | Token F1 | empty | vs nearest k: F1 | tokens | vs best k: F1 | tokens |\n|---|---|---|---|---|---|---|---|---|\n",
            sys.system, sys.calibrated_on
        );
        for row in &sys.rules {
            let cmp = |a: &Option<Against>| match a {
                Some(a) => format!(
                    "k={}: {} | {}",
                    a.k,
                    rel(&a.comparison, "token_f1"),
                    rel(&a.comparison, "context_tokens")
                ),
                None => " | ".into(),
            };
            s += &format!(
                "| {} | {:.2} | {:.0} | {:.4} | {:.1}% | {} | {} |\n",
                row.name,
                row.mean_passages,
                row.mean_tokens,
                row.token_f1,
                100.0 * row.empty,
                cmp(&row.against_nearest_k),
                cmp(&row.against_best_k)
            );
        }
    }
    s
}

/// Token F1 against mean context tokens: per system, the fixed-k curve and each
/// value family's.
fn chart(r: &SelectionF1Report) -> String {
    let colors = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2"];
    let families = [
        (Family::K, "top k"),
        (Family::MinPHelps, "min p(helps)"),
        (Family::MinUtility, "min utility"),
        (Family::MaxContextTokens, "token budget"),
    ];
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut series_colors = Vec::new();
    for (si, sys) in r.systems.iter().enumerate() {
        for (family, label) in families {
            let mut v: Vec<(f64, f64)> = sys
                .rules
                .iter()
                .filter(|x| x.family == family)
                .map(|x| (x.mean_tokens, x.token_f1))
                .collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            names.push(format!("{}: {label}", sys.system));
            values.push(v);
            series_colors.push(colors[si % colors.len()]);
        }
    }
    let series: Vec<uae_plot::Series<Vec<(f64, f64)>>> = names
        .iter()
        .zip(values)
        .zip(series_colors)
        .map(|((name, values), color)| uae_plot::Series {
            name,
            color,
            values,
        })
        .collect();
    uae_plot::lines_svg("mean context tokens per question (y: Token F1)", &series)
}

/// `--selection` on the rows of `dense` (name, model folder, rankings) whose folder
/// holds a calibration; with none, warns and measures nothing.
pub fn measure_calibrated(
    run: &SelectionRun,
    dense: &[(&str, &Path, &[Vec<Hit>])],
    store: &mut Store<AnswerRecord>,
    progress: &dyn Progress,
) -> Result<()> {
    let calibrated = calibrated(dense, run.coll)?;
    if calibrated.is_empty() {
        tracing::warn!("--selection: no dense row has a calibration; nothing measured");
        return Ok(());
    }
    measure(run, &calibrated, store, progress)?;
    Ok(())
}

/// The calibrated systems among `dense` (name, model folder, rankings): those whose
/// folder holds a calibration.
fn calibrated<'a>(
    dense: &[(&'a str, &Path, &'a [Vec<Hit>])],
    coll: &Collection,
) -> Result<Vec<Calibrated<'a>>> {
    let mut out = Vec::new();
    for &(name, dir, rankings) in dense {
        match CalibrationFile::read(dir)? {
            Some(calibration) => {
                let queries = match calibration.calibrator.reads_query() {
                    true => {
                        let enc = uae_search::load_encoder(dir, false)?;
                        let texts: Vec<&str> =
                            coll.queries.iter().map(|q| q.text.as_str()).collect();
                        uae_search::embed_texts(
                            &enc,
                            &texts,
                            Default::default(),
                            "embedding questions",
                            &uae_core::NoProgress,
                        )?
                    }
                    false => Vec::new(),
                };
                out.push(Calibrated {
                    name,
                    calibration,
                    rankings,
                    queries,
                })
            }
            None => tracing::warn!(
                "{name}: no {} in {}; left out of the selection rows (`uae calibrate`)",
                CalibrationFile::FILE,
                dir.display()
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_are_fixed_k_and_rank_order_value_rules_within_the_depth() {
        let r = rules();
        let ks: Vec<usize> = r
            .iter()
            .filter(|(f, _)| *f == Family::K)
            .map(|(_, s)| s.k)
            .collect();
        assert_eq!(ks, vec![1, 2, 3, 5]);
        assert!(r.iter().all(|(_, s)| s.k <= DEPTH));
        assert!(r.iter().all(|(f, _)| *f != Family::MaxContextTokensByValue));
    }

    /// Two questions. k=1 sends 100 and 100 tokens for F1 0.2 and 0.2; k=2 sends
    /// 200 and 200 for 0.4 and 0.2 (mean 0.3, the best k); a threshold rule sends
    /// 100 and 140 (mean 120: nearest to k=1's 100) for 0.2 and 0.4. Against k=1
    /// its F1 is +0.1 (mean of 0 and +0.2) and its tokens +20; against k=2, F1 0 and
    /// tokens -80.
    #[test]
    fn value_rules_are_compared_with_the_nearest_and_the_best_k() {
        use uae_core::Query;
        let q = |id: &str| Query {
            id: id.into(),
            text: String::new(),
            scope: None,
            gold: Vec::new(),
        };
        let coll = Collection {
            name: "t".into(),
            passages: Vec::new(),
            queries: vec![q("a"), q("b")],
        };
        let row = |family, selection: Selection, tokens: f64, f1: f64| RuleF1 {
            family,
            selection,
            name: selection.name(),
            mean_passages: 0.0,
            mean_tokens: tokens,
            token_f1: f1,
            empty: 0.0,
            against_nearest_k: None,
            against_best_k: None,
        };
        let threshold = Selection {
            min_p_helps: Some(0.3),
            ..Selection::top(5)
        };
        let mut rows = vec![
            row(Family::K, Selection::top(1), 100.0, 0.2),
            row(Family::K, Selection::top(2), 200.0, 0.3),
            row(Family::MinPHelps, threshold, 120.0, 0.3),
        ];
        let per = vec![
            vec![(100.0, 0.2), (100.0, 0.2)],
            vec![(200.0, 0.4), (200.0, 0.2)],
            vec![(100.0, 0.2), (140.0, 0.4)],
        ];
        compare_with_k(&coll, &mut rows, &per);
        assert!(rows[0].against_nearest_k.is_none() && rows[1].against_best_k.is_none());
        let diff = |a: &Option<Against>, metric: &str| {
            let a = a.as_ref().unwrap();
            let m = a.comparison.metric(metric).unwrap();
            (a.k, m.diff)
        };
        let close =
            |(k, d): (usize, f64), want: (usize, f64)| k == want.0 && (d - want.1).abs() < 1e-9;
        assert!(close(
            diff(&rows[2].against_nearest_k, "token_f1"),
            (1, 0.1)
        ));
        assert!(close(
            diff(&rows[2].against_nearest_k, "context_tokens"),
            (1, 20.0)
        ));
        assert!(close(diff(&rows[2].against_best_k, "token_f1"), (2, 0.0)));
        assert!(close(
            diff(&rows[2].against_best_k, "context_tokens"),
            (2, -80.0)
        ));
    }
}
