//! Token F1 as in QASPER's official evaluator (SQuAD normalisation, bag of tokens,
//! max over reference answers).

use std::collections::HashMap;

/// SQuAD normalisation: lowercase, drop ASCII punctuation, drop the articles
/// a/an/the, collapse whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `passage` contains one of `answers` as a run of whole tokens after
/// [`normalize_answer`] (DPR's distant supervision). Answers that normalise to
/// nothing, "yes" or "no" match nothing: they say what the answer is, not where.
pub fn contains_answer(passage: &str, answers: &[String]) -> bool {
    let p = normalize_answer(passage);
    let pt: Vec<&str> = p.split_whitespace().collect();
    answers.iter().filter_map(|a| locating(a)).any(|a| {
        let at: Vec<&str> = a.split_whitespace().collect();
        pt.windows(at.len()).any(|w| w == at.as_slice())
    })
}

/// An answer, normalised, that can say where it is found: `None` for one that
/// normalises to nothing, "yes" or "no" (they say what the answer is, not where).
fn locating(answer: &str) -> Option<String> {
    let a = normalize_answer(answer);
    (!a.is_empty() && !matches!(a.as_str(), "yes" | "no")).then_some(a)
}

/// The tokens of a [`locating`] answer, each once (none for the others).
fn answer_tokens(answer: &str) -> Vec<String> {
    let Some(a) = locating(answer) else {
        return Vec::new();
    };
    let mut t: Vec<String> = a.split_whitespace().map(str::to_string).collect();
    t.sort_unstable();
    t.dedup();
    t
}

/// Inverse document frequencies of [`normalize_answer`]'s tokens over a set of
/// passages, `ln(1 + N / (1 + df))`: the weights of [`answer_overlap`], so a rare
/// term of the answer counts for more than a common word, in any language.
#[derive(Debug, Clone, Default)]
pub struct TokenIdf {
    df: HashMap<String, u32>,
    n: usize,
}

impl TokenIdf {
    /// Counts each passage once (pass each distinct passage once).
    pub fn new<'a>(passages: impl IntoIterator<Item = &'a str>) -> Self {
        let mut idf = TokenIdf::default();
        for p in passages {
            idf.n += 1;
            let p = normalize_answer(p);
            let mut seen: Vec<&str> = p.split_whitespace().collect();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                *idf.df.entry(t.to_string()).or_default() += 1;
            }
        }
        idf
    }

    pub fn idf(&self, token: &str) -> f64 {
        let df = self.df.get(token).copied().unwrap_or(0) as f64;
        (1.0 + self.n as f64 / (1.0 + df)).ln()
    }
}

/// How much of a reference answer `passage` holds: the IDF-weighted share of the
/// answer's distinct tokens ([`normalize_answer`]) found among the passage's, the
/// best over `answers`; 1 for a passage that [`contains_answer`]. Unlike answer-match
/// it credits an answer whose words the passage holds in another order or apart (a
/// list of spans joined by commas, a paraphrase). `None` where no answer has a token
/// to look for (empty, "yes" or "no").
pub fn answer_overlap(passage: &str, answers: &[String], idf: &TokenIdf) -> Option<f64> {
    let p = normalize_answer(passage);
    let pt: std::collections::HashSet<&str> = p.split_whitespace().collect();
    answers
        .iter()
        .map(|a| answer_tokens(a))
        .filter(|at| !at.is_empty())
        .map(|at| {
            let w = |t: &String| idf.idf(t);
            let total: f64 = at.iter().map(w).sum();
            let found: f64 = at.iter().filter(|t| pt.contains(t.as_str())).map(w).sum();
            if total > 0.0 {
                found / total
            } else {
                0.0
            }
        })
        .reduce(f64::max)
}

/// Bag-of-tokens F1 between a prediction and one reference, after normalisation.
pub fn token_f1(prediction: &str, reference: &str) -> f64 {
    let p = normalize_answer(prediction);
    let r = normalize_answer(reference);
    let pt: Vec<&str> = p.split_whitespace().collect();
    let rt: Vec<&str> = r.split_whitespace().collect();
    if pt.is_empty() && rt.is_empty() {
        return 1.0;
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &rt {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0i64;
    for t in &pt {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / pt.len() as f64;
    let recall = common as f64 / rt.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// The best F1 over references (0 when there are none).
pub fn max_f1(prediction: &str, references: &[String]) -> f64 {
    references
        .iter()
        .map(|r| token_f1(prediction, r))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-made cases: a span inside the passage (case, punctuation and articles
    /// ignored), a span split across words that is no match, yes/no answers.
    #[test]
    fn answer_match_finds_whole_token_spans() {
        let a = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = "We train on the Penn Treebank (PTB), using BiLSTMs.";
        assert!(contains_answer(p, &a(&["penn treebank"])));
        assert!(contains_answer(p, &a(&["nothing", "The Penn  Treebank"])));
        assert!(contains_answer(p, &a(&["BiLSTMs."])));
        assert!(
            !contains_answer(p, &a(&["tree"])),
            "a part of a word is no match"
        );
        assert!(!contains_answer(p, &a(&["Yes", "no", "the", ""])));
        assert!(!contains_answer(p, &a(&[])));
        assert!(contains_answer("Yes, we do.", &a(&["we do"])));
    }

    /// Three passages; "penn" in one, "treebank" in two, "parser" in all three:
    /// idf(t) = ln(1 + 3 / (1 + df)). Overlap is the IDF share of the answer's
    /// distinct tokens the passage holds, best over answers.
    #[test]
    fn answer_overlap_by_hand() {
        let ps = [
            "the Penn Treebank parser",
            "a treebank parser",
            "parser parser",
        ];
        let idf = TokenIdf::new(ps);
        let w = |df: f64| (1.0 + 3.0 / (1.0 + df)).ln();
        assert!((idf.idf("penn") - w(1.0)).abs() < 1e-12);
        assert!((idf.idf("treebank") - w(2.0)).abs() < 1e-12);
        assert!((idf.idf("unseen") - w(0.0)).abs() < 1e-12);
        let a = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Words apart and out of order still count; a repeated word counts once.
        assert_eq!(
            answer_overlap(ps[0], &a(&["treebank, Penn penn"]), &idf),
            Some(1.0)
        );
        let want = w(2.0) / (w(1.0) + w(2.0));
        let got = answer_overlap(ps[1], &a(&["Penn Treebank"]), &idf).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        // The best reference answer counts.
        assert_eq!(
            answer_overlap(ps[1], &a(&["Penn Treebank", "parser"]), &idf),
            Some(1.0)
        );
        assert_eq!(answer_overlap(ps[2], &a(&["penn"]), &idf), Some(0.0));
        // Answers that say nothing of where: no overlap at all.
        assert_eq!(answer_overlap(ps[0], &a(&["Yes", "the", ""]), &idf), None);
        assert_eq!(answer_overlap(ps[0], &a(&[]), &idf), None);
    }

    #[test]
    fn normalisation_follows_squad() {
        assert_eq!(
            normalize_answer("The  Cat, sat on a MAT!"),
            "cat sat on mat"
        );
    }

    /// "the BERT model" vs "a BERT-based model": tokens {bert, model} vs {bertbased,
    /// model}; common 1, P = 1/2, R = 1/2, F1 = 0.5.
    #[test]
    fn f1_by_hand() {
        assert!((token_f1("the BERT model", "a BERT-based model") - 0.5).abs() < 1e-12);
        // "yes" vs "Yes": 1. "no" vs "yes": 0. Repeated tokens count once each:
        // pred "a b b" -> {b, b} after dropping article "a"? No: "a" is an article, so
        // pred tokens [b, b], ref [b]: common 1, P = 1/2, R = 1, F1 = 2/3.
        assert_eq!(token_f1("yes", "Yes"), 1.0);
        assert_eq!(token_f1("no", "Yes"), 0.0);
        assert!((token_f1("a b b", "b") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(max_f1("x y", &["z".into(), "x y".into()]), 1.0);
        assert_eq!(max_f1("x", &[]), 0.0);
    }
}
