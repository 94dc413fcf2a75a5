//! What sharing the prefill saves on RAG prompts: for QUESTIONS questions, the
//! answer prompts at k = 1, 2, 3, 5 passages of one ranking (each passage ~110
//! tokens of QASPER-like text), generated with `generate_batch` (every prompt
//! prefilled whole) and with `generate_shared` (each question's longest prompt
//! prefilled once, the others from a cut copy of its cache); same outputs checked.
//! `cargo run --release -p uae-lm --example shared_prefill [GGUF] [QUESTIONS] [NEW_TOKENS]`.

use std::time::Instant;
use uae_lm::{CausalLm, LmSource};

const SENTENCES: [&str; 6] = [
    "We train the encoder on the labelled candidates for one epoch with a batch of sixteen questions.",
    "Table 3 reports recall at one and mean average precision on the development split of the corpus.",
    "The baseline uses the same architecture but is trained on the annotated evidence paragraphs only.",
    "Annotators marked the paragraphs that support each answer, and disagreements were resolved by vote.",
    "Our model improves over the strongest baseline by four points, and the gain holds across domains.",
    "The vocabulary is shared between languages, which lets the model transfer to unseen language pairs.",
];

/// Passage `i` of question `q`: five sentences, a different mix per passage.
fn passage(q: usize, i: usize) -> String {
    (0..5)
        .map(|j| SENTENCES[(q + 3 * i + j) % SENTENCES.len()])
        .collect::<Vec<_>>()
        .join(" ")
        + &format!(" (Section {q}.{i})")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let questions: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8);
    let new: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let lm = CausalLm::load(&LmSource {
        path: path.into(),
        quantized: false,
    })?;
    let mut ids = Vec::new();
    for q in 0..questions {
        for k in [1, 2, 3, 5] {
            let ctx: Vec<String> = (0..k).map(|i| passage(q, i)).collect();
            let prompt = format!(
                "<|im_start|>user\nContext: {}\n\nQuestion: What does section {q} report? Answer in a few words.<|im_end|>\n<|im_start|>assistant\n",
                ctx.join("\n\n")
            );
            ids.push(lm.encode(&prompt)?);
        }
    }
    let prompts: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let tokens: usize = prompts.iter().map(|p| p.len()).sum();
    let t = Instant::now();
    let whole = lm.generate_batch(&prompts, new)?;
    let batch_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let shared = lm.generate_shared(&prompts, new)?;
    let shared_s = t.elapsed().as_secs_f64();
    let same = whole.iter().zip(&shared).filter(|(a, b)| a == b).count();
    println!(
        "{} prompts, {tokens} prompt tokens, {new} new tokens at most: generate_batch {batch_s:.2} s, generate_shared {shared_s:.2} s ({:.2}x); {same} of {} outputs identical",
        prompts.len(),
        batch_s / shared_s,
        prompts.len()
    );
    Ok(())
}
