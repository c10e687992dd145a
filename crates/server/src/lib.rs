//! tasktape's HTTP server: the dikw-core compatible `/v1` task API (WIRE.md
//! part A), tasktape's additions (part B), SSE streaming, bearer auth and the
//! error envelope. Thin glue over [`tasktape_core::Manager`]: handlers parse
//! and validate, call the manager or the store, and render. Only this crate
//! knows HTTP.

mod auth;
pub use auth::{NamedToken, Scope};
mod dashboard;
mod deadline;
pub mod error;
mod jobs;
mod listen;
mod tls;
mod workers;
pub use tls::tls_config;
mod observe;
mod openapi;
mod origin;
mod params;
mod refusals;
mod routes;
mod slots;
mod stream;
mod strict_json;
mod table;
pub use table::{reserved_op_names, routes};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tasktape_core::Manager;
use tasktape_core::manager::Readiness;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;

/// How the HTTP layer behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Bearer token every route but the health probes requires, with the
    /// `admin` scope; `None` (and no `tokens`) = open.
    pub token: Option<String>,
    /// Named tokens with scopes, besides `token`.
    pub tokens: Vec<auth::NamedToken>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Interval of SSE comment heartbeats.
    pub heartbeat: Duration,
    /// Origins (`scheme://host[:port]`) allowed to call besides the
    /// server's own.
    pub allowed_origins: Vec<String>,
    /// `Host` names accepted besides the loopback names (`localhost`,
    /// `127.0.0.1`, `[::1]`); off loopback, `Host` is checked only when set.
    pub allowed_hosts: Vec<String>,
    /// What `GET /v1/info` reports as `engine_version` (for dikw-core
    /// clients that insist on a version); absent by default.
    pub compat_engine_version: Option<String>,
    /// Whether the server listens on a loopback address (then `Host` must
    /// be a loopback name or listed). [`serve`] sets it from its listener.
    pub loopback: bool,
    /// How long a request's whole body may take to arrive after its
    /// headers; past it the connection is closed (408).
    pub body_read_timeout: Duration,
    /// How long a client may take to send a request's headers; a keep-alive
    /// connection with no next request for as long is closed too.
    pub header_read_timeout: Duration,
    /// Most connections open at once; past it new ones wait (in the
    /// kernel's backlog) until one closes.
    pub max_connections: usize,
    /// Most streams and long-polls one token may hold open at once (past
    /// it: 429); counted only when the server has tokens.
    pub max_streams_per_token: usize,
    /// Serve HTTPS with this certificate and key (see [`tls_config`]);
    /// `None` = plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            tokens: Vec::new(),
            body_limit: 1 << 20,
            heartbeat: Duration::from_secs(15),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            compat_engine_version: None,
            loopback: false,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 20_000,
            max_streams_per_token: 5_000,
            tls: None,
        }
    }
}

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    metrics: observe::ServerMetrics,
    refusals: refusals::RefusalLog,
    slots: Arc<slots::Slots>,
    manager: Manager,
    config: ServerConfig,
    shutdown: CancellationToken,
    /// The last readiness check and when it ran (see [`AppState::readiness`]).
    ready: tokio::sync::Mutex<Option<(std::time::Instant, Readiness)>>,
}

impl AppState {
    /// State for a manager. `shutdown` ends long-polls and streams early.
    pub fn new(manager: Manager, config: ServerConfig, shutdown: CancellationToken) -> Self {
        AppState {
            inner: Arc::new(StateInner {
                metrics: observe::ServerMetrics::default(),
                refusals: refusals::RefusalLog::default(),
                slots: Arc::default(),
                manager,
                config,
                shutdown,
                ready: tokio::sync::Mutex::new(None),
            }),
        }
    }

    pub(crate) fn slots(&self) -> &Arc<slots::Slots> {
        &self.inner.slots
    }

    pub(crate) fn refusals(&self) -> &refusals::RefusalLog {
        &self.inner.refusals
    }

    pub(crate) fn manager(&self) -> &Manager {
        &self.inner.manager
    }

    pub(crate) fn metrics(&self) -> &observe::ServerMetrics {
        &self.inner.metrics
    }

    pub(crate) fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Whether this instance should get traffic. A drain answers at once;
    /// the store is checked at most once a second (probes that come
    /// meanwhile get the last answer; concurrent ones wait for the one
    /// check), and a check that takes over 2 s counts as a failure.
    pub(crate) async fn readiness(&self) -> Readiness {
        if self.manager().is_draining() {
            return Readiness::Draining;
        }
        let mut last = self.inner.ready.lock().await;
        if let Some((at, answer)) = &*last
            && at.elapsed() < Duration::from_secs(1)
        {
            return answer.clone();
        }
        let answer = self.manager().readiness(Duration::from_secs(2)).await;
        *last = Some((std::time::Instant::now(), answer.clone()));
        answer
    }
}

/// The whole `/v1` API as a router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().body_limit;
    let mut router = Router::new();
    for (path, handler) in table::method_routers() {
        router = router.route(path, handler);
    }
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(observe::request_span)
                .on_response(
                    |response: &Response, latency: Duration, span: &tracing::Span| {
                        observe::record_response(response, span);
                        tracing::debug!(status = response.status().as_u16(), ?latency, "response");
                    },
                ),
        )
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| -> Response {
                ApiError::internal("handler panicked", &"panic").into_response()
            },
        ))
        .with_state(state)
}

/// Every request's checks, in one middleware (one boxed future per request
/// where three layers held three, which a parked follower keeps for as
/// long as it waits): first no cross-site use (`origin`; refused before
/// anything else, uncounted), then counted and timed by route (`observe`),
/// then the token and its scope (`auth`).
async fn gate(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // A request refused here never has its body read: its answer says the
    // connection closes, so a client does not send its next request on a
    // socket the server is about to drop.
    let has_body = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0")
        || request
            .headers()
            .contains_key(axum::http::header::TRANSFER_ENCODING);
    let refused = |response: Response| close_if(has_body, response);
    let route = observe::route(&request);
    let started = std::time::Instant::now();
    if request.extensions().get::<listen::ProbesOnly>().is_some()
        && !origin::is_probe(request.uri().path())
    {
        let response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is at its connection limit (max_connections); only the health probes are answered on this connection",
        )
        .into_response();
        observe::count(&state, &route, &response, started);
        return close_if(true, response);
    }
    // A body over the limit is refused before a byte of it is read.
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.trim().parse::<u64>().ok());
    let body_limit = if request.uri().path() == "/v1/tasks/batch" {
        jobs::BATCH_BODY_LIMIT
    } else {
        state.config().body_limit
    };
    if declared.is_some_and(|length| length > body_limit as u64) {
        let response = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than the server's limit ({body_limit} bytes)"),
        )
        .into_response();
        observe::count(&state, &route, &response, started);
        return close_if(true, response);
    }
    let timed_out = deadline::TimedOut::default();
    if has_body {
        let body = std::mem::take(request.body_mut());
        *request.body_mut() =
            deadline::with_deadline(body, state.config().body_read_timeout, timed_out.clone());
    }
    if let Err(error) = origin::verdict(state.config(), request.headers(), request.uri()) {
        let why = error.message().to_owned();
        let response = error.into_response();
        observe::count(&state, &route, &response, started);
        state.refusals().refused(
            request.extensions().get::<refusals::Peer>().copied(),
            None,
            request.method(),
            request.uri().path(),
            response.status(),
            &why,
        );
        return refused(response);
    }
    let mut response = auth::require_token(&state, request, next).await;
    if timed_out.is_set() {
        response = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                state.config().body_read_timeout.as_secs()
            ),
        )
        .into_response();
        response = close_if(true, response);
    }
    observe::count(&state, &route, &response, started);
    match response.status() {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => refused(response),
        _ => response,
    }
}

/// `response` with `Connection: close` when the request's body went unread.
fn close_if(unread_body: bool, mut response: Response) -> Response {
    if unread_body {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn route_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    if !table::is_resource(uri.path()) {
        // Only the `POST /v1/{op}` pattern matched: to any other method this
        // path names nothing.
        return route_not_found(uri).await;
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// How the server stops: `drain` begins a graceful stop, `now` (a second
/// signal, say) cuts it short.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    /// Fired to begin the drain.
    pub drain: CancellationToken,
    /// Fired to stop at once, during the drain or instead of it.
    pub now: CancellationToken,
}

/// How long tasks still running when the drain ends get between their
/// cancel (exec programs: SIGTERM) and the abort (SIGKILL).
pub const WIND_DOWN: Duration = Duration::from_millis(500);

/// Serves the API on `listener` until `stop.drain` fires, then drains: the
/// manager starts no more tasks, `readyz` answers 503 (a load balancer
/// stops sending), requests and followers are still served, and running
/// tasks get up to `drain_timeout` to finish. Then (or at once when
/// `stop.now` fires) the rest winds down: long-polls and streams end,
/// tasks still running are cancelled and, after [`WIND_DOWN`] (none after
/// `stop.now`), aborted and finished `server_shutdown`; in-flight requests
/// get as long, and a client that holds its connection open longer is cut
/// off.
pub async fn serve(
    listener: tokio::net::TcpListener,
    manager: Manager,
    config: ServerConfig,
    stop: Stop,
    drain_timeout: Duration,
) -> std::io::Result<()> {
    let mut config = config;
    config.loopback = listener.local_addr()?.ip().is_loopback();
    // Fired when the drain ends: ends long-polls and streams, and the listener.
    let shutdown = CancellationToken::new();
    let limits = listen::Limits {
        header_read_timeout: config.header_read_timeout,
        max_connections: config.max_connections,
        tls: config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
    };
    let state = AppState::new(manager.clone(), config, shutdown.clone());
    let connections = std::sync::Arc::clone(&state.metrics().connections);
    let app = router(state);
    let server = listen::serve(listener, app, limits, shutdown.clone(), connections);
    tokio::pin!(server);
    let served = tokio::select! {
        result = &mut server => Some(result),
        () = stop.drain.cancelled() => None,
        () = stop.now.cancelled() => None,
    };
    let mut served = served;
    if served.is_none() && !stop.now.is_cancelled() {
        manager.drain();
        // The server goes on serving (polled here) while tasks finish.
        let drained = tokio::select! {
            () = manager.idle() => true,
            () = tokio::time::sleep(drain_timeout) => false,
            () = stop.now.cancelled() => false,
            result = &mut server => {
                served = Some(result);
                false
            }
        };
        tracing::info!(
            drained,
            running = manager.running_here(),
            "drain over; stopping"
        );
    }
    shutdown.cancel();
    let wind_down = if stop.now.is_cancelled() {
        Duration::ZERO
    } else {
        WIND_DOWN
    };
    let requests = async {
        match served {
            Some(result) => result,
            None => match tokio::time::timeout(wind_down + Duration::from_millis(300), &mut server)
                .await
            {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("requests still open after the shutdown deadline; closing them");
                    Ok(())
                }
            },
        }
    };
    let (drained, report) = tokio::join!(requests, manager.shutdown(wind_down));
    tracing::info!(unfinished = report.unfinished, "server stopped");
    drained
}
