//! What a request on an [`HttpConnection`](super::HttpConnection) gives back: the response
//! future and the response body, which count the request as in flight until the body ends.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::body::{Body, Incoming};
use pin_project_lite::pin_project;

use super::shared::{InFlight, Version};
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
    }
    // HTTP/1.1: a body that is over already (none, or empty) is no longer in flight. (Asking
    // h2 whether a stream has ended takes its connection's lock: HTTP/2 bodies are counted
    // until their end is read.)
    let http1 = shared.version == Version::Http1;
    let in_flight = (!(http1 && response.body().is_end_stream())).then_some(in_flight);
    response.map(|body| ResponseBody {
        inner: body,
        in_flight,
        http1,
    })
}

pin_project! {
    /// The body of a response of [`HttpConnection`]: hyper's body, counted as in flight until it
    /// ends or is dropped (a graceful close waits for it).
    pub struct ResponseBody {
        #[pin]
        inner: Incoming,
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
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            // More to come.
            Some(Ok(_)) if !*this.http1 || !this.inner.is_end_stream() => {}
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
