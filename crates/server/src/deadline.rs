//! How long a request's body may take: the whole body must arrive within
//! `body_read_timeout` of the request's headers (a body trickled a byte at
//! a time is cut off as surely as one that stalls), and a `Content-Length`
//! over the body limit is refused 413 before any of it is read. A body cut
//! off is answered 408 `request_timeout` (where an answer can still be
//! sent) with `Connection: close`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use http_body::{Frame, SizeHint};

/// Set on a request whose body ran out of time (read by the body
/// extractors to answer 408).
#[derive(Clone, Debug, Default)]
pub(crate) struct TimedOut(Arc<AtomicBool>);

impl TimedOut {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The request's body with a deadline.
pub(crate) fn with_deadline(body: Body, timeout: Duration, flag: TimedOut) -> Body {
    Body::new(Deadline {
        inner: body,
        sleep: Box::pin(tokio::time::sleep(timeout)),
        flag,
        timeout,
    })
}

struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    flag: TimedOut,
    timeout: Duration,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.flag.0.store(true, Ordering::Release);
            let message = format!(
                "the request body did not arrive within {} s",
                self.timeout.as_secs()
            );
            return Poll::Ready(Some(Err(axum::Error::new(message))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
