//! The one error type of the HTTP layer and its envelope:
//! `{"error":{"code":…,"message":…,"detail":…?}}`. 4xx carry a useful
//! message; 5xx are logged with the request's span and answer an opaque body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tasktape_core::StoreError;
use tasktape_core::model::TaskId;
use tasktape_wire::{ErrorBody, ErrorEnvelope};

/// An error answered in the envelope.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    detail: Option<Value>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// The envelope alone (a bulk submit's refused entry).
    pub fn envelope(self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
                detail: self.detail,
            },
        }
    }

    /// Adds the `detail` object.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// 404 `not_found` for a task id (dikw-core's wording).
    pub fn task_not_found(task_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("task_id '{task_id}' not found"),
        )
    }

    /// 422 `invalid_request` naming the offending field.
    pub fn invalid(location: &str, field: &str, kind: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("{field}: {message}"),
        )
        .with_detail(
            json!({"loc": [location, field], "field": field, "type": kind, "msg": message}),
        )
    }

    /// 400 `invalid_json`.
    pub fn invalid_json(message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not valid JSON: {message}"),
        )
    }

    /// 500 for an unexpected failure: logged here, opaque on the wire.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// The one-line message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store is closed; the server is shutting down",
            ),
            StoreError::Full { .. } => {
                tracing::error!(%error, "store full");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store is full; nothing was written",
                )
            }
            StoreError::Unavailable { .. } => {
                tracing::warn!(%error, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database cannot be reached; try again shortly",
                )
            }
            other => ApiError::internal("store operation failed", &other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        (status, axum::Json(self.envelope())).into_response()
    }
}

/// Parses a path's task id; an unparsable one is simply not found.
pub fn parse_task_id(text: &str) -> Result<TaskId, ApiError> {
    text.parse().map_err(|_| ApiError::task_not_found(text))
}
