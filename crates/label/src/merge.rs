//! `uae label merge`: the shards of one labeling run (`uae label --shard i/n`, on n
//! machines or against n servers) into one label folder, in the order an unsharded
//! run would have written, after checking that they are parts of the same run.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use uae_artifacts::labels::{LabelManifest, LabelSummary, LabeledGroup, MinedRow};

fn merr(m: impl Into<String>) -> Error {
    Error::Invalid(m.into())
}

/// What must agree between shards: everything in the manifest but the shard, the
/// version and the LLM's path or URLs (the same model may sit at another path or on
/// another server; its identity is `lm_sha256`).
fn same_run(a: &LabelManifest, b: &LabelManifest) -> Option<&'static str> {
    if a.lm_sha256 != b.lm_sha256 {
        Some("LLM (lm_sha256)")
    } else if a.config != b.config {
        Some("label configuration (template, candidates, budgets, seed)")
    } else if a.split != b.split || a.data_file != b.data_file || a.limit != b.limit {
        Some("questions (split, file or --limit)")
    } else if a.corpus != b.corpus {
        Some("corpus")
    } else if a.encoder != b.encoder {
        Some("mining encoder")
    } else {
        None
    }
}

/// The manifests of `dirs`, checked to be all `n` shards of one run (same LLM,
/// configuration, questions and corpus; no shard twice or missing), in shard order.
fn shards_of_one_run(dirs: &[PathBuf]) -> Result<Vec<(LabelManifest, &PathBuf)>> {
    if dirs.is_empty() {
        return Err(merr("no shard folder given"));
    }
    let mut shards: Vec<(LabelManifest, &PathBuf)> = Vec::new();
    for d in dirs {
        let m = LabelManifest::read(d)?.ok_or_else(|| {
            merr(format!(
                "{}: no {} (not a label folder)",
                d.display(),
                LabelManifest::FILE
            ))
        })?;
        let Some(s) = m.shard else {
            return Err(merr(format!(
                "{}: not a shard (its labels were made without --shard)",
                d.display()
            )));
        };
        if let Some((first, fd)) = shards.first() {
            if let Some(what) = same_run(first, &m) {
                return Err(merr(format!(
                    "{} and {} are not shards of one run: their {what} differ",
                    fd.display(),
                    d.display()
                )));
            }
            let n = first.shard.map_or(0, |s| s.count);
            if s.count != n {
                return Err(merr(format!(
                    "{} is shard {s}, {} is a shard of {n}",
                    d.display(),
                    fd.display()
                )));
            }
        }
        if let Some((_, other)) = shards.iter().find(|(o, _)| o.shard == Some(s)) {
            return Err(merr(format!(
                "{} and {} are both shard {s}",
                other.display(),
                d.display()
            )));
        }
        shards.push((m, d));
    }
    let n = shards[0].0.shard.map_or(0, |s| s.count);
    if shards.len() != n {
        let have: Vec<usize> = shards
            .iter()
            .filter_map(|(m, _)| m.shard.map(|s| s.index))
            .collect();
        let missing: Vec<String> = (1..=n)
            .filter(|i| !have.contains(i))
            .map(|i| format!("{i}/{n}"))
            .collect();
        return Err(merr(format!("shard {} missing", missing.join(", "))));
    }
    shards.sort_by_key(|(m, _)| m.shard.map_or(0, |s| s.index));
    Ok(shards)
}

/// Merges shard folders `dirs` (all n shards of one run, any order) into `out`:
/// labels.jsonl and candidates.jsonl interleaved back into the unsharded order, the
/// score stores concatenated (so `out` can be resumed or extended like any label
/// folder), the manifest without a shard, and a summary over the whole.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<LabelSummary> {
    let shards = shards_of_one_run(dirs)?;
    let n = shards.len();
    if out.join(LabeledGroup::FILE).exists() || out.join(LabelManifest::FILE).exists() {
        return Err(merr(format!(
            "{}: already a label folder; merge into a new one",
            out.display()
        )));
    }
    let mut groups = Vec::new();
    let mut rows = Vec::new();
    let mut summary = LabelSummary::default();
    for (i, (_, d)) in shards.iter().enumerate() {
        if !d.join(LabeledGroup::FILE).is_file() {
            return Err(merr(format!(
                "{}: shard {}/{n} is unfinished (no {}); rerun its `uae label` command",
                d.display(),
                i + 1,
                LabeledGroup::FILE
            )));
        }
        groups.push(LabeledGroup::read_all(d)?);
        rows.push(MinedRow::read_all(d)?.unwrap_or_default());
        if let Some(s) = LabelSummary::read(d)? {
            // Every shard reads the whole questions file; each scores its own part.
            if i == 0 {
                summary.skipped_no_answer = s.skipped_no_answer;
                summary.skipped_no_positive = s.skipped_no_positive;
                summary.skipped_bad_rows = s.skipped_bad_rows;
                summary.skipped_bad_lines = s.skipped_bad_lines;
            }
            summary.skipped_too_long += s.skipped_too_long;
            summary
                .skipped_too_long_lines
                .extend(s.skipped_too_long_lines);
            summary.scores_total += s.scores_total;
            summary.scores_computed += s.scores_computed;
            summary.scores_reused += s.scores_reused;
            summary.tokens_scored += s.tokens_scored;
            summary.tokens_shared += s.tokens_shared;
            summary.seconds += s.seconds;
        }
    }
    summary.skipped_too_long_lines.sort_unstable();
    summary.skipped_too_long_lines.truncate(1000);
    let _lock = uae_core::fs::FolderLock::acquire(out)?;
    let merged = interleave(groups);
    let merged_rows = interleave(rows);
    for f in [
        uae_artifacts::scores::ScoreRecord::FILE,
        uae_artifacts::scores::Truncation::FILE,
    ] {
        concat(
            &shards.iter().map(|(_, d)| d.join(f)).collect::<Vec<_>>(),
            &out.join(f),
        )?;
    }
    if merged_rows.len() == merged.len() {
        MinedRow::write_all(out, &merged_rows)?;
    }
    crate::score::utility_stats(&mut summary, &merged);
    LabeledGroup::write_all(out, &merged)?;
    summary.write(out)?;
    uae_core::fs::atomic_write(
        &out.join(crate::HISTOGRAM),
        crate::utility_histogram(&merged).as_bytes(),
    )?;
    let mut manifest = shards[0].0.clone();
    manifest.shard = None;
    manifest.write(out)?;
    Ok(summary)
}

/// Shard k's j-th item was the unsharded run's item j*n + k.
fn interleave<T>(parts: Vec<Vec<T>>) -> Vec<T> {
    let mut iters: Vec<_> = parts.into_iter().map(|p| p.into_iter()).collect();
    let mut out = Vec::new();
    loop {
        let mut any = false;
        for it in iters.iter_mut() {
            if let Some(x) = it.next() {
                out.push(x);
                any = true;
            }
        }
        if !any {
            return out;
        }
    }
}

/// The existing files of `parts`, one after another, into `out` (stores tolerate
/// repeated keys).
fn concat(parts: &[PathBuf], out: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    for p in parts.iter().filter(|p| p.is_file()) {
        let mut b = std::fs::read(p).map_err(uae_core::Error::io(p))?;
        if b.last().is_some_and(|&c| c != b'\n') {
            // A torn last record of a killed run: dropped, as the store would.
            let cut = b.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
            b.truncate(cut);
        }
        bytes.extend_from_slice(&b);
    }
    if !bytes.is_empty() {
        uae_core::fs::atomic_write(out, &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::interleave;

    #[test]
    fn interleaving_restores_round_robin_order() {
        // 7 items in 3 shards: [0,3,6], [1,4], [2,5].
        let parts = vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]];
        assert_eq!(interleave(parts), (0..7).collect::<Vec<_>>());
    }
}
