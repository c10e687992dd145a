//! `tasktape serve`: flags > environment > config file (TOML) > defaults,
//! then `tasktape_app::Builder` opens the store (SQLite in the data dir, or
//! PostgreSQL for several instances), registers the built-in and the config
//! file's exec ops, starts the manager, binds, and serves until SIGINT or
//! SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tasktape_app::{Builder, Config, Stop};
use tasktape_telemetry::LogFormat;

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
    /// Serve HTTPS with this PEM certificate chain (with --tls-key)
    #[arg(long, env = "TASKTAPE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "TASKTAPE_TLS_KEY")]
    tls_key: Option<PathBuf>,
}

/// The config file with the flags and environment laid over it.
fn config(args: ServeArgs) -> Result<Config, tasktape_app::ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let given = |value: Option<String>| value.filter(|value| !value.is_empty());
    if let Some(listen) = args.listen {
        config.listen = Some(listen);
    }
    if let Some(token) = given(args.token) {
        config.token = Some(token);
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = Some(data_dir);
    }
    if let Some(cert) = args.tls_cert {
        config.tls_cert = Some(cert);
    }
    if let Some(key) = args.tls_key {
        config.tls_key = Some(key);
    }
    if let Some(store) = given(args.store) {
        config.store = Some(store);
    }
    if let Some(instance_id) = given(args.instance_id) {
        config.instance_id = Some(instance_id);
    }
    Ok(config)
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
    let config = match config(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tasktape serve: {error}");
            return ExitCode::from(2);
        }
    };
    let mut config = config;
    let open_files = raise_open_files_limit();
    match (config.max_connections, open_files) {
        // Unset: 20,000, or what the open-files limit leaves room for.
        (None, Some(limit)) if limit < 20_000 + 256 => {
            let fits = usize::try_from(limit.saturating_sub(256))
                .unwrap_or(usize::MAX)
                .max(64);
            tracing::debug!(
                open_files = limit,
                max_connections = fits,
                "max_connections lowered to fit the open-files limit"
            );
            config.max_connections = Some(fits);
        }
        (Some(max), Some(limit)) if (max as u64).saturating_add(256) > limit => {
            tracing::warn!(
                open_files = limit,
                max_connections = max,
                "the open-files limit is below max_connections + 256: connections past it fail; raise `ulimit -n` (LimitNOFILE=) or lower max_connections"
            );
        }
        _ => {}
    }
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
    runtime.block_on(async {
        let app = match Builder::new(config).start().await {
            Ok(app) => app,
            Err(error) => {
                eprintln!("tasktape serve: {error}");
                return ExitCode::from(if error.is_config() { 2 } else { 1 });
            }
        };
        match app.serve_until(stop_on_signals()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("tasktape serve: {error}");
                ExitCode::from(1)
            }
        }
    })
}

/// Raises this process's open-files limit to its hard limit (many systems
/// start at 1,024, too few for thousands of followers); returns the limit
/// now in force (`None` when it cannot be read).
fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            return Some(hard);
        }
        Some(soft)
    }
    #[cfg(not(unix))]
    None
}

/// The first SIGTERM or SIGINT begins the drain; a second stops at once.
fn stop_on_signals() -> Stop {
    let stop = Stop::default();
    let stages = [
        (
            stop.drain.clone(),
            "draining: running tasks finish, no new ones start (signal again to stop at once)",
        ),
        (stop.now.clone(), "second signal: stopping at once"),
    ];
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    None
                }
            };
        for (token, message) in stages {
            let interrupt = tokio::signal::ctrl_c();
            #[cfg(unix)]
            let terminated = async {
                match terminate.as_mut() {
                    Some(signal) => drop(signal.recv().await),
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let terminated = std::future::pending::<()>();
            tokio::select! {
                _ = interrupt => tracing::info!("SIGINT: {message}"),
                () = terminated => tracing::info!("SIGTERM: {message}"),
            }
            token.cancel();
        }
    });
    stop
}
