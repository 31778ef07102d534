//! What a request on an [`HttpConnection`](super::HttpConnection) gives back: the response
//! future and the response body, which count the request as in flight until the body ends.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::body::{Body, Incoming};
use pin_project_lite::pin_project;

use super::shared::{ConnShared, InFlight, SendingBody, Version};
use crate::error::BoxError;

/// The response future of [`HttpConnection`](super::HttpConnection).
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<http::Response<ResponseBody>, BoxError>> + Send>>,
}

impl ResponseFuture {
    pub(super) fn new(
        inner: Pin<Box<dyn Future<Output = Result<http::Response<ResponseBody>, BoxError>> + Send>>,
    ) -> Self {
        ResponseFuture { inner }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<ResponseBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// hyper's response, its body counted as in flight on the connection that served it. With
/// `upgrade` (HTTP/1.1: the request asked for one), a `101 Switching Protocols` is the answer:
/// hyper hands the connection's stream over to the upgrade (`hyper::upgrade::on`), and the
/// connection ends in good order, having served.
pub(super) fn respond(
    response: http::Response<Incoming>,
    in_flight: InFlight,
    upgrade: bool,
) -> http::Response<ResponseBody> {
    let shared = in_flight.connection();
    shared.mark_served();
    if response.status().is_informational()
        && !(upgrade && response.status() == http::StatusCode::SWITCHING_PROTOCOLS)
    {
        // An upgrade (`101`) unasked, where a response was due: not an answer.
        shared.mark_failed();
    } else {
        shared.mark_answered();
    }
    // HTTP/1.1: a body that is over already (none, or empty) is no longer in flight. (Asking
    // h2 whether a stream has ended takes its connection's lock: HTTP/2 bodies are counted
    // until their end is read.)
    let http1 = shared.version == Version::Http1;
    let in_flight = (!(http1 && response.body().is_end_stream())).then_some(in_flight);
    response.map(|body| ResponseBody {
        inner: Some(body),
        in_flight,
        http1,
    })
}

pin_project! {
    /// The body of a response of [`HttpConnection`]: hyper's body, counted as in flight until it
    /// ends or is dropped (a graceful close waits for it).
    pub struct ResponseBody {
        // hyper's body; dropped once its trailers are read (see `poll_frame`).
        inner: Option<Incoming>,
        in_flight: Option<InFlight>,
        // Over HTTP/1.1, the last data frame ends the count (hyper knows the body's length).
        http1: bool,
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
        match &frame {
            // Trailers are a body's last frame (a gRPC response's status comes in them, and a
            // gRPC client reads no further): the end. hyper's body goes too, so that an HTTP/2
            // stream is not held open by a caller that keeps the finished body (hyper's
            // connection, closing, waits for every stream it holds).
            Some(Ok(frame)) if frame.is_trailers() => {
                drop(this.in_flight.take());
                *this.inner = None;
            }
            // More to come.
            Some(Ok(_)) if !*this.http1 || !inner.is_end_stream() => {}
            // The end (the last frame, or after it): no longer in flight.
            Some(Ok(_)) | None => drop(this.in_flight.take()),
            Some(Err(_)) => {
                if let Some(in_flight) = this.in_flight.take() {
                    in_flight.connection().mark_failed();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => http_body::SizeHint::with_exact(0),
        }
    }
}

pin_project! {
    /// A request body as hyper gets it: a panic in the body's `poll_frame` (a stream of yours,
    /// say) is an error of the body (logged at ERROR), which fails the request (over HTTP/1.1
    /// `error from user's Body stream`, with this as its source; over HTTP/2 hyper resets the
    /// stream, and the request fails with that reset, as for any body that fails). Without
    /// this, a panic while hyper sends the body ended the body's sending alone over HTTP/2, the
    /// request left waiting for an answer to a body cut short, and hyper's dispatch of the
    /// whole connection over HTTP/1.1. A panic in `size_hint` gives no hint; in
    /// `is_end_stream`, not at the end (its `poll_frame` then tells).
    pub(super) struct Guarded<B> {
        #[pin]
        inner: B,
        // Once a poll panicked: every later poll fails (the body is not polled again).
        panicked: bool,
        // Counts the body as being sent on its connection, until it ends, fails or is dropped
        // (a body over already, or none, is not counted).
        sending: Option<SendingBody>,
    }
}

impl<B: Body> Guarded<B> {
    pub(super) fn new(inner: B) -> Self {
        Guarded {
            inner,
            panicked: false,
            sending: None,
        }
    }

    /// The body is to be sent on the connection of `shared` (counted there until it ends,
    /// unless it is over already); not on any it was counted on before.
    pub(super) fn sent_on(&mut self, shared: &std::sync::Arc<ConnShared>) {
        self.sending = None;
        if !self.is_end_stream() {
            self.sending = Some(SendingBody::new(shared));
        }
    }
}

/// A guarded body's error: the body's own, or the message of its panic. (Not an `Error` itself,
/// so that it converts into a `BoxError` as the body's own error does: hyper boxes it so.)
pub(super) enum GuardedError<E> {
    Body(E),
    Panicked(String),
}

impl<E: Into<BoxError>> From<GuardedError<E>> for BoxError {
    fn from(error: GuardedError<E>) -> BoxError {
        match error {
            GuardedError::Body(error) => error.into(),
            GuardedError::Panicked(message) => message.into(),
        }
    }
}

impl<B: Body> Body for Guarded<B> {
    type Data = B::Data;
    type Error = GuardedError<B::Error>;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.panicked {
            let error = "the request body panicked in an earlier poll".to_owned();
            return Poll::Ready(Some(Err(GuardedError::Panicked(error))));
        }
        let mut inner = this.inner;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inner.as_mut().poll_frame(cx)
        })) {
            Ok(Poll::Ready(Some(Err(error)))) => {
                *this.sending = None;
                Poll::Ready(Some(Err(GuardedError::Body(error))))
            }
            Ok(Poll::Ready(Some(Ok(frame)))) => {
                // Its last frame: sent once hyper has written it, as far as the connection's
                // idleness goes. (A body whose `is_end_stream` panics ends at its `None`.)
                if this.sending.is_some()
                    && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        inner.is_end_stream()
                    }))
                    .unwrap_or(false)
                {
                    *this.sending = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Ok(Poll::Ready(None)) => {
                *this.sending = None;
                Poll::Ready(None)
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                *this.sending = None;
                let error = format!(
                    "the request body panicked: {}",
                    crate::error::panic_message(&*payload)
                );
                // Over HTTP/2 hyper resets the stream and tells the request no more.
                tracing::error!(%error, "a request body panicked");
                *this.panicked = true;
                Poll::Ready(Some(Err(GuardedError::Panicked(error))))
            }
        }
    }

    /// A body whose `is_end_stream` panics is not at its end: its `poll_frame` tells.
    #[inline]
    fn is_end_stream(&self) -> bool {
        !self.panicked
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.is_end_stream()))
                .unwrap_or(false)
    }

    /// A body whose `size_hint` panics has no hint.
    #[inline]
    fn size_hint(&self) -> http_body::SizeHint {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.size_hint()))
            .unwrap_or_default()
    }
}
