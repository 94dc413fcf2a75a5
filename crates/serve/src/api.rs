//! Request and response types of every route, and the error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// `POST /search`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default)]
    pub scope: Option<String>,
    /// `dense` (default), `bm25`, or `hybrid`: both rankings (top 100 each, or `k`
    /// if more) fused by `fusion`; a hit's `score` is then its fused score.
    #[serde(default)]
    pub mode: SearchMode,
    /// Hybrid mode: `rrf` (default; reciprocal rank fusion, each ranking adds
    /// 1 / (`rrf_k` + rank)) or `convex` (`dense_weight` x the dense score + the rest
    /// x BM25's, each min-max normalised over its list), as `uae eval --fusion`.
    #[serde(default)]
    pub fusion: Option<uae_search::FusionKind>,
    /// `"fusion": "rrf"`: its constant (> 0; default 60).
    #[serde(default)]
    pub rrf_k: Option<f32>,
    /// `"fusion": "convex"`: the dense score's weight (0-1; default 0.7, QASPER
    /// dev's best for the base MiniLM: choose yours on dev).
    #[serde(default)]
    pub dense_weight: Option<f32>,
    /// With a calibrated model (dense or hybrid mode; a hybrid hit is valued by the
    /// model's cosine for it, and p(helps) by its BM25 rank too where the calibration
    /// reads one): keep only hits whose expected utility is at least this many nats. An empty list is an answer: retrieval will not help.
    #[serde(default)]
    pub min_utility: Option<f64>,
    /// With a calibrated model: keep only hits at least this likely to help (0-1).
    #[serde(default)]
    pub min_p_helps: Option<f64>,
    /// Keep the hits that fit this many tokens (whole passages in the served
    /// model's tokenizer, no special tokens), taken in `budget_order`; kept hits stay
    /// in score order.
    #[serde(default)]
    pub max_context_tokens: Option<usize>,
    /// With `max_context_tokens`: `rank` (default: best ranked first, each that
    /// still fits; no calibration needed) or `value_per_token` (a calibrated model:
    /// most expected utility per token first, hits expected to help by nothing left
    /// out). On QASPER test `rank` sent more of the evidence at every budget.
    #[serde(default)]
    pub budget_order: uae_eval::select::BudgetOrder,
}

/// Which ranking `/search` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    #[default]
    Dense,
    Bm25,
    Hybrid,
}

fn default_k() -> usize {
    uae_search::select::DEPTH
}

/// One search result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchHit {
    pub id: String,
    pub score: f32,
    pub text: String,
    pub scope: Option<String>,
    /// With a calibrated model (dense or hybrid mode): how much the passage is expected to
    /// lower the LLM's answer NLL, in nats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_utility: Option<f64>,
    /// With a calibrated model: the probability that it helps (lowers the NLL by at
    /// least 1 nat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_helps: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    pub took_ms: f64,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
    /// Whether the corpus is embedded (searches answer 503 until then).
    pub ready: bool,
    /// Shutting down: requests in flight finish, new ones should go elsewhere.
    #[serde(default)]
    pub draining: bool,
    pub passages: usize,
    pub model: String,
    pub bf16: bool,
}

/// `GET /info` (TEI's shape, plus the corpus size).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    pub model_id: String,
    pub dimension: usize,
    pub max_input_length: usize,
    pub max_batch_tokens: usize,
    pub max_batch_requests: usize,
    pub max_concurrent_requests: usize,
    pub max_client_batch_size: usize,
    pub payload_limit: usize,
    pub passages: usize,
    pub version: String,
}

/// OpenAI's `input`: a string, strings, token ids or lists of token ids (the
/// model's own vocabulary: ids from another tokenizer are not translated).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Ids(Vec<u32>),
    ManyIds(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    /// Little-endian f32 bytes, base64 (what the `openai` client asks for).
    Base64,
}

/// `POST /v1/embeddings` (and `/embeddings`).
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingsRequest {
    pub input: EmbeddingInput,
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// Accepted and echoed; the served model answers whatever is named.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub dimensions: Option<usize>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub embedding: EmbeddingValue,
    pub index: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: Usage,
}

/// TEI's `inputs`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TeiInputs {
    One(String),
    Many(Vec<String>),
}

/// `POST /embed` (TEI).
#[derive(Debug, Clone, Deserialize)]
pub struct EmbedRequest {
    pub inputs: TeiInputs,
    /// L2-normalise the vectors (default true).
    #[serde(default)]
    pub normalize: Option<bool>,
    /// Cut inputs longer than the model's limit (default: the server's setting).
    #[serde(default)]
    pub truncate: Option<bool>,
}

/// `POST /rerank` (TEI): bi-encoder scores of `texts` for `query`.
#[derive(Debug, Clone, Deserialize)]
pub struct RerankRequest {
    pub query: String,
    pub texts: Vec<String>,
    #[serde(default)]
    pub raw_scores: Option<bool>,
    #[serde(default)]
    pub return_text: Option<bool>,
    #[serde(default)]
    pub truncate: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankHit {
    pub index: usize,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// An error answer. OpenAI routes get OpenAI's shape
/// `{"error": {"message", "type", "code"}}`, the others TEI's
/// `{"error": "...", "error_type": "..."}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub openai: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            openai: false,
        }
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn openai(mut self) -> ApiError {
        self.openai = true;
        self
    }

    /// The error kind named in the body, one per status.
    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::TOO_MANY_REQUESTS => "overloaded",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            _ => "server_error",
        }
    }
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    error: OpenAiErrorBody<'a>,
}

#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: String,
}

/// The non-OpenAI error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub error_type: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.kind();
        let body = if self.openai {
            serde_json::to_string(&OpenAiError {
                error: OpenAiErrorBody {
                    message: &self.message,
                    kind,
                    code: self.status.as_u16().to_string(),
                },
            })
        } else {
            serde_json::to_string(&ErrorBody {
                error: self.message.clone(),
                error_type: kind.into(),
            })
        }
        .expect("error bodies serialise; this is a bug");
        let mut resp = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        let headers = resp.headers_mut();
        match self.status {
            // The body was not read to its end: the connection cannot carry another
            // request, and the client must be told so before it tries.
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT => {
                headers.insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
            }
            _ => {}
        }
        resp
    }
}
