//! `tasktape serve`: flags > environment > config file (TOML) > defaults,
//! then open the store (SQLite in the data dir, or PostgreSQL for several
//! instances), start the manager, bind, and serve until SIGINT or SIGTERM.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use tasktape_core::{Manager, ManagerConfig, OpRegistry, Store};
use tasktape_server::ServerConfig;
use tasktape_store_postgres::{PostgresConfig, PostgresStore};
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};
use tasktape_telemetry::{LogFormat, OtelTaskTracing};
use tokio_util::sync::CancellationToken;

/// Options of `tasktape serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Directory holding the SQLite store [default: ./tasktape-data]
    #[arg(long, env = "TASKTAPE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8765]
    #[arg(long, env = "TASKTAPE_LISTEN")]
    listen: Option<String>,
    /// Bearer token clients must send (required off loopback)
    #[arg(long, env = "TASKTAPE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// TOML config file (flags and environment win over it)
    #[arg(long, env = "TASKTAPE_CONFIG")]
    config: Option<PathBuf>,
    /// Where tasks live: `sqlite` (in --data-dir) or a postgres://… URL
    /// shared by several instances [default: sqlite]
    #[arg(long, env = "TASKTAPE_STORE", hide_env_values = true)]
    store: Option<String>,
    /// This instance's id, stable across its restarts and unique among
    /// instances sharing a database [default: `local` on SQLite, HOST:PORT
    /// on PostgreSQL]
    #[arg(long, env = "TASKTAPE_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Log lines as `text` or `json` (one object per line, with trace ids)
    #[arg(long, env = "TASKTAPE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// The config file's keys; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    token: Option<String>,
    /// Largest request body in bytes (default 1 MiB).
    body_limit_bytes: Option<usize>,
    /// Grace for a cancelled op before it is aborted (default 5000).
    cancel_grace_ms: Option<u64>,
    /// How long shutdown waits for running tasks (default 10).
    shutdown_timeout_secs: Option<u64>,
    /// This instance's owner id.
    instance_id: Option<String>,
    /// `sqlite` or a postgres:// URL.
    store: Option<String>,
    /// PostgreSQL schema for the tables (default "tasktape").
    pg_schema: Option<String>,
    /// Pooled PostgreSQL connections (default 16).
    pg_pool_size: Option<usize>,
    /// How long a lease holds without renewal (default 30000).
    lease_ttl_ms: Option<u64>,
    /// How often leases are renewed and peers' expired ones reaped (default 5000).
    lease_interval_ms: Option<u64>,
    /// Concurrent runs per op when not listed in `concurrency` (default 64).
    default_concurrency: Option<usize>,
    /// Concurrent runs per op name.
    #[serde(default)]
    concurrency: HashMap<String, usize>,
}

/// Everything `serve` needs, resolved.
/// Which store to open.
#[derive(Debug)]
enum StoreChoice {
    Sqlite(PathBuf),
    Postgres(PostgresConfig),
}

#[derive(Debug)]
struct Resolved {
    store: StoreChoice,
    listen: SocketAddr,
    server: ServerConfig,
    manager: ManagerConfig,
    shutdown_timeout: Duration,
}

fn resolve(args: ServeArgs) -> anyhow::Result<Resolved> {
    let file = match &args.config {
        Some(path) => read_config(path)?,
        None => FileConfig::default(),
    };
    let listen_text = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:8765".to_owned());
    let listen = listen_text
        .to_socket_addrs()
        .with_context(|| {
            format!("invalid --listen address {listen_text:?}: want HOST:PORT, e.g. 127.0.0.1:8765")
        })?
        .next()
        .with_context(|| format!("--listen address {listen_text:?} resolves to nothing"))?;
    // An empty value (e.g. `TASKTAPE_TOKEN=`) is no value: the next source decides.
    let token = args
        .token
        .filter(|token| !token.is_empty())
        .or(file.token.filter(|token| !token.is_empty()));
    if !listen.ip().is_loopback() && token.is_none() {
        bail!(
            "refusing to listen on {listen} without a token: anyone who can reach it could run and cancel tasks; \
             set --token (or TASKTAPE_TOKEN), or listen on 127.0.0.1"
        );
    }
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./tasktape-data"));
    let store_text = args
        .store
        .filter(|store| !store.is_empty())
        .or(file.store)
        .unwrap_or_else(|| "sqlite".to_owned());
    let store = if store_text == "sqlite" {
        StoreChoice::Sqlite(data_dir.join("tasktape.db"))
    } else if store_text.starts_with("postgres://") || store_text.starts_with("postgresql://") {
        let mut config = PostgresConfig::new(store_text);
        if let Some(schema) = file.pg_schema {
            if !tasktape_store_postgres::valid_schema_name(&schema) {
                bail!(
                    "invalid pg_schema {schema:?}: use lowercase letters, digits and _ (at most 48)"
                );
            }
            config.schema = schema;
        }
        if let Some(size) = file.pg_pool_size {
            config.pool_size = size.max(2);
        }
        StoreChoice::Postgres(config)
    } else {
        bail!(
            "invalid --store {store_text:?}: want `sqlite` or a postgres://user:password@host/db URL"
        );
    };
    let defaults = ManagerConfig::default();
    let instance_id = args
        .instance_id
        .filter(|id| !id.is_empty())
        .or(file.instance_id)
        .unwrap_or_else(|| match store {
            StoreChoice::Sqlite(_) => defaults.instance_id.clone(),
            // Filled in with the bound port once listening (see `run`).
            StoreChoice::Postgres(_) => String::new(),
        });
    let lease_ttl = file
        .lease_ttl_ms
        .map_or(defaults.lease_ttl, Duration::from_millis);
    let lease_interval = file
        .lease_interval_ms
        .map_or(defaults.lease_interval, Duration::from_millis);
    if lease_interval.is_zero() || lease_interval >= lease_ttl {
        bail!(
            "lease_interval_ms ({}) must be above 0 and below lease_ttl_ms ({}): leases must be renewed before they expire",
            lease_interval.as_millis(),
            lease_ttl.as_millis()
        );
    }
    let manager = ManagerConfig {
        instance_id,
        lease_ttl,
        lease_interval,
        cancel_grace: file
            .cancel_grace_ms
            .map_or(defaults.cancel_grace, Duration::from_millis),
        default_concurrency: file
            .default_concurrency
            .unwrap_or(defaults.default_concurrency),
        op_concurrency: file.concurrency,
        task_tracing: Arc::new(OtelTaskTracing),
    };
    let server = ServerConfig {
        token,
        body_limit: file
            .body_limit_bytes
            .unwrap_or(ServerConfig::default().body_limit),
        ..ServerConfig::default()
    };
    Ok(Resolved {
        store,
        listen,
        server,
        manager,
        shutdown_timeout: Duration::from_secs(file.shutdown_timeout_secs.unwrap_or(10)),
    })
}

fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Runs `tasktape serve`; exit 2 for bad configuration, 1 for runtime failures.
pub fn serve(args: ServeArgs) -> ExitCode {
    let telemetry = tasktape_telemetry::init(args.log_format);
    if telemetry.exporting() {
        tracing::info!("exporting traces over OTLP");
    }
    let code = serve_with(args);
    // Export the last spans (blocking; no runtime is running any more).
    telemetry.shutdown();
    code
}

fn serve_with(args: ServeArgs) -> ExitCode {
    let resolved = match resolve(args) {
        Ok(resolved) => resolved,
        Err(error) => {
            eprintln!("tasktape serve: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tasktape serve: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(resolved)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tasktape serve: {error:#}");
            ExitCode::from(1)
        }
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

async fn run(resolved: Resolved) -> anyhow::Result<()> {
    let (store, description): (Arc<dyn Store>, String) = match resolved.store {
        StoreChoice::Sqlite(db) => (
            Arc::new(SqliteStore::open(SqliteConfig::new(&db))?),
            db.display().to_string(),
        ),
        StoreChoice::Postgres(config) => {
            let store = PostgresStore::open(config).await?;
            let description = format!("{} (schema {})", store.target(), store.schema());
            (Arc::new(store), description)
        }
    };
    // Bind first: the default instance id on a shared store is HOST:PORT of
    // the bound port (stable across restarts, distinct between instances,
    // even with --listen …:0).
    let listener = tokio::net::TcpListener::bind(resolved.listen)
        .await
        .with_context(|| format!("cannot listen on {}", resolved.listen))?;
    let address = listener.local_addr()?;
    let mut manager_config = resolved.manager;
    if manager_config.instance_id.is_empty() {
        manager_config.instance_id = format!("{}:{}", hostname(), address.port());
    }
    let instance = manager_config.instance_id.clone();
    let manager = Manager::start(
        Arc::clone(&store),
        OpRegistry::with_builtins(),
        manager_config,
    )
    .await?;
    tracing::info!(%address, store = %description, %instance, "tasktape listening on http://{address}");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    tasktape_server::serve(
        listener,
        manager,
        resolved.server,
        shutdown,
        resolved.shutdown_timeout,
    )
    .await?;
    drop(store);
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
    shutdown.cancel();
}
