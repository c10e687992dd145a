//! Reading a program's output: stdout lines through the protocol into
//! events (awaited, so a flood is slowed by the store's queue), stderr lines
//! as `warn` logs with a tail kept for failures, and the bounded drain after
//! the program exits.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;
use tasktape_core::Reporter;

use crate::{process, protocol};

/// Lines of stderr kept for a failure's `stderr_tail`.
const STDERR_TAIL_LINES: usize = 20;
/// Characters kept of each of those lines.
const STDERR_TAIL_WIDTH: usize = 500;
/// How long output is still read after the program exited (a process that
/// left the group may hold the pipes open).
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

/// Aborts a reader task when the run is dropped (aborted by the manager).
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for a reader to reach the end of its stream, at most
/// [`OUTPUT_DRAIN`]; a stream still open then is left (and said so).
pub(crate) async fn drain<T>(mut task: AbortOnDrop<T>, reporter: &Reporter) -> Option<T> {
    match tokio::time::timeout(OUTPUT_DRAIN, &mut task.0).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(_)) => None,
        Err(_) => {
            let _ = reporter
                .log(
                    "warn",
                    "the program exited but a process that left its group still holds its output open; stopped reading",
                )
                .await;
            None
        }
    }
}

/// stdout: protocol lines become events, the rest `info` logs; the last
/// `result` line's value is returned. Once the task no longer takes events
/// (finished, cancelled) the pipe is still drained so the program never
/// blocks on a full pipe.
pub(crate) async fn read_stdout<R: tokio::io::AsyncBufRead + Unpin>(
    mut reader: R,
    reporter: Reporter,
) -> Option<Value> {
    let mut buffer = Vec::new();
    let mut result = None;
    let mut reporting = true;
    while let Ok(Some(line)) = process::read_line(&mut reader, &mut buffer).await {
        if let protocol::Line::Result(value) = protocol::parse(&line) {
            result = Some(value);
            continue;
        }
        if !reporting {
            continue;
        }
        let reported = match protocol::parse(&line) {
            protocol::Line::Event(body) => reporter.event(body).await,
            protocol::Line::Result(_) | protocol::Line::Plain => reporter.log("info", line).await,
        };
        if reported.is_err() {
            reporting = false;
        }
    }
    result
}

/// stderr: each line a `warn` log; the last lines are returned for a
/// failure's `stderr_tail`.
pub(crate) async fn read_stderr<R: tokio::io::AsyncBufRead + Unpin>(
    mut reader: R,
    reporter: Reporter,
) -> VecDeque<String> {
    let mut buffer = Vec::new();
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let mut reporting = true;
    while let Ok(Some(line)) = process::read_line(&mut reader, &mut buffer).await {
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.chars().take(STDERR_TAIL_WIDTH).collect());
        if reporting && reporter.log("warn", line).await.is_err() {
            reporting = false;
        }
    }
    tail
}
