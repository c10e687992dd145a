//! The config file (TOML) and its resolution into what the store, the
//! manager and the server need. `tasktape serve` lays its flags and
//! environment over a [`Config`] read from the file; embedders build one in
//! code or read the same file.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tasktape_core::ManagerConfig;
use tasktape_exec::ExecOpSpec;
use tasktape_server::ServerConfig;
use tasktape_store_postgres::PostgresConfig;

/// The smallest `max_tape_bytes`: room for many of the longest lines an
/// exec op writes (64 KiB, longer once escaped in JSON).
const MIN_TAPE_BYTES: u64 = 1 << 20;

/// The config file's keys; all optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Directory holding the SQLite store (default `./tasktape-data`).
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (default `127.0.0.1:8765`).
    pub listen: Option<String>,
    /// Bearer token clients must send (required off loopback unless
    /// `tokens` are set); it may do everything (scope `admin`).
    pub token: Option<String>,
    /// Named tokens with a scope: `[[tokens]] name = "ci", token = "…",
    /// scope = "read" | "submit" | "admin"`.
    #[serde(default)]
    pub tokens: Vec<tasktape_server::NamedToken>,
    /// Largest request body in bytes (default 1 MiB).
    pub body_limit_bytes: Option<usize>,
    /// Grace for a cancelled op before it is aborted (default 5000); exec
    /// ops' SIGTERM → SIGKILL grace unless they set their own.
    pub cancel_grace_ms: Option<u64>,
    /// How long shutdown waits for running tasks (default 10).
    pub shutdown_timeout_secs: Option<u64>,
    /// This instance's owner id.
    pub instance_id: Option<String>,
    /// `sqlite` or a postgres:// URL.
    pub store: Option<String>,
    /// PostgreSQL schema for the tables (default "tasktape").
    pub pg_schema: Option<String>,
    /// Pooled PostgreSQL connections (default 16).
    pub pg_pool_size: Option<usize>,
    /// The longest one PostgreSQL call may take before it counts as
    /// unavailable; also the statement timeout and the bound on noticing a
    /// dead connection (default 10000).
    pub pg_timeout_ms: Option<u64>,
    /// How long a lease holds without renewal (default 30000).
    pub lease_ttl_ms: Option<u64>,
    /// How often leases are renewed and peers' expired ones reaped (default 5000).
    pub lease_interval_ms: Option<u64>,
    /// Concurrent runs per op when not listed in `concurrency` (default 64).
    pub default_concurrency: Option<usize>,
    /// Concurrent runs per op name.
    #[serde(default)]
    pub concurrency: HashMap<String, usize>,
    /// Whether this instance runs tasks (default true); `false` makes an
    /// API-only instance (needs a shared store).
    pub worker: Option<bool>,
    /// Origins (`scheme://host:port`) allowed besides the server's own.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Host names (with or without port) accepted besides loopback names.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// What `GET /v1/info` reports as `engine_version` (dikw-core's client
    /// refuses a server whose `engine_version` differs from its own; without
    /// this key the field is left out and it does not check).
    pub compat_engine_version: Option<String>,
    /// Most events one task's tape may hold (default 1,000,000); past it the
    /// op is stopped and the task ends `failed` `tape_full`.
    pub max_events_per_task: Option<u64>,
    /// Most bytes of event JSON one task's tape may hold (default 1 GiB,
    /// at least 1 MiB); past it the op is stopped and the task ends
    /// `failed` `tape_full`.
    pub max_tape_bytes: Option<u64>,
    /// Serve HTTPS with this PEM certificate chain (needs `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Days finished tasks are kept (default 30); older ones are deleted in
    /// the background in small batches. `0` keeps everything.
    pub retention_days: Option<u64>,
    /// How long a client may take to send a request's headers, and how long
    /// a keep-alive connection may sit idle (default 30; 1–300).
    pub header_read_timeout_secs: Option<u64>,
    /// How long a request's whole body may take to arrive after its
    /// headers (default 30; 1–300); past it the connection is closed.
    pub body_read_timeout_secs: Option<u64>,
    /// Most HTTP connections open at once (default 20,000); past it new
    /// ones wait until one closes.
    pub max_connections: Option<usize>,
    /// Most streams and long-polls one token may hold open (default a
    /// quarter of `max_connections`); counted only with tokens.
    pub max_streams_per_token: Option<usize>,
    /// Exec ops, by name.
    #[serde(default)]
    pub ops: BTreeMap<String, ExecOpSpec>,
    /// Tasks submitted on a cron schedule, by name.
    #[serde(default)]
    pub schedules: BTreeMap<String, crate::schedules::ScheduleSpec>,
    /// Flow control per op (`[flow.OPNAME]`).
    #[serde(default)]
    pub flow: BTreeMap<String, crate::flow::FlowSpec>,
}

/// A configuration the server refuses to start with (exit 2 in the binary).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigError(format!(
                "cannot read config file {}: {error}",
                path.display()
            ))
        })?;
        Config::from_toml(&text).map_err(|error| {
            ConfigError(format!(
                "invalid config file {}: {}",
                path.display(),
                error.0
            ))
        })
    }

    /// Parses a config file's text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|error| {
            // toml's message spans several lines with the offending source;
            // keep one line: the key path and what is wrong.
            let message = error.message().trim().to_owned();
            match error.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    // Name the op whose table holds the error, when one does.
                    let op = before
                        .lines()
                        .rev()
                        .map(str::trim)
                        .find(|line| line.starts_with('['))
                        .and_then(|header| header.trim_start_matches('[').strip_prefix("ops."))
                        .map(|rest| {
                            rest.split(['.', ']'])
                                .next()
                                .unwrap_or(rest)
                                .trim_matches('"')
                        });
                    match op {
                        Some(op) => ConfigError(format!("line {line}: op {op:?}: {message}")),
                        None => ConfigError(format!("line {line}: {message}")),
                    }
                }
                None => ConfigError(message),
            }
        })
    }
}

/// Which store to open.
#[derive(Clone, Debug)]
pub(crate) enum StoreChoice {
    Sqlite(PathBuf),
    Postgres(PostgresConfig),
}

/// Everything the builder needs, resolved and checked.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) store: StoreChoice,
    pub(crate) listen: SocketAddr,
    pub(crate) server: ServerConfig,
    pub(crate) manager: ManagerConfig,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) ops: BTreeMap<String, ExecOpSpec>,
    pub(crate) schedules: BTreeMap<String, crate::schedules::ScheduleSpec>,
}

pub(crate) fn resolve(file: Config) -> Result<Resolved, ConfigError> {
    let bail = |message: String| Err(ConfigError(message));
    let listen_text = file.listen.unwrap_or_else(|| "127.0.0.1:8765".to_owned());
    let listen = match listen_text.to_socket_addrs().map(|mut found| found.next()) {
        Ok(Some(listen)) => listen,
        Ok(None) => {
            return bail(format!(
                "listen address {listen_text:?} resolves to nothing"
            ));
        }
        Err(_) => {
            return bail(format!(
                "invalid listen address {listen_text:?}: want HOST:PORT, e.g. 127.0.0.1:8765"
            ));
        }
    };
    // An empty value (e.g. `TASKTAPE_TOKEN=`) is no value.
    let token = file.token.filter(|token| !token.is_empty());
    // A token a client could never present (the server trims what it is
    // sent; headers carry no control characters) would refuse everyone.
    let presentable = |token: &str| token.bytes().all(|byte| (0x21..=0x7e).contains(&byte));
    if let Some(token) = &token
        && !presentable(token)
    {
        return bail(
            "token: must be printable ASCII without spaces (a blank or spaced token would refuse every client)"
                .to_owned(),
        );
    }
    let mut names = std::collections::HashSet::new();
    for named in &file.tokens {
        if named.name.is_empty() || named.token.is_empty() {
            return bail(
                "tokens: every [[tokens]] entry needs a non-empty name and token".to_owned(),
            );
        }
        if !presentable(&named.token) {
            return bail(format!(
                "tokens: the token of {:?} must be printable ASCII without spaces",
                named.name
            ));
        }
        if !names.insert(named.name.as_str()) {
            return bail(format!(
                "tokens: the name {:?} is used twice (names identify tokens in the audit log)",
                named.name
            ));
        }
        let same = file
            .tokens
            .iter()
            .filter(|other| other.token == named.token)
            .count();
        if same > 1 || token.as_deref() == Some(named.token.as_str()) {
            return bail(format!(
                "tokens: the token of {:?} is also given to another entry: each token must be distinct",
                named.name
            ));
        }
    }
    if !listen.ip().is_loopback() && token.is_none() && file.tokens.is_empty() {
        return bail(format!(
            "refusing to listen on {listen} without a token: anyone who can reach it could run and cancel tasks; \
             set --token (or TASKTAPE_TOKEN), or listen on 127.0.0.1"
        ));
    }
    let data_dir = file
        .data_dir
        .unwrap_or_else(|| PathBuf::from("./tasktape-data"));
    let store_text = file
        .store
        .filter(|store| !store.is_empty())
        .unwrap_or_else(|| "sqlite".to_owned());
    let store = if store_text == "sqlite" {
        StoreChoice::Sqlite(data_dir.join("tasktape.db"))
    } else if store_text.starts_with("postgres://") || store_text.starts_with("postgresql://") {
        let mut config = PostgresConfig::new(store_text);
        if let Some(schema) = file.pg_schema {
            if !tasktape_store_postgres::valid_schema_name(&schema) {
                return bail(format!(
                    "invalid pg_schema {schema:?}: use lowercase letters, digits and _ (at most 48)"
                ));
            }
            config.schema = schema;
        }
        if let Some(size) = file.pg_pool_size {
            config.pool_size = size.max(2);
        }
        if let Some(limit) = file.pg_timeout_ms {
            if limit < 1000 {
                return bail(format!("pg_timeout_ms must be at least 1000 (got {limit})"));
            }
            config.operation_timeout = Duration::from_millis(limit);
        }
        StoreChoice::Postgres(config)
    } else {
        return bail(format!(
            "invalid store {store_text:?}: want `sqlite` or a postgres://user:password@host/db URL"
        ));
    };
    let worker = file.worker.unwrap_or(true);
    if !worker && matches!(store, StoreChoice::Sqlite(_)) {
        return bail(
            "worker = false needs a shared store (store = \"postgres://…\"): on SQLite no other instance could run the tasks"
                .to_owned(),
        );
    }
    let defaults = ManagerConfig::default();
    let instance_id = file
        .instance_id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| match store {
            StoreChoice::Sqlite(_) => defaults.instance_id.clone(),
            // Filled in with the bound port once listening.
            StoreChoice::Postgres(_) => String::new(),
        });
    let lease_ttl = file
        .lease_ttl_ms
        .map_or(defaults.lease_ttl, Duration::from_millis);
    let lease_interval = file
        .lease_interval_ms
        .map_or(defaults.lease_interval, Duration::from_millis);
    if lease_interval.is_zero() || lease_interval >= lease_ttl {
        return bail(format!(
            "lease_interval_ms ({}) must be above 0 and below lease_ttl_ms ({}): leases must be renewed before they expire",
            lease_interval.as_millis(),
            lease_ttl.as_millis()
        ));
    }
    if file.max_events_per_task.is_some_and(|cap| cap < 2) {
        return bail(
            "max_events_per_task must be at least 2 (task_started and one event; final is written past it)"
                .to_owned(),
        );
    }
    if file.max_tape_bytes.is_some_and(|cap| cap < MIN_TAPE_BYTES) {
        return bail(format!(
            "max_tape_bytes must be at least {MIN_TAPE_BYTES} (1 MiB: room for the longest lines an op may write)"
        ));
    }
    for origin in &file.allowed_origins {
        if !origin.contains("://") {
            return bail(format!(
                "allowed_origins: {origin:?} is not an origin: want scheme://host[:port], e.g. https://tasks.example.com"
            ));
        }
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
        task_tracing: Arc::new(tasktape_telemetry::OtelTaskTracing),
        worker,
        max_events_per_task: file
            .max_events_per_task
            .unwrap_or(defaults.max_events_per_task),
        max_tape_bytes: file.max_tape_bytes.unwrap_or(defaults.max_tape_bytes),
        retention: match file.retention_days {
            None => defaults.retention,
            Some(0) => None,
            Some(days) => Some(Duration::from_secs(days.saturating_mul(24 * 3600))),
        },
        retention_interval: defaults.retention_interval,
        retries: HashMap::new(),
        schedules: Vec::new(),
        flows: crate::flow::resolve(file.flow)?.into_iter().collect(),
        clock: defaults.clock,
    };
    let header_read_timeout = file.header_read_timeout_secs.unwrap_or(30);
    if !(1..=300).contains(&header_read_timeout) {
        return bail(format!(
            "header_read_timeout_secs must be between 1 and 300 (got {header_read_timeout})"
        ));
    }
    let body_read_timeout = file.body_read_timeout_secs.unwrap_or(30);
    if !(1..=300).contains(&body_read_timeout) {
        return bail(format!(
            "body_read_timeout_secs must be between 1 and 300 (got {body_read_timeout})"
        ));
    }
    if file.max_connections == Some(0) {
        return bail("max_connections must be at least 1".to_owned());
    }
    if file.max_streams_per_token == Some(0) {
        return bail("max_streams_per_token must be at least 1".to_owned());
    }
    let tls = match (&file.tls_cert, &file.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            Some(tasktape_server::tls_config(cert, key).map_err(ConfigError)?)
        }
        _ => {
            return bail(
                "tls_cert and tls_key go together: give both (or neither, for plain HTTP)"
                    .to_owned(),
            );
        }
    };
    let server = ServerConfig {
        token,
        tls,
        tokens: file.tokens,
        header_read_timeout: Duration::from_secs(header_read_timeout),
        body_read_timeout: Duration::from_secs(body_read_timeout),
        max_connections: file
            .max_connections
            .unwrap_or(ServerConfig::default().max_connections),
        max_streams_per_token: file.max_streams_per_token.unwrap_or_else(|| {
            (file
                .max_connections
                .unwrap_or(ServerConfig::default().max_connections)
                / 4)
            .max(1)
        }),
        body_limit: file
            .body_limit_bytes
            .unwrap_or(ServerConfig::default().body_limit),
        allowed_origins: file.allowed_origins,
        allowed_hosts: file.allowed_hosts,
        compat_engine_version: file.compat_engine_version,
        ..ServerConfig::default()
    };
    Ok(Resolved {
        store,
        listen,
        server,
        manager,
        shutdown_timeout: Duration::from_secs(file.shutdown_timeout_secs.unwrap_or(10)),
        ops: file.ops,
        schedules: file.schedules,
    })
}
