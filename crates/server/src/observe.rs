//! What the HTTP layer adds to traces and metrics: one span per request
//! (named `METHOD /route`, continuing the caller's W3C trace), requests and
//! their latency by route and status code, connected followers by kind, and
//! `GET /metrics` rendering everything in Prometheus' text format.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use tasktape_core::Status;
use tasktape_core::metrics::{Counter, Exposition, Family, Gauge, HTTP_BUCKETS, Histogram};
use tracing::Span;

use crate::AppState;

/// The HTTP layer's own metrics.
#[derive(Debug)]
pub struct ServerMetrics {
    requests: Family<Counter>,
    latency: Family<Histogram>,
    followers: Family<Gauge>,
    /// Open HTTP connections.
    pub(crate) connections: Arc<Gauge>,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            requests: Family::new(&["route", "status"], &[]),
            latency: Family::new(&["route"], HTTP_BUCKETS),
            followers: Family::new(&["kind"], &[]),
            connections: Arc::default(),
        }
    }
}

impl ServerMetrics {
    /// Counts a follower of `kind` (`long_poll`, `sse`) until the guard drops.
    pub(crate) fn follower(&self, kind: &str) -> FollowerGuard {
        let gauge = self.followers.with(&[kind]);
        gauge.inc();
        FollowerGuard(gauge)
    }
}

/// Holds one follower in the gauge.
pub(crate) struct FollowerGuard(Arc<Gauge>);

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The route a request matched (`/v1/tasks/{task_id}`), or `unmatched`.
pub(crate) fn route(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned())
}

/// The request's span: `METHOD /route`, a child of the caller's span when
/// the request carries a W3C `traceparent`.
pub(crate) fn request_span(request: &Request) -> Span {
    let method = request.method();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        url.path = request.uri().path(),
        otel.kind = "server",
        http.request.method = tracing::field::Empty,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    tasktape_telemetry::continue_trace(&span, header("traceparent"), header("tracestate"));
    // What only a trace backend reads is added only when there is one: each
    // field costs every request a little formatting in the log layer.
    if tasktape_telemetry::traced(&span) {
        span.record("http.request.method", method.as_str());
        span.record("http.route", route);
    }
    span
}

/// Records the response's status on the request span (5xx is an error).
pub(crate) fn record_response(response: &Response, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Counts a request by route and status, and times it by route.
pub(crate) fn count(state: &AppState, route: &str, response: &Response, started: Instant) {
    let metrics = state.metrics();
    metrics
        .requests
        .with(&[route, response.status().as_str()])
        .inc();
    metrics.latency.with(&[route]).observe(started.elapsed());
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let manager = state.manager();
    let mut out = Exposition::new();
    manager.metrics().render(&mut out);
    out.single(
        "tasktape_tasks_running",
        "Tasks running on this instance.",
        "gauge",
        manager.running_here() as u64,
    );
    match manager.counts().await {
        Ok(counts) => out.single(
            "tasktape_tasks_pending",
            "Tasks waiting to run, in the whole store.",
            "gauge",
            counts.get(&Status::Pending).copied().unwrap_or(0),
        ),
        Err(error) => tracing::warn!(%error, "metrics: cannot count pending tasks"),
    }
    let server = state.metrics();
    out.gauges(
        "tasktape_followers",
        "Connected followers, by kind (long_poll, sse).",
        &server.followers,
    );
    out.single(
        "tasktape_http_connections",
        "Open HTTP connections (see max_connections).",
        "gauge",
        server.connections.get(),
    );
    out.counters(
        "tasktape_http_requests_total",
        "HTTP requests, by route and status code.",
        &server.requests,
    );
    out.histograms(
        "tasktape_http_request_duration_seconds",
        "HTTP request latency, by route.",
        &server.latency,
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    (headers, out.finish()).into_response()
}
