//! The client verbs' arguments (clap), shared switches first.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tasktape_client::{Status, TaskId};

use crate::remote::RemoteArgs;

/// Output switches shared by the verbs.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Machine-readable output: JSON (JSON lines for events)
    #[arg(long)]
    pub(crate) json: bool,
    /// No bars or colours: one line per event, even in a terminal
    #[arg(long, conflicts_with = "json")]
    pub(crate) plain: bool,
}

/// Switches of the verbs that follow a tape.
#[derive(Args, Debug, Clone)]
pub struct FollowArgs {
    /// Give up waiting after this many seconds (exit 124; the task goes on)
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) timeout: Option<Duration>,
    /// On Ctrl-C, cancel the task instead of only stopping to follow it
    #[arg(long)]
    pub(crate) cancel_on_interrupt: bool,
    /// Follow by long-polling instead of Server-Sent Events
    #[arg(long)]
    pub(crate) poll: bool,
}

/// `tasktape submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The op to run (`tasktape ops` lists them)
    pub(crate) op: String,
    /// A param as KEY=VALUE; VALUE is read as JSON when it parses (5, true,
    /// [1,2]), else as a string; repeatable, wins over --params
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    pub(crate) param: Vec<String>,
    /// All params as one JSON object
    #[arg(long, value_name = "JSON")]
    pub(crate) params: Option<String>,
    /// Submitting again with this key returns the first task instead of a new one
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
    /// Follow the task until it ends, then exit with its status
    #[arg(long)]
    pub(crate) wait: bool,
    #[command(flatten)]
    pub(crate) follow: FollowArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

/// `tasktape tasks …`.
#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// List tasks, newest first
    List(ListArgs),
    /// Show one task's row
    Status(IdArgs),
    /// Print a task's events (--follow: until it ends)
    Events(EventsArgs),
    /// Follow a task until it ends; exit 0 succeeded, 1 failed, 130 cancelled
    Wait(WaitArgs),
    /// Ask a task to stop
    Cancel(IdArgs),
}

/// Output format of `tasks list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

/// `tasktape tasks list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only tasks in this status (pending, running, succeeded, failed, cancelled)
    #[arg(long)]
    pub(crate) status: Option<Status>,
    /// Only tasks of this op
    #[arg(long)]
    pub(crate) op: Option<String>,
    /// Rows per page
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: u32,
    /// Every matching task, page after page
    #[arg(long)]
    pub(crate) all: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub(crate) format: ListFormat,
    /// Same as --format json
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

/// A verb on one task.
#[derive(Args, Debug)]
pub struct IdArgs {
    /// The task's id
    pub(crate) id: TaskId,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

/// `tasktape tasks events`.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// The task's id
    pub(crate) id: TaskId,
    /// First seq to print
    #[arg(long, default_value_t = 0)]
    pub(crate) from_seq: u64,
    /// Print at most this many events
    #[arg(long)]
    pub(crate) limit: Option<u64>,
    /// Keep printing as events arrive, until the task ends
    #[arg(long)]
    pub(crate) follow: bool,
    #[command(flatten)]
    pub(crate) follow_args: FollowArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

/// `tasktape tasks wait`.
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// The task's id
    pub(crate) id: TaskId,
    #[command(flatten)]
    pub(crate) follow: FollowArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

/// `tasktape ops`.
#[derive(Args, Debug)]
pub struct OpsArgs {
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is not a duration"))
}
