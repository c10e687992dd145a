//! `GET /v1/tasks/{id}/events/stream`: the tape as Server-Sent Events.
//!
//! One SSE event per tape event (`id:` seq, `event:` type, `data:` the event
//! JSON). Resumes after `Last-Event-ID: N` (seq > N) or from `?from_seq=N`
//! (seq ≥ N); a comment heartbeat keeps idle connections open; the stream
//! ends after `final`. It reads through core's `Follower` (the one the
//! long-poll and `Manager::wait` use: the wake hub, no polling) and is
//! pulled by the client, so a slow client only slows itself.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tasktape_core::event::StoredEvent;
use tasktape_core::follow::Follower;
use tasktape_core::model::TaskId;

use crate::AppState;
use crate::error::{ApiError, parse_task_id};
use crate::params::{Segment, int_param, query_map};

/// Events read from the store per round trip.
const PAGE: usize = 500;

/// One SSE stream's state: its follower and what it holds.
struct StreamState {
    state: AppState,
    task_id: TaskId,
    follower: Follower,
    buffered: VecDeque<StoredEvent>,
    /// Counts this stream among the connected followers while it lives.
    _follower: crate::observe::FollowerGuard,
    /// Its token's stream slot, held while it lives.
    _slot: crate::slots::Slot,
}

pub(crate) async fn stream_events(
    State(state): State<AppState>,
    crate::slots::StreamSlot(slot): crate::slots::StreamSlot,
    Segment(task_id): Segment,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = query_map(raw.as_deref());
    let from_seq = int_param(&query, "from_seq", 0, i64::MAX, 0)? as u64;
    // An empty Last-Event-ID is no id (as the SSE spec has it).
    let last_event_id = headers
        .get("last-event-id")
        .filter(|value| !value.as_bytes().trim_ascii().is_empty());
    let next = match last_event_id {
        None => from_seq,
        Some(value) => {
            let last = value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "header",
                        "Last-Event-ID",
                        "int_parsing",
                        "must be the seq of the last event received",
                    )
                })?;
            last.saturating_add(1)
        }
    };
    let id = parse_task_id(&task_id)?;
    let manager = state.manager();
    // Watch before the first read, so no commit falls between the two.
    let follower = manager.follower(id, next).watching();
    if manager.last_seq(id).await?.is_none() {
        return Err(ApiError::task_not_found(&task_id));
    }
    let heartbeat = state.config().heartbeat;
    let stream = StreamState {
        _follower: state.metrics().follower("sse"),
        _slot: slot,
        state,
        task_id: id,
        follower,
        buffered: VecDeque::new(),
    };
    let keep_alive = KeepAlive::new().interval(heartbeat).text("heartbeat");
    Ok(Sse::new(events(stream))
        .keep_alive(keep_alive)
        .into_response())
}

fn events(stream: StreamState) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.next_event().await?;
        let sse = Event::default()
            .id(event.seq.to_string())
            .event(event.kind_name())
            .data(&event.json);
        Some((Ok(sse), stream))
    })
}

impl StreamState {
    /// The next event to send, or `None` when the stream should end (after
    /// `final`, the task deleted, a failed read, or shutdown).
    async fn next_event(&mut self) -> Option<StoredEvent> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Some(event);
            }
            if self.follower.is_done() {
                return None;
            }
            // A quiet half-minute reads again, in case a wake-up was missed.
            let read = tokio::select! {
                read = self.follower.page(PAGE, Duration::from_secs(30)) => read,
                () = self.state.shutdown().cancelled() => return None,
            };
            match read {
                Ok(Some(page)) => self.buffered.extend(page.events),
                Ok(None) => return None, // deleted meanwhile
                Err(error) => {
                    tracing::warn!(task_id = %self.task_id, %error, "event stream read failed; closing it");
                    return None;
                }
            }
        }
    }
}
