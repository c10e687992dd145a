//! Following a task's tape as it is written, by long-poll or Server-Sent
//! Events, resuming after dropped connections.
//!
//! A [`Follower`] hands out the tape's events in order, each exactly once:
//! it remembers the next seq it needs and asks for exactly that after a
//! reconnect (`from_seq` for long-polls, `Last-Event-ID` for SSE), drops
//! anything it has already handed out, and fills a gap from the events page
//! should a stream ever skip ahead. It ends after `final`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::Method;
use tasktape_wire::{Event, EventBody, Status, TaskId};

use crate::{Client, ClientError, Result};

/// How a [`Follower`] reads the tape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FollowMode {
    /// `GET …/events?wait=…` in a loop (WIRE.md part A, what dikw uses).
    #[default]
    LongPoll,
    /// `GET …/events/stream` (WIRE.md part B).
    Sse,
}

/// How long a long-poll waits for the next event.
const POLL_WAIT: Duration = Duration::from_secs(30);
/// Events per long-poll page.
const PAGE: u32 = 1000;
/// A stream silent this long (no event, no heartbeat) is reconnected.
const STREAM_IDLE: Duration = Duration::from_secs(45);
/// First and largest pause between reconnects.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

type SseStream = Pin<
    Box<
        dyn Stream<
                Item = std::result::Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// An open SSE response and when bytes last arrived on it (heartbeats are
/// SSE comments, which the parser swallows).
struct OpenStream {
    events: SseStream,
    last_bytes: Arc<Mutex<Instant>>,
}

/// Reads one task's tape in order; see the module docs.
pub struct Follower {
    client: Client,
    task_id: TaskId,
    mode: FollowMode,
    next_seq: u64,
    buffered: VecDeque<Event>,
    stream: Option<OpenStream>,
    status: Option<Status>,
    done: bool,
    reconnect_for: Duration,
    failing_since: Option<Instant>,
    failures: u32,
}

impl Follower {
    pub(crate) fn new(client: Client, task_id: TaskId, from_seq: u64, mode: FollowMode) -> Self {
        Follower {
            client,
            task_id,
            mode,
            next_seq: from_seq.max(1),
            buffered: VecDeque::new(),
            stream: None,
            status: None,
            done: false,
            reconnect_for: Duration::from_secs(60),
            failing_since: None,
            failures: 0,
        }
    }

    /// How long to keep reconnecting while the server is unreachable or
    /// unavailable before [`next`](Self::next) gives up with the error
    /// (default 60 s).
    pub fn reconnect_for(mut self, patience: Duration) -> Self {
        self.reconnect_for = patience;
        self
    }

    /// The task.
    pub fn task_id(&self) -> TaskId {
        self.task_id
    }

    /// The seq of the next event this follower will hand out.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The task's status as last seen (from a page, or `final`).
    pub fn task_status(&self) -> Option<Status> {
        self.status
    }

    /// The next event of the tape; `None` after `final` (or when following
    /// from past the end of a finished tape). Errors that waiting can cure
    /// (connection refused, 503, a dropped stream) are retried with backoff
    /// for [`reconnect_for`](Self::reconnect_for); others are returned at
    /// once. Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                self.next_seq = event.seq + 1;
                match &event.body {
                    EventBody::TaskStarted { .. } => self.status = Some(Status::Running),
                    EventBody::Final { status, .. } => {
                        self.status = Some(*status);
                        self.done = true;
                        self.stream = None;
                    }
                    _ => {}
                }
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            let filled = match self.mode {
                FollowMode::LongPoll => self.poll_page(POLL_WAIT).await,
                FollowMode::Sse => self.read_stream().await,
            };
            match filled {
                Ok(()) => {
                    self.failing_since = None;
                    self.failures = 0;
                }
                Err(error) if error.is_retryable() => self.back_off(error).await?,
                Err(error) => return Err(error),
            }
        }
    }

    /// The rest of the tape as a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Result<Event>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut follower = state?;
            match follower.next().await {
                Ok(Some(event)) => Some((Ok(event), Some(follower))),
                Ok(None) => None,
                Err(error) => Some((Err(error), None)),
            }
        })
    }

    /// Sleeps before the next attempt, or gives up with `error` once the
    /// server has been failing for longer than `reconnect_for`.
    async fn back_off(&mut self, error: ClientError) -> Result<()> {
        self.stream = None;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.reconnect_for {
            return Err(error);
        }
        let pause = BACKOFF_FIRST
            .saturating_mul(1 << self.failures.min(5))
            .min(BACKOFF_MAX);
        self.failures += 1;
        tracing::debug!(task_id = %self.task_id, %error, ?pause, "follow: retrying");
        tokio::time::sleep(pause).await;
        Ok(())
    }

    /// Takes `events` that are next on the tape into the buffer; false when
    /// one skips ahead of `next_seq` (a gap the caller must fill).
    fn take(&mut self, events: impl IntoIterator<Item = Event>) -> bool {
        let mut expected = self.next_seq + self.buffered.len() as u64;
        for event in events {
            if event.seq < expected {
                continue;
            }
            if event.seq > expected {
                return false;
            }
            expected += 1;
            self.buffered.push_back(event);
        }
        true
    }

    async fn poll_page(&mut self, wait: Duration) -> Result<()> {
        let page = self
            .client
            .events(self.task_id, self.next_seq, PAGE, wait)
            .await?;
        self.status = Some(page.task_status);
        let empty = page.events.is_empty();
        if !self.take(page.events) {
            return Err(ClientError::Protocol {
                url: format!(
                    "{}/v1/tasks/{}/events",
                    self.client.base_url(),
                    self.task_id
                ),
                reason: format!("the page skipped past seq {}", self.next_seq),
            });
        }
        if empty && page.task_status.is_terminal() {
            // Following from past the end of a finished tape.
            self.done = true;
        }
        Ok(())
    }

    async fn read_stream(&mut self) -> Result<()> {
        if self.stream.is_none() {
            self.stream = Some(self.open_stream().await?);
        }
        let path = format!("/v1/tasks/{}/events/stream", self.task_id);
        let url = format!("{}{path}", self.client.base_url());
        let open = self.stream.as_mut().expect("opened above");
        let item = loop {
            match tokio::time::timeout(STREAM_IDLE, open.events.next()).await {
                Ok(item) => break item,
                Err(_) => {
                    let last = *open.last_bytes.lock().expect("lock");
                    if last.elapsed() >= STREAM_IDLE {
                        return Err(ClientError::Timeout { url });
                    }
                }
            }
        };
        match item {
            // The stream ended without (or before) a final: the tape may be
            // finished already (followed from past its end), else the
            // server is shutting down or something cut the connection. The
            // events page tells which; reconnect after a pause if needed.
            None => {
                self.stream = None;
                self.poll_page(Duration::ZERO).await?;
                if self.buffered.is_empty() && !self.done {
                    return Err(ClientError::Disconnected { url });
                }
                Ok(())
            }
            Some(Err(eventsource_stream::EventStreamError::Transport(error))) => {
                Err(crate::error::transport(&url, self.client.base_url(), error))
            }
            Some(Err(error)) => Err(ClientError::Protocol {
                url,
                reason: error.to_string(),
            }),
            Some(Ok(message)) => {
                if message.event == "heartbeat" {
                    return Ok(());
                }
                let event: Event =
                    serde_json::from_str(&message.data).map_err(|error| ClientError::Protocol {
                        url: url.clone(),
                        reason: format!("cannot read an event: {error}"),
                    })?;
                if !self.take([event]) {
                    // A gap: fill it from the events page, then stream again.
                    self.stream = None;
                    self.poll_page(Duration::ZERO).await?;
                }
                Ok(())
            }
        }
    }

    async fn open_stream(&mut self) -> Result<OpenStream> {
        let path = format!("/v1/tasks/{}/events/stream", self.task_id);
        let mut request = self
            .client
            .request(Method::GET, &path)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        request = if self.next_seq > 1 {
            request.header("Last-Event-ID", (self.next_seq - 1).to_string())
        } else {
            request.query(&[("from_seq", self.next_seq)])
        };
        // No total timeout: the stream lives as long as the task; idleness
        // is watched by `read_stream`.
        let response = self.client.exchange(request, &path, None).await?;
        let last_bytes = Arc::new(Mutex::new(Instant::now()));
        let seen = Arc::clone(&last_bytes);
        let events = response
            .bytes_stream()
            .inspect(move |_| *seen.lock().expect("lock") = Instant::now())
            .eventsource();
        Ok(OpenStream {
            events: Box::pin(events),
            last_bytes,
        })
    }
}
