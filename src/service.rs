//! [`Persistent`], the shared handle of a persistent connection and its tower `Service`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use futures_util::future::Either;
use tokio::time::Sleep;

use tower_service::Service;

use crate::Closable;
use crate::error::{BoxError, Closed, ConnectError, ReadyTimeout, Unavailable};
use crate::event::Events;
use crate::future::{FailedError, ResponseFuture};
use crate::shared::{Shared, deadline_after};
use crate::slot::{Live, Lookup};
use crate::state::State;

/// The message of the panic of [`Persistent::call`] without readiness.
pub(crate) const NOT_READY: &str =
    "Persistent::call was called before Persistent::poll_ready returned Ready(Ok(()))";

/// A handle on a persistent connection; a tower `Service` over its current connection.
///
/// Made by applying a [`PersistentLayer`](crate::PersistentLayer) to a connector. Cloning is
/// cheap: all clones share one connection and one background driver. When the last clone is
/// dropped, the driver stops and closes the connection, as if [`close`](Self::close) had been
/// called.
///
/// # The tower face
///
/// - `poll_ready` is `Pending` while there is no connection; every waiting clone is woken when
///   one arrives. Then it is the connection's own `poll_ready`. If that fails, the connection is
///   reported dead (the driver closes it and reconnects) and the handle is `Pending` again until
///   the next connection: a dead connection never surfaces as an `Err` from `poll_ready`.
/// - Once the persistent connection is closed, `poll_ready` fails with [`Closed`], for good.
/// - With [`fail_fast`](crate::PersistentLayer::fail_fast), while an attempt of the current round
///   has failed and there is no connection, `poll_ready` is `Ready` and `call` fails at once with
///   [`Unavailable`].
/// - `call` sends on the connection that `poll_ready` reserved, even if another one became
///   current meanwhile. Errors of a request in flight when its connection dies are returned to
///   its caller; nothing is retried here (that is `tower::retry`'s job). A connection may send
///   a request it could not send at all on its [`Successor`](crate::Successor) (the HTTP
///   connection does, for a request hyper hands back unsent).
/// - Readiness belongs to one handle: a clone starts unready.
/// - A handle that is ready on the current connection costs a load of the connection's
///   generation in `poll_ready`, one of the closed flag in `call` (so that a call after
///   [`close`](Self::close) is refused), and a one-byte readiness flag, over the connection's
///   own `poll_ready` and `call`: no lock, no allocation.
///
/// # Panics
///
/// `call` panics if `poll_ready` did not return `Ready(Ok(()))` since the last `call`, with
/// the message `Persistent::call was called before Persistent::poll_ready returned
/// Ready(Ok(()))`.
///
/// # Examples
///
/// ```
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
/// use tower_persistent::{ClosableService, PersistentLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let get_address = service_fn(|()| async { Ok::<_, std::io::Error>("10.0.0.7:8080") });
/// let connect = service_fn(|address: &'static str| async move {
///     let conn = service_fn(move |n: u32| async move {
///         Ok::<_, std::io::Error>(format!("{address} says {n}"))
///     });
///     Ok::<_, std::io::Error>(ClosableService::new(conn))
/// });
/// let mut orders = ServiceBuilder::new()
///     .layer(PersistentLayer::new("orders", get_address))
///     .service(connect);
///
/// // Readiness waits for the connection, then `call` sends on it.
/// let answer = orders.ready().await.unwrap().call(1).await.unwrap();
/// assert_eq!(answer, "10.0.0.7:8080 says 1");
/// // Clones share the connection; each has its own readiness.
/// assert_eq!(orders.clone().oneshot(2).await.unwrap(), "10.0.0.7:8080 says 2");
/// orders.close().await;
/// assert!(orders.current_connection().is_none());
/// # }
/// ```
pub struct Persistent<A, C> {
    shared: Arc<Shared<A, C>>,
    id: u64,
    /// The connection this handle uses, its generation, and whether it is reserved for `call`.
    conn: Option<Held<C>>,
    /// What the last `poll_ready` left for `call` without a reserved connection (failing
    /// fast, timed out, waiting for one).
    readiness: Readiness,
    /// The waker registered with the shared state, and for which generation.
    registered: Option<(u64, Waker)>,
    /// While failing fast: the last attempt's error, which `call` fails with. Only read off the
    /// happy path.
    failing: Option<ConnectError>,
    /// With a ready timeout, while waiting in `poll_ready`: when the wait ends.
    ready_timer: Option<Pin<Box<ReadyTimer>>>,
}

pin_project_lite::pin_project! {
    /// The timer of a wait in `poll_ready`, and the runtime it belongs to: a handle polled by
    /// another runtime (the first one dropped, or no longer driven) moves the wait's deadline to
    /// a timer of that one.
    struct ReadyTimer {
        #[pin]
        sleep: Sleep,
        runtime: tokio::runtime::Id,
    }
}

/// How long after its deadline a wait whose handle has not been polled since counts as given
/// up by its caller (see [`ReadyTimer::given_up`]).
const GIVEN_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl ReadyTimer {
    /// Whether the wait was given up by its caller: its handle is polled a second or more after
    /// the deadline, still waiting. A caller still waiting is woken by this timer at the
    /// deadline and polls then, which ends the wait (`ReadyTimeout`); one that gave its
    /// `ready()` up (under a timeout of its own, say) polls again only when it wants a new
    /// request sent, which then gets a whole wait of its own rather than a stale deadline's.
    fn given_up(&self) -> bool {
        self.sleep
            .deadline()
            .checked_add(GIVEN_UP_AFTER)
            .is_some_and(|at| tokio::time::Instant::now() >= at)
    }

    /// Whether the wait has reached `deadline`, on a timer of the runtime polling it (made
    /// anew if `timer` belongs to another).
    fn poll_until(
        timer: &mut Option<Pin<Box<ReadyTimer>>>,
        deadline: impl FnOnce() -> tokio::time::Instant,
        cx: &mut Context<'_>,
    ) -> bool {
        // Outside any runtime, the timer there is polled (its runtime may still drive it); a
        // first one panics, as `tokio::time::sleep` does there (documented).
        let runtime = tokio::runtime::Handle::try_current().map(|h| h.id()).ok();
        let timer = match timer {
            Some(timer) if runtime.is_none_or(|id| id == timer.runtime) => timer,
            _ => {
                let deadline = match timer {
                    Some(timer) => timer.sleep.deadline(),
                    None => deadline(),
                };
                let sleep = tokio::time::sleep_until(deadline);
                // (Outside any runtime `sleep_until` has panicked already.)
                let runtime = runtime.unwrap_or_else(|| tokio::runtime::Handle::current().id());
                timer.insert(Box::pin(ReadyTimer { sleep, runtime }))
            }
        };
        timer.as_mut().project().sleep.poll(cx).is_ready()
    }
}

/// The connection a handle uses, with its generation and what `poll_ready` found on it.
struct Held<C> {
    generation: u64,
    /// A byte of its own, whose unused values hold `Option<Held<C>>`'s `None` (the largest
    /// niche is the one taken): `call`'s one test of it tells both that a connection is held
    /// and that it is reserved, where a flag beside the `Option` took two.
    on_it: OnIt,
    conn: C,
}

/// What the last `poll_ready` found on the held connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnIt {
    Nothing,
    /// Ready: reserved for `call`.
    Reserved,
    /// Not ready: a wait is under way (its timer, if any, goes on).
    Waiting,
}

impl<C> Held<C> {
    fn new(generation: u64, conn: C) -> Self {
        Held {
            generation,
            on_it: OnIt::Nothing,
            conn,
        }
    }
}

/// What `poll_ready` left for `call` without a reserved connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readiness {
    NotReady,
    /// Failing fast: `call` fails with `failing`.
    Failing,
    /// The last `poll_ready` was `Pending` without a connection: a wait is under way (its
    /// timer, if any, goes on).
    Waiting,
    /// Waited longer than the ready timeout: `call` fails with [`ReadyTimeout`].
    TimedOut,
}

/// What `poll_ready` found off the happy path: a byte, which the inlined `poll_ready` turns
/// into a `Poll` of constants. The happy path's `Ready(Ok(()))` then meets constants only, and
/// the compiler drops the caller's test of it on the happy path (a `Poll` returned from out of
/// line is tested word by word on every request: 8 instructions of 29 in the tight loop of
/// `benches/instructions.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readied {
    Ready,
    Pending,
    Closed,
}

impl Readied {
    #[inline(always)]
    fn into_poll(self) -> Poll<Result<(), BoxError>> {
        match self {
            Readied::Ready => Poll::Ready(Ok(())),
            Readied::Pending => Poll::Pending,
            // A zero-sized error: its box is a constant, not an allocation.
            Readied::Closed => Poll::Ready(Err(Box::new(Closed::new()))),
        }
    }
}

impl<A, C> Persistent<A, C>
where
    A: Clone + Send + Sync + 'static,
    C: Clone + Closable + Send + Sync + 'static,
{
    pub(crate) fn from_shared(shared: Arc<Shared<A, C>>) -> Self {
        let id = shared.add_handle();
        Persistent {
            shared,
            id,
            conn: None,
            readiness: Readiness::NotReady,
            registered: None,
            failing: None,
            ready_timer: None,
        }
    }

    /// Resolves with the first live connection from the moment of the call: at once if there is
    /// one. A current connection that [`is_closed`](Closable::is_closed) is skipped.
    ///
    /// The connection is looked at in the call itself, not when the future is first polled: a
    /// connection live at the call is the answer even if [`close`](Self::close) is called
    /// before the future is polled.
    ///
    /// # Errors
    ///
    /// [`Closed`] once the persistent connection is closed, instead of waiting for ever.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future has no effect on the connection.
    pub fn connected(&self) -> impl Future<Output = Result<C, Closed>> + Send + use<A, C> {
        // Looked at the call: a live connection now is the answer, whatever happens before the
        // future is first polled (a `close()`, say); closed already, the error. (Two futures,
        // not one holding the answer: the waiting one stays as small as it was.)
        let answer = match self.shared.slot.live() {
            None => Err(Closed::new()),
            Some((Live::Yes(conn), _)) => Ok(conn),
            Some(_) => {
                let shared = self.shared.clone();
                return Either::Right(async move {
                    shared
                        .slot
                        .live_connection(
                            |generation| shared.report_panicked(generation),
                            |generation| shared.report_closing(generation),
                        )
                        .await
                        .ok_or(Closed::new())
                });
            }
        };
        Either::Left(std::future::ready(answer))
    }

    /// The connection in use, if any.
    pub fn current_connection(&self) -> Option<C> {
        self.shared.slot.current()
    }

    /// A live connection at once if there is one; otherwise the outcome of the next connection
    /// attempt to finish after the call: its connection, or its error.
    ///
    /// An attempt that finished before the call does not count: on a multi-threaded runtime
    /// the first attempt may fail before a call made right after [`layer`](tower::Layer::layer)
    /// is registered, and the call then waits for the next attempt, a retry delay later. To see
    /// every outcome from the start, subscribe to [`events`](Self::events) before the first
    /// attempt can finish (or build with [`PersistentLayer::pair`](crate::PersistentLayer::pair)
    /// and spawn the driver after subscribing).
    ///
    /// # Errors
    ///
    /// The [`ConnectError`] of that attempt, or one for which
    /// [`is_closed`](ConnectError::is_closed) is true once the persistent connection is closed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future has no effect on the connection.
    pub fn connected_or_failed_to_connect(
        &self,
    ) -> impl Future<Output = Result<C, ConnectError>> + Send + use<A, C> {
        // Looked at the call: outcomes from now on count.
        let now = match self.shared.slot.live() {
            None => Err(Err(ConnectError::closed())),
            Some((Live::Yes(conn), _)) => Err(Ok(conn)),
            Some((Live::No, seen)) => Ok(seen),
            Some((Live::Closing(generation), seen)) => {
                self.shared.report_closing(generation);
                Ok(seen)
            }
            Some((Live::Panicked(generation), seen)) => {
                self.shared.report_panicked(generation);
                Ok(seen)
            }
        };
        let shared = self.shared.clone();
        async move {
            let seen = match now {
                Ok(seen) => seen,
                Err(answer) => return answer,
            };
            shared
                .slot
                .outcome_after(seen)
                .await
                .unwrap_or_else(|| Err(ConnectError::closed()))
        }
    }

    /// Closes the persistent connection: stops all further attempts, cancels an address lookup
    /// or a connect in flight, closes the current connection and waits for it, and delivers
    /// [`Disconnected`](crate::Event::Disconnected) if a connection was current.
    ///
    /// Closing begins at the call itself, not when the future is first polled: from then on
    /// [`is_closed`](Self::is_closed) is true, [`current_connection`](Self::current_connection)
    /// is `None` and `poll_ready` fails. The future resolves once closing is finished.
    /// Idempotent: every call resolves together with the first.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not stop the closing.
    pub fn close(&self) -> impl Future<Output = ()> + Send + use<A, C> {
        self.shared.begin_close();
        let finished = self.close_finished();
        let shared = Arc::as_ptr(&self.shared) as *const () as usize;
        async move {
            // Inside a handler of this very connection the rest of closing waits for the
            // handler to return: resolve now, with closing begun, instead of deadlocking.
            if crate::driver::in_handler_of(shared) {
                return;
            }
            finished.await
        }
    }

    /// True from the moment [`close`](Self::close) was first called (or the last handle dropped).
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Resolves once the first [`close`](Self::close) finishes. Starts nothing itself.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future changes nothing: closing goes on, and a new call waits again.
    pub fn close_finished(&self) -> impl Future<Output = ()> + Send + use<A, C> {
        let shared = self.shared.clone();
        async move { shared.slot.finished().await }
    }

    /// Stops reconnecting once the current connection dies; closes at once if there is none.
    ///
    /// The current connection is left alone until then. When it dies,
    /// [`Disconnected`](crate::Event::Disconnected) is delivered and the persistent connection
    /// closes.
    pub fn close_when_current_connection_is_closed(&self) {
        self.shared
            .commands
            .close_when_current_closed
            .store(true, Ordering::SeqCst);
        if self.shared.slot.current().is_none() {
            self.shared.begin_close();
        }
    }

    /// Where the connection loop is: connecting (with the attempt number, the time of the next
    /// attempt and the last error), connected, or closed.
    pub fn state(&self) -> State {
        self.shared.slot.state()
    }

    /// Resolves with the state at its next change after the call; once the persistent
    /// connection is closed (a state that never changes), at once with
    /// [`State::Closed`](crate::State::Closed). A change between a call to
    /// [`state`](Self::state) and this one is not waited for: to follow the changes from a
    /// state read, loop on this future alone, starting with the state it gives.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future has no effect on the connection.
    pub fn state_changed(&self) -> impl Future<Output = State> + Send + use<A, C> {
        let seen = self.shared.slot.state_version();
        let shared = self.shared.clone();
        async move { shared.slot.state_after(seen).await }
    }

    /// Cuts the current wait for the next attempt short, and starts the retry policy again from
    /// its first delay (as gRPC's `ResetConnectBackoff`). It counts whenever [`state`](Self::state)
    /// shows a `next_attempt_at`: also while the wait is about to begin (during a
    /// `FailedToConnect` or `Disconnected` handler, or while a dead connection is closed), which
    /// is then not waited. Does nothing while an attempt is under way, while connected, or once
    /// closed. The next attempt still starts no sooner than
    /// [`MIN_RETRY_DELAY`](crate::MIN_RETRY_DELAY) (1 ms) after the last one began, as every
    /// delay is held to it: called in a loop, this starts an attempt a millisecond at most, not
    /// one per call.
    pub fn reconnect_now(&self) {
        let commands = &self.shared.commands;
        if let Some(version) = self.shared.slot.waiting_version() {
            commands.reconnect_asked.store(
                version.wrapping_add(1),
                std::sync::atomic::Ordering::Release,
            );
        }
        commands.reconnect.notify_waiters();
    }

    /// The name given to [`PersistentLayer::new`](crate::PersistentLayer::new).
    pub fn server_name(&self) -> &str {
        &self.shared.server_name
    }

    /// A stream of [`Event`](crate::Event)s: first the most recent one (if any), then every
    /// later one, in order. See [`Events`].
    pub fn events(&self) -> Events<A, C> {
        self.shared.hub.subscribe()
    }
}

impl<A, C> Persistent<A, C>
where
    C: Clone,
{
    /// Registers this handle's waker to be woken when the connection of `generation` stops being
    /// current, unless it already is registered for it. If it already stopped, wakes at once.
    fn watch_generation(&mut self, generation: u64, waker: &Waker) {
        if let Some((g, w)) = &self.registered {
            if *g == generation && w.will_wake(waker) {
                return;
            }
        }
        if self
            .shared
            .slot
            .watch_generation(self.id, generation, waker)
        {
            self.registered = Some((generation, waker.clone()));
        } else {
            // Replaced or closed meanwhile: poll again to see the new state.
            waker.wake_by_ref();
        }
    }
}

impl<A, C: Clone> Persistent<A, C> {
    /// The load of the current connection: this handle's own copy if it is still current (one
    /// atomic load), else the slot's; `None` without one.
    pub(crate) fn current_for_load(&self) -> Option<C::Metric>
    where
        C: tower::load::Load,
    {
        if let Some(held) = &self.conn {
            if held.generation == self.shared.slot.generation() {
                return Some(held.conn.load());
            }
        }
        self.shared.slot.current().map(|conn| conn.load())
    }

    /// A call off the happy path: failing fast, closed since `poll_ready`, or no readiness at
    /// all (a panic).
    #[cold]
    fn call_without_connection(&mut self) -> BoxError {
        let readiness = std::mem::replace(&mut self.readiness, Readiness::NotReady);
        let failing = self.failing.take();
        // (A reserved connection is `call`'s happy path, never this one.)
        match (readiness, failing) {
            (Readiness::TimedOut, _) if !self.shared.is_closed() => {
                ReadyTimeout::new(self.shared.ready_timeout.unwrap_or_default()).into()
            }
            (Readiness::NotReady | Readiness::Waiting, _) => panic!("{NOT_READY}"),
            _ if self.shared.is_closed() => Closed::new().into(),
            (_, Some(error)) => Unavailable::new(error).into(),
            (_, None) => panic!("{NOT_READY}"),
        }
    }

    /// A call off the happy path (see `call_without_connection`). Out of line, with the error
    /// boxed here, and without arguments but the handle: the caller's path holds a call and
    /// nothing else for it (no constant to set up before its tests).
    #[cold]
    #[inline(never)]
    fn call_failed(&mut self) -> FailedError {
        FailedError::new(self.call_without_connection())
    }

    /// A call on a connection made ready before closing began; see `call_failed`.
    #[cold]
    #[inline(never)]
    fn call_after_close() -> FailedError {
        FailedError::new(Closed::new().into())
    }

    /// `poll_ready` off the happy path: no connection, not the current one, or not ready.
    #[cold]
    #[inline(never)]
    fn poll_ready_cold<R>(&mut self, cx: &mut Context<'_>) -> Readied
    where
        C: Service<R>,
        C::Error: Into<BoxError>,
    {
        if matches!(self.readiness, Readiness::Failing | Readiness::TimedOut) {
            return self.poll_ready_again::<R>(cx);
        }
        if !self.waiting()
            || self
                .ready_timer
                .as_ref()
                .is_some_and(|timer| timer.given_up())
        {
            // A new wait may begin: the timer of an earlier one (or of one given up) is gone.
            self.ready_timer = None;
        }
        match &mut self.conn {
            Some(held) if held.generation == self.shared.slot.generation() => {
                let poll = held.conn.poll_ready(cx);
                self.not_ready::<R>(poll, cx)
            }
            _ => self.poll_ready_slow::<R>(cx),
        }
    }

    /// Whether the last `poll_ready` was `Pending`: a wait is under way, for a connection or on
    /// the one held.
    fn waiting(&self) -> bool {
        self.readiness == Readiness::Waiting || self.on_it() == OnIt::Waiting
    }

    /// `poll_ready` again after it answered `Ready` without a connection (failing fast, or the
    /// ready timeout reached), before `call`. A connection ready now is taken; otherwise the
    /// readiness given stands: tower's contract is ready until `call`, and a new wait here
    /// (`Pending`) left a balancer that polls a service again before calling it (tower's p2c)
    /// waiting for good behind a ready timeout.
    #[cold]
    fn poll_ready_again<R>(&mut self, cx: &mut Context<'_>) -> Readied
    where
        C: Service<R>,
        C::Error: Into<BoxError>,
    {
        let readiness = self.readiness;
        let failing = self.failing.take();
        self.ready_timer = None;
        let readied = self.poll_ready_slow::<R>(cx);
        // Nothing ready (a new round's first attempt in flight, a connection busy): `Pending`,
        // or `Ready` from a new wait that ended at once (a ready timeout of zero).
        let nothing_ready = readied == Readied::Pending
            || (readied == Readied::Ready && self.readiness == Readiness::TimedOut);
        if !nothing_ready {
            return readied;
        }
        // The wait just begun, and any place it took on a connection, are given up; the
        // readiness given stands, and with it its error.
        self.conn = None;
        self.ready_timer = None;
        self.readiness = readiness;
        self.failing = failing;
        Readied::Ready
    }

    /// Handles the answer `poll` of the connection's `poll_ready`, off the happy path.
    fn not_ready<R>(&mut self, poll: Poll<Result<(), C::Error>>, cx: &mut Context<'_>) -> Readied
    where
        C: Service<R>,
        C::Error: Into<BoxError>,
    {
        self.readiness = Readiness::NotReady;
        let Some(held) = &mut self.conn else {
            return self.poll_ready_slow::<R>(cx);
        };
        held.on_it = OnIt::Nothing;
        let generation = held.generation;
        match poll {
            Poll::Ready(Ok(())) => {
                held.on_it = OnIt::Reserved;
                Readied::Ready
            }
            Poll::Pending => {
                // Also wake up if the connection is replaced or closing begins.
                self.watch_generation(generation, cx.waker());
                // A connection that is not ready and has begun closing by itself is reported,
                // so that its close is bounded by the close timeout.
                if let Some(held) = &self.conn {
                    self.shared.check_closing(generation, &held.conn);
                }
                self.pending(cx)
            }
            Poll::Ready(Err(error)) => {
                let error: BoxError = error.into();
                tracing::debug!(
                    server = %self.shared.server_name,
                    %error,
                    "connection failed poll_ready; reporting it dead",
                );
                self.shared.report_dead(generation, Some(self.id));
                self.registered = None;
                self.conn = None;
                self.poll_ready_slow::<R>(cx)
            }
        }
    }

    /// No connection, or not the current one: fetch the current one, or wait for one.
    #[cold]
    fn poll_ready_slow<R>(&mut self, cx: &mut Context<'_>) -> Readied
    where
        C: Service<R>,
        C::Error: Into<BoxError>,
    {
        self.readiness = Readiness::NotReady;
        self.failing = None;
        self.conn = None;
        match self.shared.slot.lookup(self.id, cx.waker()) {
            Lookup::Current(generation, mut conn) => {
                // A waker registered for an earlier generation went with the change of
                // generation (every change wakes and forgets them all): nothing to remove later.
                if matches!(self.registered, Some((g, _)) if g < generation) {
                    self.registered = None;
                }
                let poll = conn.poll_ready(cx);
                self.conn = Some(Held::new(generation, conn));
                self.not_ready::<R>(poll, cx)
            }
            Lookup::Closed => Readied::Closed,
            Lookup::Failing(error) => {
                self.failing = Some(error);
                self.readiness = Readiness::Failing;
                Readied::Ready
            }
            Lookup::Registered(generation) => {
                self.registered = Some((generation, cx.waker().clone()));
                self.pending(cx)
            }
        }
    }

    /// `poll_ready` has nothing ready: `Pending`, unless the wait has lasted the ready timeout,
    /// in which case the handle is ready and its `call` fails with [`ReadyTimeout`].
    fn pending(&mut self, cx: &mut Context<'_>) -> Readied {
        match &mut self.conn {
            Some(held) => held.on_it = OnIt::Waiting,
            None => self.readiness = Readiness::Waiting,
        }
        let Some(timeout) = self.shared.ready_timeout else {
            return Readied::Pending;
        };
        // Zero: no wait at all (a timer would fire only at its next tick, a millisecond on).
        let timed_out = timeout.is_zero()
            || ReadyTimer::poll_until(
                &mut self.ready_timer,
                || deadline_after(tokio::time::Instant::now(), timeout),
                cx,
            );
        if timed_out {
            self.ready_timer = None;
            self.readiness = Readiness::TimedOut;
            // The connection's own wait is given up too (its place in an HTTP/1.1 connection's
            // queue, say, which would otherwise hold the turn once it came): the next
            // `poll_ready` takes the current connection again.
            self.conn = None;
            return Readied::Ready;
        }
        Readied::Pending
    }
}

impl<A, C, R> Service<R> for Persistent<A, C>
where
    C: Service<R> + Clone,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = ResponseFuture<C::Future>;

    #[inline(always)]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The happy path: ready on the connection that is still current.
        if let Some(held) = &mut self.conn {
            if held.generation == self.shared.slot.generation() {
                if let Poll::Ready(Ok(())) = held.conn.poll_ready(cx) {
                    held.on_it = OnIt::Reserved;
                    return Poll::Ready(Ok(()));
                }
            }
        }
        // Everything else, out of line: the connection is polled again there if it was not
        // ready (polling again is allowed, and keeps this path short).
        self.poll_ready_cold::<R>(cx).into_poll()
    }

    #[inline(always)]
    fn call(&mut self, request: R) -> Self::Future {
        if let Some(held) = &mut self.conn {
            if held.on_it == OnIt::Reserved {
                held.on_it = OnIt::Nothing;
                // The closed flag is read once more: a call after `close()` never reaches the
                // connection, whenever `poll_ready` ran. (It publishes nothing to read.)
                if !self.shared.commands.stop.is_set_relaxed() {
                    return ResponseFuture::new(held.conn.call(request));
                }
                return ResponseFuture::from_failed(Self::call_after_close());
            }
        }
        ResponseFuture::from_failed(self.call_failed())
    }
}

impl<A, C: Clone> Clone for Persistent<A, C> {
    /// A new handle on the same connection; readiness is not copied.
    fn clone(&self) -> Self {
        let id = self.shared.add_handle();
        Persistent {
            shared: self.shared.clone(),
            id,
            conn: None,
            readiness: Readiness::NotReady,
            registered: None,
            failing: None,
            ready_timer: None,
        }
    }
}

impl<A, C> Drop for Persistent<A, C> {
    fn drop(&mut self) {
        self.shared
            .remove_handle(self.id, self.registered.is_some());
    }
}

impl<A, C> Persistent<A, C> {
    /// What the last `poll_ready` found on the held connection (`Nothing` without one).
    fn on_it(&self) -> OnIt {
        self.conn.as_ref().map_or(OnIt::Nothing, |held| held.on_it)
    }
}

impl<A, C> fmt::Debug for Persistent<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Persistent")
            .field("server_name", &self.shared.server_name)
            .field("closed", &self.shared.is_closed())
            .field(
                "ready",
                &(matches!(self.readiness, Readiness::Failing | Readiness::TimedOut)
                    || self.on_it() == OnIt::Reserved),
            )
            .finish_non_exhaustive()
    }
}

/// The persistent connection is itself closable, so that it can serve as the connection of
/// another one.
impl<A, C> Closable for Persistent<A, C>
where
    A: Clone + Send + Sync + 'static,
    C: Clone + Closable + Send + Sync + 'static,
{
    fn close(&self) -> impl Future<Output = ()> + Send {
        Persistent::close(self)
    }

    fn is_closed(&self) -> bool {
        Persistent::is_closed(self)
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        Persistent::close_finished(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tower::service_fn;
    use tower_layer::Layer;

    use super::*;
    use crate::{ClosableService, PersistentLayer};

    // A handle that waited for a connection and was woken by its arrival keeps no registration:
    // the change of generation forgot its waker, so dropping the handle has nothing to remove
    // (no lock of the slot per waiter, as 10,000 of them finish).
    #[tokio::test(start_paused = true)]
    async fn a_handle_woken_by_a_new_connection_keeps_no_registration() {
        let (open, opened) = tokio::sync::oneshot::channel::<()>();
        let opened = Arc::new(Mutex::new(Some(opened)));
        let lookup = service_fn(move |()| {
            let opened = opened.lock().unwrap().take();
            async move {
                if let Some(opened) = opened {
                    let _ = opened.await;
                }
                Ok::<_, std::io::Error>(7_u16)
            }
        });
        let connect = service_fn(|port: u16| async move {
            let conn = service_fn(move |n: u32| async move { Ok::<_, std::io::Error>((port, n)) });
            Ok::<_, std::io::Error>(ClosableService::new(conn))
        });
        let mut handle = PersistentLayer::new("registration", lookup).layer(connect);
        let poll = std::future::poll_fn(|cx| {
            Poll::Ready(Service::<u32>::poll_ready(&mut handle, cx).map_err(|e| e.to_string()))
        })
        .await;
        assert!(poll.is_pending(), "no connection yet");
        assert!(handle.registered.is_some());
        assert_eq!(handle.shared.slot.waker_count(), 1);

        open.send(()).unwrap();
        std::future::poll_fn(|cx| Service::<u32>::poll_ready(&mut handle, cx))
            .await
            .unwrap();
        assert!(
            handle.registered.is_none(),
            "the registration went with the change"
        );
        assert_eq!(handle.shared.slot.waker_count(), 0);
        assert_eq!(Service::<u32>::call(&mut handle, 3).await.unwrap(), (7, 3));
        handle.close().await;
    }
}
