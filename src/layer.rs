//! [`PersistentLayer`], the configuration of a persistent connection.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tower_layer::Layer;
use tower_service::Service;

use crate::Closable;
use crate::backoff::Backoff;
use crate::error::BoxError;
use crate::event::Event;
use crate::service::Persistent;

pub(crate) type OnEvent<A, C> = Arc<dyn Fn(Event<A, C>) -> BoxFuture<'static, ()> + Send + Sync>;

/// The default number of events a slow [`events`](Persistent::events) subscriber may fall behind
/// before it is told that it lagged (by an [`Event::Lagged`]).
pub const DEFAULT_EVENT_CAPACITY: usize = 256;

/// The configuration of a persistent connection; applied to a connector, it starts one.
///
/// `G`, the address lookup, is a `Service<(), Response = A>` called before every connection
/// attempt. The connector it is [applied](Layer::layer) to is a `Service<A, Response = C>`
/// (a tower `MakeService`) whose connections `C` implement [`Closable`].
///
/// Applying the layer spawns the connection's driver on the current tokio runtime and returns
/// the first [`Persistent`] handle.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower::{Layer, ServiceBuilder, service_fn};
/// use tower_persistent::{ClosableService, Event, PersistentLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let get_address = service_fn(|()| async { Ok::<_, std::io::Error>("127.0.0.1:7000".to_owned()) });
/// let connect = service_fn(|address: String| async move {
///     // A real connector dials `address`; this one answers every request with it.
///     let conn = service_fn(move |_: ()| std::future::ready(Ok::<_, std::io::Error>(address.clone())));
///     Ok::<_, std::io::Error>(ClosableService::new(conn))
/// });
///
/// let layer = PersistentLayer::new("orders", get_address)
///     .retry_delay(|| Duration::from_secs(1))
///     .on_event(|event| async move { println!("{event:?}") });
/// let orders = ServiceBuilder::new().layer(layer).service(connect);
///
/// let conn = orders.connected().await.unwrap();
/// assert_eq!(orders.server_name(), "orders");
/// # drop(conn);
/// orders.close().await;
/// # }
/// ```
pub struct PersistentLayer<G, A, C> {
    server_name: Arc<str>,
    get_address: G,
    pub(crate) backoff: Backoff,
    pub(crate) on_event: Option<OnEvent<A, C>>,
    pub(crate) event_capacity: usize,
    _marker: PhantomData<fn() -> (A, C)>,
}

impl<G, A, C> PersistentLayer<G, A, C> {
    /// A persistent connection to `server_name`, whose address is asked of `get_address` before
    /// every connection attempt.
    ///
    /// An error (or a panic) of `get_address` is a failed attempt, reported as
    /// [`Event::FailedToConnect`].
    pub fn new(server_name: impl Into<String>, get_address: G) -> Self
    where
        G: Service<(), Response = A>,
    {
        PersistentLayer {
            server_name: Arc::from(server_name.into()),
            get_address,
            backoff: Backoff::default(),
            on_event: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            _marker: PhantomData,
        }
    }

    /// The base delay between the starts of two connection attempts, asked once per attempt.
    ///
    /// Default: 10 seconds. Each delay is randomised by the [`jitter`](Self::jitter), and kept
    /// within [`MIN_RETRY_DELAY`](crate::MIN_RETRY_DELAY) and
    /// [`MAX_RETRY_DELAY`](crate::MAX_RETRY_DELAY); see the [`backoff`](crate::backoff) module.
    pub fn retry_delay<F>(mut self, retry_delay: F) -> Self
    where
        F: Fn() -> Duration + Send + Sync + 'static,
    {
        self.backoff.delay = Arc::new(retry_delay);
        self
    }

    /// How much each delay is randomised: a delay `d` becomes a uniform draw from
    /// `[(1 - jitter) d, (1 + jitter) d]`.
    ///
    /// Default: `0.3`, so that clients that lost the same server do not all come back at once.
    /// `0.0` gives exact delays.
    ///
    /// # Panics
    ///
    /// If `jitter` is not within `[0, 1]` (NaN included).
    pub fn jitter(mut self, jitter: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&jitter),
            "jitter must be within [0, 1], got {jitter}"
        );
        self.backoff.jitter = jitter;
        self
    }

    /// A callback for every [`Event`]; the loop awaits its future before it moves on.
    ///
    /// Default: none (events still go to `tracing` and to [`events`](Persistent::events)
    /// streams). No connection attempt starts before the handler of
    /// [`AttemptingToConnect`](Event::AttemptingToConnect) finishes, and
    /// [`Disconnected`](Event::Disconnected) is not emitted before the handler of
    /// [`Connected`](Event::Connected) finishes, even if the connection dies meanwhile. A handler
    /// that panics is logged at ERROR and the loop goes on; a handler that never finishes stops
    /// the loop (and [`close`](Persistent::close)) with it. Closing does not cancel a handler
    /// that is running.
    ///
    /// A handler that owns a [`Persistent`] handle keeps the connection alive: dropping the other
    /// handles then no longer closes it, so call [`close`](Persistent::close) explicitly.
    pub fn on_event<F, Fut>(mut self, on_event: F) -> Self
    where
        F: Fn(Event<A, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_event = Some(Arc::new(move |event| Box::pin(on_event(event))));
        self
    }

    /// How many events an [`events`](Persistent::events) subscriber may fall behind before it is
    /// told, by an [`Event::Lagged`], how many it missed.
    ///
    /// Default: [`DEFAULT_EVENT_CAPACITY`] (256). Kept within `[1, 65536]`.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// The server name given to [`new`](Self::new).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }
}

impl<G: Clone, A, C> Clone for PersistentLayer<G, A, C> {
    fn clone(&self) -> Self {
        PersistentLayer {
            server_name: self.server_name.clone(),
            get_address: self.get_address.clone(),
            backoff: self.backoff.clone(),
            on_event: self.on_event.clone(),
            event_capacity: self.event_capacity,
            _marker: PhantomData,
        }
    }
}

impl<G, A, C> fmt::Debug for PersistentLayer<G, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentLayer")
            .field("server_name", &self.server_name)
            .field("jitter", &self.backoff.jitter)
            .field("on_event", &self.on_event.is_some())
            .field("event_capacity", &self.event_capacity)
            .finish_non_exhaustive()
    }
}

/// Starts a persistent connection over the connector `M`.
///
/// # Panics
///
/// If called outside a tokio runtime: the driver is spawned with [`tokio::spawn`].
impl<G, A, C, M> Layer<M> for PersistentLayer<G, A, C>
where
    G: Service<(), Response = A> + Clone + Send + 'static,
    G::Error: Into<BoxError>,
    G::Future: Send,
    M: Service<A, Response = C> + Send + 'static,
    M::Error: Into<BoxError>,
    M::Future: Send,
    A: Clone + PartialEq + fmt::Debug + Send + Sync + 'static,
    C: Clone + Closable + Send + Sync + 'static,
{
    type Service = Persistent<A, C>;

    fn layer(&self, connect: M) -> Persistent<A, C> {
        crate::driver::spawn(
            self.server_name.clone(),
            self.get_address.clone(),
            connect,
            self,
        )
    }
}
