//! The one route table: every route the server serves, with who may call
//! it. The router, the auth rules (scope, open routes), the origin check's
//! probe exemption, the reserved op names, 404-vs-405 and the route list
//! the OpenAPI description is checked against all come from [`TABLE`].

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post};

use crate::auth::Scope;
use crate::routes as api;
use crate::{AppState, dashboard, jobs, observe, openapi, stream, workers};

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// A token with this scope (when auth is on).
    Token(Scope),
    /// A health probe: open, and answered whatever the `Host` (a load
    /// balancer sends what it likes).
    Probe,
    /// Open: holds no task data (the API's description).
    Open,
    /// Open: a dashboard page or asset (not an API name).
    Page,
}

/// One route and method.
pub(crate) struct Route {
    /// `GET`, `POST`, `DELETE`.
    pub(crate) method: &'static str,
    /// axum's pattern (`{name}` is one segment).
    pub(crate) path: &'static str,
    pub(crate) access: Access,
    handler: fn() -> MethodRouter<AppState>,
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: fn() -> MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

const READ: Access = Access::Token(Scope::Read);
const SUBMIT: Access = Access::Token(Scope::Submit);
const ADMIN: Access = Access::Token(Scope::Admin);
const WORKER: Access = Access::Token(Scope::Worker);

/// Every route the server serves.
pub(crate) const TABLE: [Route; 36] = [
    route("GET", "/v1/healthz", Access::Probe, || get(api::healthz)),
    route("GET", "/v1/readyz", Access::Probe, || get(api::readyz)),
    route("GET", "/v1/info", READ, || get(api::info)),
    route("GET", "/v1/ops", READ, || get(api::list_ops)),
    route("GET", "/v1/stats", READ, || get(api::stats)),
    route("GET", "/v1/tasks", READ, || get(api::list_tasks)),
    route("POST", "/v1/tasks", SUBMIT, || post(api::submit_task)),
    route("GET", "/v1/tasks/{task_id}", READ, || get(api::get_task)),
    route("DELETE", "/v1/tasks/{task_id}", ADMIN, || {
        delete(api::delete_task)
    }),
    route("GET", "/v1/tasks/{task_id}/result", READ, || {
        get(api::get_result)
    }),
    route("GET", "/v1/tasks/{task_id}/events", READ, || {
        get(api::get_events)
    }),
    route("GET", "/v1/tasks/{task_id}/events/stream", READ, || {
        get(stream::stream_events)
    }),
    route("POST", "/v1/tasks/{task_id}/cancel", SUBMIT, || {
        post(api::cancel_task)
    }),
    route("POST", "/v1/tasks/cancel", ADMIN, || {
        post(jobs::bulk_cancel)
    }),
    route("POST", "/v1/tasks/retry", ADMIN, || post(jobs::bulk_retry)),
    route("POST", "/v1/tasks/batch", SUBMIT, || {
        post(jobs::submit_batch).layer(axum::extract::DefaultBodyLimit::max(jobs::BATCH_BODY_LIMIT))
    }),
    route("GET", "/v1/schedules", READ, || get(jobs::schedules)),
    route("GET", "/v1/workers", READ, || get(workers::list)),
    route("POST", "/v1/workers/{worker_id}/drain", ADMIN, || {
        post(workers::drain_worker)
    }),
    route("POST", "/v1/worker/register", WORKER, || {
        post(workers::register)
    }),
    route("POST", "/v1/worker/claim", WORKER, || post(workers::claim)),
    route("POST", "/v1/worker/report", WORKER, || {
        post(workers::report)
    }),
    route("POST", "/v1/worker/heartbeat", WORKER, || {
        post(workers::heartbeat)
    }),
    route("POST", "/v1/worker/drain", WORKER, || post(workers::drain)),
    route("POST", "/v1/worker/deregister", WORKER, || {
        post(workers::deregister)
    }),
    route("GET", "/v1/worker/signals", WORKER, || {
        get(workers::signals)
    }),
    route("POST", OP_ROUTE, SUBMIT, || post(api::submit_named)),
    route("GET", "/metrics", READ, || get(observe::metrics)),
    route("GET", "/openapi.json", Access::Open, || get(openapi::serve)),
    route("GET", "/", Access::Page, || get(dashboard::page)),
    route("GET", "/submit", Access::Page, || get(dashboard::page)),
    route("GET", "/workers", Access::Page, || get(dashboard::page)),
    route("GET", "/tasks/{task_id}", Access::Page, || {
        get(dashboard::page)
    }),
    route("GET", "/assets/app.js", Access::Page, || {
        get(dashboard::script)
    }),
    route("GET", "/assets/app.css", Access::Page, || {
        get(dashboard::style)
    }),
    route("GET", "/favicon.svg", Access::Page, || get(dashboard::icon)),
];

/// `POST /v1/{op}`: submit to an op by name; every other `/v1/` name is
/// the server's.
const OP_ROUTE: &str = "/v1/{op}";

/// Names kept for routes to come, besides the ones the table uses.
const KEPT_NAMES: [&str; 3] = ["openapi", "events", "dashboard"];

/// The table's routes, path by path, with their methods merged.
pub(crate) fn method_routers() -> Vec<(&'static str, MethodRouter<AppState>)> {
    let mut out: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for route in &TABLE {
        let handler = (route.handler)();
        match out.iter_mut().find(|(path, _)| *path == route.path) {
            Some((_, merged)) => *merged = std::mem::take(merged).merge(handler),
            None => out.push((route.path, handler)),
        }
    }
    out
}

/// Every route and method the router serves, as `(method, path)`.
pub fn routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    TABLE.iter().map(|route| (route.method, route.path))
}

/// Names an op may not have: the server's own names (an op is submitted
/// with `POST /v1/{op}`, so `/v1/tasks` could not be), and names kept
/// for routes to come.
pub fn reserved_op_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    let api = TABLE
        .iter()
        .filter(|route| route.access != Access::Page && route.path != OP_ROUTE);
    for route in api {
        let path = route.path.strip_prefix("/v1").unwrap_or(route.path);
        let Some(name) = path.trim_start_matches('/').split('/').next() else {
            continue;
        };
        if !name.is_empty() && !name.starts_with('{') && !names.contains(&name) {
            names.push(name);
        }
    }
    for name in KEPT_NAMES {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The routes of the pattern a request path matches (every method): the
/// most specific pattern wins (`/v1/tasks/cancel` over
/// `/v1/tasks/{task_id}`).
pub(crate) fn at(path: &str) -> impl Iterator<Item = &'static Route> {
    let best = TABLE
        .iter()
        .filter_map(|route| specificity(route.path, path).map(|rank| (rank, route.path)))
        .max_by_key(|(rank, _)| *rank)
        .map(|(_, pattern)| pattern);
    TABLE.iter().filter(move |route| Some(route.path) == best)
}

/// Who may call `method` on a request path. Openness is the path's (a
/// probe, the description, a page is open whatever the method: a wrong
/// one is then a plain 405); a path's scope is its route's, `HEAD` is
/// `GET`'s; what the table does not serve needs a scope by method
/// (reads for `GET`, `submit` for `POST`, `admin` for the rest).
pub(crate) fn access(method: &Method, path: &str) -> Access {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let mut scoped = None;
    for route in at(path) {
        match route.access {
            Access::Token(_) if route.method == method => scoped = Some(route.access),
            Access::Token(_) => {}
            open => return open,
        }
    }
    scoped.unwrap_or(Access::Token(match method {
        "GET" | "OPTIONS" => Scope::Read,
        "POST" => Scope::Submit,
        _ => Scope::Admin,
    }))
}

/// How many literal segments `pattern` shares with `path`, when it
/// matches it at all (a `{param}` matches one non-empty segment); no
/// allocation, as it runs for every request.
fn specificity(pattern: &str, path: &str) -> Option<usize> {
    let mut parts = pattern.trim_start_matches('/').split('/');
    let mut segments = path.trim_start_matches('/').split('/');
    let mut literal = 0;
    loop {
        match (parts.next(), segments.next()) {
            (None, None) => return Some(literal),
            (Some(part), Some(segment)) if part.starts_with('{') => {
                if segment.is_empty() {
                    return None;
                }
            }
            (Some(part), Some(segment)) if part == segment => literal += 1,
            _ => return None,
        }
    }
}

/// Whether `path` names a resource other than the `POST /v1/{op}` pattern
/// (a wrong method there is 405; elsewhere 404).
pub(crate) fn is_resource(path: &str) -> bool {
    TABLE
        .iter()
        .filter(|route| route.path != OP_ROUTE)
        .any(|route| specificity(route.path, path).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_open_routes_come_from_the_table() {
        let scope = |method: Method, path| access(&method, path);
        assert_eq!(scope(Method::GET, "/v1/tasks"), READ);
        assert_eq!(scope(Method::HEAD, "/v1/tasks"), READ);
        assert_eq!(scope(Method::POST, "/v1/echo"), SUBMIT);
        assert_eq!(scope(Method::POST, "/v1/tasks/x/cancel"), SUBMIT);
        assert_eq!(scope(Method::POST, "/v1/tasks/cancel"), ADMIN);
        assert_eq!(scope(Method::POST, "/v1/tasks/batch"), SUBMIT);
        assert_eq!(scope(Method::GET, "/v1/tasks/cancel"), READ);
        assert_eq!(scope(Method::DELETE, "/v1/tasks/x"), ADMIN);
        assert_eq!(scope(Method::PUT, "/v1/tasks"), ADMIN);
        assert_eq!(scope(Method::GET, "/nowhere"), READ);
        assert_eq!(scope(Method::GET, "/v1/readyz"), Access::Probe);
        assert_eq!(scope(Method::POST, "/v1/healthz"), Access::Probe);
        assert_eq!(scope(Method::POST, "/"), Access::Page);
        assert!(Scope::Submit.allows(Scope::Read) && Scope::Admin.allows(Scope::Submit));
        assert_eq!(scope(Method::POST, "/v1/worker/claim"), WORKER);
        assert_eq!(scope(Method::GET, "/v1/worker/signals"), WORKER);
        assert_eq!(scope(Method::GET, "/v1/workers"), READ);
        assert_eq!(scope(Method::POST, "/v1/workers/w1/drain"), ADMIN);
    }

    #[test]
    fn only_the_pages_and_assets_are_pages() {
        let page = |path| access(&Method::GET, path) == Access::Page;
        for open in [
            "/",
            "/submit",
            "/tasks/abc",
            "/assets/app.js",
            "/favicon.svg",
        ] {
            assert!(page(open), "{open}");
        }
        for closed in [
            "/v1/tasks",
            "/tasks/",
            "/tasks/a/b",
            "/metrics",
            "/assets/other.js",
        ] {
            assert!(!page(closed), "{closed}");
        }
    }

    #[test]
    fn reserved_names_and_resources() {
        let names = reserved_op_names();
        for name in [
            "tasks",
            "ops",
            "info",
            "healthz",
            "readyz",
            "stats",
            "metrics",
            "openapi",
            "openapi.json",
            "schedules",
            "events",
            "dashboard",
            "worker",
            "workers",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        assert_eq!(names.len(), 14, "{names:?}");
        assert!(is_resource("/v1/tasks/x/events/stream"));
        assert!(is_resource("/favicon.svg"));
        assert!(!is_resource("/v1/echo"));
    }
}
