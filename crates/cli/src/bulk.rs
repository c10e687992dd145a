//! `tasktape tasks cancel` with filters and `tasktape tasks retry`: count
//! what would be touched, ask when it is more than a few, then act with one
//! request (`POST /v1/tasks/cancel`, `POST /v1/tasks/retry`).

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use tasktape_client::{ListQuery, StatusFilter, TaskFilter};

use crate::args::BulkArgs;
use crate::exit::{Exit, Failure};
use crate::remote::Remote;

/// More than this many tasks and the verb asks first (or wants `--yes`).
const ASK_ABOVE: u64 = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Cancel,
    Retry,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Retry => "retry",
        }
    }
}

/// `tasktape tasks cancel --status … --op …`.
pub(crate) async fn cancel(args: BulkArgs) -> Result<Exit, Failure> {
    act(args, Action::Cancel).await
}

/// `tasktape tasks retry --status failed --since 1h`.
pub(crate) async fn retry(args: BulkArgs) -> Result<Exit, Failure> {
    act(args, Action::Retry).await
}

fn filter(args: &BulkArgs) -> TaskFilter {
    TaskFilter {
        ids: (!args.ids.is_empty()).then(|| args.ids.clone()),
        status: match args.status.as_slice() {
            [] => None,
            [one] => Some(StatusFilter::One(*one)),
            many => Some(StatusFilter::Many(many.to_vec())),
        },
        op: args.op.clone(),
        created_after: args.since,
        created_before: args.created_before,
        metadata: args.meta.iter().cloned().collect(),
    }
}

async fn act(args: BulkArgs, action: Action) -> Result<Exit, Failure> {
    let filter = filter(&args);
    if filter.is_empty() {
        return Err(Failure::usage(format!(
            "give at least one filter (--status, --op, --since, --created-before, --meta, --task) to {} tasks",
            action.verb()
        )));
    }
    let remote = args.remote.connect()?;
    let touched = remote.call(count(&remote, &filter, action)).await?;
    if touched == 0 {
        if args.output.json {
            crate::verbs::print_json(&serde_json::json!({"matched": 0}));
        } else {
            println!("no task matches to {}", action.verb());
        }
        return Ok(Exit::Succeeded);
    }
    if touched > ASK_ABOVE && !args.yes && !confirm(touched, action)? {
        eprintln!("nothing was changed");
        return Ok(Exit::Failed);
    }
    match action {
        Action::Cancel => {
            let answer = remote.call(remote.client.cancel_matching(&filter)).await?;
            if args.output.json {
                crate::verbs::print_json(&answer);
            } else {
                println!(
                    "cancelled {} of {} matching tasks (the others had already ended)",
                    answer.cancelled, answer.matched
                );
            }
        }
        Action::Retry => {
            let answer = remote.call(remote.client.retry_matching(&filter)).await?;
            if args.output.json {
                crate::verbs::print_json(&answer);
            } else {
                println!(
                    "retried {} of {} matching tasks as new tasks (pending and running ones are left alone)",
                    answer.retried, answer.matched
                );
            }
        }
    }
    Ok(Exit::Succeeded)
}

/// Asks on the terminal; without one, refuses with what to do.
fn confirm(touched: u64, action: Action) -> Result<bool, Failure> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::usage(format!(
            "{touched} tasks match; pass --yes to {} them",
            action.verb()
        )));
    }
    eprint!("{} {touched} tasks? [y/N] ", capitalized(action.verb()));
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|error| Failure::usage(format!("cannot read the answer: {error}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// How many tasks the action would touch: unfinished ones for a cancel,
/// finished ones for a retry.
async fn count(
    remote: &Remote,
    filter: &TaskFilter,
    action: Action,
) -> Result<u64, tasktape_client::ClientError> {
    let applies = |status: tasktape_client::Status| match action {
        Action::Cancel => !status.is_terminal(),
        Action::Retry => status.is_terminal(),
    };
    let statuses = filter.statuses();
    let wanted = |task: &tasktape_client::TaskSummary| {
        applies(task.status) && (statuses.is_empty() || statuses.contains(&task.status))
    };
    if let Some(ids) = &filter.ids {
        let mut touched = 0;
        for id in ids {
            let row = match remote.client.task(*id).await {
                Ok(row) => row,
                Err(error) if error.has_code("not_found") => continue,
                Err(error) => return Err(error),
            };
            let in_window = filter.created_after.is_none_or(|at| row.created_at >= at)
                && filter.created_before.is_none_or(|at| row.created_at < at);
            if in_window
                && filter.op.as_ref().is_none_or(|op| *op == row.op)
                && applies(row.status)
                && (statuses.is_empty() || statuses.contains(&row.status))
            {
                touched += 1;
            }
        }
        return Ok(touched);
    }
    let mut query = ListQuery {
        status: match statuses.as_slice() {
            [one] => Some(*one),
            _ => None,
        },
        op: filter.op.clone(),
        limit: Some(1000),
        created_after: filter.created_after,
        created_before: filter.created_before,
        ..ListQuery::default()
    };
    let mut touched = 0;
    loop {
        let page = remote.client.list(&query).await?;
        touched += page.tasks.iter().filter(|task| wanted(task)).count() as u64;
        match page.next_cursor {
            Some(cursor) if page.has_more => query.cursor = Some(cursor),
            _ => return Ok(touched),
        }
    }
}
