//! Error types.
//!
//! All errors are opaque structs with a lowercase [`Display`](fmt::Display) and no trailing
//! period; the underlying cause, when there is one, is returned by
//! [`source`](std::error::Error::source) and is not repeated in the message.
//!
//! One vocabulary for closing: **closed** is the persistent connection closed ([`Closed`], and a
//! [`ConnectError`] that [`is_closed`](ConnectError::is_closed) when there is no attempt to
//! report because of it); **connection closed** is one connection closed
//! ([`ConnectionClosed`]), after which the persistent connection makes another.
//!
//! # Examples
//!
//! An address lookup that fails, then a request after closing:
//!
//! ```
//! use std::error::Error as _;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_persistent::{ClosableService, Closed, PersistentLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let get_address = service_fn(|()| async {
//!     Err::<String, _>(std::io::Error::other("no replica in the catalog"))
//! });
//! let connect = service_fn(|_address: String| async {
//!     let echo = service_fn(|request: u32| async move { Ok::<_, std::io::Error>(request) });
//!     Ok::<_, std::io::Error>(ClosableService::new(echo))
//! });
//! let orders = ServiceBuilder::new()
//!     .layer(PersistentLayer::new("orders", get_address))
//!     .service(connect);
//!
//! // The attempt's error: its kind in the message, the cause as its source.
//! let error = orders.connected_or_failed_to_connect().await.unwrap_err();
//! assert!(error.is_address());
//! assert_eq!(error.to_string(), "address lookup failed");
//! assert_eq!(error.source().unwrap().to_string(), "no replica in the catalog");
//! assert_eq!(error.text(), "address lookup failed: no replica in the catalog");
//!
//! // Once closed, a request fails with `Closed`.
//! orders.close().await;
//! let error = orders.oneshot(7).await.unwrap_err();
//! assert!(error.is::<Closed>());
//! assert_eq!(error.to_string(), "persistent connection is closed");
//! # }
//! ```

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// A boxed error, as used throughout tower.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The persistent connection is closed.
///
/// Returned by [`Persistent::poll_ready`](tower_service::Service::poll_ready) once
/// [`close`](crate::Persistent::close) has been called (or every handle was dropped), and by
/// [`connected`](crate::Persistent::connected) instead of waiting forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Closed(());

impl Closed {
    pub(crate) fn new() -> Self {
        Closed(())
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("persistent connection is closed")
    }
}

impl StdError for Closed {}

/// The skeleton of the errors that have a kind and maybe a cause: the kind makes the message,
/// the cause is the source (shared, so that the error is cheap to clone).
#[derive(Clone)]
pub(crate) struct KindError<K> {
    pub(crate) kind: K,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl<K> KindError<K> {
    pub(crate) fn new(kind: K, source: Option<BoxError>) -> Self {
        KindError {
            kind,
            source: source.map(Arc::from),
        }
    }

    pub(crate) fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }

    /// Debug output as `name { kind, source }`.
    pub(crate) fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        K: fmt::Debug,
    {
        let mut d = f.debug_struct(name);
        d.field("kind", &self.kind);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl<K: fmt::Display> fmt::Display for KindError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

/// The step of an attempt that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Lookup,
    Connect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Address,
    AddressPanicked,
    Connect,
    ConnectPanicked,
    /// With the connect timeout (not the attempt's own limit, which the retry delay's jitter
    /// may have set: the errors of a round's timeouts have one text, and are reported once),
    /// and whether the address lookup was what ran out of time (else the connect).
    TimedOut(std::time::Duration, Stage),
    Closed,
}

/// Why a connection attempt failed.
///
/// Carried by [`Event::FailedToConnect`](crate::Event::FailedToConnect) and returned by
/// [`connected_or_failed_to_connect`](crate::Persistent::connected_or_failed_to_connect).
/// It is cheap to clone (the cause is shared).
///
/// Its kind is told by [`is_address`](Self::is_address), [`is_connect`](Self::is_connect),
/// [`is_panic`](Self::is_panic) and [`is_closed`](Self::is_closed); the cause (the error of the
/// address lookup or of the connector, or the panic message) is its
/// [`source`](std::error::Error::source).
#[derive(Clone)]
pub struct ConnectError(Arc<KindError<Kind>>);

impl ConnectError {
    fn new(kind: Kind, source: Option<BoxError>) -> Self {
        ConnectError(Arc::new(KindError::new(kind, source)))
    }

    pub(crate) fn address(source: BoxError) -> Self {
        Self::new(Kind::Address, Some(source))
    }

    pub(crate) fn connect(source: BoxError) -> Self {
        Self::new(Kind::Connect, Some(source))
    }

    pub(crate) fn address_panicked(payload: Box<dyn Any + Send>) -> Self {
        Self::new(Kind::AddressPanicked, Some(Panic::boxed(payload)))
    }

    pub(crate) fn connect_panicked(payload: Box<dyn Any + Send>) -> Self {
        Self::new(Kind::ConnectPanicked, Some(Panic::boxed(payload)))
    }

    /// An attempt ran out of time in its connect; `connect_timeout` is the layer's setting.
    pub(crate) fn timed_out(connect_timeout: std::time::Duration) -> Self {
        Self::new(Kind::TimedOut(connect_timeout, Stage::Connect), None)
    }

    /// An attempt ran out of time in its address lookup (see [`Self::timed_out`]).
    pub(crate) fn lookup_timed_out(connect_timeout: std::time::Duration) -> Self {
        Self::new(Kind::TimedOut(connect_timeout, Stage::Lookup), None)
    }

    pub(crate) fn closed() -> Self {
        Self::new(Kind::Closed, None)
    }

    /// The address lookup (`get_address`) failed or panicked.
    pub fn is_address(&self) -> bool {
        matches!(self.0.kind, Kind::Address | Kind::AddressPanicked)
    }

    /// The connector failed or panicked.
    pub fn is_connect(&self) -> bool {
        matches!(self.0.kind, Kind::Connect | Kind::ConnectPanicked)
    }

    /// The address lookup or the connector panicked; the panic message is the source.
    pub fn is_panic(&self) -> bool {
        matches!(self.0.kind, Kind::AddressPanicked | Kind::ConnectPanicked)
    }

    /// The attempt ran out of time (see
    /// [`connect_timeout`](crate::PersistentLayer::connect_timeout)).
    pub fn is_timeout(&self) -> bool {
        matches!(self.0.kind, Kind::TimedOut(..))
    }

    /// The persistent connection was closed, so there is no attempt to report.
    pub fn is_closed(&self) -> bool {
        self.0.kind == Kind::Closed
    }

    /// The message followed by every source's message, joined by `": "`.
    ///
    /// Two errors with the same text are the same error for deduplication of
    /// [`Event::FailedToConnect`](crate::Event::FailedToConnect).
    ///
    /// The sources are your errors' own: a chain longer than [`MAX_SOURCES`] (one that loops,
    /// say) is cut there, and a source whose `Display` or `source` panics reads
    /// `<panicked: ...>`, where the chain ends.
    pub fn text(&self) -> String {
        let mut text = self.to_string();
        let mut source = StdError::source(self);
        for _ in 0..MAX_SOURCES {
            let Some(err) = source else {
                return text;
            };
            text.push_str(": ");
            let step = catch_unwind(AssertUnwindSafe(|| (err.to_string(), err.source())));
            match step {
                Ok((message, next)) => {
                    text.push_str(&message);
                    source = next;
                }
                Err(payload) => {
                    text.push_str(&format!("<panicked: {}>", panic_message(&*payload)));
                    return text;
                }
            }
        }
        if source.is_some() {
            text.push_str(": ...");
        }
        text
    }
}

impl fmt::Debug for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug("ConnectError", f)
    }
}

/// Two errors are equal when they are of the same kind and have the same
/// [`text`](ConnectError::text).
impl PartialEq for ConnectError {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind == other.0.kind && self.text() == other.text()
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match *self {
            Kind::Address => "address lookup failed",
            Kind::AddressPanicked => "address lookup panicked",
            Kind::Connect => "connect failed",
            Kind::ConnectPanicked => "connect panicked",
            Kind::TimedOut(connect_timeout, stage) => {
                let what = match stage {
                    Stage::Lookup => " in its address lookup",
                    Stage::Connect => "",
                };
                return write!(
                    f,
                    "connection attempt timed out{what} (connect timeout {connect_timeout:?}, or \
                     the attempt's retry delay if longer)"
                );
            }
            Kind::Closed => "persistent connection is closed",
        })
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// How many sources [`ConnectError::text`] follows at most.
pub const MAX_SOURCES: usize = 32;

/// The message of a caught panic.
#[derive(Debug)]
struct Panic(String);

impl Panic {
    fn boxed(payload: Box<dyn Any + Send>) -> BoxError {
        Box::new(Panic(panic_message(&*payload)))
    }
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Panic {}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// The connection was closed; returned by [`ClosableService`](crate::ClosableService)'s
/// `poll_ready` once it is, and by an HTTP connection's (see the
/// [transport module][transport]). An HTTP request called for just as hyper's
/// connection ended, after `poll_ready` admitted it, fails with it too when no successor takes
/// it: it was sent nowhere, as a request that fails with hyper's `is_canceled` error.
///
#[cfg_attr(feature = "hyper", doc = "[transport]: crate::transport")]
#[cfg_attr(
    not(feature = "hyper"),
    doc = "[transport]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/index.html"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionClosed(());

impl ConnectionClosed {
    pub(crate) fn new() -> Self {
        ConnectionClosed(())
    }
}

impl fmt::Display for ConnectionClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection is closed")
    }
}

impl StdError for ConnectionClosed {}

/// The persistent connection is failing fast: an attempt of the current round failed and there
/// is no connection yet. Returned by `call` with
/// [`fail_fast`](crate::PersistentLayer::fail_fast); the last attempt's error is the source.
#[derive(Debug, Clone)]
pub struct Unavailable(ConnectError);

impl Unavailable {
    pub(crate) fn new(error: ConnectError) -> Self {
        Unavailable(error)
    }

    /// The error of the last failed attempt.
    pub fn connect_error(&self) -> &ConnectError {
        &self.0
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("persistent connection is unavailable")
    }
}

impl StdError for Unavailable {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

/// A handle waited in `poll_ready` longer than the
/// [`ready_timeout`](crate::PersistentLayer::ready_timeout) without a ready connection; its
/// `call` fails at once with this. (A wait that its caller gave up, the handle polled again
/// within a second of its deadline, is that wait still: see `ready_timeout`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyTimeout(std::time::Duration);

impl ReadyTimeout {
    pub(crate) fn new(after: std::time::Duration) -> Self {
        ReadyTimeout(after)
    }

    /// The ready timeout that ran out (the handle's setting, not a measure of its wait).
    pub fn waited(&self) -> std::time::Duration {
        self.0
    }
}

impl fmt::Display for ReadyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no connection was ready within {:?}", self.0)
    }
}

impl StdError for ReadyTimeout {}
