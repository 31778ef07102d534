//! A persistent connection for tower.
//!
//! [`PersistentLayer`] keeps one live connection to a service whose address is looked up again
//! before every connection attempt, reconnects with a jittered delay when the connection dies,
//! reports every step as an [`Event`], and is itself a tower `Service` ([`Persistent`]), so that
//! hyper, tonic or anything built with `ServiceBuilder` can use it as a transport.
//!
//! It is a port of the `Persistent_connection` of OCaml's Async.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_persistent::{ClosableService, Event, PersistentLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // The address lookup: asked again before every connection attempt.
//! let get_address = service_fn(|()| async { Ok::<_, std::io::Error>(7000_u16) });
//! // The connector: an address in, a closable connection out.
//! let connect = service_fn(|port: u16| async move {
//!     let conn = service_fn(move |name: &'static str| async move {
//!         Ok::<_, std::io::Error>(format!("hello {name}, from port {port}"))
//!     });
//!     Ok::<_, std::io::Error>(ClosableService::new(conn))
//! });
//!
//! let layer = PersistentLayer::new("greeter", get_address).retry_delay(|| Duration::from_secs(1));
//! let greeter = ServiceBuilder::new().layer(layer).service(connect);
//! let mut events = greeter.events();
//!
//! // `poll_ready` waits for the connection, then the request goes through.
//! let reply = greeter.clone().oneshot("ada").await.unwrap();
//! assert_eq!(reply, "hello ada, from port 7000");
//!
//! greeter.close().await;
//! let mut seen = Vec::new();
//! while let Some(event) = events.next().await {
//!     seen.push(event.name());
//! }
//! assert_eq!(
//!     seen,
//!     ["attempting_to_connect", "obtained_address", "connected", "disconnected"]
//! );
//! # }
//! ```
//!
//! # The connection loop
//!
//! One round:
//! 1. [`Event::AttemptingToConnect`] (once per round, not once per attempt).
//! 2. An attempt starts the retry timer first (`retry_delay()` is called once per attempt), then
//!    calls `get_address`; a new address is reported as [`Event::ObtainedAddress`], then the
//!    connector is called with it.
//! 3. A failed attempt (an error or a panic of either) is reported as
//!    [`Event::FailedToConnect`]; the loop waits for the attempt's timer, and attempts again.
//! 4. On success the connection becomes current, then [`Event::Connected`] is emitted.
//! 5. The connection is dead when its [`close_finished`](Closable::close_finished) resolves, or
//!    when a handle sees its `poll_ready` fail (the driver then closes it). It stops being
//!    current, then [`Event::Disconnected`] is emitted, once the driver's close of it has
//!    finished or been given up at the close timeout.
//! 6. The loop waits for the timer of the successful attempt, then starts a new round: a
//!    connection that lived longer than the delay is replaced at once. So is one that served
//!    requests and that the peer closed gracefully ([`Closable::closed_gracefully`]), and the
//!    retry policy then starts again from its first delay; a server that accepts and closes
//!    without serving still meets the delay. (The HTTP connector also counts as closed
//!    gracefully a connection that the server closed after it sat idle for a second or more,
//!    served or not: a server's idle timeout.)
//!
//! Within a round, `ObtainedAddress` and `FailedToConnect` are only emitted when they differ from
//! the previous one of their kind (errors compare by [`ConnectError::text`]).
//!
//! Every event is awaited by the [`on_event`](PersistentLayer::on_event) callback before the
//! loop moves on, sent to every [`events`](Persistent::events) stream, and logged with `tracing`
//! (`FailedToConnect` at ERROR, the rest at INFO, with the server name as the `server` field).
//!
//! # Closing
//!
//! [`Persistent::close`] stops all further attempts, cancels an address lookup or connect in
//! flight, closes the current connection and waits for it, and delivers `Disconnected` if a
//! connection was current. Dropping the last handle does the same. Closing is bounded by
//! [`close_timeout`](PersistentLayer::close_timeout) (10 s): `close()` always resolves within
//! it. However the driver task ends (closing, a panic it could not catch, its runtime dropped),
//! every handle sees the persistent connection closed at once.
//!
//! # More
//!
//! - [`backoff`]: retry policies (constant, exponential as gRPC's, full and decorrelated
//!   jitter, your own), with anti-flap ([`PersistentLayer::backoff_reset_after`]); and
//!   [`PersistentLayer::connect_timeout`], [`PersistentLayer::fail_fast`].
//! - [`Persistent::state`], [`Persistent::state_changed`], [`Persistent::reconnect_now`].
//! - [`discovery`]: fixed, round-robin, DNS and service-catalog address lookups.
//! - [`transport`] (feature `hyper`, on by default): an HTTP/1.1 and HTTP/2 connector over
//!   hyper, which also carries tonic's generated clients.
//!
#![cfg_attr(feature = "hyper", doc = "[`transport`]: transport")]
#![cfg_attr(
    not(feature = "hyper"),
    doc = "[`transport`]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/index.html"
)]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod backoff;
mod closable;
pub mod discovery;
mod driver;
pub mod error;
mod event;
pub mod future;
#[cfg(feature = "tonic")]
pub mod grpc;
mod handover;
mod layer;
pub mod load;
mod service;
mod shared;
mod signal;
mod slot;
mod state;
#[cfg(test)]
mod testing;
#[cfg(feature = "hyper")]
pub mod transport;

pub use backoff::{
    DEFAULT_JITTER, DEFAULT_RETRY_DELAY, Exponential, MAX_RETRY_DELAY, MIN_RETRY_DELAY, RetryPolicy,
};
pub use closable::{Closable, ClosableService, Successor};
pub use error::{BoxError, Closed, ConnectError, ConnectionClosed, ReadyTimeout, Unavailable};
pub use event::{Event, Events};
pub use layer::{
    DEFAULT_CLOSE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_EVENT_CAPACITY, PersistentLayer,
};
pub use service::Persistent;
pub use state::State;

/// The former name of [`transport`], kept so that code written against it still compiles.
#[cfg(feature = "hyper")]
#[doc(hidden)]
pub mod hyper {
    pub use crate::transport::*;

    /// Renamed [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::transport::DEFAULT_HANDSHAKE_TIMEOUT).
    #[deprecated(note = "renamed `transport::DEFAULT_HANDSHAKE_TIMEOUT`")]
    pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration =
        crate::transport::DEFAULT_HANDSHAKE_TIMEOUT;
}

// The README's examples are compiled and run as doc tests, with every feature on (as the README's
// test command has it: some of them use TLS, tonic and etcd).
#[cfg(all(doctest, feature = "tls", feature = "tonic", feature = "etcd"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
