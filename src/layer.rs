//! [`PersistentLayer`], the configuration of a persistent connection.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use crate::Closable;
use crate::backoff::{DEFAULT_BACKOFF_RESET_AFTER, RetryPolicy, check_jitter};
use crate::error::BoxError;
use crate::event::{Event, OnEvent};
use crate::service::Persistent;

/// The default number of events a slow [`events`](Persistent::events) subscriber may fall behind
/// before it is told that it lagged (by an [`Event::Lagged`]).
pub const DEFAULT_EVENT_CAPACITY: usize = 256;

/// The default deadline of one connection attempt (gRPC's minimum connect timeout).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The default bound on closing: on the wait for a connection's close, and on event handlers
/// once the persistent connection is closing.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

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
    config: Config,
    get_address: G,
    on_event: Option<OnEvent<A, C>>,
}

/// The settings of a persistent connection, apart from its services and its event handler:
/// what the driver and the handles are given.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) server_name: Arc<str>,
    pub(crate) policy: RetryPolicy,
    /// The jitter set by [`PersistentLayer::jitter`]: it applies to every constant or
    /// exponential policy set before or after it.
    pub(crate) jitter: Option<f64>,
    pub(crate) backoff_reset_after: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) fail_fast: bool,
    pub(crate) ready_timeout: Option<Duration>,
    pub(crate) event_capacity: usize,
}

impl<G, A, C> PersistentLayer<G, A, C> {
    /// A persistent connection to `server_name`, whose address is asked of `get_address` before
    /// every connection attempt.
    ///
    /// An error (or a panic) of `get_address` is a failed attempt, reported as
    /// [`Event::FailedToConnect`].
    ///
    /// So is an error of its `poll_ready`, and of the connector's: each attempt polls the
    /// service ready again, and one that failed before is used again, not given up for good
    /// as tower's rule for a failed `poll_ready` would have it (a lookup or a connector that
    /// recovers serves the next attempt).
    pub fn new(server_name: impl Into<String>, get_address: G) -> Self
    where
        G: Service<(), Response = A>,
    {
        PersistentLayer {
            config: Config {
                server_name: Arc::from(server_name.into()),
                policy: RetryPolicy::default(),
                jitter: None,
                backoff_reset_after: DEFAULT_BACKOFF_RESET_AFTER,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                close_timeout: DEFAULT_CLOSE_TIMEOUT,
                fail_fast: false,
                ready_timeout: None,
                event_capacity: DEFAULT_EVENT_CAPACITY,
            },
            get_address,
            on_event: None,
        }
    }

    /// The base delay between the starts of two connection attempts, asked once per attempt.
    ///
    /// Default: 10 seconds. Each delay is randomised by the [`jitter`](Self::jitter), and kept
    /// within [`MIN_RETRY_DELAY`](crate::MIN_RETRY_DELAY) and
    /// [`MAX_RETRY_DELAY`](crate::MAX_RETRY_DELAY); see the [`backoff`](crate::backoff) module.
    /// This makes the policy a constant one: it replaces a [`retry_policy`](Self::retry_policy).
    /// Its jitter is the one set with [`jitter`](Self::jitter), before or after this call; else
    /// that of the constant policy it replaces; else the default.
    pub fn retry_delay<F>(mut self, retry_delay: F) -> Self
    where
        F: Fn() -> Duration + Send + Sync + 'static,
    {
        self.config.policy.set_delay_fn(Arc::new(retry_delay));
        self.apply_jitter();
        self
    }

    /// How much each delay of a constant or exponential policy is randomised: a delay `d`
    /// becomes a uniform draw from `[(1 - jitter) d, (1 + jitter) d]`.
    ///
    /// Default: `0.3` (the constant policy's), so that clients that lost the same server do not
    /// all come back at once; a policy of [`backoff`](crate::backoff) made with its own jitter
    /// (gRPC's exponential: 0.2) keeps that one unless this is set. `0.0` gives exact delays.
    ///
    /// Every value is accepted: one outside `[0, 1]` is held to it (a negative jitter is `0`,
    /// one above `1` is `1`), and NaN leaves the jitter unchanged; either is logged at WARN.
    /// [`RetryPolicy::constant`] rejects such values with an error instead.
    ///
    /// The order of the calls does not matter: the jitter set here applies to the constant or
    /// exponential policy in use at the end, whether it was set by
    /// [`retry_delay`](Self::retry_delay) or [`retry_policy`](Self::retry_policy) before this
    /// call or after it (it overrides the jitter of a policy given to `retry_policy`). The other
    /// policies have their own randomness, which it leaves alone.
    pub fn jitter(mut self, jitter: f64) -> Self {
        if let Err(invalid) = check_jitter(jitter) {
            if jitter.is_nan() {
                tracing::warn!(server = %self.config.server_name, "{invalid}; the jitter is left as it was");
                return self;
            }
            tracing::warn!(server = %self.config.server_name, "{invalid}; held to [0, 1]");
        }
        self.config.jitter = Some(jitter.clamp(0.0, 1.0));
        self.apply_jitter();
        self
    }

    /// Gives the policy in use the jitter set with [`jitter`](Self::jitter), if any.
    fn apply_jitter(&mut self) {
        if let Some(jitter) = self.config.jitter {
            self.config.policy.set_jitter(jitter);
        }
    }

    /// The retry policy: how long to wait between the starts of two attempts.
    ///
    /// Default: a constant 10 s, ±30 %. See the [`backoff`](crate::backoff) module for the
    /// others (exponential as gRPC's, full jitter, decorrelated jitter, your own function).
    /// A jitter set with [`jitter`](Self::jitter), before or after this call, replaces the
    /// jitter of a constant or exponential policy.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.config.policy = policy;
        self.apply_jitter();
        self
    }

    /// How long a connection must stay up for the retry policy to start again from its first
    /// delay (anti-flap): a server that accepts connections and closes them at once meets
    /// growing delays, not a reconnection storm.
    ///
    /// Default: [`DEFAULT_BACKOFF_RESET_AFTER`](crate::backoff::DEFAULT_BACKOFF_RESET_AFTER)
    /// (10 s). `Duration::ZERO` resets after every connection.
    pub fn backoff_reset_after(mut self, after: Duration) -> Self {
        self.config.backoff_reset_after = after;
        self
    }

    /// The deadline of one connection attempt, address lookup and connect together, counted
    /// from the start of the attempt. It is never shorter than that attempt's retry delay (the
    /// next attempt could not start sooner anyway), as in gRPC. The time an
    /// [`on_event`](Self::on_event) handler takes over the attempt's
    /// [`ObtainedAddress`](Event::ObtainedAddress) is not counted: the deadline moves on by
    /// that much. An attempt that runs out of time
    /// is a [`FailedToConnect`](Event::FailedToConnect) whose error
    /// [`is_timeout`](crate::ConnectError::is_timeout); its text names this setting, not the
    /// attempt's own limit (which the retry delay's jitter may have set), so that the attempts
    /// of a round that all time out are reported once.
    ///
    /// Default: [`DEFAULT_CONNECT_TIMEOUT`] (20 s, gRPC's minimum connect timeout). Every value
    /// is accepted: a deadline too far to be represented (`Duration::MAX`) is held to about
    /// thirty years from the attempt's start, in effect none.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// The bound on closing a connection, whoever began it, and on event handlers while the
    /// persistent connection closes.
    ///
    /// - A connection whose [`close`](Closable::close) does not finish within it (a graceful
    ///   close stuck on a peer) is given up: dropped, with a WARN log. This holds when the
    ///   driver closes a dead connection (its `poll_ready` failed), so that a dead connection
    ///   never holds up the next one beyond it, and when the persistent connection closes.
    /// - A connection that begins closing by itself and does not finish is given it too,
    ///   counted from the moment a caller meets it closed (see
    ///   [`Closable::is_closed`]); then the next round begins.
    /// - [`Persistent::close`] always resolves within it, counted from the first call: the
    ///   wait for the connection's close and for the `on_event` handlers still to run (the one
    ///   running when closing began, then [`Disconnected`](Event::Disconnected)'s) share it; a
    ///   handler still running at the deadline is abandoned (its future dropped, WARN log).
    ///   That bound holds while the driver task can run: a connector, lookup or handler that
    ///   blocks its thread holds closing up for as long, and a driver on a runtime no longer
    ///   driven finishes when that runtime runs again or is dropped.
    ///
    /// Default: [`DEFAULT_CLOSE_TIMEOUT`] (10 s). `Duration::ZERO` gives each close and handler
    /// one poll; `Duration::MAX` waits as long as they take (held to about thirty years, in
    /// effect for good).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// Fail fast instead of waiting for a connection.
    ///
    /// Default: `false`, wait-for-ready: `poll_ready` is `Pending` while there is no
    /// connection. With `true`, once an attempt of the current round has failed (gRPC's
    /// TRANSIENT_FAILURE) and until a connection is made, `poll_ready` answers `Ready(Ok(()))`
    /// and `call` fails at once with [`Unavailable`](crate::Unavailable), whose source is the
    /// last attempt's error. `poll_ready` never fails for this (an `Err` from it stays terminal,
    /// for closing only), so routers and balancers keep the service. A balancer that only asks
    /// for readiness sees a failing replica as ready and may send requests to it. One that
    /// weighs two replicas by [`Load`](tower::load::Load) (tower's `p2c`) sends to the one that
    /// is up, because a handle without a connection weighs more than any connected one (see
    /// [`load`](crate::load)); p2c picks its two at random, so when both are down the request
    /// goes to one of them and fails at once (without fail-fast, a replica that is down is not
    /// ready, and p2c passes it over). p2c weighs ready replicas only: an HTTP/1.1 replica busy
    /// with a request is not ready, so while every replica that is up is busy, one failing fast
    /// is the only one ready and takes the request. Under a balancer over HTTP/1.1, prefer
    /// [`ready_timeout`](Self::ready_timeout). Before the first failure of a round (the first
    /// attempt in flight) handles still wait. A handle made ready so stays ready until its
    /// `call`, as tower asks: polled again first, it takes a connection ready by then, or else
    /// stays ready, and its call fails with the last attempt's error (also if a connection came
    /// meanwhile but is not ready, or if a new round has begun).
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.config.fail_fast = fail_fast;
        self
    }

    /// How long a handle may wait in `poll_ready` for a ready connection: once it has waited
    /// that long, `poll_ready` answers `Ready(Ok(()))` and `call` fails at once with
    /// [`ReadyTimeout`](crate::ReadyTimeout), which says so.
    ///
    /// Default: none (wait-for-ready: `poll_ready` waits as long as it takes). A timeout layer
    /// (`tower::timeout`) above the handle bounds `call` only, not the wait for readiness, so a
    /// request could otherwise wait for a connection far beyond it; this bounds that wait. The
    /// wait counts from the first `Pending` of this handle's `poll_ready` until it is ready (a
    /// wait for the connection's own readiness, such as an HTTP/1.1 connection busy with
    /// another request, counts too). A wait inside `call` does not: an HTTP/2 connection is
    /// ready while its server lets no new stream open (hyper queues the request until a stream
    /// is free), and that wait is a timeout layer's to bound. Every value is accepted: zero
    /// fails a call that would wait at all (an HTTP/1.1 connection is ready again only once
    /// hyper's task has taken the end of the last response, a moment after its caller read
    /// it: under zero, a request sent right after another on the same connection most often
    /// fails; a timeout of a millisecond or more leaves hyper's task that moment),
    /// `Duration::MAX` fires after about thirty years (a deadline too far to be represented is
    /// held there), in effect never. Once the handle is
    /// ready so, it stays ready until its `call`, as tower asks: polled again first, it takes a
    /// connection ready by then, or else answers `Ready` again without a new wait (which a
    /// balancer that polls a service again before calling it, tower's p2c, relies on). A wait
    /// that its caller gave up (a `ready()` future dropped while pending) cannot be told from a
    /// caller slow to poll again, until the handle has not been polled for a second past the
    /// wait's deadline (a caller still waiting is woken at the deadline): its next `poll_ready`
    /// then begins a new wait, with the whole timeout. Polled again within that second, it goes
    /// on with the old wait (ready at once, its `call` failing with `ReadyTimeout`, if no
    /// connection is ready then). A new clone always begins a new wait. A handle whose wait
    /// was given up keeps the place that wait took in its connection's queue (an HTTP/1.1
    /// connection's turn, a concurrency limit's permit), as any tower service does: when the
    /// turn comes, that handle holds it until it is polled again or dropped, and meanwhile the
    /// other handles on that connection wait (or meet `ReadyTimeout`). Drop a handle whose
    /// `ready()` you gave up, or poll it again. With
    /// [`fail_fast`](Self::fail_fast) too, a handle polled again once an attempt has failed is
    /// failing fast: its call fails with [`Unavailable`](crate::Unavailable), not
    /// `ReadyTimeout`.
    ///
    /// # Panics
    ///
    /// The wait is a tokio timer of the runtime that polls the handle (a handle polled by another
    /// runtime than the one it began to wait on moves the wait, deadline unchanged, to a timer of
    /// that one; a deadline read on a paused test clock is that clock's instant, which another
    /// runtime's clock may be far from): a handle with a ready timeout polled on a runtime
    /// without timers, or outside any runtime, panics when it first has to wait, as
    /// `tokio::time::sleep` does there.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.config.ready_timeout = Some(timeout);
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
    /// the loop with it, as in the original, until the persistent connection is closed: a
    /// handler still running then is given the [`close_timeout`](Self::close_timeout), then
    /// abandoned. [`close`](Persistent::close) awaited inside a handler of the same connection
    /// resolves at once, closing begun (the rest of closing follows when the handler returns).
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
    /// Default: [`DEFAULT_EVENT_CAPACITY`] (256). Kept within `[1, 65536]`, then rounded up to a
    /// power of two (the buffer is tokio's broadcast channel, which does so): 100 lets a
    /// subscriber fall 128 behind. The most recent event, which a new subscriber gets first, is
    /// kept apart from the buffer.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.config.event_capacity = capacity;
        self
    }

    /// The server name given to [`new`](Self::new).
    pub fn server_name(&self) -> &str {
        &self.config.server_name
    }
}

impl<G: Clone, A, C> Clone for PersistentLayer<G, A, C> {
    fn clone(&self) -> Self {
        PersistentLayer {
            config: self.config.clone(),
            get_address: self.get_address.clone(),
            on_event: self.on_event.clone(),
        }
    }
}

impl<G, A, C> fmt::Debug for PersistentLayer<G, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentLayer")
            .field("config", &self.config)
            .field("on_event", &self.on_event.is_some())
            .finish_non_exhaustive()
    }
}

impl<G, A, C> PersistentLayer<G, A, C>
where
    G: Service<(), Response = A> + Clone + Send + 'static,
    G::Error: Into<BoxError>,
    G::Future: Send,
    A: Clone + PartialEq + fmt::Debug + Send + Sync + 'static,
    C: Clone + Closable + Send + Sync + 'static,
{
    /// A persistent connection over the connector `connect`, without spawning its driver: the
    /// first handle, and the future that runs the connection loop, for your own executor (as
    /// tower's `Buffer::pair`). [`layer`](Layer::layer) spawns that future with
    /// [`tokio::spawn`].
    ///
    /// The driver needs a tokio runtime with time enabled for its timers (see Panics). Until
    /// the future is polled nothing happens: no attempt, no event. Dropping it
    /// (unpolled, or mid-way) ends the persistent connection: every handle sees it closed at
    /// once. Closing begun before its first poll ([`close`](Persistent::close), or the last
    /// handle dropped) finishes at once without it, as there is nothing to close: `close()`
    /// resolves, and the future, polled later, ends at its first poll. Once polled, keep it on
    /// one runtime: its timers are that runtime's (as every tokio timer), and a driver polled
    /// again after that runtime shut down panics in tokio's timer, which ends the persistent
    /// connection as dropping the driver does. A driver of yours takes nothing over from the
    /// connector (the HTTP connector's connection task runs in a task of its own, its connect
    /// timeout on a timer of its own; see the [transport docs][transport]): requests
    /// never wait on your polling it.
    ///
    /// # Panics
    ///
    /// `pair` itself does not. The returned future, polled outside a tokio runtime with time
    /// enabled, panics when it first needs a timer: at the first address lookup or connect that
    /// does not finish in the poll that starts it, the first retry delay, or closing. (An
    /// attempt that finishes at once and a connection that stays up need none; your connector
    /// may need a runtime of its own: the HTTP connector's does.)
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future closes the persistent connection (the current connection
    /// is dropped without being closed gracefully): poll it to its end, after
    /// [`close`](Persistent::close), for a graceful close.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::service_fn;
    /// use tower_persistent::{ClosableService, PersistentLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let get_address = service_fn(|()| async { Ok::<_, std::io::Error>(7000_u16) });
    /// let connect = service_fn(|port: u16| async move {
    ///     let conn = service_fn(move |(): ()| async move { Ok::<_, std::io::Error>(port) });
    ///     Ok::<_, std::io::Error>(ClosableService::new(conn))
    /// });
    /// let (handle, driver) = PersistentLayer::new("pair", get_address).pair(connect);
    /// let driver = tokio::spawn(driver);
    /// handle.connected().await.unwrap();
    /// handle.close().await;
    /// driver.await.unwrap(); // The loop ends once closing finished.
    /// # }
    /// ```
    ///
    #[cfg_attr(feature = "hyper", doc = "[transport]: crate::transport")]
    #[cfg_attr(
        not(feature = "hyper"),
        doc = "[transport]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/index.html"
    )]
    pub fn pair<M>(
        &self,
        connect: M,
    ) -> (
        Persistent<A, C>,
        impl Future<Output = ()> + Send + 'static + use<G, A, C, M>,
    )
    where
        M: Service<A, Response = C> + Send + 'static,
        M::Error: Into<BoxError>,
        M::Future: Send,
    {
        self.driver(connect, false)
    }

    /// The first handle and the driver's future; with `hand_over`, for a driver that will be
    /// a task of the runtime's (see `driver::new`).
    fn driver<M>(
        &self,
        connect: M,
        hand_over: bool,
    ) -> (
        Persistent<A, C>,
        impl Future<Output = ()> + Send + 'static + use<G, A, C, M>,
    )
    where
        M: Service<A, Response = C> + Send + 'static,
        M::Error: Into<BoxError>,
        M::Future: Send,
    {
        crate::driver::new(
            self.config.clone(),
            self.get_address.clone(),
            connect,
            self.on_event.clone(),
            hand_over,
        )
    }
}

/// Starts a persistent connection over the connector `M`.
///
/// # Panics
///
/// If called outside a tokio runtime: the driver is spawned on the current one. The message
/// says so, and points to [`PersistentLayer::pair`], whose driver you run where you like.
/// Also on a runtime without timers (a `Builder` without `enable_time` or `enable_all`), with
/// tokio's message (`timers are disabled`): the driver needs them.
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

    #[track_caller]
    fn layer(&self, connect: M) -> Persistent<A, C> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            panic!(
                "PersistentLayer::layer must be called within a tokio runtime, on which it spawns \
                 the persistent connection's driver (outside one, PersistentLayer::pair gives \
                 the driver to run yourself)"
            );
        };
        // The driver's timers are the runtime's: a runtime without them is refused here, with
        // tokio's own message, not by the driver's first timer, whose panic would end the
        // persistent connection as a close does. (Making a timer checks; it registers nothing.)
        drop(tokio::time::sleep(Duration::ZERO));
        // The driver is a task of the runtime's: it may take the connection's task over.
        let (handle, driver) = self.driver(connect, true);
        runtime.spawn(driver);
        handle
    }
}
