//! Future types: the response futures of [`Persistent`](crate::Persistent) and of
//! [`ClosableService`](crate::ClosableService). Both are the inner service's own future, with
//! its error turned into a [`BoxError`].
//!
//! # Examples
//!
//! ```
//! use tower::{Service, ServiceExt, service_fn};
//! use tower_persistent::ClosableService;
//! use tower_persistent::future::BoxErrorFuture;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let fails = service_fn(|_: u32| async { Err::<u32, _>(std::io::Error::other("refused")) });
//! let mut conn = ClosableService::new(fails);
//! let future: BoxErrorFuture<_> = conn.ready().await.unwrap().call(1);
//! let error: tower_persistent::BoxError = future.await.unwrap_err();
//! assert_eq!(error.to_string(), "refused");
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::BoxError;

pin_project! {
    /// The response future of [`ClosableService`](crate::ClosableService): the inner service's
    /// own future, with its error turned into a [`BoxError`], and nothing else.
    pub struct BoxErrorFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> BoxErrorFuture<F> {
    #[inline(always)]
    pub(crate) fn new(inner: F) -> Self {
        BoxErrorFuture { inner }
    }
}

impl<F, T, E> Future for BoxErrorFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(|r| r.map_err(Into::into))
    }
}

impl<F> fmt::Debug for BoxErrorFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxErrorFuture").finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`Persistent`](crate::Persistent): the connection's own future,
    /// with its error turned into a [`BoxError`]; or, when failing fast or closed, the error at
    /// once.
    pub struct ResponseFuture<F> {
        #[pin]
        state: ResponseState<F>,
    }
}

pin_project! {
    #[project = ResponseStateProj]
    enum ResponseState<F> {
        Called { #[pin] future: F },
        // Boxed once more: a thin pointer, so that the future is no larger than `F` where `F`
        // leaves a niche (moving a larger one costs a store-forwarding stall per request).
        Failed { error: FailedError },
    }
}

/// The error of a failed call, until it is polled out. Its drop is a test and, if the error was
/// never polled out, a call out of line: so the future's own drop is small enough to inline
/// into the caller, instead of a call per request.
pub(crate) struct FailedError(Option<Box<BoxError>>);

impl FailedError {
    pub(crate) fn new(error: BoxError) -> Self {
        FailedError(Some(Box::new(error)))
    }
}

impl Drop for FailedError {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(error) = self.0.take() {
            drop_error(error);
        }
    }
}

/// The error taken out of a failed call's future (`None`: polled again after it). By value, not
/// through a reference to the future: a reference passed out of line lets the future's address
/// escape, and the caller then reloads the future from memory after any opaque code (a
/// `black_box` of the response, say) to drop it, where it otherwise knows its state.
#[cold]
#[inline(never)]
fn take_error(error: Option<Box<BoxError>>) -> BoxError {
    *error.expect("ResponseFuture polled after completion")
}

#[cold]
#[inline(never)]
fn drop_error(error: Box<BoxError>) {
    drop(error);
}

impl<F> ResponseFuture<F> {
    #[inline(always)]
    pub(crate) fn new(future: F) -> Self {
        ResponseFuture {
            state: ResponseState::Called { future },
        }
    }

    /// A future that fails with `error` (boxed by the caller, out of line).
    #[inline(always)]
    pub(crate) fn from_failed(error: FailedError) -> Self {
        ResponseFuture {
            state: ResponseState::Failed { error },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            ResponseStateProj::Called { future } => future.poll(cx).map(|r| r.map_err(Into::into)),
            ResponseStateProj::Failed { error } => Poll::Ready(Err(take_error(error.0.take()))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
