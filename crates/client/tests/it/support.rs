//! A real tasktape server on 127.0.0.1:0 (SQLite in a temp dir) with a few
//! test ops, and a TCP proxy in front of it that can cut every connection.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tasktape_client::Client;
use tasktape_core::{FnOp, Manager, ManagerConfig, OpError, OpRegistry, Store};
use tasktape_server::ServerConfig;
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub base: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestServer {
    pub fn client(&self) -> Client {
        Client::new(&self.base, None).unwrap()
    }
}

/// Ops for the tests: `forever` (until cancelled), `ticks` (`count`
/// progress events `delay_ms` apart, a log and a partial), `fails`.
fn ops() -> OpRegistry {
    let mut ops = OpRegistry::with_builtins();
    ops.register(FnOp::new(
        "forever",
        "runs until cancelled",
        |_, reporter| async move {
            reporter.cancelled().await;
            Ok(Value::Null)
        },
    ));
    ops.register(FnOp::new(
        "ticks",
        "count ticks delay_ms apart",
        |params, reporter| async move {
            let count = params["count"].as_u64().unwrap_or(10);
            let delay = Duration::from_millis(params["delay_ms"].as_u64().unwrap_or(0));
            reporter.log("info", "ticking").await.ok();
            for step in 1..=count {
                reporter.progress("tick", step, count, None).await.ok();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            reporter
                .partial("ticks_done", serde_json::json!({"count": count}))
                .await
                .ok();
            Ok(serde_json::json!({"ticks": count}))
        },
    ));
    ops.register(FnOp::new("fails", "always fails", |_, _| async move {
        Err(OpError::new("boom", "it broke"))
    }));
    ops
}

pub async fn server_with(config: ServerConfig) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("t.db"))).unwrap());
    let manager = Manager::start(store, ops(), ManagerConfig::default())
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(tasktape_server::serve(
        listener,
        manager,
        config,
        tasktape_server::Stop {
            drain: shutdown.clone(),
            now: CancellationToken::new(),
        },
        Duration::from_secs(1),
    ));
    TestServer {
        base,
        shutdown,
        _dir: dir,
    }
}

pub async fn server() -> TestServer {
    server_with(ServerConfig::default()).await
}

/// A TCP proxy to `upstream`: [`Proxy::cut`] closes every open connection
/// (new ones are still let through).
pub struct Proxy {
    pub base: String,
    generation: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let generation = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let current = Arc::clone(&generation);
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let cut = current.lock().unwrap().clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Proxy {
            base,
            generation,
            stop,
        }
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        let mut generation = self.generation.lock().unwrap();
        generation.cancel();
        *generation = CancellationToken::new();
    }
}
