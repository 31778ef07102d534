//! The [`Closable`] trait, and [`ClosableService`], which makes any cloneable service closable.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tower_service::Service;

use crate::error::{BoxError, ConnectionClosed};
use crate::future::BoxErrorFuture;
use crate::signal::{Flag, Signal};

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
    /// that a server that accepts and closes at once still meets the retry delay. (The HTTP
    /// connector's connections also answer `true` when the server closed them in good order
    /// after they sat idle for a second or more, a server's idle timeout, served or not.)
    ///
    /// Replacements at once come eight at most within [`MIN_RETRY_DELAY`](crate::MIN_RETRY_DELAY)
    /// (1 ms); the ninth waits for that millisecond to end: a connection that answers `true`
    /// every time it dies as soon as it is made is replaced 8,000 times a second at most, not
    /// in a busy loop.
    ///
    /// Default: `false`.
    fn closed_gracefully(&self) -> bool {
        false
    }

    /// Called once by the persistent connection when it has made this connection, just before
    /// it becomes current (if closing begins meanwhile, it never does), with where the connection that replaces it will be announced: a
    /// connection may keep it to hand that successor the requests it could not send
    /// ([`HttpConnection`][HttpConnection] does, for a request that hyper hands
    /// back unsent because the connection ended). See [`Successor`].
    ///
    /// Default: the successor is not needed.
    ///
    #[cfg_attr(
        feature = "hyper",
        doc = "[HttpConnection]: crate::transport::HttpConnection"
    )]
    #[cfg_attr(
        not(feature = "hyper"),
        doc = "[HttpConnection]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/struct.HttpConnection.html"
    )]
    fn set_successor(&self, successor: Successor<Self>)
    where
        Self: Sized,
    {
        let _ = successor;
    }

    /// Called by the persistent connection when it gives the connection up: its
    /// [`close`](Closable::close) did not finish within the persistent connection's close
    /// timeout (or panicked), and the connection is dropped. A connection whose resources
    /// outlive the persistent connection's clones of it (a task of its own, a socket, requests
    /// still in flight, which other clones may hold) should release them now, failing what is
    /// still in flight, rather than at a later deadline of its own.
    ///
    /// [`HttpConnection`][HttpConnection] cuts off what is still open on it
    /// (requests in flight fail with [`ClosedInFlight`][ClosedInFlight]) and
    /// closes its socket.
    ///
    /// Default: nothing (the persistent connection's clones are dropped).
    ///
    #[cfg_attr(
        feature = "hyper",
        doc = "[HttpConnection]: crate::transport::HttpConnection"
    )]
    #[cfg_attr(
        not(feature = "hyper"),
        doc = "[HttpConnection]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/struct.HttpConnection.html"
    )]
    #[cfg_attr(
        feature = "hyper",
        doc = "[ClosedInFlight]: crate::transport::ClosedInFlight"
    )]
    #[cfg_attr(
        not(feature = "hyper"),
        doc = "[ClosedInFlight]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/struct.ClosedInFlight.html"
    )]
    fn abort(&self) {}
}

/// Where the persistent connection announces the connection that replaces one that died: given
/// to each connection by [`Closable::set_successor`]. Cloneable; every clone hears the same
/// announcement.
///
/// When the connection dies and the persistent connection starts its next round at once (the
/// connection outlived its attempt's retry delay, or the server closed it in good order after
/// it served), the announcement is made once that round's first attempt has ended:
/// [`get`](Successor::get) then gives the connection that attempt made (it is current by
/// then), or `None` if the attempt failed. If the next round must first wait out the retry
/// delay, `None` is announced at once, as it is when closing begins or the persistent
/// connection's driver is gone. So a wait lasts one attempt at most: the attempt's own limit
/// (the connect timeout, or its retry delay if that is longer), after the time the persistent
/// connection's `on_event` handler takes with `Disconnected` (and the close timeout, when it
/// has to close the dead connection first). The announced successor is kept alive until it
/// dies itself.
///
/// Once announced, a `Successor` holds the connection it names: a connection that keeps its
/// successor for good would keep every later connection alive with it, for as long as anyone
/// holds the first. Keep it only while it is needed.
pub struct Successor<C>(Arc<Succession<C>>);

struct Succession<C> {
    announced: Flag,
    next: Mutex<Option<C>>,
}

impl<C> Clone for Successor<C> {
    fn clone(&self) -> Self {
        Successor(self.0.clone())
    }
}

impl<C> fmt::Debug for Successor<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Successor")
            .field("announced", &self.is_announced())
            .finish_non_exhaustive()
    }
}

impl<C: Clone> Successor<C> {
    /// Waits for the announcement: the connection that replaced this one, or `None` if the
    /// persistent connection had to wait out the retry delay first, if the attempt that
    /// followed the death failed, or if the persistent connection closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the announcement is kept, and a later call resolves with it.
    pub async fn get(&self) -> Option<C> {
        self.0.announced.wait().await;
        self.0
            .next
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl<C> Successor<C> {
    /// Whether the announcement was made ([`get`](Successor::get) resolves at once).
    pub fn is_announced(&self) -> bool {
        self.0.announced.is_set()
    }

    /// A reference that keeps nothing alive.
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))]
    pub(crate) fn downgrade(&self) -> WeakSuccessor<C> {
        WeakSuccessor(Arc::downgrade(&self.0))
    }
}

/// A [`Successor`] that keeps nothing alive: it can be taken up only while the announcement is
/// still to come, or while someone else holds the successor.
#[cfg_attr(not(feature = "hyper"), allow(dead_code))]
pub(crate) struct WeakSuccessor<C>(std::sync::Weak<Succession<C>>);

#[cfg_attr(not(feature = "hyper"), allow(dead_code))]
impl<C> WeakSuccessor<C> {
    pub(crate) fn upgrade(&self) -> Option<Successor<C>> {
        self.0.upgrade().map(Successor)
    }
}

/// The driver's side of a [`Successor`]: announces the successor, or, dropped unused, that
/// there is none.
pub(crate) struct Announcer<C>(Arc<Succession<C>>);

/// A successor to announce, and the announcer to announce it with.
pub(crate) fn succession<C>() -> (Announcer<C>, Successor<C>) {
    let succession = Arc::new(Succession {
        announced: Flag::default(),
        next: Mutex::new(None),
    });
    (Announcer(succession.clone()), Successor(succession))
}

impl<C: Clone> Announcer<C> {
    /// Announces `next` as the successor; returns the successor, to keep it alive.
    pub(crate) fn announce(self, next: &C) -> Successor<C> {
        *self.0.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(next.clone());
        Successor(self.0.clone())
        // Dropping `self` sets the flag.
    }
}

impl<C> Drop for Announcer<C> {
    fn drop(&mut self) {
        self.0.announced.set();
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
        if self.closed.is_set_relaxed() {
            return Poll::Ready(Err(Box::new(ConnectionClosed::new())));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => Poll::Ready(Err(failed(&self.closed, error))),
        }
    }

    #[inline(always)]
    fn call(&mut self, request: R) -> Self::Future {
        BoxErrorFuture::new(self.inner.call(request))
    }
}
