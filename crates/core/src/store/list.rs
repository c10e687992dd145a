//! Listing: the keyset cursor (dikw-core's base64url JSON), what a list is
//! asked for, and the page it answers, with the paging every store shares.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::model::{Status, Task, TaskId};
use crate::time::Timestamp;

/// A position in the list order `(created_at DESC, task_id ASC)`: the last
/// row of the previous page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The row's creation time.
    pub created_at: Timestamp,
    /// The row's id.
    pub task_id: TaskId,
}

/// The cursor text was not a cursor.
#[derive(Debug, thiserror::Error)]
#[error("invalid cursor ({reason})")]
pub struct InvalidCursor {
    /// Always `decode_failed`, as dikw-core says it.
    pub reason: &'static str,
}

impl Cursor {
    /// The opaque text form: dikw-core's base64url (no padding) of
    /// `{"created_at":…,"task_id":…}`.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Parses the text form.
    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| InvalidCursor {
                reason: "decode_failed",
            })?;
        serde_json::from_slice(&bytes).map_err(|_| InvalidCursor {
            reason: "decode_failed",
        })
    }
}

/// What [`Store::list`] is asked for.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<Status>,
    /// Only these statuses (with `status`: either).
    pub statuses: Vec<Status>,
    /// Created at or after this time.
    pub created_after: Option<Timestamp>,
    /// Created before this time.
    pub created_before: Option<Timestamp>,
    /// Only this op.
    pub op: Option<String>,
    /// Only tasks whose metadata holds every one of these.
    pub metadata: crate::model::Metadata,
    /// At most this many rows (callers clamp it; 1..=1000 on the wire).
    pub limit: usize,
    /// Start after this row.
    pub after: Option<Cursor>,
}

/// One page of rows.
#[derive(Clone, Debug)]
pub struct ListPage {
    /// The rows, in list order.
    pub tasks: Vec<Task>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<Cursor>,
    /// Whether more rows follow.
    pub has_more: bool,
}

impl ListQuery {
    /// The statuses asked for (`status` and `statuses` together; empty: any).
    pub fn status_filter(&self) -> Vec<Status> {
        let mut all = self.statuses.clone();
        if let Some(status) = self.status
            && !all.contains(&status)
        {
            all.push(status);
        }
        all
    }

    /// How many rows a store should fetch: one more than the page holds, so
    /// that [`ListPage::from_rows`] can tell whether more follow.
    pub fn fetch_limit(&self) -> usize {
        self.limit.max(1).saturating_add(1)
    }
}

impl ListPage {
    /// The page from rows fetched in list order with
    /// [`ListQuery::fetch_limit`]: at most `limit` rows, `has_more` when the
    /// extra one came, the cursor at the last row kept.
    pub fn from_rows(mut tasks: Vec<Task>, query: &ListQuery) -> ListPage {
        let limit = query.limit.max(1);
        let has_more = tasks.len() > limit;
        tasks.truncate(limit);
        let next_cursor = if has_more {
            tasks.last().map(|task| Cursor {
                created_at: task.created_at,
                task_id: task.task_id,
            })
        } else {
            None
        };
        ListPage {
            tasks,
            next_cursor,
            has_more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_matches_dikw_encoding() {
        let text = "eyJjcmVhdGVkX2F0IjoiMjAyNi0xMS0yN1QyMjowNToyMS43NzVaIiwidGFza19pZCI6ImVjMWEyYjIyLTRiYmItNDc5MS05OGM3LTFhYzMyMjE3MjgyNCJ9";
        let cursor = Cursor::decode(text).unwrap();
        assert_eq!(cursor.created_at.to_string(), "2026-11-27T22:05:21.775Z");
        assert_eq!(
            cursor.task_id.to_string(),
            "ec1a2b22-4bbb-4791-98c7-1ac322172824"
        );
        assert_eq!(cursor.encode(), text);
        assert_eq!(
            Cursor::decode("garbage").unwrap_err().reason,
            "decode_failed"
        );
        assert_eq!(Cursor::decode("!!!").unwrap_err().reason, "decode_failed");
    }
}
