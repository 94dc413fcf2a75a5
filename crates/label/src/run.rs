//! A whole labeling run into one folder: manifest and resume checks, eligible
//! questions, mined candidates (reused on resume), scores, `labels.jsonl`,
//! `summary.json` and the utility histogram.

use crate::mine::{mine_all, read_mined, rows};
use crate::ranking::Ranking;
use crate::score::{label, Job, Scorer};
use crate::{Error, PromptFormat, Result};
use std::path::{Path, PathBuf};
use uae_artifacts::labels::{
    CandidateMode, LabelConfig, LabelManifest, LabelSummary, LabeledGroup, MinedRow, Shard,
};
use uae_core::Progress;
use uae_data::QaSet;

/// The default LLM file (what `scripts/fetch-models.sh` unpacks).
pub const DEFAULT_LM: &str = "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

/// What a labeling run reads and where it writes.
pub struct LabelRun<'a> {
    /// The corpus and questions (a QASPER split through [`uae_data::Qasper::qa_set`]).
    pub set: &'a QaSet,
    /// What the manifest calls the question set: the QASPER split, or the
    /// questions file's name.
    pub split: String,
    /// The corpus file for your own data (`None` for QASPER).
    pub corpus_path: Option<PathBuf>,
    /// Label only the first N eligible questions (in file order).
    pub limit: Option<usize>,
    /// Label only this part of the eligible questions (after `limit`).
    pub shard: Option<Shard>,
    pub out: PathBuf,
    /// The local LLM or the LLM servers.
    pub scorer: Scorer<'a>,
    /// The LLM's path or the servers' URLs, as given (recorded in the manifest).
    pub lm_name: String,
    /// The bi-encoder that mines dense candidates.
    pub encoder: PathBuf,
    pub config: LabelConfig,
    /// Renders the prompts; `config.template` is its template.
    pub prompts: &'a PromptFormat,
    /// `retrieved` mode: the ranked passages to score.
    pub ranking: Option<&'a Ranking>,
    /// Rows of the questions file left out as bad ([`QaSet::read_skipping`]): each
    /// is warned about with its file, line and reason, and counted in the summary.
    pub skipped_rows: Vec<uae_data::SkippedRow>,
}

impl LabelRun<'_> {
    /// Questions to label (indices into the set): with an answer, and with a
    /// positive in `gold` mode; the first `limit` of them; with `shard`, its part of
    /// those. Also how many were left out for want of an answer, and (in `gold`
    /// mode) of a positive.
    ///
    /// In `retrieved` mode a question must also be in the ranking; those that are not
    /// are counted with the ones without a positive.
    pub fn eligible(&self) -> (Vec<usize>, usize, usize) {
        let gold = self.config.candidates == CandidateMode::Gold;
        let (mut no_answer, mut no_positive) = (0, 0);
        let mut out = Vec::new();
        for (i, q) in self.set.questions.iter().enumerate() {
            if out.len() == self.limit.unwrap_or(usize::MAX) {
                break;
            }
            let unranked = self.ranking.is_some_and(|r| !r.contains(&q.id));
            if q.answers.is_empty() {
                no_answer += 1;
            } else if (gold && q.positives.is_empty()) || unranked {
                no_positive += 1;
            } else {
                out.push(i);
            }
        }
        if let Some(shard) = self.shard {
            out = out
                .into_iter()
                .enumerate()
                .filter(|(pos, _)| shard.contains(*pos))
                .map(|(_, i)| i)
                .collect();
        }
        (out, no_answer, no_positive)
    }

    fn manifest(&self) -> LabelManifest {
        LabelManifest {
            version: env!("CARGO_PKG_VERSION").into(),
            split: self.split.clone(),
            limit: self.limit,
            data_file: self.set.source.display().to_string(),
            corpus: self.corpus_path.as_ref().map(|p| p.display().to_string()),
            lm: self.lm_name.clone(),
            lm_sha256: self.scorer.model_hash().to_string(),
            encoder: self.encoder.display().to_string(),
            config: self.config.clone(),
            shard: self.shard,
        }
    }
}

/// Refuses to resume a folder labelled with another LLM, config or split.
fn check_resume(dir: &Path, old: &LabelManifest, new: &LabelManifest) -> Result<()> {
    let path = dir.join(LabelManifest::FILE);
    if old.lm_sha256 != new.lm_sha256 {
        return Err(Error::Mismatch {
            path,
            what: "LLM sha256",
            found: old.lm_sha256.clone(),
            want: new.lm_sha256.clone(),
        });
    }
    if old.shard != new.shard {
        let show = |s: Option<Shard>| s.map_or("no shard".to_string(), |s| format!("shard {s}"));
        return Err(Error::Mismatch {
            path,
            what: "the questions of",
            found: show(old.shard),
            want: show(new.shard),
        });
    }
    if old.config != new.config || old.split != new.split {
        let json = |m: &LabelManifest| {
            format!(
                "{} on {}",
                serde_json::to_string(&m.config).unwrap_or_default(),
                m.split
            )
        };
        return Err(Error::Mismatch {
            path,
            what: "another configuration",
            found: json(old),
            want: json(new),
        });
    }
    Ok(())
}

/// Runs (or resumes) a labeling run; returns its summary and the labelled groups.
pub fn run(r: &LabelRun, progress: &dyn Progress) -> Result<(LabelSummary, Vec<LabeledGroup>)> {
    for row in &r.skipped_rows {
        tracing::warn!(
            "{}:{}: left out{}: {}",
            r.set.source.display(),
            row.line,
            row.id
                .as_ref()
                .map(|i| format!(" (question `{i}`)"))
                .unwrap_or_default(),
            row.reason
        );
    }
    let (eligible, no_answer, no_positive) = r.eligible();
    if eligible.is_empty() {
        return Err(Error::NothingToLabel {
            split: r.split.clone(),
        });
    }
    if (r.config.candidates == CandidateMode::Retrieved) != r.ranking.is_some() {
        return Err(Error::Invalid(
            "`retrieved` candidates come with a ranking, and only they do".into(),
        ));
    }
    // One writer per folder: two runs would both append every score.
    let _lock = uae_core::fs::FolderLock::acquire(&r.out)?;
    let manifest = r.manifest();
    if let Some(old) = LabelManifest::read(&r.out)? {
        check_resume(&r.out, &old, &manifest)?;
    }
    manifest.write(&r.out)?;
    let items = match (read_mined(&r.out, r.set, &eligible)?, r.ranking) {
        (_, Some(ranking)) => {
            let items = ranking.candidates(r.set, &eligible)?;
            MinedRow::write_all(&r.out, &rows(r.set, &items))?;
            items
        }
        (Some(items), None) => {
            tracing::info!(path = %r.out.join(MinedRow::FILE).display(), "reusing mined candidates");
            items
        }
        (None, None) => {
            let cache = r.out.join("cache");
            let items = mine_all(
                r.set,
                &eligible,
                &r.encoder,
                &r.config,
                Some(&cache),
                progress,
            )?;
            MinedRow::write_all(&r.out, &rows(r.set, &items))?;
            items
        }
    };
    let job = Job {
        set: r.set,
        prompts: r.prompts,
        items,
    };
    let (mut summary, groups) = label(r.scorer, &job, &r.config, &r.out, progress)?;
    summary.skipped_no_answer = no_answer;
    summary.skipped_no_positive = no_positive;
    summary.skipped_bad_rows = r.skipped_rows.len();
    summary.skipped_bad_lines = r.skipped_rows.iter().take(1000).map(|x| x.line).collect();
    summary.write(&r.out)?;
    uae_core::fs::atomic_write(
        &r.out.join(crate::HISTOGRAM),
        utility_histogram(&groups).as_bytes(),
    )?;
    Ok((summary, groups))
}

/// The utility histogram of gold and other candidates (fractions of each), as SVG.
pub fn utility_histogram(groups: &[LabeledGroup]) -> String {
    use uae_plot::{histogram_svg, Series};
    let (mut gold, mut other) = (Vec::new(), Vec::new());
    for c in groups.iter().flat_map(|g| &g.candidates) {
        if c.is_gold { &mut gold } else { &mut other }.push(c.utility as f64);
    }
    let series = [
        Series {
            name: "other candidates",
            color: "#888888",
            values: other,
        },
        Series {
            name: "gold evidence",
            color: "#d62728",
            values: gold,
        },
    ];
    histogram_svg(
        -4.0,
        8.0,
        48,
        "utility (nats): NLL(a|q) - NLL(a|p,q)",
        &series,
    )
}
