//! tasktape as a library: the one builder the `tasktape serve` binary uses,
//! for embedders too. It opens the store from the config file's settings
//! (`store = "sqlite"` + `data_dir`, or a `postgres://` URL), registers the
//! built-in ops, the config file's exec ops and the embedder's own, starts
//! the manager, binds, and serves the HTTP API until a shutdown future
//! resolves. Only this crate and the binary open stores.
//!
//! ```no_run
//! use tasktape_app::{Builder, Config};
//! use tasktape_core::FnOp;
//!
//! # async fn run() -> Result<(), tasktape_app::StartError> {
//! let app = Builder::new(Config::default())
//!     .op(FnOp::new("hello", "says hello", |_, _| async { Ok(serde_json::json!("hi")) }))
//!     .start()
//!     .await?;
//! app.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`config`]: the config file's keys and their checks.
//! - this file: [`Builder`] and the running [`App`].

pub mod config;
mod flow;
mod schedules;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tasktape_core::observe::TaskTracing;
use tasktape_core::{Manager, Op, OpRegistry, Store, StoreError};
use tasktape_exec::ExecOp;
use tasktape_server::ServerConfig;
use tasktape_store_postgres::PostgresStore;
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};

pub use config::{Config, ConfigError};
pub use tasktape_server::Stop;

/// Why [`Builder::start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is wrong (the binary exits 2): one line naming the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or recovered.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl StartError {
    /// Whether this is a configuration error (as opposed to a runtime one).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StartError::Config(_) | StartError::Store(StoreError::InstanceIdInUse { .. })
        )
    }
}

/// Builds a tasktape instance from a [`Config`].
pub struct Builder {
    config: Config,
    ops: OpRegistry,
    task_tracing: Option<Arc<dyn TaskTracing>>,
}

impl Builder {
    /// A builder with the built-in ops (`echo`).
    pub fn new(config: Config) -> Builder {
        Builder {
            config,
            ops: OpRegistry::with_builtins(),
            task_tracing: None,
        }
    }

    /// Registers an op of the embedder's (replacing a built-in one of the
    /// same name).
    pub fn op(mut self, op: impl Op) -> Builder {
        self.ops.register(op);
        self
    }

    /// How task runs' spans are made (default: OpenTelemetry-linked root
    /// spans, see `tasktape-telemetry`).
    pub fn task_tracing(mut self, tracing: Arc<dyn TaskTracing>) -> Builder {
        self.task_tracing = Some(tracing);
        self
    }

    /// Checks the configuration and every op, opens the store, binds the
    /// listen address and starts the manager (recovering leftovers).
    pub async fn start(self) -> Result<App, StartError> {
        let mut resolved = config::resolve(self.config)?;
        let mut ops = self.ops;
        let grace = resolved.manager.cancel_grace;
        for (name, spec) in std::mem::take(&mut resolved.ops) {
            if ops.get(&name).is_some() {
                return Err(ConfigError(format!(
                    "op {name:?}: name: an op of that name is already registered (built in or by the embedder)"
                ))
                .into());
            }
            let op = ExecOp::from_spec(&name, spec, grace)
                .map_err(|error| ConfigError(error.to_string()))?;
            if let Some(limit) = op.concurrency() {
                resolved.manager.op_concurrency.insert(name, limit);
            }
            ops.register_arc(Arc::new(op));
        }
        let reserved = tasktape_server::reserved_op_names();
        for name in ops.names() {
            if reserved.contains(&name.as_str()) {
                return Err(ConfigError(format!(
                    "op {name:?}: name: collides with the server's own route /v1/{name}; reserved: {}",
                    reserved.join(", ")
                ))
                .into());
            }
        }
        resolved.manager.schedules =
            schedules::resolve(std::mem::take(&mut resolved.schedules), &ops)?;
        if let Some(tracing) = self.task_tracing {
            resolved.manager.task_tracing = tracing;
        }
        let (store, description): (Arc<dyn Store>, String) = match resolved.store {
            config::StoreChoice::Sqlite(db) => (
                Arc::new(SqliteStore::open(SqliteConfig::new(&db))?),
                db.display().to_string(),
            ),
            config::StoreChoice::Postgres(config) => {
                let store = PostgresStore::open(config).await?;
                let description = format!("{} (schema {})", store.target(), store.schema());
                (Arc::new(store), description)
            }
        };
        // Bind first: the default instance id on a shared store is HOST:PORT
        // of the bound port (stable across restarts, distinct between
        // instances, even with listen = "…:0").
        let listener = bind(resolved.listen).map_err(|source| StartError::Bind {
            address: resolved.listen,
            source,
        })?;
        let address = listener.local_addr().map_err(|source| StartError::Bind {
            address: resolved.listen,
            source,
        })?;
        let mut manager_config = resolved.manager;
        if manager_config.instance_id.is_empty() {
            manager_config.instance_id = format!("{}:{}", hostname(), address.port());
        }
        let instance = manager_config.instance_id.clone();
        let worker = manager_config.worker;
        let manager = Manager::start(Arc::clone(&store), ops, manager_config).await?;
        let scheme = if resolved.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(%address, store = %description, %instance, worker, "tasktape listening on {scheme}://{address}");
        Ok(App {
            manager,
            listener,
            address,
            server: resolved.server,
            shutdown_timeout: resolved.shutdown_timeout,
            store,
        })
    }
}

/// A started instance: the manager runs; [`App::serve`] serves HTTP.
pub struct App {
    manager: Manager,
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    server: ServerConfig,
    shutdown_timeout: Duration,
    store: Arc<dyn Store>,
}

impl App {
    /// The manager: submit, cancel, wait for and follow tasks in-process.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// The bound address (with the real port when the config said `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Serves the HTTP API until `shutdown` resolves, then drains: no new
    /// task starts here and `readyz` answers 503, running tasks get
    /// `shutdown_timeout_secs` to finish, then what still runs is cancelled
    /// (exec ops: SIGTERM, then SIGKILL half a second later) and ends
    /// `server_shutdown`; requests are drained, the store is closed.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = Stop::default();
        let drain = stop.drain.clone();
        tokio::spawn(async move {
            shutdown.await;
            drain.cancel();
        });
        self.serve_until(stop).await
    }

    /// Like [`App::serve`], stopped by `stop`: its `drain` token begins the
    /// drain, its `now` token (a second signal, say) stops at once.
    pub async fn serve_until(self, stop: Stop) -> std::io::Result<()> {
        tasktape_server::serve(
            self.listener,
            self.manager,
            self.server,
            stop,
            self.shutdown_timeout,
        )
        .await?;
        drop(self.store);
        Ok(())
    }
}

/// This machine's name, for default instance ids.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Pending connections the kernel holds for the accept loop (capped by
/// `net.core.somaxconn`). A burst of connections past the backlog has its
/// SYNs dropped, and each of those clients waits a second or more to try
/// again: 128 (what a plain bind gives) made a burst of 2,000 slow clients
/// take over 10 s to connect to an idle server.
const ACCEPT_BACKLOG: u32 = 4096;

/// A listener on `address` with
/// [`ACCEPT_BACKLOG`].
fn bind(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As a plain bind has it on Unix (elsewhere it would let another
    // process take the port).
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(ACCEPT_BACKLOG)
}
