//! The client's error type: transport failures, and the server's error
//! envelope mapped into [`ServerError`].

use serde_json::Value;

/// The client's `Result`.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL cannot be used.
    #[error("invalid server url '{url}': {reason}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made (refused, unreachable, DNS).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The server's base URL.
        url: String,
        /// What the OS said, in short.
        reason: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The request or the response did not complete in time.
    #[error("request to {url} timed out")]
    Timeout {
        /// The request's URL.
        url: String,
    },
    /// The connection broke during the exchange.
    #[error("connection to {url} failed: {source}")]
    Transport {
        /// The request's URL.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The server closed a stream before the task's final event (it is
    /// shutting down, or something between cut the connection).
    #[error("{url}: the server closed the stream early")]
    Disconnected {
        /// The stream's URL.
        url: String,
    },
    /// The server answered with an error envelope.
    #[error(transparent)]
    Api(#[from] ServerError),
    /// The server answered something this client cannot read.
    #[error("unexpected response from {url}: {reason}")]
    Protocol {
        /// The request's URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl ClientError {
    /// Whether trying again later may succeed: connection problems, timeouts,
    /// and the server's 502/503/504.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::Transport { .. }
            | ClientError::Disconnected { .. } => true,
            ClientError::Api(api) => matches!(api.status, 502..=504),
            ClientError::InvalidUrl { .. } | ClientError::Protocol { .. } => false,
        }
    }

    /// The server's error, when it answered with one.
    pub fn api(&self) -> Option<&ServerError> {
        match self {
            ClientError::Api(api) => Some(api),
            _ => None,
        }
    }

    /// Whether the server answered with this error `code`.
    pub fn has_code(&self, code: &str) -> bool {
        self.api().is_some_and(|api| api.code == code)
    }
}

/// The server's error envelope `{"error":{"code","message","detail"?}}` and
/// the HTTP status it came with.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message} ({status} {code})")]
pub struct ServerError {
    /// The HTTP status.
    pub status: u16,
    /// The machine-readable code (`not_found`, `op_not_found`, …).
    pub code: String,
    /// The human-readable message.
    pub message: String,
    /// More structure, when the server gives it (`{"field": …}`, …).
    pub detail: Option<Value>,
}

impl ServerError {
    /// Reads an error response's body; a body that is not the envelope still
    /// gives an error naming the status.
    pub(crate) fn from_body(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<tasktape_wire::ErrorEnvelope>(body) {
            Ok(envelope) => ServerError {
                status,
                code: envelope.error.code,
                message: envelope.error.message,
                detail: envelope.error.detail.filter(|detail| !detail.is_null()),
            },
            Err(_) => ServerError {
                status,
                code: format!("http_{status}"),
                message: format!(
                    "the server answered {status} without an error envelope: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
                ),
                detail: None,
            },
        }
    }
}

/// Turns a reqwest error into ours, naming `url`.
pub(crate) fn transport(url: &str, base: &str, error: reqwest::Error) -> ClientError {
    if error.is_timeout() {
        ClientError::Timeout {
            url: url.to_owned(),
        }
    } else if error.is_connect() {
        ClientError::Connect {
            url: base.to_owned(),
            reason: root_cause(&error),
            source: error,
        }
    } else {
        ClientError::Transport {
            url: url.to_owned(),
            source: error,
        }
    }
}

/// The innermost cause's text ("Connection refused (os error 111)").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_read_and_other_bodies_still_give_an_error() {
        let api = ServerError::from_body(
            404,
            br#"{"error":{"code":"op_not_found","message":"no op 'x'","detail":{"known":["echo"]}}}"#,
        );
        assert_eq!(api.code, "op_not_found");
        assert_eq!(api.message, "no op 'x'");
        assert_eq!(api.detail, Some(serde_json::json!({"known": ["echo"]})));

        let api = ServerError::from_body(502, b"<html>bad gateway</html>");
        assert_eq!(api.code, "http_502");
        assert!(api.message.contains("bad gateway"), "{}", api.message);
        assert!(ClientError::Api(api).is_retryable());
    }
}
