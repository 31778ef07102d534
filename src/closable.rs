//! The [`Closable`] trait, and [`ClosableService`], which makes any cloneable service closable.

use std::fmt;
use std::future::Future;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::error::{BoxError, ConnectionClosed};
use crate::future::BoxErrorFuture;
use crate::signal::Signal;

/// A connection that can be closed, and that tells when it is.
///
/// The connection type of a [`Persistent`](crate::Persistent) must implement it: the driver
/// watches [`close_finished`](Closable::close_finished) to learn that the connection died, and
/// calls [`close`](Closable::close) when a handle saw the connection's `poll_ready` fail and when
/// the persistent connection itself is closed.
///
/// Any cloneable tower `Service` can be made closable without writing an impl by wrapping it in
/// [`ClosableService`].
pub trait Closable {
    /// Starts closing; the future resolves once the connection's resources are released.
    fn close(&self) -> impl Future<Output = ()> + Send;
    /// Whether the connection is closed or closing, whichever side began it. Once true, it
    /// stays true, for every clone.
    ///
    /// A connection that begins closing by itself is given the close timeout to finish from
    /// the moment this is seen true: by `connected()`, by `connected_or_failed_to_connect()`,
    /// or by a handle whose `poll_ready` on it is pending.
    fn is_closed(&self) -> bool;
    /// Resolves once the connection has finished closing, whoever closed it. Starts nothing.
    fn close_finished(&self) -> impl Future<Output = ()> + Send;

    /// Whether the connection served requests and the peer then closed it in good order (an
    /// HTTP/1.1 `Connection: close`, an HTTP/2 GOAWAY, a server's keep-alive limit or idle
    /// timeout), as opposed to failing, being refused, or being closed by this side.
    ///
    /// Asked once the connection is dead. Such a connection is replaced at once instead of
    /// after the rest of the retry delay, and the retry policy starts again from its first
    /// delay. A connection that is closed without serving anything should answer `false`, so
    /// that a server that accepts and closes at once still meets the retry delay.
    ///
    /// Default: `false`.
    fn closed_gracefully(&self) -> bool {
        false
    }
}

/// Makes a cloneable tower `Service` into a [`Closable`] connection.
///
/// All clones share one closed state. The connection counts as closed once
/// [`close`](Closable::close) was called on any clone, or once the inner service's `poll_ready`
/// failed on any clone; from then on `poll_ready` fails with
/// [`ConnectionClosed`] and [`close_finished`](Closable::close_finished) has resolved. Closing
/// does not interrupt calls already made: their futures still run to completion. The inner
/// service itself is released when the last clone is dropped.
///
/// # Examples
///
/// ```
/// use tower::{ServiceExt, service_fn};
/// use tower_persistent::{Closable, ClosableService};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let echo = service_fn(|s: String| async move { Ok::<_, std::convert::Infallible>(s) });
/// let conn = ClosableService::new(echo);
/// assert_eq!(conn.clone().oneshot("hi".to_owned()).await.unwrap(), "hi");
///
/// conn.close().await;
/// assert!(conn.is_closed());
/// assert!(conn.clone().oneshot("hi".to_owned()).await.is_err());
/// # }
/// ```
#[derive(Clone)]
pub struct ClosableService<S> {
    inner: S,
    closed: Signal,
}

impl<S> ClosableService<S> {
    /// Wraps `inner`; the result is open.
    pub fn new(inner: S) -> Self {
        ClosableService {
            inner,
            closed: Signal::default(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> fmt::Debug for ClosableService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClosableService")
            .field("closed", &self.closed.is_set())
            .finish_non_exhaustive()
    }
}

impl<S> Closable for ClosableService<S> {
    fn close(&self) -> impl Future<Output = ()> + Send {
        self.closed.set();
        std::future::ready(())
    }

    fn is_closed(&self) -> bool {
        self.closed.is_set()
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        self.closed.wait()
    }
}

/// The inner service's `poll_ready` failed: the connection is closed, and the error returned.
#[cold]
#[inline(never)]
fn failed<E: Into<BoxError>>(closed: &Signal, error: E) -> BoxError {
    closed.set();
    error.into()
}

impl<S, R> Service<R> for ClosableService<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxErrorFuture<S::Future>;

    #[inline(always)]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Every outcome is made here, each of constants where it can be (the error of a closed
        // connection is zero-sized: its box is a constant), so that a caller that inlines this
        // can drop its own test of `Ready(Ok(()))` on the happy path.
        if self.closed.is_set() {
            return Poll::Ready(Err(Box::new(ConnectionClosed::new())));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => Poll::Ready(Err(failed(&self.closed, error))),
        }
    }

    #[inline]
    fn call(&mut self, request: R) -> Self::Future {
        BoxErrorFuture::new(self.inner.call(request))
    }
}
