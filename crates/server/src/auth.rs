//! Bearer tokens on every route except the health probes and the
//! dashboard's page and assets (which hold no task data), each token with a
//! scope, and one audit line per state-changing request.
//!
//! Scopes: `read` may only read (GET); `submit` may also submit and cancel;
//! `admin` may do everything (delete, bulk actions); `worker` may only use
//! the worker protocol (`/v1/worker/…`), which `admin` may use too. A
//! missing or unknown
//! token is 401 `unauthorized`; a known token outside its scope is 403
//! `forbidden`.

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tasktape_core::TaskId;

use crate::AppState;
use crate::error::ApiError;
use crate::table::Access;

/// What a token may do: `read` < `submit` < `admin`, each including the
/// ones before it; `worker` stands apart (the worker protocol only, which
/// `admin` includes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads only (GET).
    Read,
    /// Reads, submits and cancels.
    Submit,
    /// Everything: delete, bulk actions, the worker protocol.
    Admin,
    /// A remote worker: register, claim, report; nothing else.
    Worker,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
            Scope::Worker => "worker",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Scope::Read => 0,
            Scope::Submit => 1,
            Scope::Admin | Scope::Worker => 2,
        }
    }

    /// Whether a token of this scope may call a route that needs `need`.
    pub(crate) fn allows(self, need: Scope) -> bool {
        match (self, need) {
            (Scope::Admin, _) => true,
            (Scope::Worker, need) => need == Scope::Worker,
            (_, Scope::Worker) => false,
            (have, need) => have.rank() >= need.rank(),
        }
    }
}

/// A named token (`[[tokens]]` in the config file). The name, never the
/// token, appears in logs.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    /// Who holds it, for the audit log.
    pub name: String,
    /// The secret itself.
    pub token: String,
    /// What it may do.
    pub scope: Scope,
    /// For a `worker` token: the only ops it may serve (absent: any).
    #[serde(default)]
    pub ops: Option<Vec<String>>,
}

/// The ops a worker token may serve (`None`: any), for the register route.
#[derive(Clone, Debug)]
pub(crate) struct WorkerOps(pub(crate) Option<Vec<String>>);

/// The token a request was let in with (`None`: auth is off); handlers and
/// the audit line read it from the request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct Caller(Option<String>);

impl Caller {
    /// The token's name (`None` when the server has no tokens).
    pub(crate) fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// A task a state-changing response created or acted on, for the audit line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AuditTask(pub(crate) TaskId);

pub(crate) async fn require_token(state: &AppState, mut request: Request, next: Next) -> Response {
    let config = state.config();
    let path = request.uri().path();
    let open = config.token.is_none() && config.tokens.is_empty();
    // With auth off, or on an open route, nobody is asked for a token.
    let need = if open {
        None
    } else {
        match crate::table::access(request.method(), path) {
            Access::Token(scope) => Some(scope),
            Access::Probe | Access::Open | Access::Page => None,
        }
    };
    let Some(need) = need else {
        request.extensions_mut().insert(Caller(None));
        return audited(request, next).await;
    };
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            // The scheme is case-insensitive (RFC 9110, 11.1).
            let (scheme, token) = value.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case("bearer ").then_some(token)
        })
        .map(str::trim);
    let peer = request.extensions().get::<crate::refusals::Peer>().copied();
    let refuse = |error: ApiError, token: Option<&str>| {
        state.refusals().refused(
            peer,
            token,
            request.method(),
            path,
            error.status(),
            error.message(),
        );
        error.into_response()
    };
    let Some(presented) = presented else {
        return refuse(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer token: send Authorization: Bearer <token>",
            ),
            None,
        );
    };
    // Every token is compared (no early exit reveals which one matched).
    let mut found: Option<(&str, Scope, Option<&Vec<String>>)> = None;
    if let Some(token) = config.token.as_deref()
        && constant_time_eq(presented.as_bytes(), token.as_bytes())
    {
        found = Some(("token", Scope::Admin, None));
    }
    for named in &config.tokens {
        if constant_time_eq(presented.as_bytes(), named.token.as_bytes()) && found.is_none() {
            found = Some((&named.name, named.scope, named.ops.as_ref()));
        }
    }
    let Some((name, scope, ops)) = found else {
        return refuse(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid bearer token",
            ),
            None,
        );
    };
    if !scope.allows(need) {
        return refuse(
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {name:?} has scope {}; {} {path} needs {}",
                    scope.as_str(),
                    request.method(),
                    need.as_str()
                ),
            )
            .with_detail(serde_json::json!({"scope": scope.as_str(), "needed": need.as_str()})),
            Some(name),
        );
    }
    let ops = ops.cloned();
    request
        .extensions_mut()
        .insert(Caller(Some(name.to_owned())));
    request.extensions_mut().insert(WorkerOps(ops));
    audited(request, next).await
}

/// Runs the request; a state-changing one (not GET/HEAD/OPTIONS) logs one
/// INFO line: who (the token's name), method, route, task, status.
async fn audited(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |path| path.as_str().to_owned(),
    );
    let path_task = task_in_path(request.uri().path());
    let caller = request
        .extensions()
        .get::<Caller>()
        .and_then(|caller| caller.0.clone());
    let response = next.run(request).await;
    let task = response
        .extensions()
        .get::<AuditTask>()
        .map(|task| task.0)
        .or(path_task);
    tracing::info!(
        token = %caller.as_deref().unwrap_or("-"),
        %method,
        %route,
        task_id = %task.map(|task| task.to_string()).unwrap_or_else(|| "-".to_owned()),
        status = response.status().as_u16(),
        "audit"
    );
    response
}

/// The task id in `/v1/tasks/{id}…`, if any.
fn task_in_path(path: &str) -> Option<TaskId> {
    let rest = path.strip_prefix("/v1/tasks/")?;
    rest.split('/').next()?.parse().ok()
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn a_worker_token_may_use_the_worker_protocol_only() {
        assert!(Scope::Worker.allows(Scope::Worker));
        assert!(Scope::Admin.allows(Scope::Worker));
        for other in [Scope::Read, Scope::Submit, Scope::Admin] {
            assert!(!Scope::Worker.allows(other), "{other:?}");
        }
        assert!(!Scope::Submit.allows(Scope::Worker));
        assert!(!Scope::Read.allows(Scope::Worker));
        assert!(Scope::Submit.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Submit));
        assert!(!Scope::Submit.allows(Scope::Admin));
    }
}
