//! Request inputs: query parameters and JSON bodies, validated into the
//! envelope's 400/413/422 errors (never axum's plain-text rejections).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::Value;
use tasktape_core::store::Cursor;
use tasktape_wire::requests::int_field;
use tasktape_wire::{FieldError, ListQuery, Submission, TaskFilter};

use crate::error::ApiError;

/// The query string as a map (`application/x-www-form-urlencoded`, as
/// `form_urlencoded` decodes it: `+` is a space, bad `%` escapes and invalid
/// UTF-8 are kept lossily); repeated keys keep the last value.
pub fn query_map(raw: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// An integer query parameter in `min..=max`, or `default` when absent.
pub fn int_param(
    query: &HashMap<String, String>,
    name: &str,
    min: i64,
    max: i64,
    default: i64,
) -> Result<i64, ApiError> {
    let value = int_field(query, name, min, max).map_err(|error| refused("query", &error))?;
    Ok(value.unwrap_or(default))
}

/// A refused field in the envelope's 422, at `location`.
pub fn refused(location: &str, error: &FieldError) -> ApiError {
    ApiError::invalid(location, &error.field, error.kind, error.message.clone())
}

/// A request type read from a JSON body, by the wire crate's own rules.
pub trait BodyType: Sized {
    /// The request from the decoded body; the refusal names its field.
    fn from_value(body: Value) -> Result<Self, FieldError>;
}

impl BodyType for Submission {
    fn from_value(body: Value) -> Result<Self, FieldError> {
        Submission::from_value(body)
    }
}

/// `POST /v1/tasks/batch`'s body: its 1 to 10,000 entries, each read on
/// its own (a bad one is refused alone).
pub struct BatchBody(pub Vec<Value>);

impl BodyType for BatchBody {
    fn from_value(body: Value) -> Result<Self, FieldError> {
        let max = tasktape_wire::MAX_BATCH_SUBMISSIONS;
        let tasks = match body {
            Value::Object(mut body) => body.remove("tasks"),
            _ => None,
        };
        match tasks {
            None => Err(FieldError::new(
                "tasks",
                "missing",
                "body must be an object with tasks, a list of submissions",
            )),
            Some(Value::Array(tasks)) if tasks.is_empty() => Err(FieldError::new(
                "tasks",
                "too_short",
                "must hold at least one submission",
            )),
            Some(Value::Array(tasks)) if tasks.len() > max => Err(FieldError::new(
                "tasks",
                "too_long",
                format!(
                    "must hold at most {max} submissions ({} given)",
                    tasks.len()
                ),
            )),
            Some(Value::Array(tasks)) => Ok(BatchBody(tasks)),
            Some(_) => Err(FieldError::new(
                "tasks",
                "list_type",
                "must be a list of submissions",
            )),
        }
    }
}

impl BodyType for TaskFilter {
    fn from_value(body: Value) -> Result<Self, FieldError> {
        TaskFilter::from_value(body)
    }
}

/// A JSON body read as `T` (unknown fields ignored); an unreadable,
/// oversized or malformed body, or one `T` refuses, is refused in the
/// envelope (400, 413, 422 naming the field).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: BodyType> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let value = json_body(Bytes::from_request(request, state).await)?;
        T::from_value(value)
            .map(Body)
            .map_err(|error| refused("body", &error))
    }
}

/// `GET /v1/tasks`'s query (see [`ListQuery::from_pairs`]) and its
/// decoded cursor, judged in the order the route always had: `limit`,
/// `status`, the cursor (a 400 `invalid_cursor`), then the times (422s).
pub struct ListParams(pub ListQuery, pub Option<Cursor>);

impl<S: Send + Sync> FromRequestParts<S> for ListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = query_map(parts.uri.query());
        let before_cursor: HashMap<String, String> = query
            .iter()
            .filter(|(name, _)| !name.starts_with("created_"))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let refused_query = |error: FieldError| refused("query", &error);
        let head = ListQuery::from_pairs(&before_cursor).map_err(refused_query)?;
        let after = match &head.cursor {
            None => None,
            Some(text) => Some(Cursor::decode(text).map_err(|error| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "invalid cursor")
                    .with_detail(serde_json::json!({"reason": error.reason}))
            })?),
        };
        let query = ListQuery::from_pairs(&query).map_err(refused_query)?;
        Ok(ListParams(query, after))
    }
}

/// The body as JSON; an empty body is `null`.
pub fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than the server's limit",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("cannot read the request body: {rejection}"),
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    crate::strict_json::from_slice(&bytes).map_err(ApiError::invalid_json)
}

/// The one path parameter of a route (a task id or an op name). A segment
/// that is not valid UTF-8 names nothing: 404 in the envelope rather than
/// axum's plain-text 400.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(segment)) => Ok(Segment(segment)),
            Err(_) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("nothing at {}", parts.uri.path()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::query_map;

    #[test]
    fn decodes_like_a_form() {
        let query = query_map(Some("op=a+b&status=%72unning&x=%zz&op=last&empty"));
        assert_eq!(query["status"], "running");
        assert_eq!(query["op"], "last");
        assert_eq!(query["x"], "%zz");
        assert_eq!(query["empty"], "");
        assert!(query_map(None).is_empty());
    }
}
