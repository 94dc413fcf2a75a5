//! Re-rankers and answer prompts on the real SmolLM2-135M-Instruct GGUF fetched by
//! `scripts/fetch-models.sh`.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::path::PathBuf;
use std::sync::OnceLock;
use uae_lm::{CausalLm, LmSource, ScoreRequest};
use uae_rag::{Rag, RagConfig, Reranker};

fn lm() -> &'static CausalLm {
    static LM: OnceLock<CausalLm> = OnceLock::new();
    LM.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            p.is_file(),
            "{} missing: run scripts/fetch-models.sh",
            p.display()
        );
        CausalLm::load(&LmSource {
            path: p,
            quantized: false,
        })
        .unwrap()
    })
}

const Q: &str = "What color is the sky on a clear day?";
const RELEVANT: &str =
    "On a clear day the sky is blue, because air scatters blue sunlight more than red.";
const OFF_TOPIC: &str =
    "The quarterly report shows revenue fell three percent in the retail segment.";

/// UPR: the question is far more likely after a passage about it than after an
/// unrelated one (a margin of nats, not a coin flip).
#[test]
fn upr_prefers_the_passage_about_the_question() {
    let rag = Rag::new(lm(), RagConfig::default()).unwrap();
    let s = rag
        .rerank_scores(Reranker::Upr, Q, &[OFF_TOPIC, RELEVANT])
        .unwrap();
    assert!(s[1] > s[0] + 1.0, "{s:?}");
    // The packed batch equals scoring each passage alone.
    let one = rag.rerank_scores(Reranker::Upr, Q, &[RELEVANT]).unwrap();
    assert!((one[0] - s[1]).abs() < 1e-3, "{} vs {}", one[0], s[1]);
}

/// Yes/no: the score is log P(Yes) - log P(No) at the first answer position, which
/// `CausalLm::score` computes independently, one target at a time.
#[test]
fn yes_no_is_the_log_odds_of_the_first_answer_token() {
    let rag = Rag::new(lm(), RagConfig::default()).unwrap();
    let s = rag.rerank_scores(Reranker::YesNo, Q, &[RELEVANT]).unwrap()[0];
    let prompt = lm()
        .encode(&format!(
            "<|im_start|>user\nPassage: {RELEVANT}\n\nQuestion: {Q}\n\nDoes the passage answer the question? Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n"
        ))
        .unwrap();
    let lp = |w: &str| {
        let t = lm().encode(w).unwrap()[..1].to_vec();
        lm().score(&[ScoreRequest {
            context: &prompt,
            targets: &t,
        }])
        .unwrap()[0][0]
    };
    let want = lp("Yes") - lp("No");
    assert!((s - want).abs() < 1e-3, "{s} vs {want}");
    assert!(rag
        .rerank_scores(Reranker::YesNo, Q, &[])
        .unwrap()
        .is_empty());
}

#[test]
fn answer_prompts_carry_the_passages_in_rank_order() {
    let rag = Rag::new(lm(), RagConfig::default()).unwrap();
    let none = rag.answer_prompt(Q, &[]).unwrap();
    assert!(!none.contains("Context:") && none.contains(Q));
    let two = rag.answer_prompt(Q, &[RELEVANT, OFF_TOPIC]).unwrap();
    let (a, b) = (
        two.find("On a clear day").unwrap(),
        two.find("quarterly").unwrap(),
    );
    assert!(a < b);
    // Passages are cut to the token budget.
    let short = Rag::new(
        lm(),
        RagConfig {
            passage_tokens: 3,
            ..RagConfig::default()
        },
    )
    .unwrap();
    assert!(!short
        .answer_prompt(Q, &[RELEVANT])
        .unwrap()
        .contains("scatters"));
    // Answers come back in input order, one per prompt, without the stop token.
    let out = rag.answers(&[none, two]).unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|a| !a.contains("<|im_end|>")));
}

#[test]
fn a_template_without_placeholders_is_an_error() {
    let bad = RagConfig {
        answer_template: "Question only".into(),
        ..RagConfig::default()
    };
    let err = Rag::new(lm(), bad).err().unwrap().to_string();
    assert!(err.contains("{context}"), "{err}");
}
