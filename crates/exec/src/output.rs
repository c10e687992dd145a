//! Reading a program's output: stdout lines through the protocol into
//! events (awaited, so a flood is slowed by the store's queue), stderr lines
//! as `warn` logs with a tail kept for failures, and the bounded drain after
//! the program exits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tasktape_core::Reporter;

use crate::{process, protocol};

/// Lines of stderr kept for a failure's `stderr_tail`.
const STDERR_TAIL_LINES: usize = 20;
/// Characters kept of each of those lines.
const STDERR_TAIL_WIDTH: usize = 500;
/// After the program exited, how long its output may go without a new line
/// before reading stops (a process that left the group may hold the pipes
/// open); a reader still making progress (a slow store) is waited for, up
/// to [`OUTPUT_DRAIN_MAX`] in all (a process that left the group may also
/// keep writing).
const OUTPUT_IDLE: Duration = Duration::from_secs(5);
const OUTPUT_DRAIN_MAX: Duration = Duration::from_secs(60);

/// A reader task, aborted when dropped (the run was aborted), with a count
/// of the lines it has read.
pub(crate) struct AbortOnDrop<T> {
    pub(crate) task: tokio::task::JoinHandle<T>,
    pub(crate) lines: Arc<AtomicU64>,
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Spawns a reader (`read_stdout`/`read_stderr`) with a fresh line count.
pub(crate) fn spawn_reader<T, F>(read: impl FnOnce(Arc<AtomicU64>) -> F) -> AbortOnDrop<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let lines = Arc::new(AtomicU64::new(0));
    AbortOnDrop {
        task: tokio::spawn(read(Arc::clone(&lines))),
        lines,
    }
}

/// Waits for a reader to reach the end of its stream (the program exited).
/// A reader that keeps reading lines is waited for however long the store
/// takes; one that reads nothing for [`OUTPUT_IDLE`] is given up (a process
/// that left the group still holds the pipe), and that is said on the tape.
pub(crate) async fn drain<T>(mut reader: AbortOnDrop<T>, reporter: &Reporter) -> Option<T> {
    let mut seen = reader.lines.load(Ordering::Relaxed);
    let give_up = tokio::time::Instant::now() + OUTPUT_DRAIN_MAX;
    loop {
        match tokio::time::timeout(OUTPUT_IDLE, &mut reader.task).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(_)) => return None,
            Err(_) => {
                let now = reader.lines.load(Ordering::Relaxed);
                if now != seen && tokio::time::Instant::now() < give_up {
                    seen = now;
                    continue;
                }
                let _ = reporter
                    .log(
                        "warn",
                        "stopped reading the program's output after it exited: it stayed open (a process that left the program's group may hold it)",
                    )
                    .await;
                return None;
            }
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
    lines: Arc<AtomicU64>,
) -> Option<Value> {
    let mut buffer = Vec::new();
    let mut result = None;
    let mut reporting = true;
    while let Ok(Some(line)) = process::read_line(&mut reader, &mut buffer).await {
        lines.fetch_add(1, Ordering::Relaxed);
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
    lines: Arc<AtomicU64>,
) -> VecDeque<String> {
    let mut buffer = Vec::new();
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let mut reporting = true;
    while let Ok(Some(line)) = process::read_line(&mut reader, &mut buffer).await {
        lines.fetch_add(1, Ordering::Relaxed);
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
