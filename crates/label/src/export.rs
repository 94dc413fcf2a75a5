//! `uae label export --format sentence-transformers`: the labels as a dataset that
//! sentence-transformers' trainer reads as it is, so a team with GPUs can distil the
//! same utilities into a larger encoder (`DistillKLDivLoss`, or `MarginMSELoss` on
//! the differences).
//!
//! One row per question: `query`, `positive` (the candidate of highest utility),
//! `negative_1..negative_{k-1}` (the others, by decreasing utility) and `label`, the
//! k utilities in nats in the same order, which is `DistillKLDivLoss`'s
//! (query, positive, negative_1, ..., negative_n) + teacher scores layout. Column
//! order is the trainer's input order, so nothing else is in these files; the ids
//! go to `ids.jsonl`, row for row. Written as `train.jsonl` and `train.parquet`.

use crate::{Error, Result};
use parquet::basic::{ConvertedType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use uae_artifacts::labels::LabeledGroup;

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// Rows written (questions).
    pub rows: usize,
    /// Candidates per row (1 positive + k-1 negatives).
    pub candidates: usize,
    /// Questions left out for having fewer than `candidates` candidates.
    pub skipped_short: usize,
    /// Column names, in order.
    pub columns: Vec<String>,
}

struct Row<'a> {
    query: &'a str,
    question_id: &'a str,
    /// (passage id, text, utility), by decreasing utility, cut to k.
    cands: Vec<(&'a str, &'a str, f64)>,
}

fn perr(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

/// Exports the label folder `labels` to `out` (created). `k`: candidates per row;
/// default, the most common group size (rows with fewer are left out and counted;
/// rows with more keep their k best).
pub fn export_sentence_transformers(
    labels: &Path,
    out: &Path,
    k: Option<usize>,
) -> Result<ExportSummary> {
    let groups = LabeledGroup::read_all(labels)?;
    let k = match k {
        Some(k) => k,
        None => most_common_size(&groups),
    };
    if k < 2 {
        return Err(Error::Invalid(format!(
            "{}: rows need at least 2 candidates (a positive and a negative); the groups here have {k}",
            labels.display()
        )));
    }
    let mut rows = Vec::new();
    let mut skipped_short = 0;
    for g in &groups {
        if g.candidates.len() < k {
            skipped_short += 1;
            continue;
        }
        let mut cands: Vec<(&str, &str, f64)> = g
            .candidates
            .iter()
            .map(|c| (c.passage_id.as_str(), c.text.as_str(), shortest(c.utility)))
            .collect();
        // Stable: ties keep the label file's order.
        cands.sort_by(|a, b| b.2.total_cmp(&a.2));
        cands.truncate(k);
        rows.push(Row {
            query: &g.question,
            question_id: &g.question_id,
            cands,
        });
    }
    if rows.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no question has {k} candidates",
            labels.display()
        )));
    }
    let mut columns = vec!["query".to_string(), "positive".to_string()];
    columns.extend((1..k).map(|i| format!("negative_{i}")));
    columns.push("label".into());
    std::fs::create_dir_all(out).map_err(uae_core::Error::io(out))?;
    write_jsonl(&out.join("train.jsonl"), &rows, &columns)?;
    write_ids(&out.join("ids.jsonl"), &rows)?;
    write_parquet(&out.join("train.parquet"), &rows, &columns)?;
    Ok(ExportSummary {
        rows: rows.len(),
        candidates: k,
        skipped_short,
        columns,
    })
}

/// An f32 utility as the f64 of its shortest decimal form: what labels.jsonl shows,
/// rather than the f32's binary expansion (0.5286861, not 0.5286861062049866).
fn shortest(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

fn most_common_size(groups: &[LabeledGroup]) -> usize {
    let mut counts = std::collections::BTreeMap::new();
    for g in groups {
        *counts.entry(g.candidates.len()).or_insert(0usize) += 1;
    }
    // The most frequent size; on a tie, the larger.
    counts
        .into_iter()
        .max_by_key(|&(size, n)| (n, size))
        .map_or(0, |(size, _)| size)
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Keys in column order (serde_json's maps would sort them).
fn write_jsonl(path: &Path, rows: &[Row], columns: &[String]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push('{');
        text.push_str(&format!("{}:{}", json(&columns[0]), json(r.query)));
        for (c, (_, t, _)) in columns[1..].iter().zip(&r.cands) {
            text.push_str(&format!(",{}:{}", json(c), json(t)));
        }
        let label: Vec<f64> = r.cands.iter().map(|c| c.2).collect();
        text.push_str(&format!(
            ",\"label\":{}}}\n",
            serde_json::to_string(&label).unwrap_or_default()
        ));
    }
    uae_core::fs::atomic_write(path, text.as_bytes()).map_err(Error::from)
}

fn write_ids(path: &Path, rows: &[Row]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        let ids: Vec<&str> = r.cands.iter().map(|c| c.0).collect();
        text.push_str(
            &serde_json::json!({"question_id": r.question_id, "passage_ids": ids}).to_string(),
        );
        text.push('\n');
    }
    uae_core::fs::atomic_write(path, text.as_bytes()).map_err(Error::from)
}

/// Strings as required UTF-8 byte arrays; `label` as a required LIST of doubles
/// (the standard three-level layout, which pyarrow reads as `list<double>`).
fn write_parquet(path: &Path, rows: &[Row], columns: &[String]) -> Result<()> {
    let e = |x: parquet::errors::ParquetError| perr(path, x);
    let mut fields = Vec::new();
    for c in &columns[..columns.len() - 1] {
        fields.push(Arc::new(
            Type::primitive_type_builder(c, PhysicalType::BYTE_ARRAY)
                .with_repetition(Repetition::REQUIRED)
                .with_converted_type(ConvertedType::UTF8)
                .build()
                .map_err(e)?,
        ));
    }
    let element = Type::primitive_type_builder("element", PhysicalType::DOUBLE)
        .with_repetition(Repetition::REQUIRED)
        .build()
        .map_err(e)?;
    let list = Type::group_type_builder("list")
        .with_repetition(Repetition::REPEATED)
        .with_fields(vec![Arc::new(element)])
        .build()
        .map_err(e)?;
    fields.push(Arc::new(
        Type::group_type_builder("label")
            .with_repetition(Repetition::REQUIRED)
            .with_converted_type(ConvertedType::LIST)
            .with_fields(vec![Arc::new(list)])
            .build()
            .map_err(e)?,
    ));
    let schema = Arc::new(
        Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .map_err(e)?,
    );
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(uae_core::Error::io(&tmp))?;
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(e)?;
    let mut rg = writer.next_row_group().map_err(e)?;
    let mut col = 0;
    while let Some(mut cw) = rg.next_column().map_err(e)? {
        if col + 1 < columns.len() {
            let values: Vec<ByteArray> = rows
                .iter()
                .map(|r| {
                    let s = if col == 0 {
                        r.query
                    } else {
                        r.cands[col - 1].1
                    };
                    ByteArray::from(s)
                })
                .collect();
            cw.typed::<ByteArrayType>()
                .write_batch(&values, None, None)
                .map_err(e)?;
        } else {
            let k = rows[0].cands.len();
            let values: Vec<f64> = rows
                .iter()
                .flat_map(|r| r.cands.iter().map(|c| c.2))
                .collect();
            let def = vec![1i16; values.len()];
            let rep: Vec<i16> = (0..values.len())
                .map(|i| if i % k == 0 { 0 } else { 1 })
                .collect();
            cw.typed::<DoubleType>()
                .write_batch(&values, Some(&def), Some(&rep))
                .map_err(e)?;
        }
        cw.close().map_err(e)?;
        col += 1;
    }
    rg.close().map_err(e)?;
    writer.close().map_err(e)?;
    std::fs::rename(&tmp, path).map_err(uae_core::Error::io(path))?;
    Ok(())
}
