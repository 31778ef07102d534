//! The driver: the background task that runs the connection loop described in the
//! [crate docs](crate#the-connection-loop), and closes.
//!
//! Closing (the stop signal) interrupts every wait of the loop; an event handler running then
//! is given until the close deadline.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::{Instant, Sleep, sleep_until, timeout_at};
use tower_service::Service;
use tracing::Instrument;

use crate::Closable;
use crate::backoff::Backoff;
use crate::closable::{Announcer, succession};
use crate::error::{BoxError, ConnectError, panic_message};
use crate::event::{Event, OnEvent};
use crate::handover::{self, Adopted, Scope};
use crate::layer::Config;
use crate::service::Persistent;
use crate::shared::{Shared, deadline_after};
use crate::signal::Bell;
use crate::state::State;

/// A new persistent connection: its first handle, and the driver's future (which nothing has
/// polled yet). With `hand_over` (a driver spawned on the runtime, polled whenever woken), the
/// connector may hand its connection's task and its deadline over (see [`handover`]); a driver
/// that the user polls takes nothing over, for requests must not depend on its polling.
pub(crate) fn new<G, M, A, C>(
    config: Config,
    get_address: G,
    connect: M,
    on_event: Option<OnEvent<A, C>>,
    hand_over: bool,
) -> (Persistent<A, C>, impl Future<Output = ()> + Send + 'static)
where
    G: Service<(), Response = A> + Send + 'static,
    G::Error: Into<BoxError>,
    G::Future: Send,
    M: Service<A, Response = C> + Send + 'static,
    M::Error: Into<BoxError>,
    M::Future: Send,
    A: Clone + PartialEq + fmt::Debug + Send + Sync + 'static,
    C: Clone + Closable + Send + Sync + 'static,
{
    let shared = Arc::new(Shared::new(&config));
    let handle = Persistent::from_shared(shared.clone());
    let span = tracing::info_span!("persistent_connection", server = %config.server_name);
    // With INFO spans filtered out, the driver's own span is disabled, and instrumenting with
    // it would leave the driver's events outside the caller's span too: that one, then.
    let span = if span.is_disabled() {
        tracing::Span::current()
    } else {
        span
    };
    let driver = Driver {
        get_address,
        connect,
        backoff: Backoff::new(config.policy),
        backoff_reset_after: config.backoff_reset_after,
        connect_timeout: config.connect_timeout,
        adopted: Adopted::default(),
        hand_over,
        // Part of the future from the start: however it ends, even dropped before its first
        // poll (with its runtime, say), the handles learn that it is gone (see its `Drop`).
        events: Emitter { shared, on_event },
    };
    (handle, driver.run().instrument(span))
}

struct Driver<G, M, A, C> {
    get_address: G,
    connect: M,
    backoff: Backoff,
    backoff_reset_after: Duration,
    connect_timeout: Duration,
    /// The current connection's task, if its connector handed it over.
    adopted: Adopted,
    /// Whether the connector may hand anything over.
    hand_over: bool,
    events: Emitter<A, C>,
}

/// Delivers events; apart from the services so that it can be shared across awaits.
struct Emitter<A, C> {
    shared: Arc<Shared<A, C>>,
    on_event: Option<OnEvent<A, C>>,
}

/// Marks closing finished however the driver ends: normally, or dropped with its runtime.
impl<A, C> Drop for Emitter<A, C> {
    fn drop(&mut self) {
        self.shared.finish();
    }
}

/// Why the watched connection stopped being live.
enum Death {
    /// Its `close_finished` resolved.
    Closed,
    /// A handle saw it fail (its `poll_ready`, or a panic of its `is_closed`).
    Reported,
    /// A caller met it closed or closing (`is_closed`), though its `close_finished` has not
    /// resolved: it may have begun closing by itself, and is given the close timeout.
    Closing,
    /// Its `close_finished` panicked, or its `is_closed` when the driver asked.
    Panicked,
}

/// How a guarded call of a user's service ended.
enum Guarded<T> {
    Done(T),
    Failed(BoxError),
    Panicked(Box<dyn std::any::Any + Send>),
    TimedOut,
    /// Closing began: the call's future was dropped.
    Stopped,
}

/// Calls `service` with `request` (its `poll_ready` first), catching panics, giving up at
/// `deadline` (kept by `timer`), and dropping the call as soon as `stop` is set. A call given
/// up is dropped here, its panic caught too: at the deadline, a call that panics as it is
/// dropped counts as a panic of the call; when closing, the panic is logged.
///
/// With a `scope` (see [`handover`]), each poll of the call runs within it; the tasks handed
/// over are polled with it, and the deadlines a connector asks the driver to keep are kept by
/// `timer` too: at each, the call is polled again (the connector ends then, with its own error;
/// at `deadline` itself, its error comes first).
async fn guarded<S, R>(
    service: &mut S,
    request: R,
    deadline: Instant,
    stop: &Bell,
    timer: &mut AttemptTimer,
    mut scope: Option<&mut Scope>,
) -> Guarded<S::Response>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    let call = AssertUnwindSafe(async move {
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        service.call(request).await.map_err(Into::into)
    })
    .catch_unwind();
    // In an `Option`, so that a call given up is dropped in place, its panic caught.
    let mut call = std::pin::pin!(Some(call));
    let outcome = std::future::poll_fn(|cx| {
        if stop.poll_set(cx).is_ready() {
            return Poll::Ready(Guarded::Stopped);
        }
        let Some(mut call) = call.as_mut().as_pin_mut() else {
            unreachable!("the call is dropped only once given up");
        };
        // Each round either ends, waits, or forgets a deadline that has come (the timer fires
        // only once its instant has come); bounded all the same, by yielding.
        for _ in 0..=MAX_DEADLINE_ROUNDS {
            let polled = match scope.as_deref_mut() {
                Some(scope) => handover::within(scope, cx, |cx| call.as_mut().poll(cx)),
                None => call.as_mut().poll(cx),
            };
            if let Poll::Ready(outcome) = polled {
                return Poll::Ready(settled(outcome));
            }
            let Some(scope) = scope.as_deref_mut() else {
                return match timer.poll_at(deadline, cx) {
                    Poll::Ready(()) => Poll::Ready(Guarded::TimedOut),
                    Poll::Pending => Poll::Pending,
                };
            };
            scope.poll_tasks(cx);
            let now = Instant::now();
            if scope.forget_due(now) {
                continue;
            }
            if now >= deadline {
                return Poll::Ready(Guarded::TimedOut);
            }
            let at = scope
                .soonest()
                .map_or(deadline, |soonest| soonest.min(deadline));
            if timer.poll_at(at, cx).is_pending() {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    if !matches!(outcome, Guarded::TimedOut | Guarded::Stopped) {
        return outcome;
    }
    // Given up: dropped now, a panic of its drop caught (a user's future may panic there).
    match catch_unwind(AssertUnwindSafe(|| call.as_mut().set(None))) {
        Ok(()) => outcome,
        Err(payload) if matches!(outcome, Guarded::TimedOut) => Guarded::Panicked(payload),
        Err(payload) => {
            tracing::error!(
                panic = %panic_message(&*payload),
                "a lookup or connect given up as closing began panicked as it was dropped",
            );
            outcome
        }
    }
}

/// More rounds of one poll of a guarded call than a scope has deadlines.
/// How many rounds may begin at once (connections replaced at once) within
/// [`MIN_RETRY_DELAY`](crate::MIN_RETRY_DELAY); the next one waits for that millisecond to end.
const AT_ONCE_BURST: u32 = 8;

const MAX_DEADLINE_ROUNDS: usize = 2 * handover::MAX_DEADLINES + 2;

/// How a guarded call that ended ended.
fn settled<T>(outcome: std::thread::Result<Result<T, BoxError>>) -> Guarded<T> {
    match outcome {
        Ok(Ok(response)) => Guarded::Done(response),
        Ok(Err(error)) => Guarded::Failed(error),
        Err(payload) => Guarded::Panicked(payload),
    }
}

/// The timer of an attempt's deadlines (the lookup's, the connect's, the connector's): one
/// `Sleep`, made when the attempt first has to wait. Armed again for a later deadline it is
/// only moved, which wakes no thread; a timer armed anew, with no sooner one pending, wakes the
/// runtime's timer thread. (Kept from one attempt to the next, it would stay armed while the
/// connection is up: on a paused clock, tokio would then move the clock to it whenever the
/// runtime waits for anything else.)
struct AttemptTimer(Option<Pin<Box<Sleep>>>);

impl AttemptTimer {
    /// Drops the timer (the next poll arms a new one).
    fn disarm(&mut self) {
        self.0 = None;
    }

    /// Polls the timer, armed for `at`.
    fn poll_at(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = match &mut self.0 {
            Some(sleep) => {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                sleep
            }
            None => self.0.insert(Box::pin(sleep_until(at))),
        };
        sleep.as_mut().poll(cx)
    }
}

tokio::task_local! {
    /// While an `on_event` handler is polled: the persistent connection it belongs to.
    static HANDLER_OF: usize;
}

/// Whether the current task is polling an `on_event` handler of any persistent connection.
#[cfg_attr(not(feature = "hyper"), allow(dead_code))]
pub(crate) fn in_a_handler() -> bool {
    HANDLER_OF.try_with(|_| ()).is_ok()
}

/// Whether the current task is polling an `on_event` handler of the persistent connection
/// `shared` (its `Shared`'s address).
pub(crate) fn in_handler_of(shared: usize) -> bool {
    HANDLER_OF.try_with(|of| *of == shared).unwrap_or(false)
}

/// Closes `conn` and waits for it until `deadline` at most; then gives up (the connection is
/// dropped, a WARN says so). A panic of its `close` is logged and counts as closed.
async fn close_connection<C: Closable>(
    server: Arc<str>,
    conn: &C,
    deadline: Instant,
    close_timeout: Duration,
) {
    let closing = AssertUnwindSafe(async { conn.close().await }).catch_unwind();
    let closing = DropCaught::new(closing, server.clone(), "the connection's close future");
    let server = &*server;
    match timeout_at(deadline, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(payload)) => {
            tracing::error!(
                server,
                panic = %panic_message(&*payload),
                "the connection's close panicked; dropping it",
            );
            abort(server, conn);
        }
        Err(_) => {
            tracing::warn!(
                server,
                ?close_timeout,
                "the connection did not finish closing within the close timeout; dropping it",
            );
            abort(server, conn);
        }
    }
}

pin_project_lite::pin_project! {
    /// A user's future (a handler's, a connection's `close` or `close_finished`), dropped with
    /// its panic caught: a future that panics as it is dropped (given up at a deadline, or left
    /// as closing begins) is logged, and the driver goes on.
    struct DropCaught<F> {
        #[pin]
        inner: Option<F>,
        server: Arc<str>,
        what: &'static str,
    }

    impl<F> PinnedDrop for DropCaught<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut inner = this.inner;
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| inner.set(None))) {
                tracing::error!(
                    server = &**this.server,
                    panic = %panic_message(&*payload),
                    "{} panicked as it was dropped; going on",
                    this.what,
                );
            }
        }
    }
}

impl<F> DropCaught<F> {
    fn new(inner: F, server: Arc<str>, what: &'static str) -> Self {
        DropCaught {
            inner: Some(inner),
            server,
            what,
        }
    }
}

impl<F: Future> Future for DropCaught<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project().inner.as_pin_mut() {
            Some(inner) => inner.poll(cx),
            None => unreachable!("dropped only with the wrapper"),
        }
    }
}

/// Gives `conn` up (`Closable::abort`), a panic of it caught.
fn abort<C: Closable>(server: &str, conn: &C) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| conn.abort())) {
        tracing::error!(
            server,
            panic = %panic_message(&*payload),
            "the connection's abort panicked",
        );
    }
}

impl<G, M, A, C> Driver<G, M, A, C>
where
    G: Service<(), Response = A> + Send + 'static,
    G::Error: Into<BoxError>,
    G::Future: Send,
    M: Service<A, Response = C> + Send + 'static,
    M::Error: Into<BoxError>,
    M::Future: Send,
    A: Clone + PartialEq + fmt::Debug + Send + Sync + 'static,
    C: Clone + Closable + Send + Sync + 'static,
{
    fn shared(&self) -> &Arc<Shared<A, C>> {
        &self.events.shared
    }

    async fn run(mut self) {
        if !self.shared().driver_started() {
            // Closed before this first poll: closing finished without the driver.
            return;
        }
        if let Some(conn) = self.connection_loop().await {
            // Closing began while `conn` was current: its task, if adopted, runs on its own.
            self.adopted.release();
            let deadline = self.closing_deadline();
            Box::pin(self.close_until(&conn, deadline)).await;
            drop(conn);
            self.events.emit(Event::Disconnected).await;
        }
        self.shared().finish();
        tracing::debug!(server = %self.shared().server_name, "closed");
    }

    /// Closes `conn`, giving it until `deadline`.
    fn close_until<'c>(
        &self,
        conn: &'c C,
        deadline: Instant,
    ) -> impl Future<Output = ()> + Send + 'c {
        close_connection(
            self.shared().server_name.clone(),
            conn,
            deadline,
            self.shared().close_timeout,
        )
    }

    /// When closing must be finished.
    fn closing_deadline(&self) -> Instant {
        self.shared()
            .slot
            .close_deadline()
            .unwrap_or_else(|| deadline_after(Instant::now(), self.shared().close_timeout))
    }

    /// Runs rounds until closing begins; returns the connection that was current then, if any.
    async fn connection_loop(&mut self) -> Option<C> {
        let shared = self.shared().clone();
        let stop = &shared.commands.stop;
        // The last connection's successor, announced once the attempt that follows its death
        // at once has ended (none if it failed); dropped on every way out, which announces none.
        let mut predecessor: Option<Announcer<C>> = None;
        // Rounds begun at once (connections replaced at once): when the current burst of them
        // began, and how many it has had.
        let mut burst: Option<(Instant, u32)> = None;
        loop {
            if stop.is_set() {
                return None;
            }
            shared.slot.begin_round();
            // Closing may have begun since the check above: then no round begins.
            if !self.events.begin_round().await {
                return None;
            }
            let mut last_address: Option<A> = None;
            let mut last_error: Option<ConnectError> = None;
            let mut attempt = 0u32;
            let (conn, deadline, started) = loop {
                if stop.is_set() {
                    return None;
                }
                attempt = attempt.saturating_add(1);
                shared.slot.set_state(State::Connecting {
                    attempt,
                    next_attempt_at: None,
                    last_error: last_error.clone(),
                });
                let start = Instant::now();
                let delay = self.backoff.next_delay(&shared.server_name);
                let deadline = deadline_after(start, delay);
                // The attempt's own deadline: never before the next attempt could start.
                let limit = self.connect_timeout.max(delay);
                let error = match Box::pin(self.attempt(&mut last_address, start, limit)).await? {
                    Ok(conn) => break (conn, deadline, start),
                    Err(error) => error,
                };
                // No successor for the last connection.
                predecessor = None;
                shared.slot.attempt_failed(
                    &error,
                    shared.fail_fast,
                    State::Connecting {
                        attempt,
                        next_attempt_at: Some(deadline),
                        last_error: Some(error.clone()),
                    },
                );
                // Errors compare by their text, sources included.
                let repeated = last_error.as_ref() == Some(&error);
                last_error = Some(error.clone());
                if !repeated {
                    self.events.emit(Event::FailedToConnect(error)).await;
                }
                if !self.wait_until(deadline, start).await {
                    return None;
                }
            };

            let (announcer, successor) = succession();
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| conn.set_successor(successor))) {
                tracing::error!(
                    server = %shared.server_name,
                    panic = %panic_message(&*payload),
                    "the connection's set_successor panicked",
                );
            }
            let Some(generation) = shared.slot.set_current(&conn, deadline) else {
                // Closing began as the connection was made: it never becomes current.
                self.adopted.release();
                let deadline = self.closing_deadline();
                Box::pin(self.close_until(&conn, deadline)).await;
                return None;
            };
            // The last connection's successor, kept until this one dies: a request that the
            // last one hands back late still finds it.
            let _announced = predecessor.take().map(|p| p.announce(&conn));
            let connected_at = Instant::now();
            self.events.emit(Event::Connected(conn.clone())).await;

            let death = loop {
                // The connection's own task first, if adopted: the connection finishes when it
                // ends, and only then is `close_finished` asked (its waiter would be this task,
                // woken while it runs: one more poll, and a wake-up of another thread).
                let adopted = &mut self.adopted;
                let finished = AssertUnwindSafe(DropCaught::new(
                    async {
                        std::future::poll_fn(|cx| adopted.poll_end(cx)).await;
                        conn.close_finished().await
                    },
                    shared.server_name.clone(),
                    "the connection's close_finished future",
                ));
                tokio::select! {
                    biased;
                    _ = stop.wait() => return Some(conn),
                    result = finished.catch_unwind() => break match result {
                        Ok(()) => Death::Closed,
                        Err(payload) => {
                            tracing::error!(
                                server = %shared.server_name,
                                panic = %panic_message(&*payload),
                                "the connection's close_finished panicked; it counts as dead",
                            );
                            Death::Panicked
                        }
                    },
                    _ = shared.commands.dead.taken() => {
                        if !shared.slot.is_current(generation) {
                            break Death::Reported;
                        }
                        match catch_unwind(AssertUnwindSafe(|| conn.is_closed())) {
                            Ok(true) => break Death::Closing,
                            Err(payload) => {
                                tracing::error!(
                                    server = %shared.server_name,
                                    panic = %panic_message(&*payload),
                                    "the connection's is_closed panicked; it counts as dead",
                                );
                                break Death::Panicked;
                            }
                            // A report about an earlier connection: keep watching.
                            Ok(false) => {}
                        }
                    }
                }
            };
            // No longer watched: its task, if it has not ended, runs on its own.
            self.adopted.release();
            // A connection that served requests and that the peer closed in good order is
            // replaced at once, as gRPC resets its backoff after a successful connection.
            let graceful =
                || catch_unwind(AssertUnwindSafe(|| conn.closed_gracefully())).unwrap_or(false);
            // Publishes that the next round begins now (the state said: at the attempt's own
            // next round).
            let next_round_now = |now: Instant| {
                shared.slot.set_state(State::Connecting {
                    attempt: 0,
                    next_attempt_at: Some(now),
                    last_error: None,
                })
            };
            // The clock, read once for the steps that follow without a wait between them.
            let mut now = Instant::now();
            // When a connection replaced at once is replaced: now, unless `AT_ONCE_BURST`
            // rounds have begun at once within `MIN_RETRY_DELAY` already; then once that
            // millisecond is over. A connection that dies as soon as it is made, every time,
            // saying that it closed gracefully (which a connection that served nothing should
            // not say), is replaced 8,000 times a second at most instead of in a busy loop.
            let at_once = |now: Instant| match burst {
                Some((began, rounds)) if rounds >= AT_ONCE_BURST => {
                    now.max(began + crate::backoff::MIN_RETRY_DELAY)
                }
                _ => now,
            };
            let replace_at_once = match death {
                Death::Closed => {
                    // Gone by itself: nothing to close; one step for the slot and the state.
                    let graceful = graceful();
                    let cleared =
                        shared
                            .slot
                            .clear_current(generation, graceful.then(|| at_once(now)), None);
                    if !cleared && graceful {
                        // A handle that met it dead cleared it first.
                        next_round_now(at_once(now));
                    }
                    graceful
                }
                Death::Reported | Death::Closing | Death::Panicked => {
                    if matches!(death, Death::Closing) {
                        tracing::debug!(
                            server = %shared.server_name,
                            "the connection is closing by itself; it has the close timeout to finish",
                        );
                    }
                    shared.slot.clear_current(generation, None, None);
                    // Ours to close; a dead connection holds up the next one for the close
                    // timeout at most.
                    let deadline = deadline_after(now, shared.close_timeout);
                    Box::pin(self.close_until(&conn, deadline)).await;
                    now = Instant::now();
                    let graceful = matches!(death, Death::Reported | Death::Closing) && graceful();
                    if graceful {
                        next_round_now(at_once(now));
                    }
                    graceful
                }
            };
            if replace_at_once
                || now.saturating_duration_since(connected_at) >= self.backoff_reset_after
            {
                // A stable connection: the policy starts again from its first delay.
                self.backoff.reset();
            }
            let next_round_at = if replace_at_once {
                let at = at_once(now);
                burst = match burst {
                    Some((began, rounds)) if at < began + crate::backoff::MIN_RETRY_DELAY => {
                        Some((began, rounds + 1))
                    }
                    _ => Some((at, 1)),
                };
                at
            } else {
                deadline
            };
            drop(conn);
            // Its successor is the connection of the attempt that starts now (or, replaced at
            // once after a burst, within a millisecond); none if the next round must first wait
            // out the delay (a request waiting for the successor would wait that long).
            predecessor = (replace_at_once || next_round_at <= now).then_some(announcer);
            self.events.emit(Event::Disconnected).await;

            if shared
                .commands
                .close_when_current_closed
                .load(Ordering::SeqCst)
            {
                shared.begin_close();
                return None;
            }
            // A round due already (`now` was read before the `Disconnected` handler) starts
            // without reading the clock again.
            let go_on = if next_round_at <= now {
                !stop.is_set()
            } else {
                self.wait_until(next_round_at, started).await
            };
            if !go_on {
                return None;
            }
        }
    }

    /// Waits until `deadline`, or less if `reconnect_now` is called (which also resets the
    /// policy): then until [`MIN_RETRY_DELAY`](crate::MIN_RETRY_DELAY) after `started`, the
    /// start of the last attempt, if that is later (calls of `reconnect_now` in a loop start an
    /// attempt a millisecond at most, not one in a busy loop). False if closing began. A
    /// deadline already passed is not waited for at all (a timer would only fire at its next
    /// tick, 1 ms later); the timer's wait runs in a future of its own, so that the driver's
    /// future stays small.
    async fn wait_until(&mut self, deadline: Instant, started: Instant) -> bool {
        let now = Instant::now();
        if deadline <= now {
            return !self.shared().commands.stop.is_set();
        }
        let floor = deadline.min(deadline_after(started, crate::backoff::MIN_RETRY_DELAY));
        let asked = self.reconnect_asked();
        if asked && floor <= now {
            return !self.shared().commands.stop.is_set();
        }
        Box::pin(self.wait_for_timer(deadline, floor, asked)).await
    }

    /// Whether `reconnect_now` was called since the state that this wait follows was
    /// published (and not yet answered); if so, the policy starts again.
    fn reconnect_asked(&mut self) -> bool {
        let shared = self.shared();
        let asked = shared.commands.reconnect_asked.swap(0, Ordering::AcqRel);
        let asked = asked != 0 && asked.wrapping_sub(1) == shared.slot.state_version();
        if asked {
            self.backoff.reset();
        }
        asked
    }

    /// Waits until `deadline`, or until `floor` once `reconnect_now` is called (`asked`: it
    /// was already; see `wait_until`).
    async fn wait_for_timer(&mut self, deadline: Instant, floor: Instant, asked: bool) -> bool {
        let shared = self.shared().clone();
        // Listening before looking again: a `reconnect_now` between the look in `wait_until`
        // and this wait is seen by one or the other.
        let mut reconnect = std::pin::pin!(shared.commands.reconnect.notified());
        reconnect.as_mut().enable();
        let mut asked = asked || self.reconnect_asked();
        let sleep = sleep_until(if asked { floor } else { deadline });
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                _ = shared.commands.stop.wait() => return false,
                () = &mut sleep => return true,
                _ = &mut reconnect, if !asked => {
                    shared.commands.reconnect_asked.store(0, Ordering::Release);
                    self.backoff.reset();
                    if floor <= Instant::now() {
                        return true;
                    }
                    asked = true;
                    sleep.as_mut().reset(floor);
                }
            }
        }
    }

    /// One attempt: address lookup, then connect. `None` if closing began meanwhile (the lookup
    /// or connect in flight is dropped).
    ///
    /// The lookup and the connect share one deadline, `limit` after `start`; handlers are not
    /// counted against it. The task of the connection made is adopted if it was handed over.
    async fn attempt(
        &mut self,
        last_address: &mut Option<A>,
        start: Instant,
        limit: Duration,
    ) -> Option<Result<C, ConnectError>> {
        let shared = self.shared().clone();
        let stop = &shared.commands.stop;
        let mut timer = AttemptTimer(None);
        let address = match guarded(
            &mut self.get_address,
            (),
            deadline_after(start, limit),
            stop,
            &mut timer,
            None,
        )
        .await
        {
            Guarded::Done(address) => address,
            Guarded::Failed(error) => return Some(Err(ConnectError::address(error))),
            Guarded::Panicked(payload) => {
                return Some(Err(ConnectError::address_panicked(payload)));
            }
            Guarded::TimedOut => {
                return Some(Err(ConnectError::lookup_timed_out(self.connect_timeout)));
            }
            Guarded::Stopped => return None,
        };
        let new_address = last_address.as_ref() != Some(&address);
        // The time a handler takes does not count against the attempt: without one to await,
        // the deadline stays `limit` after the start (or now, if that has passed).
        let spent = (new_address && self.events.on_event.is_some()).then(|| start.elapsed());
        // No timer of the attempt's while an `ObtainedAddress` handler runs: on a paused clock,
        // tokio would move the clock to it whenever the handler waited on anything else.
        timer.disarm();

        if new_address {
            *last_address = Some(address.clone());
            self.events
                .emit(Event::ObtainedAddress(address.clone()))
                .await;
            if stop.is_set() {
                return None;
            }
        }
        let deadline = match spent {
            Some(spent) => deadline_after(Instant::now(), limit.saturating_sub(spent)),
            // As `now + (limit - spent)`: never before now (a lookup seen done after its
            // deadline, before the timer fired, leaves the connect until the timer's tick).
            None => deadline_after(start, limit).max(Instant::now()),
        };
        // A driver of the runtime's may take over the connect's tasks and deadlines; it keeps
        // the connection's task only without an `on_event` handler (which it awaits while the
        // connection is current: the connection's task could not run then).
        let mut scope = Scope::default();
        let outcome = guarded(
            &mut self.connect,
            address,
            deadline,
            stop,
            &mut timer,
            self.hand_over.then_some(&mut scope),
        )
        .await;
        let made = match &outcome {
            Guarded::Done(conn) if self.events.on_event.is_none() => Some(conn),
            _ => None,
        };
        self.adopted = scope.adopt(made);
        Some(match outcome {
            Guarded::Done(conn) => Ok(conn),
            Guarded::Failed(error) => Err(ConnectError::connect(error)),
            Guarded::Panicked(payload) => Err(ConnectError::connect_panicked(payload)),
            Guarded::TimedOut => Err(ConnectError::timed_out(self.connect_timeout)),
            Guarded::Stopped => return None,
        })
    }
}

impl<A, C> Emitter<A, C>
where
    A: Clone + fmt::Debug + Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    /// Logs `event`, publishes it to the streams, and awaits the handler (in a future of its
    /// own, so that the driver's future stays small where there is none).
    async fn emit(&self, event: Event<A, C>) {
        match &self.on_event {
            // The event itself is kept as the last one: no copy.
            None => self.publish(event),
            Some(on_event) => {
                self.publish(event.clone());
                Box::pin(self.handle(on_event, event)).await;
            }
        }
    }

    /// Emits `AttemptingToConnect`, unless closing has begun: false then (nothing published,
    /// logged or handled).
    async fn begin_round(&self) -> bool {
        if !self.shared.hub.publish_round() {
            return false;
        }
        self.log(&Event::AttemptingToConnect);
        if let Some(on_event) = &self.on_event {
            Box::pin(self.handle(on_event, Event::AttemptingToConnect)).await;
        }
        true
    }

    /// Logs `event` and publishes it to the streams.
    fn publish(&self, event: Event<A, C>) {
        self.log(&event);
        self.shared.hub.publish(event);
    }

    /// Logs `event`, at ERROR for a failed attempt, at INFO for the rest. Logging never ends
    /// the loop: an address whose `Debug` panics is logged as `<panicked: …>`, and a panic of
    /// the subscriber itself is caught (the line is lost).
    fn log(&self, event: &Event<A, C>) {
        let _ = catch_unwind(AssertUnwindSafe(|| self.log_unguarded(event)));
    }

    fn log_unguarded(&self, event: &Event<A, C>) {
        let server = &*self.shared.server_name;
        match event {
            Event::AttemptingToConnect => tracing::info!(server, "attempting to connect"),
            Event::ObtainedAddress(address) => {
                let address = GuardedDebug(address);
                tracing::info!(server, ?address, "obtained address")
            }
            Event::FailedToConnect(error) => {
                tracing::error!(server, error = %error.text(), "failed to connect")
            }
            Event::Connected(_) => tracing::info!(server, "connected"),
            Event::Disconnected => tracing::info!(server, "disconnected"),
            Event::Lagged(_) => {}
        }
    }

    /// Awaits `on_event`'s handling of `event`: a panic is logged, and once closing began the
    /// handler has until the close deadline.
    async fn handle(&self, on_event: &OnEvent<A, C>, event: Event<A, C>) {
        let server = &*self.shared.server_name;
        let name = event.name();
        // The call and the future both inside: a panic of either is caught.
        let handler = AssertUnwindSafe(async move { on_event(event).await }).catch_unwind();
        let handler = HANDLER_OF.scope(Arc::as_ptr(&self.shared) as *const () as usize, handler);
        // Abandoned at the close deadline, it is dropped: a panic then is caught too.
        let handler = DropCaught::new(
            handler,
            self.shared.server_name.clone(),
            "an on_event handler",
        );
        tokio::pin!(handler);
        let stop = &self.shared.commands.stop;
        let handled = tokio::select! {
            biased;
            handled = &mut handler => Some(handled),
            // Once closing began, the handler has until the close deadline.
            _ = stop.wait() => {
                let deadline = self.shared.slot.close_deadline().unwrap_or_else(Instant::now);
                timeout_at(deadline, &mut handler).await.ok()
            }
        };
        match handled {
            Some(Ok(())) => {}
            Some(Err(payload)) => tracing::error!(
                server,
                event = name,
                panic = %panic_message(&*payload),
                "on_event handler panicked; going on",
            ),
            None => tracing::warn!(
                server,
                event = name,
                "on_event handler did not finish within the close timeout; abandoned",
            ),
        }
    }
}

/// `Debug` of a user's value (an address) that a panic of its own `Debug` cannot carry out of
/// the formatting: it reads `<panicked: …>` then. (Only formatted when a subscriber wants the
/// line; the value is formatted into a string first, then written.)
struct GuardedDebug<'a, T>(&'a T);

impl<T: fmt::Debug> fmt::Debug for GuardedDebug<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match catch_unwind(AssertUnwindSafe(|| format!("{:?}", self.0))) {
            Ok(text) => f.write_str(&text),
            Err(payload) => write!(f, "<panicked: {}>", panic_message(&*payload)),
        }
    }
}
