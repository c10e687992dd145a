//! What clients send, read the same way by the server: the submit body
//! (`POST /v1/tasks`), the list query (`GET /v1/tasks`), integer query
//! parameters, and the health probes' answers. A refusal names its field
//! ([`FieldError`]); the server puts it in its 422 envelope.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Status;
use crate::time::Timestamp;

/// A request field the server refuses: which one, the Pydantic-style
/// error type (`int_parsing`, `datetime_parsing`, …) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field (a query parameter, a body field).
    pub field: String,
    /// The error type.
    pub kind: &'static str,
    /// What is wrong, in one line.
    pub message: String,
}

impl FieldError {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, kind: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind,
            message: message.into(),
        }
    }
}

/// What `POST /v1/tasks` takes: an op, its params, and the submit's
/// options (each optional; `null` is absent). Unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Submission {
    /// The op's name.
    pub op: String,
    /// Its params (an object; absent is `null`, which the op judges).
    #[serde(default)]
    pub params: Value,
    /// Submitting twice with one key (and the same params) gives the first
    /// task back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(min_length = 1, max_length = 256))]
    pub idempotency_key: Option<String>,
    /// Not before this time (at most 10 years ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<Timestamp>,
    /// Higher runs first (-1,000,000 to 1,000,000; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(minimum = -1000000, maximum = 1000000))]
    pub priority: Option<i64>,
    /// Retries for this task (overrides the op's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::jobs::RetryPolicy>,
    /// String keys (`[a-z0-9_.-]`, at most 64 bytes) to string values (at
    /// most 256 bytes), at most 32 keys: returned on the task's rows and
    /// matched by list and bulk filters.
    #[serde(default, skip_serializing_if = "crate::Metadata::is_empty")]
    pub metadata: crate::Metadata,
}

impl Submission {
    /// `op` with `params` and no options.
    pub fn new(op: impl Into<String>, params: Value) -> Self {
        Submission {
            op: op.into(),
            params,
            idempotency_key: None,
            run_at: None,
            priority: None,
            retry: None,
            metadata: crate::Metadata::new(),
        }
    }

    /// The same with one more metadata field.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The same with an idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// A submission from a decoded JSON body, its fields judged in a fixed
    /// order (`op`, `idempotency_key`, `run_at`, `priority`, `retry`,
    /// `metadata`), so a
    /// body with several faults is refused for the first of them; `null` is
    /// absent and unknown fields are ignored.
    pub fn from_value(body: Value) -> Result<Submission, FieldError> {
        let Value::Object(mut body) = body else {
            return Err(FieldError::new(
                "op",
                "missing",
                "body must be an object with op and params",
            ));
        };
        let op = match body.remove("op") {
            None => return Err(FieldError::new("op", "missing", "field required")),
            Some(Value::String(op)) => op,
            Some(_) => return Err(not_a_string("op")),
        };
        let idempotency_key = match body.remove("idempotency_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(key)) => Some(key),
            Some(_) => return Err(not_a_string("idempotency_key")),
        };
        const TIME: &str = "input should be an RFC 3339 time, e.g. 2026-12-01T03:00:00Z or 2026-12-01T04:00:00+01:00";
        let run_at = match body.remove("run_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(
                Timestamp::parse(&text)
                    .ok_or_else(|| FieldError::new("run_at", "datetime_parsing", TIME))?,
            ),
            Some(_) => return Err(FieldError::new("run_at", "string_type", TIME)),
        };
        let priority = match body.remove("priority") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_i64().ok_or_else(|| {
                FieldError::new("priority", "int_type", "input should be a valid integer")
            })?),
        };
        let retry = match body.remove("retry") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                serde_json::from_value(value)
                    .map_err(|error| FieldError::new("retry", "retry_policy", error.to_string()))?,
            ),
        };
        let metadata = crate::metadata::from_value(body.remove("metadata").unwrap_or(Value::Null))?;
        Ok(Submission {
            op,
            params: body.remove("params").unwrap_or(Value::Null),
            idempotency_key,
            run_at,
            priority,
            retry,
            metadata,
        })
    }
}

fn not_a_string(field: &str) -> FieldError {
    FieldError::new(field, "string_type", "input should be a valid string")
}

/// `GET /v1/tasks`'s filters and paging; `Default` is the server's first
/// page of 100.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only tasks in this status.
    pub status: Option<Status>,
    /// Only tasks of this op.
    pub op: Option<String>,
    /// Page size, 1..=1000 (default 100).
    pub limit: Option<u32>,
    /// Where to continue (a page's `next_cursor`).
    pub cursor: Option<String>,
    /// Only tasks created at or after this time.
    pub created_after: Option<Timestamp>,
    /// Only tasks created before this time.
    pub created_before: Option<Timestamp>,
    /// Only tasks whose metadata holds every one of these (`?meta.KEY=VALUE`).
    pub metadata: crate::Metadata,
}

impl ListQuery {
    /// The query string's pairs, as a client sends them.
    pub fn to_pairs(&self) -> Vec<(std::borrow::Cow<'static, str>, String)> {
        let mut pairs = Vec::new();
        if let Some(status) = self.status {
            pairs.push(("status", status.as_str().to_owned()));
        }
        if let Some(op) = &self.op {
            pairs.push(("op", op.clone()));
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &self.cursor {
            pairs.push(("cursor", cursor.clone()));
        }
        if let Some(at) = self.created_after {
            pairs.push(("created_after", at.to_string()));
        }
        if let Some(at) = self.created_before {
            pairs.push(("created_before", at.to_string()));
        }
        let mut pairs: Vec<(std::borrow::Cow<'static, str>, String)> = pairs
            .into_iter()
            .map(|(name, value)| (name.into(), value))
            .collect();
        for (key, value) in &self.metadata {
            pairs.push((
                format!("{}{key}", crate::metadata::QUERY_PREFIX).into(),
                value.clone(),
            ));
        }
        pairs
    }

    /// The query from its decoded pairs, as the server reads it (empty
    /// `op` and `cursor` are absent).
    pub fn from_pairs(query: &HashMap<String, String>) -> Result<ListQuery, FieldError> {
        let limit = int_field(query, "limit", 1, 1000)?.map(|limit| limit as u32);
        let status = match query.get("status") {
            None => None,
            Some(text) => Some(text.parse::<Status>().map_err(|_| {
                FieldError::new(
                    "status",
                    "enum",
                    "input should be 'pending', 'running', 'succeeded', 'failed' or 'cancelled'",
                )
            })?),
        };
        let time = |name: &str| -> Result<Option<Timestamp>, FieldError> {
            match query.get(name) {
                None => Ok(None),
                Some(text) => Timestamp::parse(text).map(Some).ok_or_else(|| {
                    FieldError::new(
                        name,
                        "datetime_parsing",
                        "input should be an RFC 3339 time, e.g. 2026-12-01T03:00:00Z or 2026-12-01T04:00:00+01:00",
                    )
                }),
            }
        };
        let given = |name: &str| query.get(name).filter(|text| !text.is_empty()).cloned();
        Ok(ListQuery {
            status,
            op: given("op"),
            limit,
            cursor: given("cursor"),
            created_after: time("created_after")?,
            created_before: time("created_before")?,
            metadata: crate::metadata::from_query(query)?,
        })
    }
}

/// An integer query parameter in `min..=max`; `None` when absent.
pub fn int_field(
    query: &HashMap<String, String>,
    name: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, FieldError> {
    let Some(text) = query.get(name) else {
        return Ok(None);
    };
    let value: i64 = text.trim().parse().map_err(|_| {
        FieldError::new(
            name,
            "int_parsing",
            "input should be a valid integer, unable to parse string as an integer",
        )
    })?;
    if value < min {
        return Err(FieldError::new(
            name,
            "greater_than_equal",
            format!("input should be greater than or equal to {min}"),
        ));
    }
    if value > max {
        return Err(FieldError::new(
            name,
            "less_than_equal",
            format!("input should be less than or equal to {max}"),
        ));
    }
    Ok(Some(value))
}

/// `GET /v1/healthz`'s answer: the process serves requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// `GET /v1/readyz`'s answer when the instance should get traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Ready {
    /// `ready`.
    pub status: String,
    /// The store's kind (`sqlite`, `postgres`).
    pub storage_backend: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_query_reads_back_what_a_client_sends() {
        let query = ListQuery {
            status: Some(Status::Running),
            op: Some("echo".into()),
            limit: Some(7),
            cursor: Some("abc".into()),
            created_after: Some(Timestamp::from_millis(1_000)),
            created_before: None,
            metadata: crate::Metadata::from([("customer".into(), "42".into())]),
        };
        let pairs: HashMap<String, String> = query
            .to_pairs()
            .into_iter()
            .map(|(name, value)| (name.into_owned(), value))
            .collect();
        assert_eq!(ListQuery::from_pairs(&pairs), Ok(query));
        let bad = |name: &str, value: &str| {
            let pairs = HashMap::from([(name.to_owned(), value.to_owned())]);
            ListQuery::from_pairs(&pairs).unwrap_err()
        };
        assert_eq!(bad("limit", "0").kind, "greater_than_equal");
        assert_eq!(bad("limit", "x").kind, "int_parsing");
        assert_eq!(bad("status", "done").kind, "enum");
        assert_eq!(bad("created_before", "yesterday").field, "created_before");
    }

    #[test]
    fn a_submission_refusal_names_its_first_faulty_field() {
        let refusal =
            |body: &str| Submission::from_value(serde_json::from_str(body).unwrap()).unwrap_err();
        let not_object =
            FieldError::new("op", "missing", "body must be an object with op and params");
        assert_eq!(refusal("[]"), not_object);
        assert_eq!(refusal(r#"["echo"]"#), not_object);
        assert_eq!(refusal("null"), not_object);
        assert_eq!(
            refusal("{}"),
            FieldError::new("op", "missing", "field required")
        );
        assert_eq!(refusal(r#"{"op": 1}"#).kind, "string_type");
        assert_eq!(refusal(r#"{"op": "a", "run_at": 1}"#).kind, "string_type");
        assert_eq!(
            refusal(r#"{"op": "a", "run_at": "soon"}"#).kind,
            "datetime_parsing"
        );
        assert_eq!(refusal(r#"{"op": "a", "priority": 1.5}"#).kind, "int_type");
        assert_eq!(
            refusal(r#"{"op": "a", "retry": {"max_attempts": "x"}}"#).field,
            "retry"
        );
        assert_eq!(
            refusal(r#"{"op": "a", "idempotency_key": 5}"#).field,
            "idempotency_key"
        );
        // Several faults: the first in the fixed order, whatever the document's.
        assert_eq!(refusal(r#"{"idempotency_key": 7, "op": 5}"#).field, "op");
        assert_eq!(
            refusal(r#"{"priority": "x", "run_at": "soon", "op": "a"}"#).field,
            "run_at"
        );
        assert_eq!(refusal(r#"{"priority": "x"}"#).field, "op");
        let ok = Submission::from_value(json!({"op": "a", "priority": null, "extra": 1})).unwrap();
        assert_eq!(ok, Submission::new("a", Value::Null));
        let full = Submission {
            idempotency_key: Some("k".into()),
            run_at: Some(Timestamp::from_millis(1_000)),
            priority: Some(-3),
            ..Submission::new("a", json!({"n": 1}))
        };
        let round = Submission::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(round, full);
    }
}
