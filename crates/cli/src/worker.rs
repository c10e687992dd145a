//! `tasktape worker`: serves the `[ops.NAME]` exec ops of a local config
//! file for a server elsewhere, through the worker protocol
//! (`docs/WORKERS.md`): register, claim while slots are free, run each task
//! as the server would (the same exec op: process group, SIGTERM then
//! SIGKILL after the grace, the stdout line protocol), report events and
//! finishes in batches, heartbeat, hear cancels on the signal stream. A
//! lost session stops every run; SIGTERM/SIGINT drains.

mod batch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::json;
use tasktape_client::protocol::{
    Assignment, ClaimRequest, Registered, Registration, WorkerError, WorkerFinish, WorkerOp,
};
use tasktape_client::{Client, ClientError, WorkerSignal};
use tasktape_core::{CancellationToken, Op, Reporter, TaskId};
use tasktape_exec::{ExecOp, ExecOpSpec};
use tokio::sync::Notify;

use self::batch::{Batcher, Entry};
use crate::exit::{Exit, Failure};
use crate::remote::RemoteArgs;

/// `tasktape worker`'s arguments.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
    /// The worker's id, stable across restarts [default: HOST:tasktape-worker]
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// The config file whose `[ops.NAME]` tables are the ops served
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The most tasks run at once
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10000))]
    concurrency: u32,
    /// Seconds running tasks get to finish after SIGTERM before they are cancelled
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    drain_timeout: u64,
}

/// The parts of the config file a worker reads (other keys are the
/// server's and are ignored, so one file may serve both).
#[derive(Deserialize)]
struct WorkerFile {
    #[serde(default)]
    ops: BTreeMap<String, ExecOpSpec>,
    cancel_grace_ms: Option<u64>,
}

/// One task this worker runs.
struct Running {
    op: String,
    token: CancellationToken,
    /// The server no longer has it for us: report nothing more.
    dead: bool,
}

/// What the worker's loops share.
struct Shared {
    client: Client,
    session: String,
    runs: Mutex<HashMap<TaskId, Running>>,
    /// A slot freed (or a drain began).
    freed: Notify,
    draining: CancellationToken,
    /// The session ended (lost, replaced): stop everything, register again.
    lost: CancellationToken,
}

impl Shared {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Running>> {
        self.runs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Stops a run the server no longer gives us.
    fn stop(&self, task_id: TaskId) {
        if let Some(run) = self.runs().get_mut(&task_id) {
            run.dead = true;
            run.token.cancel();
        }
    }
}

pub fn run(args: WorkerArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return Exit::Failed.code();
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => Exit::Succeeded.code(),
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.exit.code()
        }
    }
}

fn load(args: &WorkerArgs) -> Result<(Vec<Arc<ExecOp>>, Duration), Failure> {
    let text = std::fs::read_to_string(&args.config).map_err(|error| {
        Failure::usage(format!("cannot read {}: {error}", args.config.display()))
    })?;
    let file: WorkerFile = toml::from_str(&text)
        .map_err(|error| Failure::usage(format!("{}: {error}", args.config.display())))?;
    if file.ops.is_empty() {
        return Err(Failure::usage(format!(
            "{}: no [ops.NAME] table: a worker needs at least one op to serve",
            args.config.display()
        )));
    }
    let grace = Duration::from_millis(file.cancel_grace_ms.unwrap_or(5000));
    let ops = tasktape_exec::ops_from_specs(file.ops, grace)
        .map_err(|error| Failure::usage(format!("{}: {error}", args.config.display())))?;
    Ok((ops, grace))
}

fn registration(args: &WorkerArgs, ops: &[Arc<ExecOp>]) -> Registration {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    Registration {
        worker_id: args
            .id
            .clone()
            .unwrap_or_else(|| format!("{host}:tasktape-worker")),
        host,
        pid: std::process::id(),
        version: concat!("tasktape-worker ", env!("CARGO_PKG_VERSION")).to_owned(),
        capacity: args.concurrency,
        ops: ops
            .iter()
            .map(|op| WorkerOp {
                name: op.name().to_owned(),
                description: op.description().to_owned(),
                params_schema: op.params_schema(),
                concurrency: op.concurrency().map(|cap| cap.min(10_000) as u32),
                retry: op.retry(),
                idempotent: op.idempotent(),
                timeout_ms: op.timeout().map(|limit| limit.as_millis() as u64),
            })
            .collect(),
    }
}

async fn serve(args: WorkerArgs) -> Result<(), Failure> {
    let (ops, _grace) = load(&args)?;
    let client = args.remote.connect()?.client;
    let registration = registration(&args, &ops);
    let ops: HashMap<String, Arc<ExecOp>> = ops
        .into_iter()
        .map(|op| (op.name().to_owned(), op))
        .collect();
    let draining = CancellationToken::new();
    tokio::spawn(watch_signals(draining.clone()));
    let drain_timeout = Duration::from_secs(args.drain_timeout);
    loop {
        let Some(registered) = register(&client, &registration, &draining).await? else {
            return Ok(());
        };
        eprintln!(
            "tasktape worker {} serving {} op(s) for {}",
            registered.worker_id,
            ops.len(),
            client.base_url()
        );
        let shared = Arc::new(Shared {
            client: client.clone(),
            session: registered.session.clone(),
            runs: Mutex::new(HashMap::new()),
            freed: Notify::new(),
            draining: draining.clone(),
            lost: CancellationToken::new(),
        });
        let ended = session(&shared, &registered, &ops, args.concurrency, drain_timeout).await;
        if ended {
            return Ok(());
        }
        eprintln!("the session with the server ended; registering again");
    }
}

/// First SIGTERM or SIGINT: drain.
async fn watch_signals(draining: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    draining.cancel();
}

/// Registers, retrying while the server cannot be reached or the id's
/// previous process has not been seen gone yet; `None` when a drain began.
async fn register(
    client: &Client,
    registration: &Registration,
    draining: &CancellationToken,
) -> Result<Option<Registered>, Failure> {
    let mut pause = Duration::from_millis(200);
    let since = Instant::now();
    loop {
        let failure = match client.register_worker(registration).await {
            Ok(registered) => return Ok(Some(registered)),
            Err(ClientError::Api(error)) if error.code == "worker_id_in_use" => {
                if since.elapsed() > Duration::from_secs(120) {
                    return Err(Failure::new(Exit::Failed, error.to_string()));
                }
                error.to_string()
            }
            Err(ClientError::Api(error)) if error.status < 500 => {
                return Err(Failure::new(
                    Exit::Failed,
                    format!("the server refused the registration: {error}"),
                ));
            }
            Err(error) => error.to_string(),
        };
        eprintln!("cannot register yet ({failure}); retrying in {pause:?}");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = draining.cancelled() => return Ok(None),
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// One session: its loops until it is lost (false) or drained (true).
async fn session(
    shared: &Arc<Shared>,
    registered: &Registered,
    ops: &HashMap<String, Arc<ExecOp>>,
    capacity: u32,
    drain_timeout: Duration,
) -> bool {
    let ttl = Duration::from_millis(registered.lease_ttl_ms);
    let interval = Duration::from_millis(registered.lease_interval_ms);
    let batcher = Batcher::start(Arc::clone(shared), ttl);
    let heartbeats = tokio::spawn(heartbeat(Arc::clone(shared), interval, ttl));
    let signals = tokio::spawn(signal_stream(Arc::clone(shared)));
    let mut waiting = 0u64;
    while !shared.draining.is_cancelled() && !shared.lost.is_cancelled() {
        let (free, per_op) = {
            let runs = shared.runs();
            let free = capacity.saturating_sub(runs.len() as u32);
            let per_op: BTreeMap<String, u32> = ops
                .iter()
                .map(|(name, op)| {
                    let cap = op.concurrency().map_or(u32::MAX, |cap| cap as u32);
                    let busy = runs.values().filter(|run| &run.op == name).count() as u32;
                    (name.clone(), cap.saturating_sub(busy).min(free))
                })
                .filter(|(_, free)| *free > 0)
                .collect();
            (free, per_op)
        };
        if free == 0 || per_op.is_empty() {
            tokio::select! {
                () = shared.freed.notified() => {}
                () = shared.draining.cancelled() => {}
                () = shared.lost.cancelled() => {}
            }
            continue;
        }
        let request = ClaimRequest {
            session: shared.session.clone(),
            max: free.min(1000),
            ops: per_op,
            wait_ms: 30_000,
        };
        let claim = shared.client.claim(&request);
        tokio::pin!(claim);
        let claimed = tokio::select! {
            claimed = &mut claim => claimed,
            () = shared.lost.cancelled() => break,
            () = shared.draining.cancelled() => {
                // The server answers the claim at once (with whatever it
                // took already, which then runs) once it knows.
                let _ = shared.client.worker_drain(&shared.session).await;
                claim.await
            }
        };
        match claimed {
            Ok(tasks) => {
                waiting = 0;
                for task in tasks {
                    start(shared, &batcher, ops, task);
                }
            }
            Err(ClientError::Api(error)) if error.code == "session_unknown" => {
                shared.lost.cancel();
            }
            Err(error) => {
                waiting += 1;
                let pause = Duration::from_millis(100 * waiting.min(50));
                eprintln!("claim failed ({error}); retrying in {pause:?}");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shared.lost.cancelled() => {}
                }
            }
        }
    }
    let drained = shared.draining.is_cancelled() && !shared.lost.is_cancelled();
    if drained {
        let _ = shared.client.worker_drain(&shared.session).await;
        eprintln!("draining: no new tasks; waiting up to {drain_timeout:?} for the running ones");
        let deadline = Instant::now() + drain_timeout;
        while !shared.runs().is_empty() && Instant::now() < deadline {
            tokio::select! {
                () = shared.freed.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
    // Lost, or past the drain's time: stop what still runs (exec ops kill
    // their process groups after their grace), then let their ends go out.
    for run in shared.runs().values() {
        run.token.cancel();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !shared.runs().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    batcher.flush().await;
    heartbeats.abort();
    signals.abort();
    if drained {
        let _ = shared.client.deregister(&shared.session).await;
    }
    drained
}

/// Runs one claimed task as the server would run its exec op.
fn start(
    shared: &Arc<Shared>,
    batcher: &Batcher,
    ops: &HashMap<String, Arc<ExecOp>>,
    task: Assignment,
) {
    let Some(op) = ops.get(&task.op).cloned() else {
        return;
    };
    let token = CancellationToken::new();
    shared.runs().insert(
        task.task_id,
        Running {
            op: task.op.clone(),
            token: token.clone(),
            dead: false,
        },
    );
    let shared = Arc::clone(shared);
    let sink = batcher.sink(task.lease.clone());
    let batcher = batcher.clone();
    tokio::spawn(async move {
        let task_id = task.task_id;
        let outcome = match op.prepare(task.params) {
            Ok(params) => {
                let reporter = Reporter::with_sink(sink, task_id, token);
                op.run(params, reporter).await
            }
            Err(error) => Err(tasktape_core::OpError::permanent(
                "invalid_params",
                format!("{}: {}", error.field, error.message),
            )),
        };
        let dead = shared.runs().get(&task_id).is_none_or(|run| run.dead);
        if !dead {
            let finish = match outcome {
                Ok(result) => WorkerFinish {
                    result: Some(result),
                    error: None,
                },
                Err(error) => {
                    let info = error.0;
                    let permanent = info.extra.get("permanent") == Some(&json!(true));
                    let detail = (!info.extra.is_empty()).then(|| json!(info.extra));
                    WorkerFinish {
                        result: None,
                        error: Some(WorkerError {
                            code: info.code,
                            message: info.message,
                            detail,
                            permanent,
                        }),
                    }
                }
            };
            batcher.send(Entry::finish(task_id, task.lease, finish));
        }
        shared.runs().remove(&task_id);
        shared.freed.notify_one();
    });
}

/// Renews the session every `interval`; a session that could not be renewed
/// for `ttl` (from when the last good heartbeat was sent) is given up:
/// every run is stopped before the server hands the tasks to another.
async fn heartbeat(shared: Arc<Shared>, interval: Duration, ttl: Duration) {
    let mut last_good = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let sent = Instant::now();
        let tasks: Vec<TaskId> = shared.runs().keys().copied().collect();
        match shared.client.heartbeat(&shared.session, tasks).await {
            Ok(stop) => {
                last_good = sent;
                for task_id in stop {
                    shared.stop(task_id);
                }
            }
            Err(ClientError::Api(error)) if error.code == "session_unknown" => {
                lose(&shared, "the server no longer knows this worker's session");
                return;
            }
            Err(error) => eprintln!("heartbeat failed: {error}"),
        }
        if last_good.elapsed() >= ttl {
            lose(
                &shared,
                "could not renew the lease in time; stopping every task",
            );
            return;
        }
    }
}

fn lose(shared: &Shared, why: &str) {
    eprintln!("{why}");
    let ids: Vec<TaskId> = shared.runs().keys().copied().collect();
    for task_id in ids {
        shared.stop(task_id);
    }
    shared.lost.cancel();
    shared.freed.notify_one();
}

/// Hears cancels, stops and drains; reopens the stream when it drops.
async fn signal_stream(shared: Arc<Shared>) {
    let mut pause = Duration::from_millis(100);
    loop {
        match shared.client.worker_signals(&shared.session).await {
            Ok(stream) => {
                let mut stream = Box::pin(stream);
                while let Some(signal) = stream.next().await {
                    match signal {
                        Ok(WorkerSignal::Cancel(task_id)) => {
                            if let Some(run) = shared.runs().get(&task_id) {
                                run.token.cancel();
                            }
                        }
                        Ok(WorkerSignal::Stop(task_id)) => shared.stop(task_id),
                        Ok(WorkerSignal::Drain) => {
                            shared.draining.cancel();
                            shared.freed.notify_one();
                        }
                        Ok(_) => pause = Duration::from_millis(100),
                        Err(_) => break,
                    }
                }
            }
            Err(ClientError::Api(error)) if error.code == "session_unknown" => {
                lose(&shared, "the server no longer knows this worker's session");
                return;
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
