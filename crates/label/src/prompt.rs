//! How a labelling prompt is laid out: the template the user asked for, resolved
//! against the LLM (its own chat template under `auto`), and rendered.

use crate::{Error, Result, Scorer};
use std::path::PathBuf;
use uae_artifacts::labels::Template;
use uae_lm::ChatTemplate;

/// What `--template` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateChoice {
    /// The model's own chat template where it ships one, `plain` where it does not
    /// (base models). A server's template is not known here: `auto` is refused there.
    Auto,
    Chatml,
    Plain,
    /// A Jinja chat template from a file (for a server, or to override the model's).
    File(PathBuf),
}

impl std::str::FromStr for TemplateChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "auto" => TemplateChoice::Auto,
            "chatml" => TemplateChoice::Chatml,
            "plain" => TemplateChoice::Plain,
            "" => return Err("expected auto, chatml, plain or a .jinja file".into()),
            path => TemplateChoice::File(PathBuf::from(path)),
        })
    }
}

impl std::fmt::Display for TemplateChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateChoice::Auto => f.write_str("auto"),
            TemplateChoice::Chatml => f.write_str("chatml"),
            TemplateChoice::Plain => f.write_str("plain"),
            TemplateChoice::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A resolved prompt layout: what the manifest records, and what renders prompts.
#[derive(Debug, Clone)]
pub struct PromptFormat {
    template: Template,
    chat: Option<ChatTemplate>,
}

impl PromptFormat {
    /// One of the fixed layouts.
    pub fn fixed(template: Template) -> Result<PromptFormat> {
        if let Template::Chat { .. } = template {
            return Err(Error::Invalid(
                "a chat template is rendered from its text: resolve it from the model or a file"
                    .into(),
            ));
        }
        Ok(PromptFormat {
            template,
            chat: None,
        })
    }

    /// A Jinja chat template.
    pub fn chat(chat: ChatTemplate) -> PromptFormat {
        PromptFormat {
            template: Template::Chat {
                sha256: chat.sha256(),
            },
            chat: Some(chat),
        }
    }

    /// Resolves `choice` for `scorer`: `auto` takes a local model's own template
    /// (`plain` without one); a file is read and compiled with the model's BOS/EOS
    /// strings where known.
    pub fn resolve(choice: &TemplateChoice, scorer: &Scorer) -> Result<PromptFormat> {
        match (choice, scorer) {
            (TemplateChoice::Chatml, _) => Self::fixed(Template::Chatml),
            (TemplateChoice::Plain, _) => Self::fixed(Template::Plain),
            (TemplateChoice::Auto, Scorer::Local(lm)) => match &lm.chat_template {
                Some(t) => Ok(Self::chat(t.clone())),
                None => Self::fixed(Template::Plain),
            },
            (TemplateChoice::Auto, Scorer::Remote(r)) => Err(Error::Invalid(format!(
                "the chat template of the server's model `{}` is not known here: pass --template chatml, plain or a .jinja file with its template",
                r.model
            ))),
            (TemplateChoice::File(path), scorer) => {
                let text = std::fs::read_to_string(path).map_err(uae_core::Error::io(path))?;
                let (bos, eos) = match scorer {
                    Scorer::Local(lm) => lm
                        .chat_template
                        .as_ref()
                        .map(|t| (t.bos().to_string(), t.eos().to_string()))
                        .unwrap_or_default(),
                    Scorer::Remote(_) => Default::default(),
                };
                let chat = ChatTemplate::new(&text, &bos, &eos)
                    .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
                Ok(Self::chat(chat))
            }
        }
    }

    /// The layout's identity, as manifests and score keys hold it.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// The prompt for `question` with an optional passage; the answer follows it.
    pub fn prompt(&self, passage: Option<&str>, question: &str) -> Result<String> {
        match (&self.chat, self.template.fixed_prompt(passage, question)) {
            (_, Some(p)) => Ok(p),
            (Some(chat), None) => chat
                .user_turn(&Template::user_content(passage, question))
                .map_err(|e| Error::Invalid(e.to_string())),
            (None, None) => Err(Error::Invalid(
                "a chat template without its text; this is a bug".into(),
            )),
        }
    }

    /// The answer text as it follows the prompt.
    pub fn answer(&self, answer: &str) -> String {
        self.template.answer(answer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn choices_parse() {
        assert_eq!(
            "auto".parse::<TemplateChoice>().unwrap(),
            TemplateChoice::Auto
        );
        assert_eq!(
            "t.jinja".parse::<TemplateChoice>().unwrap(),
            TemplateChoice::File("t.jinja".into())
        );
        assert!("".parse::<TemplateChoice>().is_err());
    }

    /// The fixed layouts render as they always have (score keys depend on it).
    #[test]
    fn fixed_layouts_are_unchanged() {
        let f = PromptFormat::fixed(Template::Chatml).unwrap();
        assert_eq!(
            f.prompt(Some("P"), "Q?").unwrap(),
            "<|im_start|>user\nContext: P\n\nQuestion: Q?<|im_end|>\n<|im_start|>assistant\n"
        );
        let p = PromptFormat::fixed(Template::Plain).unwrap();
        assert_eq!(p.prompt(None, "Q?").unwrap(), "Question: Q?\nAnswer:");
        assert_eq!(p.answer("A"), " A");
        assert!(PromptFormat::fixed(Template::Chat { sha256: "x".into() }).is_err());
    }

    #[test]
    fn chat_templates_render_the_user_turn() {
        let t = ChatTemplate::new(
            "{{ bos_token }}<u>{{ messages[0].content }}</u>{% if add_generation_prompt %}<a>{% endif %}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let sha = t.sha256();
        let f = PromptFormat::chat(t);
        assert_eq!(f.template(), &Template::Chat { sha256: sha });
        assert_eq!(
            f.prompt(Some("P"), "Q?").unwrap(),
            "<s><u>Context: P\n\nQuestion: Q?</u><a>"
        );
        assert_eq!(f.answer("A"), "A");
    }
}
