//! A running `App` from a TOML config, and HTTP helpers against it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tasktape_app::{Builder, Config};
use tasktape_core::{Manager, TaskId};

pub struct Running {
    pub base: String,
    pub manager: Manager,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Starts an app from `toml` (a data dir and `listen` are added).
    pub async fn start(toml: &str) -> Running {
        Self::try_start(toml).await.expect("the app starts")
    }

    pub async fn try_start(toml: &str) -> Result<Running, tasktape_app::StartError> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n{toml}",
            dir.path().display().to_string()
        );
        let config = Config::from_toml(&text)?;
        let app = Builder::new(config).start().await?;
        let base = format!("http://{}", app.local_addr());
        let manager = app.manager().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(app.serve(async {
            let _ = stopped.await;
        }));
        Ok(Running {
            base,
            manager,
            http: reqwest::Client::new(),
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
        })
    }

    /// Stops the server (SIGTERM's path) and waits for it to end.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits `op` and returns its id.
    pub async fn submit(&self, op: &str, params: Value) -> TaskId {
        let (status, body) = self.post(&format!("/v1/{op}"), params).await;
        assert_eq!(status, 200, "submit {op}: {body}");
        body["task_id"].as_str().unwrap().parse().unwrap()
    }

    /// Waits (at most `limit`) for the task to end; returns its row.
    pub async fn finished(&self, task_id: TaskId, limit: Duration) -> Value {
        let task = self.manager.wait(task_id, limit).await.unwrap().unwrap();
        assert!(
            task.status.is_terminal(),
            "task {task_id} still {} after {limit:?}",
            task.status
        );
        self.get(&format!("/v1/tasks/{task_id}")).await.1
    }

    /// The whole tape, over HTTP.
    pub async fn tape(&self, task_id: TaskId) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from = 1;
        loop {
            let (status, page) = self
                .get(&format!(
                    "/v1/tasks/{task_id}/events?from_seq={from}&limit=1000"
                ))
                .await;
            assert_eq!(status, 200, "{page}");
            let batch = page["events"].as_array().unwrap().clone();
            events.extend(batch);
            from = page["next_from_seq"].as_u64().unwrap();
            if !page["has_more"].as_bool().unwrap() {
                return events;
            }
        }
    }

    /// Waits for the task's tape to hold an event matching `found`.
    pub async fn wait_for_event(&self, task_id: TaskId, found: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.tape(task_id).await.iter().any(&found) {
                return;
            }
            assert!(Instant::now() < deadline, "event never came");
            let _ = self.manager.wait(task_id, Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The log messages of a tape, with their levels.
pub fn logs(tape: &[Value]) -> Vec<(String, String)> {
    tape.iter()
        .filter(|event| event["type"] == "log")
        .map(|event| {
            (
                event["level"].as_str().unwrap().to_owned(),
                event["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A TOML `[ops.NAME]` running `sh -c SCRIPT` with extra keys (the
/// script's braces escaped: it holds no placeholder).
pub fn sh_op(name: &str, script: &str, extra: &str) -> String {
    let script = script.replace('{', "{{").replace('}', "}}");
    format!(
        "[ops.{name}]\ncommand = [\"sh\", \"-c\", {}]\n{extra}\n",
        json!(script)
    )
}

/// Whether a process exists (a zombie counts as existing).
pub fn process_exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `pid` is gone (not even a zombie).
pub async fn gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !process_exists(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
