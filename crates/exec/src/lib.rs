//! Exec ops: programs an operator declares in the config file (`[ops.NAME]`)
//! and tasks run as child processes. An op like any other (it implements
//! [`tasktape_core::Op`]): it knows no HTTP and no SQL.
//!
//! # Layout
//!
//! - [`spec`]: the declaration, its start-up checks, the params' JSON Schema
//!   and their validation on submit.
//! - `template`: `{param}` placeholders in argv elements and env values.
//! - `protocol`: the stdout line protocol (`progress`, `log`, `partial`,
//!   `result`).
//! - `process`: spawning (own process group, `PR_SET_PDEATHSIG` from one
//!   long-lived thread), signalling and reaping the group, capped line reads.
//!
//! A run: render the argv and env from the validated params, spawn, turn
//! each stdout line into an event (protocol lines) or an `info` log line,
//! each stderr line into a `warn` log line, wait for the exit; on cancel,
//! timeout or shutdown SIGTERM the whole group, SIGKILL it after the grace.
//! When the program exits the rest of its group is killed too.

mod output;
mod process;
mod protocol;
pub mod retries;
mod schema;
pub mod spec;
mod template;
mod travel;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde_json::{Map, Value, json};
use tasktape_core::{ErrorInfo, Op, OpError, OpResult, ParamsError, Reporter};
use tokio::io::BufReader;
use tokio::process::Command;

pub use spec::{ConfigError, DEFAULT_INHERIT_ENV, ExecOpSpec, ParamSpec, ParamType};
use template::{Place, Template};

/// Default SIGTERM → SIGKILL grace when neither the op nor the server sets one.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

/// An exec op, checked and ready to run.
#[derive(Debug)]
pub struct ExecOp {
    name: String,
    description: String,
    program: PathBuf,
    argv: Vec<Template>,
    cwd: Option<PathBuf>,
    env: Vec<(String, Template)>,
    inherit_env: Vec<String>,
    timeout: Option<Duration>,
    cancel_grace: Duration,
    concurrency: Option<usize>,
    params: BTreeMap<String, ParamSpec>,
    schema: Value,
    retry: Option<tasktape_core::retry::RetryPolicy>,
    idempotent: bool,
    permanent_exit_codes: Vec<i32>,
}

impl ExecOp {
    /// Checks a declaration and builds the op: the name, every placeholder,
    /// secrets kept out of the argv, the params' own declarations, the
    /// working directory, and that the program exists and is executable.
    /// `default_grace` is the server's `cancel_grace_ms`, used when the op
    /// sets none.
    pub fn from_spec(
        name: &str,
        spec: ExecOpSpec,
        default_grace: Duration,
    ) -> Result<ExecOp, ConfigError> {
        if !spec::valid_op_name(name) {
            return Err(ConfigError::new(
                name,
                "name",
                "op names are 1 to 64 of a-z, 0-9, _, . and -",
            ));
        }
        for (param, declared) in &spec.params {
            spec::check_param(name, param, declared)?;
        }
        let Some(first) = spec.command.first() else {
            return Err(ConfigError::new(
                name,
                "command",
                "is empty: give the program and its arguments, e.g. [\"python3\", \"job.py\"]",
            ));
        };
        let mut argv = Vec::with_capacity(spec.command.len());
        for (index, element) in spec.command.iter().enumerate() {
            let key = format!("command[{index}]");
            argv.push(Template::parse(
                name,
                &key,
                element,
                &spec.params,
                Place::Command,
            )?);
        }
        let Some(program_name) = argv[0].literal().filter(|text| !text.is_empty()) else {
            return Err(ConfigError::new(
                name,
                "command[0]",
                format!("the program {first:?} must be a fixed name or path, not a placeholder"),
            ));
        };
        if let Some(cwd) = &spec.cwd
            && !cwd.is_dir()
        {
            return Err(ConfigError::new(
                name,
                "cwd",
                format!("{} is not a directory", cwd.display()),
            ));
        }
        let mut env = Vec::with_capacity(spec.env.len());
        for (variable, value) in &spec.env {
            if !valid_env_name(variable) {
                return Err(ConfigError::new(
                    name,
                    format!("env.{variable}"),
                    "is not a valid variable name",
                ));
            }
            let key = format!("env.{variable}");
            env.push((
                variable.clone(),
                Template::parse(name, &key, value, &spec.params, Place::Env)?,
            ));
        }
        let inherit_env = spec
            .inherit_env
            .unwrap_or_else(|| DEFAULT_INHERIT_ENV.map(str::to_owned).to_vec());
        if let Some(bad) = inherit_env
            .iter()
            .find(|variable| !valid_env_name(variable))
        {
            return Err(ConfigError::new(
                name,
                "inherit_env",
                format!("{bad:?} is not a valid variable name"),
            ));
        }
        let search_path = spec
            .env
            .get("PATH")
            .cloned()
            .or_else(|| {
                inherit_env
                    .iter()
                    .any(|variable| variable == "PATH")
                    .then(|| std::env::var("PATH").ok())
                    .flatten()
            })
            .unwrap_or_default();
        let program = find_program(&program_name, spec.cwd.as_deref(), &search_path)
            .map_err(|message| ConfigError::new(name, "command[0]", message))?;
        if spec.timeout_secs == Some(0) {
            return Err(ConfigError::new(
                name,
                "timeout_secs",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if spec.concurrency == Some(0) {
            return Err(ConfigError::new(name, "concurrency", "must be at least 1"));
        }
        let schema = schema::schema(&spec.params);
        let retry = spec
            .retries
            .as_ref()
            .map(|retries| retries.policy())
            .transpose()
            .map_err(|message| ConfigError::new(name, "retries", message))?;
        Ok(ExecOp {
            name: name.to_owned(),
            description: spec
                .description
                .unwrap_or_else(|| format!("runs {program_name}")),
            program,
            argv,
            cwd: spec.cwd,
            env,
            inherit_env,
            timeout: spec.timeout_secs.map(Duration::from_secs),
            cancel_grace: spec
                .cancel_grace_ms
                .map_or(default_grace, Duration::from_millis),
            concurrency: spec.concurrency,
            params: spec.params,
            schema,
            retry,
            idempotent: spec.idempotent,
            permanent_exit_codes: spec
                .retries
                .map(|retries| retries.permanent_exit_codes)
                .unwrap_or_default(),
        })
    }

    /// This op's own concurrency limit, if it declares one.
    pub fn concurrency(&self) -> Option<usize> {
        self.concurrency
    }

    /// The program that runs (resolved at start-up).
    pub fn program(&self) -> &Path {
        &self.program
    }

    fn command(&self, params: &Map<String, Value>, reporter: &Reporter) -> Command {
        let mut args = Vec::new();
        for template in &self.argv[1..] {
            args.extend(template.render(params));
        }
        let mut command = Command::new(&self.program);
        command.args(&args).env_clear();
        for variable in &self.inherit_env {
            if let Some(value) = std::env::var_os(variable) {
                command.env(variable, value);
            }
        }
        for (variable, template) in &self.env {
            if let Some(value) = template.render_one(params) {
                command.env(variable, value);
            }
        }
        command
            .env("TASKTAPE_TASK_ID", reporter.task_id().to_string())
            .env("TASKTAPE_PARAMS", Value::Object(params.clone()).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A run aborted before its group guard is armed still kills
            // its program (the guard then kills the rest of the group).
            .kill_on_drop(true);
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        command
    }
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

/// Resolves the program like execvp would, but now, so a missing program is
/// a start-up error: a path with `/` relative to `cwd` (or the server's
/// directory), a bare name along `search_path`.
fn find_program(program: &str, cwd: Option<&Path>, search_path: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |path: &Path| {
        std::fs::metadata(path)
            .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = Path::new(program);
        let path = match cwd {
            Some(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_path_buf(),
        };
        let path = std::path::absolute(&path).unwrap_or(path);
        return if executable(&path) {
            Ok(path)
        } else if path.exists() {
            Err(format!("{} is not an executable file", path.display()))
        } else {
            Err(format!("program {} not found", path.display()))
        };
    }
    search_path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| {
            format!("program {program:?} not found in PATH ({search_path}) or not executable")
        })
}

#[async_trait]
impl Op for ExecOp {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn params_schema(&self) -> Value {
        self.schema.clone()
    }

    fn prepare(&self, params: Value) -> Result<Value, ParamsError> {
        let params = spec::prepare(&self.params, params)?;
        if let Value::Object(map) = &params {
            // What the inherited variables take (as at the spawn, roughly).
            let inherited: usize = self
                .inherit_env
                .iter()
                .filter_map(|name| Some(name.len() + std::env::var_os(name)?.len() + 2 + 8))
                .sum();
            travel::check(map, &self.argv[1..], &self.env, inherited)?;
        }
        Ok(params)
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn cancel_grace(&self) -> Option<Duration> {
        // Our own SIGTERM → SIGKILL takes `cancel_grace`; the manager aborts
        // the run only if even that did not end it.
        Some(self.cancel_grace + Duration::from_secs(2))
    }

    fn retry(&self) -> Option<tasktape_core::retry::RetryPolicy> {
        self.retry.clone()
    }

    fn idempotent(&self) -> bool {
        self.idempotent
    }

    async fn run(&self, params: Value, reporter: Reporter) -> OpResult {
        let params = match params {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let command = self.command(&params, &reporter);
        let mut child = process::spawn(command).await.map_err(|error| {
            OpError(
                ErrorInfo::new(
                    "spawn_failed",
                    format!("cannot start {}: {error}", self.program.display()),
                )
                .with("os_error", error.raw_os_error()),
            )
        })?;
        let Some(pgid) = child.id().map(|pid| pid as i32) else {
            return Err(OpError::new("spawn_failed", "the program exited at once"));
        };
        let mut guard = process::GroupGuard::new(pgid);
        let stdout = child.stdout.take().map(|out| {
            let reporter = reporter.clone();
            output::spawn_reader(|lines| {
                output::read_stdout(BufReader::with_capacity(64 * 1024, out), reporter, lines)
            })
        });
        let stderr = child.stderr.take().map(|err| {
            let reporter = reporter.clone();
            output::spawn_reader(|lines| {
                output::read_stderr(BufReader::with_capacity(16 * 1024, err), reporter, lines)
            })
        });
        let token = reporter.cancel_token().clone();
        let mut stopped_by_us = false;
        let mut shutdown = false;
        let status = tokio::select! {
            status = child.wait() => status,
            () = token.cancelled() => {
                process::signal_group(pgid, Signal::SIGTERM);
                if reporter.is_shutting_down() {
                    // A shutdown: the program gets until the shutdown's
                    // deadline to finish (and keeps its result if it does).
                    shutdown = true;
                    tokio::select! {
                        status = child.wait() => status,
                        () = reporter.shutdown_deadline() => {
                            stopped_by_us = true;
                            process::signal_group(pgid, Signal::SIGKILL);
                            child.wait().await
                        }
                    }
                } else {
                    // A cancel or a timeout: SIGKILL after the grace.
                    stopped_by_us = true;
                    match tokio::time::timeout(self.cancel_grace, child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            tracing::info!(task_id = %reporter.task_id(), "exec op still running after its grace; SIGKILL");
                            process::signal_group(pgid, Signal::SIGKILL);
                            child.wait().await
                        }
                    }
                }
            }
        };
        // The program is gone: so is the rest of its group.
        process::signal_group(pgid, Signal::SIGKILL);
        process::reap_group(pgid, Duration::from_secs(1)).await;
        guard.disarm();
        let result = match stdout {
            Some(task) => output::drain(task, &reporter).await.flatten(),
            None => None,
        };
        let tail = match stderr {
            Some(task) => output::drain(task, &reporter).await.unwrap_or_default(),
            None => VecDeque::new(),
        };
        let status = status.map_err(|error| {
            OpError::new(
                "exec_error",
                format!("cannot wait for {}: {error}", self.program.display()),
            )
        })?;
        // The manager knows why (cancel, timeout, shutdown) and says so. A
        // program that exits 0 after a shutdown's SIGTERM keeps its result.
        if stopped_by_us || (shutdown && status.code() != Some(0)) {
            return Err(OpError::new("cancelled", "stopped by tasktape"));
        }
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(result.unwrap_or_else(|| json!({"exit_code": 0}))),
            (Some(code), _) => {
                let error = OpError(
                    ErrorInfo::new("exit_status", format!("exited with status {code}")).with(
                        "detail",
                        json!({"exit_code": code, "stderr_tail": Vec::from(tail)}),
                    ),
                );
                // `permanent_exit_codes`: no retry policy tries these again.
                Err(if self.permanent_exit_codes.contains(&code) {
                    error.into_permanent()
                } else {
                    error
                })
            }
            (None, Some(signal)) => {
                let signal_name = process::signal_name(signal);
                Err(OpError(
                    ErrorInfo::new("killed", format!("killed by {signal_name}")).with(
                        "detail",
                        json!({"signal": signal, "signal_name": signal_name, "stderr_tail": Vec::from(tail)}),
                    ),
                ))
            }
            (None, None) => Err(OpError::new("exec_error", format!("ended with {status}"))),
        }
    }
}

/// Builds every op of a config file's `[ops]` table, sorted by name; the
/// first bad one is the error.
pub fn ops_from_specs(
    specs: BTreeMap<String, ExecOpSpec>,
    default_grace: Duration,
) -> Result<Vec<Arc<ExecOp>>, ConfigError> {
    specs
        .into_iter()
        .map(|(name, spec)| ExecOp::from_spec(&name, spec, default_grace).map(Arc::new))
        .collect()
}
