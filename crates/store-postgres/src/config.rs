//! The store's settings, and how connections are made: bounded so that a
//! dead one is noticed, described without the password.

use std::time::Duration;

/// How to reach the database and shape the store.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// A `postgres://user:password@host:port/database` URL (or a libpq
    /// key=value string).
    pub url: String,
    /// The schema holding tasktape's tables (created if missing; default
    /// `tasktape`). Instances that share a schema share their tasks.
    pub schema: String,
    /// Pooled connections (default 16), besides the listener's own.
    pub pool_size: usize,
    /// Most appends written in one call (default 2048).
    pub batch_max: usize,
    /// How long connecting may take before the database counts as
    /// unreachable (default 5 s).
    pub connect_timeout: Duration,
    /// The longest one database call may take before it is given up as
    /// unavailable (default 10 s); also the server-side `statement_timeout`,
    /// and the TCP user timeout and keepalive bound of every connection, so
    /// a dead or black-holed connection is dropped within about this long.
    pub operation_timeout: Duration,
}

impl PostgresConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: "tasktape".to_owned(),
            pool_size: 16,
            batch_max: 2048,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(10),
        }
    }
}

/// Makes a dead connection fail within about `limit`: TCP keepalives
/// (idle a third of it, then probes), a TCP user timeout (unacknowledged
/// data), and `statement_timeout` on the server.
pub(crate) fn bound_connections(pg: &mut tokio_postgres::Config, limit: Duration) {
    let limit = limit.max(Duration::from_secs(1));
    pg.keepalives(true)
        .keepalives_idle(limit / 3)
        .keepalives_interval((limit / 6).max(Duration::from_secs(1)))
        .keepalives_retries(3)
        .tcp_user_timeout(limit);
    if pg.get_options().is_none() {
        pg.options(format!("-c statement_timeout={}", limit.as_millis()));
    }
}

/// `user@host:port/database` of `config`.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}
