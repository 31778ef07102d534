//! What a request on an [`HttpConnection`](super::HttpConnection) gives back: the response
//! future and the response body, which count the request as in flight until the body ends.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::body::{Body, Incoming};
use pin_project_lite::pin_project;

use super::shared::InFlight;
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

/// hyper's response, its body counted as in flight on the connection that served it.
pub(super) fn respond(
    response: http::Response<Incoming>,
    in_flight: InFlight,
) -> http::Response<ResponseBody> {
    in_flight.connection().mark_served();
    response.map(|body| ResponseBody {
        inner: body,
        in_flight: Some(in_flight),
    })
}

pin_project! {
    /// The body of a response of [`HttpConnection`]: hyper's body, counted as in flight until it
    /// ends or is dropped (a graceful close waits for it).
    pub struct ResponseBody {
        #[pin]
        inner: Incoming,
        in_flight: Option<InFlight>,
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
        let frame = ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            // The end, or an error: the request is no longer in flight.
            if let (Some(Err(error)), Some(in_flight)) = (&frame, &*this.in_flight) {
                in_flight.connection().response_failed(error);
            }
            this.in_flight.take();
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
