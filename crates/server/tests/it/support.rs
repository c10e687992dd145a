//! A router on a fresh SQLite store, and request helpers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tasktape_core::{FnOp, Manager, ManagerConfig, OpRegistry, Store};
use tasktape_server::{AppState, ServerConfig, router};
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub struct App {
    pub router: Router,
    _manager: Manager,
    _shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

/// An op that runs until cancelled.
fn forever() -> FnOp {
    FnOp::new(
        "forever",
        "runs until cancelled",
        |_params, reporter| async move {
            reporter.cancelled().await;
            Ok(Value::Null)
        },
    )
}

pub async fn app_with(config: ServerConfig) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("t.db"))).unwrap());
    let mut ops = OpRegistry::with_builtins();
    ops.register(forever());
    let manager_config = ManagerConfig {
        cancel_grace: Duration::from_millis(200),
        ..ManagerConfig::default()
    };
    let manager = Manager::start(store, ops, manager_config).await.unwrap();
    let shutdown = CancellationToken::new();
    let router = router(AppState::new(manager.clone(), config, shutdown.clone()));
    App {
        router,
        _manager: manager,
        _shutdown: shutdown,
        _dir: dir,
    }
}

pub async fn app() -> App {
    app_with(ServerConfig::default()).await
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text))
    }

    /// Asserts an error envelope with `status` and `code`; returns the error object.
    pub fn error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{}", self.text);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.text
        );
        body["error"].clone()
    }
}

impl App {
    /// An app from a router and what must outlive it.
    pub fn from_parts(
        router: Router,
        manager: Manager,
        shutdown: CancellationToken,
        dir: tempfile::TempDir,
    ) -> App {
        App {
            router,
            _manager: manager,
            _shutdown: shutdown,
            _dir: dir,
        }
    }

    /// Polls the row until it has `status` (10 s at most).
    pub async fn wait_status(&self, task_id: &str, status: &str) {
        for _ in 0..1000 {
            if self.get(&format!("/v1/tasks/{task_id}")).await.json()["status"] == status {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("task {task_id} never became {status}");
    }

    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = body.map_or_else(Body::empty, |text| Body::from(text.to_owned()));
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    /// `GET uri`, answered with its body still unread (for streams).
    pub async fn open(&self, uri: &str) -> axum::response::Response {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        self.router.clone().oneshot(request).await.unwrap()
    }

    pub async fn get(&self, uri: &str) -> Answer {
        self.call("GET", uri, None, &[]).await
    }

    pub async fn post(&self, uri: &str, body: &str) -> Answer {
        self.call("POST", uri, Some(body), &[]).await
    }

    /// Submits echo and returns the task id.
    pub async fn echo(&self, body: &str) -> String {
        let answer = self.post("/v1/echo", body).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json()["task_id"].as_str().unwrap().to_owned()
    }

    /// Long-polls until the task's `final`; returns the whole tape.
    pub async fn wait_final(&self, task_id: &str) -> Vec<Value> {
        let mut from = 0;
        let mut tape = Vec::new();
        for _ in 0..200 {
            let page = self
                .get(&format!(
                    "/v1/tasks/{task_id}/events?from_seq={from}&wait=10&limit=1000"
                ))
                .await
                .json();
            tape.extend(page["events"].as_array().unwrap().iter().cloned());
            from = page["next_from_seq"].as_u64().unwrap();
            if tape.last().is_some_and(|event| event["type"] == "final") {
                return tape;
            }
        }
        panic!("task {task_id} did not finish");
    }
}

/// The `tasktape_followers{kind="…"}` gauge in a `/metrics` text (0 when absent).
pub fn followers(metrics: &str, kind: &str) -> u64 {
    let prefix = format!("tasktape_followers{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}
