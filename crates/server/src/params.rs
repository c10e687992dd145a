//! Request inputs: query parameters and JSON bodies, validated into the
//! envelope's 400/413/422 errors (never axum's plain-text rejections).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::Value;

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
    let Some(text) = query.get(name) else {
        return Ok(default);
    };
    let value: i64 = text.trim().parse().map_err(|_| {
        ApiError::invalid(
            "query",
            name,
            "int_parsing",
            "input should be a valid integer, unable to parse string as an integer",
        )
    })?;
    if value < min {
        return Err(ApiError::invalid(
            "query",
            name,
            "greater_than_equal",
            format!("input should be greater than or equal to {min}"),
        ));
    }
    if value > max {
        return Err(ApiError::invalid(
            "query",
            name,
            "less_than_equal",
            format!("input should be less than or equal to {max}"),
        ));
    }
    Ok(value)
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
    serde_json::from_slice(&bytes).map_err(ApiError::invalid_json)
}

/// The one path parameter of a route (a task id or an op name). A segment
/// that is not valid UTF-8 names nothing: 404 in the envelope rather than
/// axum's plain-text 400.
pub struct Segment(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
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
