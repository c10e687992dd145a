//! How a manager runs: [`ManagerConfig`] and its defaults.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::cron::Schedule;
use crate::observe::{PlainTaskTracing, TaskTracing};
use crate::retry::RetryPlan;

/// How a manager runs.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// This instance's id: the owner written on the tasks it runs. Keep it
    /// stable across restarts so leftovers are recognised as our own.
    pub instance_id: String,
    /// How long a cancelled op may take to return before it is aborted.
    pub cancel_grace: Duration,
    /// How long a lease holds without renewal.
    pub lease_ttl: Duration,
    /// How often leases are renewed and expired peers' tasks reaped.
    pub lease_interval: Duration,
    /// Concurrent runs per op unless `op_concurrency` says otherwise (across
    /// all instances sharing the store).
    pub default_concurrency: usize,
    /// Concurrent runs for named ops.
    pub op_concurrency: HashMap<String, usize>,
    /// How task runs' spans are made and linked to their submitters'.
    pub task_tracing: Arc<dyn TaskTracing>,
    /// Whether this instance runs tasks. `false` makes an API-only instance
    /// on a shared store: it accepts submits (checking params with its ops'
    /// `prepare`), cancels and reads, and claims nothing.
    pub worker: bool,
    /// Most events one task's tape may hold; an op that reports past it is
    /// stopped and its task ends `failed` with code `tape_full` (the `final`
    /// event is written past the cap).
    pub max_events_per_task: u64,
    /// Most bytes of event JSON one task's tape may hold (each event
    /// counted as stored, with its `seq` and `ts`); past it the op is
    /// stopped and its task ends `failed` with code `tape_full`, as for
    /// `max_events_per_task`.
    pub max_tape_bytes: u64,
    /// How long finished tasks are kept; older ones are deleted in the
    /// background, in small batches. `None` keeps everything.
    pub retention: Option<Duration>,
    /// How often retention looks for tasks to delete (deleted tapes are
    /// swept at once besides).
    pub retention_interval: Duration,
    /// Retry plans by op name; override the op's own ([`crate::Op::retry`],
    /// [`crate::Op::idempotent`]). A submit's policy overrides both.
    pub retries: HashMap<String, RetryPlan>,
    /// Tasks submitted on a cron schedule (by every instance; one task per
    /// slot between them).
    pub schedules: Vec<Schedule>,
    /// Flow control by op name (`[flow.OPNAME]`); an op's own
    /// ([`crate::Op::flow`]) applies when it has none here.
    pub flows: HashMap<String, crate::flow::Flow>,
    /// Where the engine's time comes from (leases, grace, time limits,
    /// backoff, due timers, schedules): the system's clock, or a
    /// [`crate::clock::ManualClock`] in tests.
    pub clock: Arc<dyn Clock>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            instance_id: "local".to_owned(),
            cancel_grace: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
            lease_interval: Duration::from_secs(5),
            default_concurrency: 64,
            op_concurrency: HashMap::new(),
            task_tracing: Arc::new(PlainTaskTracing),
            worker: true,
            max_events_per_task: 1_000_000,
            max_tape_bytes: 1 << 30,
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            retention_interval: Duration::from_secs(60),
            retries: HashMap::new(),
            schedules: Vec::new(),
            flows: HashMap::new(),
            clock: Arc::new(SystemClock),
        }
    }
}
