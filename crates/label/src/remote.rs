//! A remote scorer: an LLM server speaking the OpenAI completions API (vLLM,
//! llama.cpp's server, llama-cpp-python) scores the same prompts as the local path.
//!
//! One request per (question, passage or none, answer): `POST {url}/completions` with
//! the chat-formatted prompt and the answer appended, `echo: true`, `logprobs: 0`,
//! `max_tokens: 1` (0 means "unlimited" to llama-cpp-python). The generated token is
//! dropped (`usage.completion_tokens` says whether there is one), and the answer's
//! tokens are found from the end of the echoed prompt by `text_offset`: the answer is
//! the prompt's suffix, so its first token is the first one that ends past
//! `prompt_end - answer_chars` in the server's own text space. The server's own
//! tokenizer is used throughout, and only offsets measured from the end are trusted:
//! servers differ in whether a leading BOS or a special token counts in the offsets.
//!
//! Requests run `concurrency` at a time per endpoint; a timeout, a dropped connection,
//! a 429 or a 5xx is retried with exponential backoff; any other 4xx, or a request
//! out of retries, fails the run after the requests in flight have finished: what was
//! scored is kept, what failed is never recorded, and a rerun resumes.

use crate::{Error, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How a remote scorer talks to its endpoints.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Requests in flight per endpoint.
    pub concurrency: usize,
    /// One request's limit, from sending to the last byte of the answer.
    pub timeout: Duration,
    /// Retries of one request after a timeout, a dropped connection, a 429 or a 5xx.
    pub retries: u32,
    /// The first backoff; it doubles per retry, up to 30 s.
    pub backoff: Duration,
    /// Sent as `Authorization: Bearer ...` (vLLM's `--api-key`).
    pub api_key: Option<String>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            concurrency: 4,
            timeout: Duration::from_secs(120),
            retries: 6,
            backoff: Duration::from_millis(500),
            api_key: None,
        }
    }
}

/// One or more OpenAI-compatible completion endpoints serving the same model.
pub struct RemoteLm {
    urls: Vec<String>,
    /// The model name every endpoint reports in `GET /models`.
    pub model: String,
    /// What enters every store key and the manifest: `openai:{model}`.
    pub model_hash: String,
    opts: RemoteOptions,
    rt: tokio::runtime::Runtime,
    client: HttpClient,
}

/// What one completion told us about the prompt it echoed.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    /// Log-probabilities of the answer tokens (the prompt's last tokens).
    pub answer_lp: Vec<f32>,
    /// Prompt tokens, as the server counted them.
    pub prompt_tokens: usize,
}

enum Attempt {
    Retry(String),
    Fatal(String),
}

fn remote_err(url: &str, message: impl Into<String>) -> Error {
    Error::Remote {
        url: url.to_string(),
        message: message.into(),
    }
}

/// `http://host:port/v1` without a trailing slash; anything but plain HTTP is refused.
fn normalise(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    if u.starts_with("https://") {
        return Err(remote_err(
            url,
            "https endpoints are not supported: reach the server over plain HTTP on a private network, or through a TLS-terminating proxy",
        ));
    }
    let rest = u.strip_prefix("http://").ok_or_else(|| {
        remote_err(
            url,
            "not an http:// URL (expected something like http://127.0.0.1:8000/v1)",
        )
    })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(remote_err(url, "the URL has no host"));
    }
    u.parse::<hyper::Uri>()
        .map_err(|e| remote_err(url, format!("bad URL: {e}")))?;
    Ok(u.to_string())
}

impl RemoteLm {
    /// Connects to every endpoint: `GET {url}/models` must answer (within the request
    /// timeout, with a few quick retries) and every endpoint must name the same model.
    pub fn connect(urls: &[String], opts: RemoteOptions) -> Result<Self> {
        if urls.is_empty() {
            return Err(remote_err("", "no endpoint given"));
        }
        let urls: Vec<String> = urls.iter().map(|u| normalise(u)).collect::<Result<_>>()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| remote_err(&urls[0], format!("cannot start the HTTP runtime: {e}")))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.set_nodelay(true);
        let client: HttpClient = {
            let _guard = rt.enter();
            Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector)
        };
        let mut model: Option<(String, String)> = None;
        for url in &urls {
            let probe = RemoteOptions {
                retries: opts.retries.min(2),
                backoff: Duration::from_millis(200),
                timeout: opts.timeout.min(Duration::from_secs(30)),
                ..opts.clone()
            };
            let v = rt.block_on(request_with_retries(
                &client,
                &probe,
                &format!("{url}/models"),
                None,
            ))?;
            let id = v
                .pointer("/data/0/id")
                .and_then(Value::as_str)
                .ok_or_else(|| remote_err(url, format!("GET /models did not name a model: {v}")))?
                .to_string();
            match &model {
                None => model = Some((url.clone(), id)),
                Some((first, m)) if *m != id => {
                    return Err(remote_err(
                        url,
                        format!("serves model `{id}`, but {first} serves `{m}`: every --lm endpoint must serve the same model"),
                    ))
                }
                Some(_) => {}
            }
        }
        let (_, model) = model.ok_or_else(|| remote_err("", "no endpoint given"))?;
        Ok(RemoteLm {
            model_hash: format!("openai:{model}"),
            model,
            urls,
            opts,
            rt,
            client,
        })
    }

    /// The endpoints, as normalised (recorded in the manifest).
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Echoes every prompt (the answer appended; `answer_chars[i]` long) and hands
    /// each finished one to `sink` (in completion order) with its index. Stops at the
    /// first failure that retries cannot fix, after the requests in flight have come
    /// back (and been handed over), and returns that failure.
    pub fn score_all(
        &self,
        prompts: Vec<String>,
        answer_chars: &[usize],
        sink: &mut dyn FnMut(usize, Echo) -> Result<()>,
    ) -> Result<()> {
        let prompts = Arc::new(prompts);
        self.dispatch(prompts.clone(), &mut |i, url, v| {
            let echo = parse_echo(&v, &prompts[i], answer_chars[i], &self.model)
                .map_err(|m| remote_err(url, m))?;
            sink(i, echo)
        })
    }

    /// Each text cut to its first `budget` tokens of the server's tokenizer, handed to
    /// `sink` with its index. Texts of at most `budget` bytes are not sent (a token is
    /// at least one byte); the others are sent as a prefix of `budget * 8` bytes,
    /// whose first tokens are the full text's as long as the cut falls well before
    /// the prefix's end (two tokens of margin); the rare text whose prefix is too
    /// short is sent whole.
    pub fn truncate_all(
        &self,
        texts: &[String],
        budget: usize,
        sink: &mut dyn FnMut(usize, String) -> Result<()>,
    ) -> Result<()> {
        let mut long = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            if t.len() <= budget {
                sink(i, t.clone())?;
            } else {
                long.push(i);
            }
        }
        let prefix = |t: &str| -> String {
            let mut end = t.len().min(budget.saturating_mul(8));
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t[..end].to_string()
        };
        let prompts = Arc::new(long.iter().map(|&i| prefix(&texts[i])).collect::<Vec<_>>());
        let mut whole = Vec::new();
        self.dispatch(prompts.clone(), &mut |j, url, v| {
            let i = long[j];
            let complete = prompts[j].len() == texts[i].len();
            let t = cut_at(&v, &prompts[j], budget, !complete).map_err(|m| remote_err(url, m))?;
            match t {
                Some(t) if complete || t.len() < prompts[j].len() => sink(i, t),
                _ => {
                    whole.push(i);
                    Ok(())
                }
            }
        })?;
        let prompts = Arc::new(whole.iter().map(|&i| texts[i].clone()).collect::<Vec<_>>());
        self.dispatch(prompts.clone(), &mut |j, url, v| {
            let t = cut_at(&v, &prompts[j], budget, false)
                .map_err(|m| remote_err(url, m))?
                .unwrap_or_else(|| prompts[j].clone());
            sink(whole[j], t)
        })
    }

    /// Sends every prompt as an echo request, `concurrency` at a time per endpoint,
    /// and hands each answer to `on_value` on this thread, in completion order, with
    /// the URL of the endpoint that answered (for errors).
    fn dispatch(
        &self,
        prompts: Arc<Vec<String>>,
        on_value: &mut dyn FnMut(usize, &str, Value) -> Result<()>,
    ) -> Result<()> {
        let queue = Arc::new(Mutex::new((0..prompts.len()).collect::<VecDeque<usize>>()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, usize, Result<Value>)>();
        for (u, url) in self.urls.iter().enumerate() {
            for _ in 0..self.opts.concurrency.max(1) {
                let (prompts, queue, stop, tx) =
                    (prompts.clone(), queue.clone(), stop.clone(), tx.clone());
                let (client, opts, model) =
                    (self.client.clone(), self.opts.clone(), self.model.clone());
                let endpoint = format!("{url}/completions");
                self.rt.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                        let Some(i) = next else { break };
                        let body = json!({
                            "model": model,
                            "prompt": prompts[i],
                            "max_tokens": 1,
                            "temperature": 0.0,
                            "echo": true,
                            "logprobs": 0,
                        });
                        let r = request_with_retries(&client, &opts, &endpoint, Some(body)).await;
                        if r.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send((i, u, r)).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        drop(tx);
        let mut first_err: Option<Error> = None;
        self.rt.block_on(async {
            // After a failure no new request starts, but every answer that still
            // arrives is handed over: it was paid for, and a rerun need not ask again.
            while let Some((i, u, r)) = rx.recv().await {
                if let Err(e) = r.and_then(|v| on_value(i, &self.urls[u], v)) {
                    stop.store(true, Ordering::Relaxed);
                    first_err.get_or_insert(e);
                }
            }
        });
        first_err.map_or(Ok(()), Err)
    }
}

/// One request, retried on timeouts, dropped connections, 429 and 5xx with
/// exponential backoff; the parsed JSON answer.
async fn request_with_retries(
    client: &HttpClient,
    opts: &RemoteOptions,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut backoff = opts.backoff;
    let mut attempt = 0;
    loop {
        match request_once(client, opts, url, body.as_ref()).await {
            Ok(v) => return Ok(v),
            Err(Attempt::Fatal(m)) => return Err(remote_err(url, m)),
            Err(Attempt::Retry(m)) => {
                if attempt >= opts.retries {
                    return Err(remote_err(
                        url,
                        format!("{m} (gave up after {} attempts)", attempt + 1),
                    ));
                }
                tracing::warn!(url, attempt, "{m}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                attempt += 1;
            }
        }
    }
}

async fn request_once(
    client: &HttpClient,
    opts: &RemoteOptions,
    url: &str,
    body: Option<&Value>,
) -> std::result::Result<Value, Attempt> {
    let builder = hyper::Request::builder().uri(url);
    let builder = match &opts.api_key {
        Some(k) => builder.header("authorization", format!("Bearer {k}")),
        None => builder,
    };
    let req = match body {
        Some(b) => builder
            .method("POST")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(b.to_string()))),
        None => builder.method("GET").body(Full::new(Bytes::new())),
    }
    .map_err(|e| Attempt::Fatal(format!("cannot build the request: {e}")))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| Attempt::Retry(format!("connection failed: {}", error_chain(&e))))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Attempt::Retry(format!("the answer broke off: {e}")))?
            .to_bytes();
        Ok::<_, Attempt>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(opts.timeout, exchange)
        .await
        .map_err(|_| Attempt::Retry(format!("no complete answer within {:?}", opts.timeout)))??;
    let text = String::from_utf8_lossy(&bytes);
    let short: String = text.chars().take(300).collect();
    if status.as_u16() == 429 || status.is_server_error() {
        return Err(Attempt::Retry(format!("HTTP {status}: {short}")));
    }
    if !status.is_success() {
        return Err(Attempt::Fatal(format!("HTTP {status}: {short}")));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Attempt::Retry(format!("the answer is not JSON ({e}): {short}")))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// One echoed prompt token.
struct Tok {
    offset: usize,
    text: String,
    lp: Option<f32>,
}

/// The echoed prompt tokens, without the generated one, and where the prompt ends in
/// the server's offset space. Servers differ in whether the generated token is in the
/// list (llama-cpp-python leaves it out when the prompt does not start with BOS), so
/// it is recognised by its text: the completion's text past the echoed prompt.
fn echoed(v: &Value, prompt: &str, model: &str) -> std::result::Result<(Vec<Tok>, usize), String> {
    if let Some(m) = v.get("model").and_then(Value::as_str) {
        if !model.is_empty() && m != model {
            return Err(format!("answered with model `{m}`, expected `{model}`"));
        }
    }
    let text = v
        .pointer("/choices/0/text")
        .and_then(Value::as_str)
        .ok_or("the completion has no text")?;
    let generated = text.strip_prefix(prompt).ok_or(
        "the completion does not start with the prompt: the server did not echo it (echo: true unsupported?)",
    )?;
    let lp = v
        .pointer("/choices/0/logprobs")
        .filter(|x| !x.is_null())
        .ok_or("the completion has no logprobs (does the server support echo with logprobs? llama-cpp-python needs --logits_all true)")?;
    let arr = |k: &str| {
        lp.get(k)
            .and_then(Value::as_array)
            .ok_or(format!("logprobs.{k} is missing"))
    };
    let (offsets, logprobs, tokens) = (arr("text_offset")?, arr("token_logprobs")?, arr("tokens")?);
    if offsets.len() != logprobs.len() || tokens.len() != logprobs.len() {
        return Err("logprobs.tokens, token_logprobs and text_offset differ in length".into());
    }
    let mut toks = Vec::with_capacity(tokens.len());
    for i in 0..tokens.len() {
        let lp = logprobs[i].as_f64();
        // A probability is at most 1. Rounding may leave a hair above 0; anything
        // more is a broken server, and believing it would store a negative NLL.
        if let Some(x) = lp.filter(|&x| x > 1e-3) {
            return Err(format!(
                "token {i} has log-probability {x}, above 0: the server's log-probabilities cannot be right"
            ));
        }
        toks.push(Tok {
            offset: offsets[i].as_u64().ok_or("a text_offset is not a number")? as usize,
            text: tokens[i]
                .as_str()
                .ok_or("a token is not a string")?
                .to_string(),
            lp: lp.map(|x| x.min(0.0) as f32),
        });
    }
    let completion = v
        .pointer("/usage/completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let gen_listed = completion >= 1 && toks.last().is_some_and(|t| t.text == generated);
    let end = if gen_listed {
        toks.pop().map_or(0, |t| t.offset)
    } else {
        toks.last().map_or(0, |t| t.offset + t.text.chars().count())
    };
    if toks.is_empty() {
        return Err("no prompt token echoed".into());
    }
    Ok((toks, end))
}

/// The answer tokens' log-probabilities: the echoed prompt tokens that end past
/// `prompt_end - answer_chars`.
fn parse_echo(
    v: &Value,
    prompt: &str,
    answer_chars: usize,
    model: &str,
) -> std::result::Result<Echo, String> {
    let (toks, end) = echoed(v, prompt, model)?;
    let start = end
        .checked_sub(answer_chars)
        .ok_or("the echoed prompt is shorter than the answer")?;
    let mut lp = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let tok_end = toks.get(i + 1).map_or(end, |n| n.offset);
        if tok_end > start {
            lp.push(t.lp.ok_or(
                "an answer token has no log-probability (the answer must not be the whole prompt)",
            )?);
        }
    }
    if lp.is_empty() {
        return Err("no echoed token covers the answer".into());
    }
    if lp.iter().any(|x| !x.is_finite()) {
        return Err("a non-finite log-probability".into());
    }
    let prompt_tokens = v
        .pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64)
        .map_or(toks.len(), |x| x as usize);
    Ok(Echo {
        answer_lp: lp,
        prompt_tokens,
    })
}

/// `text` cut after its `budget`-th token, by the echoed token texts: leading tokens
/// that are not the text's start (a BOS shown as `<s>` or as nothing) are skipped.
/// With `prefix` (`text` is a prefix of the real text), `None` unless the cut falls
/// at least two tokens before the end, where the prefix's tokens are the text's.
fn cut_at(
    v: &Value,
    text: &str,
    budget: usize,
    prefix: bool,
) -> std::result::Result<Option<String>, String> {
    let (toks, _) = echoed(v, text, "")?;
    let first = toks
        .iter()
        .position(|t| !t.text.is_empty() && text.starts_with(&t.text))
        .unwrap_or(0);
    let toks = &toks[first..];
    if prefix && toks.len() < budget + 2 {
        return Ok(None);
    }
    if toks.len() <= budget {
        return Ok(Some(text.to_string()));
    }
    let cut: usize = toks[..budget].iter().map(|t| t.text.chars().count()).sum();
    Ok(Some(text.chars().take(cut).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo answer: `tokens` with offsets in order; `generated` says whether the
    /// last one is the generated token (in the completion text past the prompt).
    fn echo(tokens: &[&str], lps: &[Option<f32>], generated: bool) -> (Value, String) {
        let mut off = 0;
        let mut offsets = Vec::new();
        for t in tokens {
            offsets.push(off);
            off += t.chars().count();
        }
        let all: String = tokens.concat();
        let prompt = if generated {
            tokens[..tokens.len() - 1].concat()
        } else {
            all.clone()
        };
        let v = json!({
            "model": "m",
            "choices": [{"text": format!("{all}"), "logprobs": {"tokens": tokens, "token_logprobs": lps, "text_offset": offsets}}],
            "usage": {"prompt_tokens": tokens.len() - generated as usize, "completion_tokens": 1},
        });
        (v, prompt)
    }

    #[test]
    fn answer_tokens_are_found_from_the_end() {
        // Prompt "Q: x\nA:" + answer " yes sir", then a generated token.
        let toks = ["Q", ":", " x", "\n", "A", ":", " yes", " sir", "!"];
        let lps = [-1.0, -2.0, -3.0, -4.0, -5.0, -0.5, -0.25, -9.0];
        let lps: Vec<Option<f32>> = std::iter::once(None).chain(lps.map(Some)).collect();
        let (v, p) = echo(&toks, &lps, true);
        let e = parse_echo(&v, &p, " yes sir".len(), "m").unwrap();
        assert_eq!(e.answer_lp, vec![-0.5, -0.25]);
        assert_eq!(e.prompt_tokens, 8);
        // The generated token left out of the list (llama-cpp-python without BOS):
        // the same answer, the completion text tells.
        let (mut v, p) = echo(&toks[..8], &lps[..8], false);
        v["choices"][0]["text"] = json!(format!("{p}!"));
        assert_eq!(
            parse_echo(&v, &p, 8, "m").unwrap().answer_lp,
            vec![-0.5, -0.25]
        );
        // A token straddling the boundary belongs to the answer.
        let (v, p) = echo(
            &["Q", ":", "A: y", "es", "!"],
            &[None, Some(-1.0), Some(-2.0), Some(-3.0), Some(-9.0)],
            true,
        );
        assert_eq!(
            parse_echo(&v, &p, 3, "m").unwrap().answer_lp,
            vec![-2.0, -3.0]
        );
        // Another model's answer is refused.
        assert!(parse_echo(&v, &p, 3, "other")
            .unwrap_err()
            .contains("model `m`"));
        // No echo, no logprobs: clear messages.
        assert!(parse_echo(&v, "something else", 3, "m")
            .unwrap_err()
            .contains("echo"));
        let bare = json!({"choices": [{"text": "x"}]});
        assert!(parse_echo(&bare, "x", 1, "m")
            .unwrap_err()
            .contains("logprobs"));
    }

    #[test]
    fn truncation_cuts_at_the_budget_token() {
        let lps = [None, Some(-1.0), Some(-1.0), Some(-1.0), Some(-1.0)];
        let (v, p) = echo(&["ab", "cd", "e", "fg", "!"], &lps, true);
        assert_eq!(p, "abcdefg");
        let cut = |v: &Value, t: &str, b: usize, pre: bool| cut_at(v, t, b, pre).unwrap();
        assert_eq!(cut(&v, &p, 2, false).as_deref(), Some("abcd"));
        assert_eq!(cut(&v, &p, 4, false).as_deref(), Some("abcdefg"));
        // A prefix: the cut must leave two tokens after it.
        assert_eq!(cut(&v, &p, 2, true).as_deref(), Some("abcd"));
        assert_eq!(cut(&v, &p, 3, true), None);
        // The generated token missing from the list: nothing shifts.
        let (mut v, p) = echo(&["ab", "cd", "e", "fg"], &lps[..4], false);
        v["choices"][0]["text"] = json!(format!("{p}!"));
        assert_eq!(cut(&v, &p, 2, false).as_deref(), Some("abcd"));
        assert_eq!(cut(&v, &p, 3, false).as_deref(), Some("abcde"));
        // A BOS echoed as `<s>` before the text: skipped.
        let (mut v, _) = echo(&["<s>", "cd", "e", "fg", "!"], &lps, true);
        v["choices"][0]["text"] = json!("cdefg!");
        assert_eq!(cut(&v, "cdefg", 2, false).as_deref(), Some("cde"));
    }

    #[test]
    fn only_plain_http_urls_are_taken() {
        assert_eq!(
            normalise("http://127.0.0.1:8000/v1/").unwrap(),
            "http://127.0.0.1:8000/v1"
        );
        for bad in [
            "https://x/v1",
            "ftp://x",
            "127.0.0.1:8000",
            "http://",
            "http:///v1",
        ] {
            assert!(normalise(bad).is_err(), "{bad}");
        }
    }
}
