//! Traces and logs of the real binaries: `tasktape submit` → the HTTP
//! request → the task run, exported over OTLP/HTTP to a small receiver on
//! 127.0.0.1; and JSON logs carrying trace ids.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::support::{client, finish, serve_with_env};

/// An OTLP/HTTP receiver: every span posted to `/v1/traces`.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

async fn receiver() -> Receiver {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let store = Arc::clone(&store);
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        store.lock().unwrap().extend(scope.spans);
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, spans }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Value::StringValue(text) => text.clone(),
            other => format!("{other:?}"),
        })
}

impl Receiver {
    /// Waits until spans matching every name in `names` arrived.
    async fn wait_for(&self, names: &[&str]) -> Vec<Span> {
        let since = Instant::now();
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if names
                .iter()
                .all(|name| spans.iter().any(|span| span.name == *name))
            {
                return spans;
            }
            assert!(
                since.elapsed() < Duration::from_secs(20),
                "spans {names:?} did not all arrive; got {:?}",
                spans.iter().map(|span| &span.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_its_request_and_the_run_arrive_at_an_otlp_receiver_as_one_story() {
    let receiver = receiver().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let data = tempfile::tempdir().unwrap();
    let server = serve_with_env(data.path(), &[], &otel);
    let home = tempfile::tempdir().unwrap();
    let mut submit = client(&server.base, home.path());
    for (name, value) in otel {
        submit.env(name, value);
    }
    let submitted = finish(submit.args(["submit", "echo", "-p", "count=3", "--wait", "--plain"]));
    assert_eq!(submitted.code, 0, "{submitted:?}");

    let spans = receiver
        .wait_for(&["tasktape submit", "POST /v1/tasks", "task.echo"])
        .await;
    let find = |name: &str| spans.iter().find(|span| span.name == name).unwrap();
    let cli = find("tasktape submit");
    let request = find("POST /v1/tasks");
    let run = find("task.echo");
    // The CLI's span is the request's parent: one trace across processes.
    assert_eq!(
        request.trace_id, cli.trace_id,
        "the request continues the CLI's trace"
    );
    assert_eq!(request.parent_span_id, cli.span_id);
    // The run is a root of its own trace, linked to the request.
    assert!(run.parent_span_id.is_empty(), "a run is a root span");
    assert_ne!(run.trace_id, request.trace_id);
    assert_eq!(run.links.len(), 1);
    assert_eq!(run.links[0].trace_id, request.trace_id);
    assert_eq!(run.links[0].span_id, request.span_id);
    assert_eq!(attribute(run, "task.status").as_deref(), Some("succeeded"));
    assert_eq!(attribute(run, "task.op").as_deref(), Some("echo"));
    // The follow requests of --wait are in the CLI's trace too (a stream's
    // span ends with its connection, so it may come in a later export).
    let since = Instant::now();
    loop {
        let follows = receiver.spans.lock().unwrap().iter().any(|span| {
            span.name.starts_with("GET /v1/tasks/{task_id}/events") && span.trace_id == cli.trace_id
        });
        if follows {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "the follow requests continue the CLI's trace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_trace_and_span_ids_of_their_span() {
    let data = tempfile::tempdir().unwrap();
    let mut server = serve_with_env(
        data.path(),
        &["--log-format", "json"],
        &[("RUST_LOG", "info,tasktape_server=debug")],
    );
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let http = reqwest::Client::new();
    let answer = http
        .get(format!("{}/v1/ops", server.base))
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    // Stop the server and read everything it logged.
    crate::support::terminate(&mut server.child, Duration::from_secs(10), "server stops").await;
    let lines = server.log_lines();
    let mut parsed = Vec::new();
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        parsed.push(value);
    }
    let in_request: Vec<_> = parsed
        .iter()
        .filter(|line| line["span"] == "request")
        .collect();
    assert!(
        !in_request.is_empty(),
        "a log line inside the request span: {lines:#?}"
    );
    for line in in_request {
        assert_eq!(line["trace_id"], trace, "{line}");
        let span_id = line["span_id"].as_str().unwrap();
        assert_eq!(span_id.len(), 16);
        assert_ne!(
            span_id, "b7ad6b7169203331",
            "the request's own span, a child of the caller's"
        );
    }
    let outside: Vec<_> = parsed
        .iter()
        .filter(|line| line["span"].is_null())
        .collect();
    assert!(
        outside.iter().all(|line| line["trace_id"].is_null()),
        "no ids outside a span"
    );
}
