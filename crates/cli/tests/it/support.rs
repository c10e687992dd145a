//! The real binary: a `tasktape serve` process on a free loopback port, and
//! helpers to run the client verbs against it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub base: String,
    /// Every line it wrote to stderr so far.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Its stderr lines; once it has exited, all of them.
    pub fn log_lines(&mut self) -> Vec<String> {
        if self.child.try_wait().ok().flatten().is_some()
            && let Some(reader) = self.reader.take()
        {
            let _ = reader.join();
        }
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what its server said (CI keeps only the
        // test's output).
        if std::thread::panicking() {
            let lines = self.log_lines();
            let from = lines.len().saturating_sub(60);
            eprintln!(
                "--- the last {} log lines of the server at {} ---",
                lines.len() - from,
                self.base
            );
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
    }
}

pub fn tasktape() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tasktape"));
    command
        .env_remove("TASKTAPE_TOKEN")
        .env_remove("TASKTAPE_LISTEN")
        .env_remove("TASKTAPE_DATA_DIR")
        .env_remove("TASKTAPE_URL")
        .env_remove("TASKTAPE_STORE")
        .env_remove("TASKTAPE_INSTANCE_ID")
        .env_remove("XDG_CONFIG_HOME");
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    command
}

/// Starts `tasktape serve` on a free loopback port and waits until it listens.
pub fn serve(data_dir: &Path, extra: &[&str]) -> Server {
    serve_with_env(data_dir, extra, &[])
}

pub fn serve_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut command = tasktape();
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tasktape starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&logs);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some((scheme, rest)) = rest.split_once("://")
            {
                // Text or JSON logs: the address ends where its characters do.
                let address: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                    .collect();
                let _ = tx.send(format!("{scheme}://{address}"));
            }
            kept.lock().unwrap().push(line);
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server announced its address");
    Server {
        child,
        base,
        logs,
        reader: Some(reader),
    }
}

/// Sends SIGTERM and waits for the process to exit, at most `limit`.
pub async fn terminate(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let since = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            return exit;
        }
        assert!(since.elapsed() < limit, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a finished client verb left behind.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// A client verb aimed at `base`, with `home` as its home directory (where
/// `.config/tasktape/client.toml` is looked up), stdout a pipe.
pub fn client(base: &str, home: &Path) -> Command {
    let mut command = tasktape();
    command
        .env("HOME", home)
        .env("TASKTAPE_URL", base)
        .stdin(Stdio::null());
    command
}

/// Runs `command` to its end.
pub fn finish(command: &mut Command) -> Run {
    let output = command.output().expect("tasktape runs");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

/// Runs a client verb against `server` to its end.
pub fn run(server: &Server, home: &Path, args: &[&str]) -> Run {
    finish(client(&server.base, home).args(args))
}

/// Polls `GET /v1/tasks/{id}` until `done(status)` holds (10 s at most).
pub async fn wait_status(base: &str, task_id: &str, done: impl Fn(&str) -> bool) -> String {
    let http = reqwest::Client::new();
    let since = Instant::now();
    loop {
        let row: serde_json::Value = http
            .get(format!("{base}/v1/tasks/{task_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = row["status"].as_str().unwrap().to_owned();
        if done(&status) {
            return status;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "task {task_id} stayed {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server's `tasktape_followers{kind="…"}` gauge, scraped from `/metrics`.
pub async fn followers(base: &str, kind: &str) -> u64 {
    let text = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("tasktape_followers{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// Waits (10 s at most) until the server counts `at_least` followers of `kind`.
pub async fn wait_followers(base: &str, kind: &str, at_least: u64) {
    let since = Instant::now();
    while followers(base, kind).await < at_least {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "no {kind} follower connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Submits `echo` with `params` over HTTP (with `token` when given); its id.
pub async fn submit_echo_http(
    server: &Server,
    token: Option<&str>,
    params: serde_json::Value,
) -> String {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/echo", server.base))
        .json(&params);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let handle: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
    handle["task_id"].as_str().unwrap().to_owned()
}
