//! Which hits a RAG application hands its LLM when each hit carries a calibrated
//! value (expected utility in nats, probability that it helps): the rule `/search`
//! applies to a request's `min_utility`, `min_p_helps` and `max_context_tokens`,
//! and `uae eval` to whole rankings. One place, so the two never disagree.

use serde::{Deserialize, Serialize};

/// A calibrated hit's value: (expected utility in nats, p(helps)).
pub type Value = (f64, f64);

/// How the hits of one ranking are chosen: look at the top `k`, keep those at least
/// `min_utility` nats and `min_p_helps` likely to help, then, with a budget, the
/// ones worth most expected utility per token that fit `max_context_tokens`.
/// No hit is a valid choice: retrieval is not expected to help.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Selection {
    pub k: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_utility: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p_helps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_context_tokens: Option<usize>,
    /// With a budget: which hits fill it first.
    #[serde(default, skip_serializing_if = "BudgetOrder::is_rank")]
    pub budget_order: BudgetOrder,
}

/// The order in which hits fill a token budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum BudgetOrder {
    /// Best ranked first, each hit that still fits; needs no calibration. The
    /// default: on QASPER test it sent more of the evidence than `value_per_token`
    /// at every budget (BENCHMARKS.md, "Adaptive selection").
    #[default]
    Rank,
    /// Most expected utility per token first (a calibrated model); hits expected to
    /// help by nothing are left out.
    ValuePerToken,
}

impl BudgetOrder {
    pub fn is_rank(&self) -> bool {
        *self == BudgetOrder::Rank
    }
}

impl Selection {
    /// The top `k`, nothing else.
    pub fn top(k: usize) -> Selection {
        Selection {
            k,
            ..Selection::default()
        }
    }

    /// Whether any rule beyond the top `k` applies.
    pub fn filters(&self) -> bool {
        self.uses_values() || self.max_context_tokens.is_some()
    }

    /// Whether a rule reads the hits' calibrated values.
    pub fn uses_values(&self) -> bool {
        self.min_utility.is_some()
            || self.min_p_helps.is_some()
            || (self.max_context_tokens.is_some()
                && self.budget_order == BudgetOrder::ValuePerToken)
    }

    /// A short name: `k=3`, `p_helps>=0.5`, `utility>=1`, `tokens<=256`, or several
    /// joined by `, `.
    pub fn name(&self) -> String {
        let mut parts = vec![format!("k={}", self.k)];
        if let Some(u) = self.min_utility {
            parts.push(format!("utility>={u}"));
        }
        if let Some(p) = self.min_p_helps {
            parts.push(format!("p_helps>={p}"));
        }
        if let Some(t) = self.max_context_tokens {
            parts.push(format!("tokens<={t}"));
            if self.budget_order == BudgetOrder::ValuePerToken {
                parts.push("by value per token".into());
            }
        }
        parts.join(", ")
    }

    /// The hits kept, as positions in the ranking (best first). `values[i]` is the
    /// value of the ranking's `i`-th hit (only the first `k` are read); `tokens(i)`
    /// its length, asked only with a budget and only for hits past the thresholds.
    pub fn select(&self, values: &[Value], mut tokens: impl FnMut(usize) -> usize) -> Vec<usize> {
        let top = &values[..self.k.min(values.len())];
        let passed: Vec<usize> = (0..top.len())
            .filter(|&i| self.min_utility.is_none_or(|m| top[i].0 >= m))
            .filter(|&i| self.min_p_helps.is_none_or(|m| top[i].1 >= m))
            .collect();
        let Some(budget) = self.max_context_tokens else {
            return passed;
        };
        let by_rank = self.budget_order == BudgetOrder::Rank;
        // A hit expected to help by nothing is never worth its tokens.
        let mut order: Vec<(usize, usize)> = passed
            .into_iter()
            .filter(|&i| by_rank || top[i].0 > 0.0)
            .map(|i| (i, tokens(i)))
            .collect();
        if !by_rank {
            let rate = |(i, n): (usize, usize)| top[i].0 / n.max(1) as f64;
            order.sort_by(|&a, &b| rate(b).total_cmp(&rate(a)).then(a.0.cmp(&b.0)));
        }
        let mut used = 0;
        let mut kept: Vec<usize> = Vec::new();
        for (i, n) in order {
            if used + n <= budget {
                used += n;
                kept.push(i);
            }
        }
        kept.sort_unstable();
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: [Value; 4] = [(2.0, 0.8), (0.5, 0.4), (1.5, 0.7), (-0.2, 0.1)];

    #[test]
    fn top_k_alone_keeps_the_first_k() {
        assert_eq!(Selection::top(2).select(&V, |_| 0), vec![0, 1]);
        assert_eq!(Selection::top(9).select(&V, |_| 0), vec![0, 1, 2, 3]);
        assert!(Selection::top(0).select(&V, |_| 0).is_empty());
    }

    #[test]
    fn thresholds_filter_and_may_leave_nothing() {
        let s = Selection {
            min_p_helps: Some(0.5),
            ..Selection::top(4)
        };
        assert_eq!(s.select(&V, |_| 0), vec![0, 2]);
        let s = Selection {
            min_utility: Some(1.8),
            ..Selection::top(4)
        };
        assert_eq!(s.select(&V, |_| 0), vec![0]);
        let s = Selection {
            min_utility: Some(5.0),
            ..Selection::top(4)
        };
        assert!(s.select(&V, |_| 0).is_empty());
    }

    #[test]
    fn a_budget_takes_the_best_value_per_token_that_fits() {
        // Per token: hit 0 2/100, hit 1 0.5/10, hit 2 1.5/20; hit 3 never (utility < 0).
        let lens = [100, 10, 20, 1];
        let s = Selection {
            max_context_tokens: Some(40),
            budget_order: BudgetOrder::ValuePerToken,
            ..Selection::top(4)
        };
        assert_eq!(s.select(&V, |i| lens[i]), vec![1, 2]);
        let s = Selection {
            max_context_tokens: Some(130),
            budget_order: BudgetOrder::ValuePerToken,
            ..Selection::top(4)
        };
        assert_eq!(s.select(&V, |i| lens[i]), vec![0, 1, 2]);
        let s = Selection {
            max_context_tokens: Some(5),
            budget_order: BudgetOrder::ValuePerToken,
            ..Selection::top(4)
        };
        assert!(s.select(&V, |i| lens[i]).is_empty());
        // In rank order: hit 0 does not fit 40, hits 1, 2 do, hit 3 (utility < 0) too.
        let s = Selection {
            max_context_tokens: Some(40),
            ..Selection::top(4)
        };
        assert_eq!(s.select(&V, |i| lens[i]), vec![1, 2, 3]);
        let s = Selection {
            max_context_tokens: Some(100),
            ..Selection::top(4)
        };
        assert_eq!(s.select(&V, |i| lens[i]), vec![0]);
    }

    #[test]
    fn lengths_are_asked_only_for_hits_past_the_thresholds() {
        let mut asked = Vec::new();
        let s = Selection {
            min_p_helps: Some(0.5),
            max_context_tokens: Some(1000),
            budget_order: BudgetOrder::ValuePerToken,
            ..Selection::top(4)
        };
        s.select(&V, |i| {
            asked.push(i);
            1
        });
        asked.sort_unstable();
        assert_eq!(asked, vec![0, 2]);
    }

    #[test]
    fn names_say_every_rule() {
        let s = Selection {
            min_p_helps: Some(0.5),
            max_context_tokens: Some(256),
            ..Selection::top(10)
        };
        assert_eq!(s.name(), "k=10, p_helps>=0.5, tokens<=256");
    }
}
