//! `uae eval`'s retriever options (its flags with the `cli` feature) and what they
//! build: a [`Retriever`].

use crate::{DenseModel, Retriever, RetrieverKind};
use std::path::PathBuf;
#[cfg(feature = "cli")]
use uae_core::flags;
use uae_encoder::BatchOptions;
use uae_index::{Bm25Params, Fusion};

/// How `--retriever hybrid` (and `/search`'s hybrid mode) fuses its two rankings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum FusionKind {
    /// Reciprocal rank fusion (--rrf-k): needs no tuning. The default.
    #[default]
    Rrf,
    /// --dense-weight x dense + the rest x BM25, both scores min-max normalised per
    /// query: choose the weight on dev.
    Convex,
}

impl FusionKind {
    /// The fusion with its constant: `rrf_k` for RRF, `dense_weight` for convex
    /// (each [`uae_index`]'s default when `None`).
    pub fn with(self, rrf_k: Option<f32>, dense_weight: Option<f32>) -> Fusion {
        match self {
            FusionKind::Rrf => Fusion::Rrf {
                k: rrf_k.unwrap_or(uae_index::DEFAULT_RRF_K),
            },
            FusionKind::Convex => Fusion::Convex {
                dense_weight: dense_weight.unwrap_or(uae_index::DEFAULT_DENSE_WEIGHT),
            },
        }
    }
}

/// Which retriever to evaluate, and its knobs. Every default is
/// [`EvalOptions::default`]'s.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct EvalOptions {
    /// `bm25`, `dense` (a bi-encoder, --model) or `hybrid` (the dense and the BM25
    /// rankings fused, --fusion).
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = d().retriever))]
    pub retriever: RetrieverKind,
    /// --retriever hybrid: `rrf` (reciprocal rank fusion, --rrf-k; needs no tuning)
    /// or `convex` (--dense-weight x dense + the rest x BM25, both scores min-max
    /// normalised per query; choose the weight on dev: `scripts/fusion_weight.sh`).
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = d().fusion))]
    pub fusion: FusionKind,
    /// Reciprocal rank fusion's constant (> 0): each ranking adds 1 / (k + rank).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().rrf_k, value_parser = flags::positive))]
    pub rrf_k: f32,
    /// --fusion convex: the dense score's weight (0-1; 1 is dense alone; 0.7 was
    /// best of 0.1-0.9 on QASPER dev for the base MiniLM, `scripts/fusion_weight.sh`).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().dense_weight, value_parser = flags::unit_interval))]
    pub dense_weight: f32,
    /// Bi-encoder folder for --retriever dense or hybrid.
    #[cfg_attr(feature = "cli", arg(long, default_value = crate::DEFAULT_ENCODER))]
    pub model: PathBuf,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub precision: uae_encoder::EncoderPrecision,
    /// BM25 term-frequency saturation (>= 0).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().k1, value_parser = flags::non_negative))]
    pub k1: f32,
    /// BM25 length normalisation (0: none, 1: full).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().b, value_parser = flags::unit_interval))]
    pub b: f32,
    /// Keep the passages' embeddings in this folder and reuse them when the same
    /// model (same files) ranks the same passages again: tuning fusion or selection
    /// on one dev set then embeds the corpus once.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub cache: Option<PathBuf>,
    /// Most padded tokens per encoder forward pass (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_tokens, value_parser = flags::count()))]
    pub max_tokens: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        let bm25 = Bm25Params::default();
        EvalOptions {
            retriever: RetrieverKind::Dense,
            fusion: FusionKind::default(),
            rrf_k: uae_index::DEFAULT_RRF_K,
            dense_weight: uae_index::DEFAULT_DENSE_WEIGHT,
            model: PathBuf::from(crate::DEFAULT_ENCODER),
            precision: Default::default(),
            k1: bm25.k1,
            b: bm25.b,
            cache: None,
            max_tokens: BatchOptions::default().max_tokens,
        }
    }
}

/// `uae eval`'s adaptive selection and calibration check, for a dense model with
/// calibration.json (`uae calibrate`): what a RAG app would hand its LLM if it asked
/// `/search` for hits worth their tokens instead of a fixed top k.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct SelectOptions {
    /// Selection looks at each question's top K hits (default 10, as `/search`;
    /// 1-1000). With a calibrated model, selection.json and selection.svg always
    /// hold a sweep of fixed k and of each rule below (evidence recall against
    /// context tokens, and how often questions without evidence get nothing).
    #[cfg_attr(feature = "cli", arg(long, value_parser = flags::count_in(1, 1000)))]
    pub k: Option<usize>,
    /// Keep hits expected to lower the LLM's answer NLL by at least this many nats.
    #[cfg_attr(feature = "cli", arg(long, value_parser = flags::finite_f64))]
    pub min_utility: Option<f64>,
    /// Keep hits at least this likely to help (0-1).
    #[cfg_attr(feature = "cli", arg(long, value_parser = flags::unit_interval_f64))]
    pub min_p_helps: Option<f64>,
    /// Keep the hits that fit this many tokens (whole passages, the bi-encoder's
    /// tokenizer; >= 1), taken in --budget-order.
    #[cfg_attr(feature = "cli", arg(long, value_parser = flags::count()))]
    pub max_context_tokens: Option<usize>,
    /// With --max-context-tokens: `rank` (best ranked first, each that still fits;
    /// no calibration needed) or `value-per-token` (most expected utility per token
    /// first; a calibrated model).
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = Default::default()))]
    pub budget_order: uae_eval::select::BudgetOrder,
    /// Held-out labels (`uae label` on questions the calibration was not fitted on):
    /// report the calibration's ECE, Brier score and log loss of p(helps) on them,
    /// and draw reliability.svg.
    #[cfg_attr(feature = "cli", arg(long))]
    pub labels: Option<PathBuf>,
}

impl SelectOptions {
    /// The selection asked for, if any rule or `--k` was given.
    pub fn selection(&self) -> Option<uae_eval::select::Selection> {
        let s = uae_eval::select::Selection {
            k: self.k.unwrap_or(crate::select::DEPTH),
            min_utility: self.min_utility,
            min_p_helps: self.min_p_helps,
            max_context_tokens: self.max_context_tokens,
            budget_order: self.budget_order,
        };
        (self.k.is_some() || s.filters()).then_some(s)
    }
}

#[cfg(feature = "cli")]
fn d() -> EvalOptions {
    EvalOptions::default()
}

impl EvalOptions {
    /// The retriever these options name.
    pub fn retriever(&self) -> Retriever {
        let bm25 = Bm25Params {
            k1: self.k1,
            b: self.b,
        };
        let opts = BatchOptions {
            max_tokens: self.max_tokens,
            ..Default::default()
        };
        let dense = DenseModel {
            model: self.model.clone(),
            bf16: self.precision.bf16,
            opts,
            cache: self.cache.clone(),
        };
        match self.retriever {
            RetrieverKind::Bm25 => Retriever::Bm25(bm25),
            RetrieverKind::Dense => Retriever::Dense(dense),
            RetrieverKind::Hybrid => Retriever::Hybrid {
                dense,
                bm25,
                fusion: self.fusion.with(Some(self.rrf_k), Some(self.dense_weight)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_build_the_named_retriever() {
        let o = EvalOptions::default();
        assert_eq!(o.retriever().kind(), RetrieverKind::Dense);
        let h = EvalOptions {
            retriever: RetrieverKind::Hybrid,
            fusion: FusionKind::Convex,
            dense_weight: 0.3,
            ..EvalOptions::default()
        };
        match h.retriever() {
            Retriever::Hybrid {
                fusion: Fusion::Convex { dense_weight },
                ..
            } => assert_eq!(dense_weight, 0.3),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            EvalOptions {
                retriever: RetrieverKind::Bm25,
                k1: 0.9,
                ..EvalOptions::default()
            }
            .retriever(),
            Retriever::Bm25(Bm25Params { k1, .. }) if k1 == 0.9
        ));
    }

    #[test]
    fn hybrid_fuses_by_rrf_at_60_unless_told() {
        let h = EvalOptions {
            retriever: RetrieverKind::Hybrid,
            ..EvalOptions::default()
        };
        match h.retriever() {
            Retriever::Hybrid { fusion, .. } => {
                assert_eq!(fusion, Fusion::Rrf { k: 60.0 });
                assert_eq!(fusion, Fusion::default());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            FusionKind::Convex.with(None, None),
            Fusion::Convex { dense_weight: 0.7 }
        );
        assert_eq!(
            FusionKind::Rrf.with(Some(10.0), Some(0.2)),
            Fusion::Rrf { k: 10.0 }
        );
    }
}
