//! The spans a request and the task it starts leave, through an in-memory
//! OpenTelemetry exporter: the request continues the caller's W3C trace; the
//! run is a new root `task.<op>` linked to the request, with its id, op and
//! status; a failed run is an error with its message, a cancelled one is not.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Value as OtelValue;
use opentelemetry::trace::{SpanId, SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::Value;
use tasktape_core::{FnOp, Manager, ManagerConfig, OpError, OpRegistry, Store};
use tasktape_server::{AppState, ServerConfig, router};
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::App;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

async fn traced_app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("t.db"))).unwrap());
    let mut ops = OpRegistry::with_builtins();
    ops.register(FnOp::new("fails", "always fails", |_, _| async move {
        Err(OpError::new("boom", "it broke"))
    }));
    ops.register(FnOp::new(
        "forever",
        "until cancelled",
        |_, reporter| async move {
            reporter.cancelled().await;
            Ok(Value::Null)
        },
    ));
    let config = ManagerConfig {
        task_tracing: Arc::new(tasktape_telemetry::OtelTaskTracing),
        cancel_grace: Duration::from_millis(200),
        ..ManagerConfig::default()
    };
    let manager = Manager::start(store, ops, config).await.unwrap();
    let shutdown = CancellationToken::new();
    let router = router(AppState::new(
        manager.clone(),
        ServerConfig::default(),
        shutdown.clone(),
    ));
    App::from_parts(router, manager, shutdown, dir)
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a OtelValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> String {
    attribute(span, key)
        .unwrap_or_else(|| panic!("{} has no {key}: {:?}", span.name, span.attributes))
        .as_str()
        .into_owned()
}

/// The run span of task `task_id`.
fn run_of<'a>(spans: &'a [SpanData], task_id: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|span| attribute(span, "task.id").is_some_and(|id| id.as_str() == task_id))
        .unwrap_or_else(|| panic!("no run span for {task_id}"))
}

#[tokio::test(flavor = "current_thread")]
async fn a_run_is_a_root_span_linked_to_the_request_that_submitted_it() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = traced_app().await;
    let traceparent = format!("00-{TRACE}-{CALLER}-01");
    let caller = [
        ("traceparent", traceparent.as_str()),
        ("content-type", "application/json"),
    ];

    let submit = |body: &'static str| {
        let app = &app;
        async move {
            let answer = app.call("POST", "/v1/tasks", Some(body), &caller).await;
            assert_eq!(answer.status.as_u16(), 200, "{}", answer.text);
            answer.json()["task_id"].as_str().unwrap().to_owned()
        }
    };
    let ok = submit(r#"{"op":"echo","params":{"count":2}}"#).await;
    app.wait_final(&ok).await;
    let failed = submit(r#"{"op":"fails","params":{}}"#).await;
    app.wait_final(&failed).await;
    let cancelled = submit(r#"{"op":"forever","params":{}}"#).await;
    app.wait_status(&cancelled, "running").await;
    app.post(&format!("/v1/tasks/{cancelled}/cancel"), "").await;
    app.wait_final(&cancelled).await;
    // The run's span closes just after its final is written: wait for the
    // three task spans.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let spans = loop {
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let runs = spans
            .iter()
            .filter(|span| span.name.starts_with("task."))
            .count();
        if runs >= 3 {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task spans never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let requests: Vec<_> = spans
        .iter()
        .filter(|span| span.name == "POST /v1/tasks")
        .collect();
    assert_eq!(
        requests.len(),
        3,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for request in &requests {
        assert_eq!(request.span_kind, SpanKind::Server);
        assert_eq!(
            request.span_context.trace_id().to_string(),
            TRACE,
            "continues the caller's trace"
        );
        assert_eq!(request.parent_span_id.to_string(), CALLER);
        assert_eq!(text(request, "http.route"), "/v1/tasks");
        assert_eq!(
            attribute(request, "http.response.status_code")
                .map(OtelValue::as_str)
                .as_deref(),
            Some("200")
        );
    }

    for (task_id, op, status) in [
        (&ok, "echo", "succeeded"),
        (&failed, "fails", "failed"),
        (&cancelled, "forever", "cancelled"),
    ] {
        let run = run_of(&spans, task_id);
        assert_eq!(run.name, format!("task.{op}"));
        assert_eq!(
            run.parent_span_id,
            SpanId::INVALID,
            "a run is a new root span"
        );
        assert_ne!(
            run.span_context.trace_id().to_string(),
            TRACE,
            "in a trace of its own"
        );
        assert_eq!(text(run, "task.op"), op);
        assert_eq!(text(run, "task.status"), status);
        // Linked (not parented) to the request that submitted it.
        assert_eq!(run.links.len(), 1, "{op}");
        let link = &run.links[0].span_context;
        assert_eq!(link.trace_id().to_string(), TRACE);
        assert!(
            requests
                .iter()
                .any(|request| request.span_context.span_id() == link.span_id()),
            "the link points at a submitting request span"
        );
    }
    assert_eq!(run_of(&spans, &ok).status, Status::Ok);
    assert_eq!(
        run_of(&spans, &failed).status,
        Status::error("it broke"),
        "a failed run records its error"
    );
    assert_eq!(text(run_of(&spans, &failed), "error.code"), "boom");
    assert!(
        !matches!(run_of(&spans, &cancelled).status, Status::Error { .. }),
        "a cancelled run is not an error"
    );
}
