//! Arbitrary request bodies on every route, through the router in memory: a 2xx or a
//! 4xx/503 JSON answer, never a panic or a 500. Uses the fetched MiniLM.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::OnceLock;
use tower::ServiceExt;
use uae_serve::{router, App, ServeConfig};

fn app() -> &'static axum::Router {
    static R: OnceLock<axum::Router> = OnceLock::new();
    R.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
        let enc = uae_search::load_encoder(&dir, false).expect("run scripts/fetch-models.sh");
        router(App::new(enc, 0, ServeConfig::default()))
    })
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        prop_oneof![
            Just(r#"{"input": "x"}"#.to_string()),
            Just(r#"{"input": [[1, 2]]}"#.to_string()),
            Just(r#"{"inputs": ["a", ""]}"#.to_string()),
            Just(r#"{"query": "q", "texts": ["a"]}"#.to_string()),
            Just(r#"{"query": "q", "k": 1}"#.to_string()),
            Just(r#"{"input": {"a": null}, "encoding_format": "hex"}"#.to_string()),
            "[\\[\\]{}\":,0-9a-z ]{0,40}",
        ]
        .prop_map(String::into_bytes),
    ]
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_body_on_any_route_gets_a_json_answer(body in bodies(), route in 0usize..6) {
        let path = ["/v1/embeddings", "/embeddings", "/embed", "/rerank", "/search", "/nowhere"][route];
        let req = Request::post(path).body(Body::from(body)).unwrap();
        let resp = rt().block_on(app().clone().oneshot(req)).unwrap();
        let status = resp.status().as_u16();
        prop_assert!(status == 200 || (400..500).contains(&status) || status == 503, "{path}: {status}");
        let bytes = rt().block_on(axum::body::to_bytes(resp.into_body(), 1 << 24)).unwrap();
        prop_assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
    }
}

fn call(r: &axum::Router, path: &str, body: &str) -> (u16, serde_json::Value) {
    let req = Request::post(path)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = rt().block_on(r.clone().oneshot(req)).unwrap();
    let status = resp.status().as_u16();
    let bytes = rt()
        .block_on(axum::body::to_bytes(resp.into_body(), 1 << 24))
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Before the corpus is embedded, searches and /health answer 503 while embeddings
/// already work; with truncation off, an input past the model's limit is a 422.
#[test]
fn not_ready_is_503_and_no_truncate_is_422() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
    let enc = uae_search::load_encoder(&dir, false).expect("run scripts/fetch-models.sh");
    let cfg = ServeConfig {
        truncate: false,
        ..Default::default()
    };
    let r = router(App::new(enc, 10, cfg));
    assert_eq!(call(&r, "/search", r#"{"query": "q"}"#).0, 503);
    let req = Request::get("/health").body(Body::empty()).unwrap();
    assert_eq!(
        rt().block_on(r.clone().oneshot(req))
            .unwrap()
            .status()
            .as_u16(),
        503
    );
    assert_eq!(call(&r, "/embed", r#"{"inputs": "short"}"#).0, 200);
    let long = format!(r#"{{"inputs": "{}"}}"#, "word ".repeat(600));
    let (s, body) = call(&r, "/embed", &long);
    assert_eq!(s, 422, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("truncation is off"));
    // A request may turn truncation back on.
    let long = format!(
        r#"{{"inputs": "{}", "truncate": true}}"#,
        "word ".repeat(600)
    );
    assert_eq!(call(&r, "/embed", &long).0, 200);
}

/// The explorer's routes over a small label folder, with any query string or path
/// segment: a JSON answer (2xx, 4xx), never a panic or a 500.
fn explorer() -> &'static axum::Router {
    static R: OnceLock<(axum::Router, tempfile::TempDir)> = OnceLock::new();
    &R.get_or_init(|| {
        use uae_artifacts::labels::{LabeledCandidate, LabeledGroup};
        let d = tempfile::tempdir().unwrap();
        let groups: Vec<LabeledGroup> = (0..5)
            .map(|i| LabeledGroup {
                question_id: format!("q{i}"),
                paper_id: String::new(),
                question: format!("question {i}?"),
                answers: vec!["a".into()],
                nll_without: vec![2.0],
                candidates: (0..i)
                    .map(|j| LabeledCandidate {
                        passage_id: format!("p{j}"),
                        text: "t".into(),
                        is_gold: j == 0,
                        source: "dense".into(),
                        utility: j as f32 - 1.0,
                        per_answer: vec![j as f32 - 1.0],
                    })
                    .collect(),
            })
            .collect();
        LabeledGroup::write_all(d.path(), &groups).unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
        let enc = uae_search::load_encoder(&dir, false).expect("run scripts/fetch-models.sh");
        let x = uae_serve::explore::Explorer {
            labels: Some(uae_serve::explore::LabelsView::open(d.path()).unwrap()),
            ..Default::default()
        };
        let r = uae_serve::router_with(
            App::new(enc, 0, ServeConfig::default()),
            Some(std::sync::Arc::new(x)),
        );
        (r, d)
    })
    .0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_query_on_the_explorer_gets_a_json_answer(
        query in "[a-z_=&%0-9.+/-]{0,40}",
        segment in "[a-zA-Z0-9._%-]{1,12}",
        route in 0usize..5,
    ) {
        let path = match route {
            0 => format!("/api/labels?{query}"),
            1 => format!("/api/labels/{segment}"),
            2 => format!("/api/compare/questions?{query}"),
            3 => format!("/api/compare/questions/{segment}"),
            _ => format!("/api/labels/histogram?{query}"),
        };
        let Ok(req) = Request::get(path.as_str()).body(Body::empty()) else {
            return Ok(());
        };
        let resp = rt().block_on(explorer().clone().oneshot(req)).unwrap();
        let status = resp.status().as_u16();
        prop_assert!(status == 200 || (400..500).contains(&status), "{path}: {status}");
        let bytes = rt().block_on(axum::body::to_bytes(resp.into_body(), 1 << 24)).unwrap();
        prop_assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(), "{path}");
    }
}
