//! [`tower::load::Load`] for the persistent connection, so that balancers such as
//! `tower::balance::p2c` can weigh one `Persistent` per replica with no wrapper.
//!
//! A handle's load is its current connection's load (for an
//! [`HttpConnection`][HttpConnection], the requests in flight on it), and a
//! handle with no connection, or failing fast, weighs more than any connected one: a balancer
//! that compares two replicas sends the request to the connected one. (p2c picks the two at
//! random among the ready replicas: when both are failing fast, the request goes to one of them
//! and fails at once.)
//!
//! # Examples
//!
//! ```
//! use std::convert::Infallible;
//! use tower::load::Load;
//! use tower::{Layer, service_fn};
//! use tower_persistent::load::ConnectionLoad;
//! use tower_persistent::{ClosableService, PersistentLayer};
//!
//! /// A connection that reports a fixed load.
//! #[derive(Clone)]
//! struct Loaded(u32);
//!
//! impl tower::Service<()> for Loaded {
//!     type Response = ();
//!     type Error = Infallible;
//!     type Future = std::future::Ready<Result<(), Infallible>>;
//!     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
//!         std::task::Poll::Ready(Ok(()))
//!     }
//!     fn call(&mut self, (): ()) -> Self::Future {
//!         std::future::ready(Ok(()))
//!     }
//! }
//!
//! impl Load for Loaded {
//!     type Metric = u32;
//!     fn load(&self) -> u32 {
//!         self.0
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let p = PersistentLayer::new("loaded", service_fn(|()| async { Ok::<_, Infallible>(()) }))
//!     .layer(service_fn(|()| async { Ok::<_, Infallible>(ClosableService::new(Loaded(3))) }));
//! assert_eq!(p.load(), ConnectionLoad::NotConnected);
//! p.connected().await.unwrap();
//! assert_eq!(p.load(), ConnectionLoad::Connected(3));
//! assert!(ConnectionLoad::Connected(1_000) < ConnectionLoad::NotConnected);
//! # }
//! ```
//!
#![cfg_attr(
    feature = "hyper",
    doc = "[HttpConnection]: crate::transport::HttpConnection"
)]
#![cfg_attr(
    not(feature = "hyper"),
    doc = "[HttpConnection]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/struct.HttpConnection.html"
)]

use tower::load::Load;

use crate::closable::ClosableService;
use crate::service::Persistent;

/// The load of a [`Persistent`] handle: its connection's load, or `NotConnected`, which is more
/// than any connected load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnectionLoad<M> {
    /// Connected; the connection's own load.
    Connected(M),
    /// No connection (connecting, failing fast, or closed).
    NotConnected,
}

impl<A, C> Load for Persistent<A, C>
where
    C: Load + Clone,
    C::Metric: PartialOrd,
{
    type Metric = ConnectionLoad<C::Metric>;

    fn load(&self) -> Self::Metric {
        match self.current_for_load() {
            Some(load) => ConnectionLoad::Connected(load),
            None => ConnectionLoad::NotConnected,
        }
    }
}

/// A closable service weighs what the service inside weighs.
impl<S: Load> Load for ClosableService<S> {
    type Metric = S::Metric;

    fn load(&self) -> S::Metric {
        self.get_ref().load()
    }
}
