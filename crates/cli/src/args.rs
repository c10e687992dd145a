//! The client verbs' arguments (clap), shared switches first.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tasktape_client::{Status, TaskId, Timestamp};

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

/// The client verbs' shared flags, taken before the verb as well
/// (`tasktape --url URL --json ops`); given in both places, the verb's win.
#[derive(Args, Debug, Clone, Default)]
pub struct Globals {
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
    /// Machine-readable output: JSON (JSON lines for events)
    #[arg(long = "json", id = "global_json")]
    pub(crate) json: bool,
    /// No bars or colours: one line per event, even in a terminal
    #[arg(long = "plain", id = "global_plain", conflicts_with = "global_json")]
    pub(crate) plain: bool,
}

impl Globals {
    /// Whether any was given.
    pub(crate) fn given(&self) -> bool {
        self.json || self.plain || self.remote.given()
    }

    /// Fills a verb's own flags from these where the verb left them unset.
    pub(crate) fn apply(&self, remote: &mut RemoteArgs, output: Option<&mut OutputArgs>) {
        remote.fill_from(&self.remote);
        if let Some(output) = output {
            output.json |= self.json;
            output.plain |= self.plain;
        }
    }
}

impl OutputArgs {
    /// `--json` and `--plain` given in different places.
    pub(crate) fn conflicting(&self) -> bool {
        self.json && self.plain
    }
}

impl TasksCommand {
    /// Fills the subcommand's flags from the ones given before the verb.
    pub(crate) fn apply(&mut self, globals: &Globals) {
        match self {
            TasksCommand::List(args) => {
                globals.apply(&mut args.remote, None);
                args.json |= globals.json;
            }
            TasksCommand::Status(args) => globals.apply(&mut args.remote, Some(&mut args.output)),
            TasksCommand::Events(args) => globals.apply(&mut args.remote, Some(&mut args.output)),
            TasksCommand::Wait(args) => globals.apply(&mut args.remote, Some(&mut args.output)),
            TasksCommand::Cancel(args) => {
                globals.apply(&mut args.bulk.remote, Some(&mut args.bulk.output));
            }
            TasksCommand::Retry(args) => globals.apply(&mut args.remote, Some(&mut args.output)),
        }
    }

    /// Whether `--json` and `--plain` ended up both set.
    pub(crate) fn conflicting(&self) -> bool {
        match self {
            TasksCommand::List(_) => false,
            TasksCommand::Status(args) => args.output.conflicting(),
            TasksCommand::Events(args) => args.output.conflicting(),
            TasksCommand::Wait(args) => args.output.conflicting(),
            TasksCommand::Cancel(args) => args.bulk.output.conflicting(),
            TasksCommand::Retry(args) => args.output.conflicting(),
        }
    }
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
    #[arg(required_unless_present = "batch")]
    pub(crate) op: Option<String>,
    /// Submit every line of FILE instead (`-`: standard input): JSON lines,
    /// each as `POST /v1/tasks` takes one, e.g. {"op": "echo", "params":
    /// {"count": 3}}; prints one line per submission (its task id, or why it
    /// was refused); exit 1 when any was refused
    #[arg(long, value_name = "FILE", conflicts_with_all = ["op", "param", "params", "idempotency_key", "at", "in_", "priority", "meta", "wait"])]
    pub(crate) batch: Option<String>,
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
    /// Start it no earlier than this time (RFC 3339, e.g. 2026-12-01T03:00:00Z or …+01:00)
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "in_")]
    pub(crate) at: Option<Timestamp>,
    /// Start it no earlier than this long from now (30s, 10m, 2h, 1d)
    #[arg(long = "in", id = "in_", value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) in_: Option<Duration>,
    /// Higher runs first (default 0)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub(crate) priority: Option<i32>,
    /// Metadata as KEY=VALUE (keys a-z 0-9 _ . -, values strings; repeatable),
    /// shown on the task's rows and matched by `tasks list --meta`
    #[arg(long = "meta", short = 'm', id = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub(crate) meta: Vec<(String, String)>,
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
    /// Ask a task to stop, or every task the filters match
    Cancel(CancelArgs),
    /// Run finished tasks the filters match again, as new tasks
    Retry(BulkArgs),
}

/// `tasktape tasks cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The task's id (or give filters to cancel many)
    #[arg(required_unless_present_any = ["status", "op", "since", "created_before", "meta", "ids"])]
    pub(crate) id: Option<TaskId>,
    #[command(flatten)]
    pub(crate) bulk: BulkArgs,
}

/// The filters of a bulk action; every one given must hold.
#[derive(Args, Debug)]
pub struct BulkArgs {
    /// Only these tasks (repeatable)
    #[arg(long = "task", id = "ids", value_name = "ID")]
    pub(crate) ids: Vec<TaskId>,
    /// Only tasks in this status (repeatable)
    #[arg(long)]
    pub(crate) status: Vec<Status>,
    /// Only tasks of this op
    #[arg(long)]
    pub(crate) op: Option<String>,
    /// Only tasks created within this long (30s, 10m, 2h, 1d), or since this time
    #[arg(long, value_name = "DURATION|TIME", value_parser = parse_since)]
    pub(crate) since: Option<Timestamp>,
    /// Only tasks created before this time (RFC 3339)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) created_before: Option<Timestamp>,
    /// Only tasks whose metadata has KEY=VALUE (repeatable: all must hold)
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub(crate) meta: Vec<(String, String)>,
    /// Act without asking when more than 10 tasks match
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
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
    /// Only tasks whose metadata has KEY=VALUE (repeatable: all must hold)
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub(crate) meta: Vec<(String, String)>,
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

/// `30s`, `10m`, `2h`, `1d` (a bare number is seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 30s, 10m, 2h or 1d"))?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        _ => return Err(format!("'{text}': unit '{unit}' is not s, m, h or d")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is not a duration"))
}

/// An RFC 3339 time (any offset; kept in UTC).
pub(crate) fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text.trim()).ok_or_else(|| {
        format!("'{text}' is not a time such as 2026-12-01T03:00:00Z or 2026-12-01T04:00:00+01:00")
    })
}

/// A metadata field, `KEY=VALUE` (the value may be empty and hold `=`).
pub(crate) fn parse_meta(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not KEY=VALUE"))?;
    if let Some(problem) = tasktape_client::metadata::key_problem(key) {
        return Err(format!("'{key}': {problem}"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A duration back from now, or a time.
pub(crate) fn parse_since(text: &str) -> Result<Timestamp, String> {
    if let Ok(time) = parse_time(text) {
        return Ok(time);
    }
    let back = parse_duration(text).map_err(|_| {
        format!("'{text}' is neither a duration (30s, 10m, 2h, 1d) nor a time in UTC")
    })?;
    Ok(Timestamp::now().add_millis(-(back.as_millis() as i64)))
}

pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is not a duration"))
}
