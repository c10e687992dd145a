//! The worker's one sender: every run's events and finishes, queued in
//! order, go out in `POST /v1/worker/report` batches (what queued while the
//! last batch was on the wire goes next). A batch that cannot be sent is
//! retried, in order, for the lease's length; an item the server refuses
//! stops its run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasktape_client::protocol::{ReportItem, WorkerEvent, WorkerFinish};
use tasktape_client::{ClientError, EventBody, Timestamp};
use tasktape_core::store::{AppendAck, AppendOutcome, StoreError};
use tasktape_core::{EventSink, TaskId};
use tokio::sync::{mpsc, oneshot};

use super::Shared;

/// The most entries one report carries (the server's `max_batch`).
const MAX_ENTRIES: usize = 1000;
/// About how many bytes of events one report carries (half the server's
/// default body limit; one refused 413 is sent in halves).
const MAX_BYTES: usize = 512 * 1024;

/// What a run queued.
pub(super) enum Entry {
    Event {
        task_id: TaskId,
        lease: String,
        /// The event's number in its run, from 0 (`ReportItem::offset`).
        ordinal: u64,
        body: EventBody,
        at: Timestamp,
        ack: Arc<AppendAck>,
    },
    Finish {
        task_id: TaskId,
        lease: String,
        finish: WorkerFinish,
    },
    /// Answered once everything queued before it was sent.
    Flush(oneshot::Sender<()>),
}

impl Entry {
    pub(super) fn finish(task_id: TaskId, lease: String, finish: WorkerFinish) -> Entry {
        Entry::Finish {
            task_id,
            lease,
            finish,
        }
    }
}

/// The sender's queue.
#[derive(Clone)]
pub(super) struct Batcher {
    tx: mpsc::UnboundedSender<Entry>,
}

/// A run's reporter writes through this.
struct Sink {
    tx: mpsc::UnboundedSender<Entry>,
    lease: String,
    /// Events this run queued.
    queued: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl EventSink for Sink {
    async fn append_queued(
        &self,
        task_id: TaskId,
        body: &EventBody,
        at: Timestamp,
        ack: Arc<AppendAck>,
    ) -> Result<(), StoreError> {
        let ordinal = self
            .queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tx
            .send(Entry::Event {
                task_id,
                lease: self.lease.clone(),
                ordinal,
                body: body.clone(),
                at,
                ack,
            })
            .map_err(|_| StoreError::Closed)
    }
}

impl Batcher {
    pub(super) fn start(shared: Arc<Shared>, ttl: Duration) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(shared, rx, ttl));
        Batcher { tx }
    }

    pub(super) fn sink(&self, lease: String) -> Arc<dyn EventSink> {
        Arc::new(Sink {
            tx: self.tx.clone(),
            lease,
            queued: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub(super) fn send(&self, entry: Entry) {
        let _ = self.tx.send(entry);
    }

    /// Waits until everything queued so far was sent (or given up).
    pub(super) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Entry::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
    }
}

async fn send_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Entry>, ttl: Duration) {
    let mut entries = Vec::new();
    while rx.recv_many(&mut entries, MAX_ENTRIES).await > 0 {
        let mut flushes = Vec::new();
        let mut bytes = 0usize;
        let mut items: Vec<ReportItem> = Vec::new();
        let mut acks: Vec<Vec<Arc<AppendAck>>> = Vec::new();
        // Consecutive entries of a task join one item; order is kept.
        let mut open: HashMap<TaskId, usize> = HashMap::new();
        for entry in entries.drain(..) {
            let (task_id, lease) = match &entry {
                Entry::Event { task_id, lease, .. } | Entry::Finish { task_id, lease, .. } => {
                    (*task_id, lease.clone())
                }
                Entry::Flush(_) => {
                    if let Entry::Flush(done) = entry {
                        flushes.push(done);
                    }
                    continue;
                }
            };
            let index = match open.get(&task_id) {
                Some(&index) if items[index].finish.is_none() => index,
                _ => {
                    items.push(ReportItem {
                        task_id,
                        lease,
                        offset: None,
                        events: Vec::new(),
                        finish: None,
                    });
                    acks.push(Vec::new());
                    open.insert(task_id, items.len() - 1);
                    items.len() - 1
                }
            };
            match entry {
                Entry::Event {
                    ordinal,
                    body,
                    at,
                    ack,
                    ..
                } => {
                    bytes += serde_json::to_vec(&body).map_or(0, |text| text.len()) + 64;
                    items[index].offset.get_or_insert(ordinal);
                    items[index].events.push(WorkerEvent { body, ts: Some(at) });
                    acks[index].push(ack);
                }
                Entry::Finish { finish, .. } => items[index].finish = Some(finish),
                Entry::Flush(_) => {}
            }
        }
        if !items.is_empty() {
            // Batches of at most about half the default body limit.
            if bytes > MAX_BYTES && items.len() > 1 {
                let half = items.len() / 2;
                let (rest, rest_acks) = (items.split_off(half), acks.split_off(half));
                send(&shared, items, acks, ttl).await;
                send(&shared, rest, rest_acks, ttl).await;
            } else {
                send(&shared, items, acks, ttl).await;
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Sends one batch, retrying while the server cannot be reached (for the
/// lease's length); each item's answer goes to its events' acks and, when
/// refused, stops its run.
async fn send(
    shared: &Shared,
    items: Vec<ReportItem>,
    acks: Vec<Vec<Arc<AppendAck>>>,
    ttl: Duration,
) {
    let since = Instant::now();
    let mut pause = Duration::from_millis(50);
    let answers = loop {
        match shared.client.report(&shared.session, items.clone()).await {
            Ok(answers) => break Some(answers),
            // Over the server's body limit: in halves (a lone item keeps
            // its finish and loses its events, said in a log line).
            Err(ClientError::Api(error)) if error.status == 413 => {
                if items.len() > 1 {
                    let (mut left, mut left_acks) = (items, acks);
                    let right = left.split_off(left.len() / 2);
                    let right_acks = left_acks.split_off(left_acks.len() / 2);
                    Box::pin(send(shared, left, left_acks, ttl)).await;
                    Box::pin(send(shared, right, right_acks, ttl)).await;
                    return;
                }
                let mut item = items[0].clone();
                if item.events.is_empty() {
                    eprintln!("the server refused a report: {error}");
                    break None;
                }
                let dropped = item.events.len();
                item.events = vec![WorkerEvent {
                    body: EventBody::Log {
                        level: "warning".to_owned(),
                        message: format!(
                            "{dropped} events were too large to send and were left out"
                        ),
                    },
                    ts: None,
                }];
                Box::pin(send(shared, vec![item], acks, ttl)).await;
                return;
            }
            Err(ClientError::Api(error)) if error.status < 500 => {
                eprintln!("the server refused a report: {error}");
                break None;
            }
            Err(error) => {
                if since.elapsed() >= ttl || shared.lost.is_cancelled() {
                    eprintln!("could not send a report: {error}");
                    break None;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    };
    for (index, item) in items.iter().enumerate() {
        let ok = answers
            .as_ref()
            .and_then(|answers| answers.get(index))
            .is_some_and(|answer| answer.ok);
        let outcome = if ok {
            Ok(AppendOutcome::Appended { seq: 0 })
        } else {
            Ok(AppendOutcome::Dropped { last_seq: 0 })
        };
        for ack in &acks[index] {
            ack.record(&outcome);
        }
        if !ok {
            shared.stop(item.task_id);
        }
    }
}
