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
    answers.iter().any(|a| {
        let a = normalize_answer(a);
        let at: Vec<&str> = a.split_whitespace().collect();
        !at.is_empty()
            && !matches!(a.as_str(), "yes" | "no")
            && pt.windows(at.len()).any(|w| w == at.as_slice())
    })
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
