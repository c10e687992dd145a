//! Open streams and long-polls per token: an SSE stream, a long-poll of
//! the events page, a worker's signal stream and its claim each hold a slot
//! of their caller's token while open; past `max_streams_per_token` one
//! more is refused 429 `too_many_streams` (with `Retry-After`), so no token
//! can take every connection the server has. Counted per token name when
//! the server has tokens; a server without tokens counts nothing (anyone
//! may do anything there already).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Slots in use, by token name.
#[derive(Default)]
pub(crate) struct Slots {
    held: Mutex<HashMap<String, usize>>,
}

/// One slot, given back when dropped.
pub(crate) struct Slot {
    slots: Option<(Arc<Slots>, String)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((slots, token)) = self.slots.take() {
            let mut held = slots
                .held
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if let Some(count) = held.get_mut(&token) {
                *count -= 1;
                if *count == 0 {
                    held.remove(&token);
                }
            }
        }
    }
}

impl Slots {
    /// A slot for `token`, or the refusal when it holds `limit` already.
    fn take(self: &Arc<Self>, token: &str, limit: usize) -> Result<Slot, ApiError> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let count = held.entry(token.to_owned()).or_default();
        if *count >= limit {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "token {token:?} holds {limit} open streams and long-polls (max_streams_per_token); close one or retry later"
                ),
            )
            .with_detail(serde_json::json!({"limit": limit})));
        }
        *count += 1;
        Ok(Slot {
            slots: Some((Arc::clone(self), token.to_owned())),
        })
    }
}

/// The extractor: a slot of the caller's token (none needed without tokens).
pub(crate) struct StreamSlot(pub(crate) Slot);

impl FromRequestParts<AppState> for StreamSlot {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let token = parts
            .extensions
            .get::<Caller>()
            .and_then(|caller| caller.name().map(str::to_owned));
        let Some(token) = token else {
            return Ok(StreamSlot(Slot { slots: None }));
        };
        let limit = state.config().max_streams_per_token;
        match state.slots().take(&token, limit) {
            Ok(slot) => Ok(StreamSlot(slot)),
            Err(error) => {
                let mut response = error.into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("5"),
                );
                let peer = parts.extensions.get::<crate::refusals::Peer>().copied();
                state.refusals().refused(
                    peer,
                    Some(&token),
                    &parts.method,
                    parts.uri.path(),
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many open streams for the token",
                );
                Err(response)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_at_most_its_limit_and_gets_slots_back() {
        let slots = Arc::new(Slots::default());
        let a: Vec<Slot> = (0..3).map(|_| slots.take("a", 3).unwrap()).collect();
        assert_eq!(
            slots.take("a", 3).err().unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        let b = slots.take("b", 3).unwrap();
        drop(a);
        let again = slots.take("a", 3);
        assert!(again.is_ok());
        drop((b, again));
        assert!(slots.held.lock().unwrap().is_empty());
    }
}
