//! A typed async client for tasktape's HTTP API (WIRE.md parts A and B).
//!
//! Every route has a method; error envelopes come back as
//! [`ClientError::Api`] with the server's `code`, `message` and `detail`;
//! [`Client::follow`] reads a task's tape as it is written, by long-poll or
//! Server-Sent Events, and resumes after a dropped connection from the last
//! seq it saw, so no event is skipped or repeated.
//!
//! ```no_run
//! use tasktape_client::{Client, FollowMode, Submission};
//! use tasktape_client::EventBody;
//!
//! # async fn demo() -> tasktape_client::Result<()> {
//! let client = Client::new("http://127.0.0.1:8765", None)?;
//! let handle = client
//!     .submit(&Submission::new("echo", serde_json::json!({"count": 3})))
//!     .await?;
//! let mut tape = client.follow(handle.task_id, 0, FollowMode::Sse);
//! while let Some(event) = tape.next().await? {
//!     if let EventBody::Progress { current, total, .. } = event.body {
//!         println!("{current}/{total}");
//!     }
//! }
//! println!("{:?}", client.task(handle.task_id).await?.status);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`error`]: [`ClientError`] and the envelope's [`ServerError`].
//! - the bodies it sends and reads are `tasktape-wire`'s (re-exported):
//!   [`Submission`], [`ListQuery`], the response bodies.
//! - [`follow`]: the resuming follow loop.
//!
//! Every request carries a W3C `traceparent` when the calling span is traced
//! (an OpenTelemetry layer is installed), so the server's spans continue the
//! caller's trace.

pub mod error;
pub mod follow;
pub mod worker;

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use error::{ClientError, Result, ServerError};
pub use follow::{FollowMode, Follower};
pub use tasktape_wire::metadata;
pub use tasktape_wire::worker as protocol;
pub use tasktape_wire::{
    BatchResult, BulkCancelAnswer, BulkRetryAnswer, CancelAnswer, ErrorInfo, Event, EventBody,
    EventKind, EventsPage, Links, OpInfo, OpsList, RetryPolicy, ScheduleInfo, ScheduleList,
    ServerInfo, Status, StatusFilter, TaskFilter, TaskHandle, TaskId, TaskPage, TaskResult,
    TaskRow, TaskSummary, Timestamp,
};
pub use tasktape_wire::{Health, ListQuery, MAX_BATCH_SUBMISSIONS, Metadata, Ready, Submission};
pub use worker::WorkerSignal;

/// How long an ordinary call may take (long-polls get their wait on top).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on one tasktape server; cheap to clone (connections are pooled).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for the server at `base_url` (`http://host:port` or
    /// `https://…`), sending `token` as a bearer token when given. HTTPS
    /// trusts the system's root certificates.
    pub fn new(base_url: &str, token: Option<&str>) -> Result<Self> {
        Self::with_ca_cert(base_url, token, None)
    }

    /// Like [`Client::new`], trusting the PEM certificates in `ca_pem` too
    /// (a private CA, or a self-signed server certificate).
    pub fn with_ca_cert(
        base_url: &str,
        token: Option<&str>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = base_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|error| invalid(&error.to_string()))?;
        match parsed.scheme() {
            "http" | "https" => {}
            _ => return Err(invalid("the scheme must be http or https")),
        }
        if parsed.host_str().is_none() {
            return Err(invalid("no host"));
        }
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::InvalidUrl {
                    url: base.clone(),
                    reason: "the token holds characters a header cannot carry".to_owned(),
                }
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| invalid("the CA certificate file holds no PEM certificate"))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(concat!("tasktape-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| invalid(&error.to_string()))?;
        Ok(Client { http, base })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /v1/healthz`.
    pub async fn healthz(&self) -> Result<Health> {
        self.call(Method::GET, "/v1/healthz", None).await
    }

    /// `GET /v1/readyz` (a 503 while the store is unavailable).
    pub async fn readyz(&self) -> Result<Ready> {
        self.call(Method::GET, "/v1/readyz", None).await
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<ServerInfo> {
        self.call(Method::GET, "/v1/info", None).await
    }

    /// `GET /v1/ops`: the ops the server runs.
    pub async fn ops(&self) -> Result<Vec<OpInfo>> {
        #[derive(serde::Deserialize)]
        struct Ops {
            ops: Vec<OpInfo>,
        }
        let ops: Ops = self.call(Method::GET, "/v1/ops", None).await?;
        Ok(ops.ops)
    }

    /// `POST /v1/tasks`: start a task of any registered op.
    pub async fn submit(&self, submission: &Submission) -> Result<TaskHandle> {
        let body = serde_json::to_value(submission).expect("a submission serializes");
        self.call(Method::POST, "/v1/tasks", Some(body)).await
    }

    /// `POST /v1/tasks/batch`: up to 10,000 submissions at once; one result
    /// per submission, in order (a handle, or that submission's error).
    pub async fn submit_batch(&self, submissions: &[Submission]) -> Result<Vec<BatchResult>> {
        let body = serde_json::json!({ "tasks": submissions });
        let answer: tasktape_wire::BatchResults = self
            .call(Method::POST, "/v1/tasks/batch", Some(body))
            .await?;
        Ok(answer.results)
    }

    /// `POST /v1/echo`: dikw's echo op.
    pub async fn echo(&self, count: u64, delay_ms: u64) -> Result<TaskHandle> {
        let body = serde_json::json!({"count": count, "delay_ms": delay_ms});
        self.call(Method::POST, "/v1/echo", Some(body)).await
    }

    /// `GET /v1/tasks`: one page, newest first.
    pub async fn list(&self, query: &ListQuery) -> Result<TaskPage> {
        let pairs = query.to_pairs();
        let request = self.request(Method::GET, "/v1/tasks").query(&pairs);
        self.send(request, "/v1/tasks", CALL_TIMEOUT).await
    }

    /// `POST /v1/tasks/cancel`: cancels every pending or running task the
    /// filter matches.
    pub async fn cancel_matching(&self, filter: &TaskFilter) -> Result<BulkCancelAnswer> {
        let body = serde_json::to_value(filter).expect("a filter serializes");
        self.call(Method::POST, "/v1/tasks/cancel", Some(body))
            .await
    }

    /// `POST /v1/tasks/retry`: a new task for every finished task the
    /// filter matches.
    pub async fn retry_matching(&self, filter: &TaskFilter) -> Result<BulkRetryAnswer> {
        let body = serde_json::to_value(filter).expect("a filter serializes");
        self.call(Method::POST, "/v1/tasks/retry", Some(body)).await
    }

    /// `GET /v1/schedules`.
    pub async fn schedules(&self) -> Result<ScheduleList> {
        self.call(Method::GET, "/v1/schedules", None).await
    }

    /// `GET /v1/tasks/{id}`: the full row.
    pub async fn task(&self, task_id: TaskId) -> Result<TaskRow> {
        self.call(Method::GET, &format!("/v1/tasks/{task_id}"), None)
            .await
    }

    /// `GET /v1/tasks/{id}/result`: a terminal task's outcome (an
    /// `ServerError` with code `task_not_terminal` before it ends).
    pub async fn result(&self, task_id: TaskId) -> Result<TaskResult> {
        self.call(Method::GET, &format!("/v1/tasks/{task_id}/result"), None)
            .await
    }

    /// `GET /v1/tasks/{id}/events`: one page of the tape from `from_seq`, at
    /// most `limit` (1..=1000) events; with `wait` > 0 the server holds an
    /// empty page of a live task until an event lands (at most 60 s).
    pub async fn events(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: u32,
        wait: Duration,
    ) -> Result<EventsPage> {
        let path = format!("/v1/tasks/{task_id}/events");
        let wait_secs = wait.as_secs_f64().min(60.0);
        let request = self.request(Method::GET, &path).query(&[
            ("from_seq", from_seq.to_string()),
            ("limit", limit.to_string()),
            ("wait", format!("{wait_secs}")),
        ]);
        self.send(request, &path, CALL_TIMEOUT + wait).await
    }

    /// `POST /v1/tasks/{id}/cancel` (idempotent).
    pub async fn cancel(&self, task_id: TaskId) -> Result<CancelAnswer> {
        self.call(Method::POST, &format!("/v1/tasks/{task_id}/cancel"), None)
            .await
    }

    /// `DELETE /v1/tasks/{id}`: forget a terminal task and its tape.
    pub async fn delete(&self, task_id: TaskId) -> Result<()> {
        let path = format!("/v1/tasks/{task_id}");
        self.exchange(
            self.request(Method::DELETE, &path),
            &path,
            Some(CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    /// Reads `task_id`'s tape from `from_seq` as it is written; see
    /// [`Follower`].
    pub fn follow(&self, task_id: TaskId, from_seq: u64, mode: FollowMode) -> Follower {
        Follower::new(self.clone(), task_id, from_seq, mode)
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        // Continue the caller's trace on the server (W3C trace context).
        match traceparent() {
            Some(value) => request.header("traceparent", value),
            None => request,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request, path, CALL_TIMEOUT).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        path: &str,
        timeout: Duration,
    ) -> Result<T> {
        let response = self.exchange(request, path, Some(timeout)).await?;
        let url = format!("{}{path}", self.base);
        let body = response
            .bytes()
            .await
            .map_err(|error| error::transport(&url, &self.base, error))?;
        serde_json::from_slice(&body).map_err(|error| ClientError::Protocol {
            url,
            reason: format!("cannot read the body: {error}"),
        })
    }

    /// Sends `request`; a non-2xx answer becomes [`ClientError::Api`].
    pub(crate) async fn exchange(
        &self,
        request: RequestBuilder,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let request = match timeout {
            Some(timeout) => request.timeout(timeout),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|error| error::transport(&url, &self.base, error))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(ServerError::from_body(status.as_u16(), &body).into())
    }
}

/// The current span's context as a W3C `traceparent`, when it is traced
/// (an OpenTelemetry layer is installed and the span is recorded).
fn traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    })
}
