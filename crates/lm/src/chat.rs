//! A model's own chat template: the Jinja text shipped with the model (GGUF
//! `tokenizer.chat_template`, or `chat_template` in an HF folder), rendered as HF
//! `apply_chat_template` renders it (`trim_blocks`, `lstrip_blocks`, loop controls,
//! Python string methods), with minijinja.
//!
//! Differences from HF, chosen for reproducible labels: `strftime_now` is not
//! defined, so templates that print today's date (Llama 3.x) fall back to the fixed
//! date they carry; no tools and no documents are passed.

use crate::{Error, Result};
use minijinja::{context, Environment, ErrorKind};
use sha2::{Digest, Sha256};

/// A compiled chat template with the special-token strings it may print.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("sha256", &self.sha256())
            .finish()
    }
}

impl Clone for ChatTemplate {
    fn clone(&self) -> Self {
        ChatTemplate::new(&self.source, &self.bos, &self.eos)
            .expect("a template that compiled once compiles again; this is a bug")
    }
}

fn template_error(e: minijinja::Error) -> Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::Template { message }
}

impl ChatTemplate {
    /// Compiles `source`; `bos`/`eos` are what `{{ bos_token }}` and `{{ eos_token }}`
    /// print (empty where the model has none). An error names the template's syntax
    /// error and line.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(template_error)?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(template_error)?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// What `{{ bos_token }}` prints.
    pub fn bos(&self) -> &str {
        &self.bos
    }

    /// What `{{ eos_token }}` prints.
    pub fn eos(&self) -> &str {
        &self.eos
    }

    /// sha256 of the template's text, hex: its identity in manifests and score keys.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.source.as_bytes()))
    }

    /// One user turn holding `content`, followed by the prompt that opens the
    /// assistant's turn (`add_generation_prompt`): the text the answer continues.
    pub fn user_turn(&self, content: &str) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(template_error)?;
        tmpl.render(context! {
            messages => vec![context! { role => "user", content => content }],
            add_generation_prompt => true,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(template_error)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Gemma 3's template, abridged to the branches a single user turn takes.
    const GEMMA: &str = "{{ bos_token }}{%- for message in messages -%}{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}";

    #[test]
    fn renders_a_user_turn_with_the_generation_prompt() {
        let t = ChatTemplate::new(GEMMA, "<bos>", "<eos>").unwrap();
        assert_eq!(
            t.user_turn("  Question: why?\n").unwrap(),
            "<bos><start_of_turn>user\nQuestion: why?<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    /// Python string methods and `raise_exception`, as model templates use them.
    #[test]
    fn python_methods_and_raise_exception() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}{{ messages[0].content.strip().upper() }}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(t.user_turn(" hi ").unwrap(), "HI");
        let t = ChatTemplate::new("{{ raise_exception('no users here') }}", "", "").unwrap();
        let e = t.user_turn("x").unwrap_err().to_string();
        assert!(e.contains("no users here"), "{e}");
    }

    #[test]
    fn syntax_errors_are_errors() {
        let e = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert!(e.to_string().contains("chat template"), "{e}");
    }

    /// `strftime_now` is left undefined so that Llama 3's date falls back to its fixed one.
    #[test]
    fn no_clock_in_prompts() {
        let t = ChatTemplate::new(
            "{% if strftime_now is defined %}{{ strftime_now('%d %b %Y') }}{% else %}26 Jul 2024{% endif %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(t.user_turn("x").unwrap(), "26 Jul 2024");
    }

    #[test]
    fn identity_is_the_text_hash() {
        let a = ChatTemplate::new(GEMMA, "<bos>", "<eos>").unwrap();
        assert_eq!(a.sha256(), a.clone().sha256());
        assert_ne!(a.sha256(), ChatTemplate::new("x", "", "").unwrap().sha256());
    }
}
