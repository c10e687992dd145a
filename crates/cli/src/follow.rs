//! Following a tape from a terminal: events until `final` (exit by its
//! status), a `--limit`, `--timeout` (exit 124) or Ctrl-C (stop following,
//! or cancel with `--cancel-on-interrupt`; exit 130).

use std::time::Duration;

use tasktape_client::{EventBody, FollowMode, Status, TaskId};
use tokio::time::Instant;

use crate::args::FollowArgs;
use crate::display::{Mode, TapeView};
use crate::exit::{Exit, Failure};
use crate::remote::Remote;

/// How long `--cancel-on-interrupt` waits for the task's final event.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Follows `task_id`'s tape from `from_seq` until `final` (exit by its
/// status), `limit` events, the timeout (124) or Ctrl-C (130).
pub(crate) async fn follow_tape(
    remote: &Remote,
    task_id: TaskId,
    from_seq: u64,
    limit: Option<u64>,
    args: &FollowArgs,
    mode: Mode,
) -> Result<Exit, Failure> {
    let follow_mode = if args.poll {
        FollowMode::LongPoll
    } else {
        FollowMode::Sse
    };
    let mut follower = remote.client.follow(task_id, from_seq, follow_mode);
    let mut view = TapeView::new(mode);
    // A deadline too far to represent is no deadline.
    let deadline = args
        .timeout
        .and_then(|timeout| Instant::now().checked_add(timeout));
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut shown = 0_u64;
    loop {
        if limit.is_some_and(|limit| shown >= limit) {
            return Ok(Exit::Succeeded);
        }
        let next = tokio::select! {
            biased;
            _ = &mut interrupt => {
                return interrupted(remote, task_id, &mut follower, &mut view, args).await;
            }
            _ = sleep_until(deadline) => {
                view.abandon();
                let status = follower.task_status().map(|status| format!(" (it was {status})")).unwrap_or_default();
                eprintln!(
                    "timed out after {:.1}s waiting for task {task_id}{status}; it goes on",
                    args.timeout.unwrap_or_default().as_secs_f64(),
                );
                return Ok(Exit::TimedOut);
            }
            next = follower.next() => next,
        };
        match next {
            Ok(Some(event)) => {
                if !view.event(&event) {
                    // Whoever read our output is gone: stop quietly.
                    return Ok(Exit::Succeeded);
                }
                shown += 1;
                if let EventBody::Final { status, .. } = event.body {
                    return Ok(exit_for(status));
                }
            }
            // Followed from past the end of a finished tape.
            Ok(None) => return Ok(follower.task_status().map_or(Exit::Succeeded, exit_for)),
            Err(error) => {
                view.abandon();
                return Err(remote.failure(error));
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn exit_for(status: Status) -> Exit {
    match status {
        Status::Succeeded => Exit::Succeeded,
        Status::Cancelled => Exit::Cancelled,
        _ => Exit::Failed,
    }
}

/// Ctrl-C while following: stop (saying how to cancel), or with
/// `--cancel-on-interrupt` cancel and show the final event when it comes.
async fn interrupted(
    remote: &Remote,
    task_id: TaskId,
    follower: &mut tasktape_client::Follower,
    view: &mut TapeView,
    args: &FollowArgs,
) -> Result<Exit, Failure> {
    if !args.cancel_on_interrupt {
        view.abandon();
        eprintln!(
            "interrupted: stopped following task {task_id}; it keeps running\nto cancel it: tasktape tasks cancel {task_id}{}",
            remote.url_flag()
        );
        return Ok(Exit::Cancelled);
    }
    view.note(&format!("interrupted: cancelling task {task_id}"));
    let answer = remote.call(remote.client.cancel(task_id)).await?;
    if answer.already_terminal {
        view.note(&format!("task {task_id} had already ended"));
    }
    let deadline = Instant::now() + CANCEL_WAIT;
    let second_interrupt = tokio::signal::ctrl_c();
    tokio::pin!(second_interrupt);
    loop {
        let next = tokio::select! {
            _ = &mut second_interrupt => break,
            _ = tokio::time::sleep_until(deadline) => break,
            next = follower.next() => next,
        };
        match next {
            Ok(Some(event)) => {
                let _ = view.event(&event);
                if let EventBody::Final { status, .. } = event.body {
                    // It may have ended some other way before the cancel landed.
                    return Ok(exit_for(status));
                }
            }
            Ok(None) => {
                return Ok(follower.task_status().map_or(Exit::Cancelled, exit_for));
            }
            Err(_) => break,
        }
    }
    view.abandon();
    eprintln!("cancel requested for task {task_id}; its final event did not arrive in time");
    Ok(Exit::Cancelled)
}
