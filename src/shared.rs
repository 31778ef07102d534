//! The state shared by every handle of one persistent connection and its driver.
//!
//! One `watch` channel holds the truth (the current connection, whether closing began or
//! finished, who waits for the outcome of the next attempt, the wakers of handles waiting in
//! `poll_ready`);
//! every change is made under its lock. An atomic generation number, bumped under that lock
//! whenever the current connection changes or closing begins, lets a handle that is ready on the
//! current connection check that it still is with one atomic load.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::error::ConnectError;
use crate::event::Hub;
use crate::signal::Signal;
use crate::state::State;

pub(crate) struct Status<C> {
    pub(crate) current: Option<C>,
    /// Bumped whenever `current` changes or closing begins.
    pub(crate) generation: u64,
    /// `close` was called (or every handle dropped).
    pub(crate) closed: bool,
    /// Closing finished: the last connection is closed and `Disconnected` was delivered.
    pub(crate) finished: bool,
    /// When closing must be finished: set when closing begins, `close_timeout` later.
    pub(crate) close_deadline: Option<Instant>,
    /// How many attempts have finished; callers of `connected_or_failed_to_connect` wait for it
    /// to move (through the watch channel, so a dropped caller leaves nothing behind).
    pub(crate) outcomes: u64,
    /// The outcomes of the last few attempts, the attempt `n` at `n % RECENT_OUTCOMES`; an
    /// outcome's connection is cleared from it once the connection stops being current, so that
    /// it is neither kept alive nor handed out dead.
    recent: [Option<(u64, Option<Outcome<C>>)>; RECENT_OUTCOMES],
    /// With fail-fast: the error of the last failed attempt of this round, while there is no
    /// connection.
    failing: Option<ConnectError>,
    /// Handles waiting in `poll_ready`, by handle id; all are woken on every change of
    /// `generation`.
    wakers: HashMap<u64, Waker>,
}

/// The outcome of one connection attempt.
type Outcome<C> = Result<C, ConnectError>;

/// How many attempt outcomes are kept: two can finish at one instant (an attempt that took
/// longer than its delay, then the next one at once), before a waiting caller runs.
const RECENT_OUTCOMES: usize = 4;

impl<C: Clone> Status<C> {
    /// The outcome of the first attempt to finish after `seen` attempts had finished: `None`
    /// while there is none yet. If that attempt's connection is already gone, the outcome of the
    /// attempt after it; if it is no longer kept, the oldest kept.
    pub(crate) fn outcome_after(&self, seen: u64) -> Option<Result<C, ConnectError>> {
        let mut wanted = seen + 1;
        while wanted <= self.outcomes {
            match &self.recent[(wanted % RECENT_OUTCOMES as u64) as usize] {
                Some((n, Some(outcome))) if *n == wanted => return Some(outcome.clone()),
                // Its connection died already: the next attempt's outcome.
                Some((n, None)) if *n == wanted => wanted += 1,
                // Overwritten by a later one: the caller fell far behind; take the oldest kept.
                _ => {
                    wanted = self
                        .outcomes
                        .saturating_sub(RECENT_OUTCOMES as u64 - 1)
                        .max(wanted + 1)
                }
            }
        }
        None
    }

    fn record_outcome(&mut self, outcome: Result<C, ConnectError>) {
        self.outcomes += 1;
        self.recent[(self.outcomes % RECENT_OUTCOMES as u64) as usize] =
            Some((self.outcomes, Some(outcome)));
    }
}

impl<C> Status<C> {
    /// Forgets the connections of the recent outcomes.
    fn forget_connections(&mut self) {
        for (_, outcome) in self.recent.iter_mut().flatten() {
            if matches!(outcome, Some(Ok(_))) {
                *outcome = None;
            }
        }
    }

    /// Moves to the next generation; returns the wakers to wake once the lock is released.
    #[must_use]
    fn bump(&mut self, shared_generation: &AtomicU64) -> Wakers {
        self.generation += 1;
        shared_generation.store(self.generation, Ordering::Release);
        self.take_wakers()
    }

    /// The registered wakers, to wake once the lock is released.
    fn take_wakers(&mut self) -> Wakers {
        Wakers(std::mem::take(&mut self.wakers))
    }
}

/// Wakers taken out under the lock, woken when dropped (after the lock is released).
#[derive(Default)]
struct Wakers(HashMap<u64, Waker>);

impl Drop for Wakers {
    fn drop(&mut self) {
        for (_, waker) in self.0.drain() {
            waker.wake();
        }
    }
}

/// What a handle without a usable connection finds.
pub(crate) enum Lookup<C> {
    Current(u64, C),
    Closed,
    /// Failing fast, with the last attempt's error.
    Failing(ConnectError),
    /// The waker is registered until the generation moves on from this one.
    Registered(u64),
}

pub(crate) struct Shared<A, C> {
    pub(crate) server_name: Arc<str>,
    pub(crate) generation: AtomicU64,
    pub(crate) status: watch::Sender<Status<C>>,
    pub(crate) hub: Hub<A, C>,
    /// Set when closing begins: stops the driver's waiting.
    pub(crate) stop: Signal,
    /// A handle saw the current connection's `poll_ready` fail.
    pub(crate) dead: Notify,
    pub(crate) close_when_current_closed: AtomicBool,
    /// `reconnect_now` was called: cut the current wait short.
    pub(crate) reconnect: Notify,
    pub(crate) state: watch::Sender<State>,
    fail_fast: bool,
    close_timeout: Duration,
    handles: AtomicUsize,
    next_id: AtomicU64,
}

impl<A, C> Shared<A, C>
where
    A: Clone + Send + 'static,
    C: Clone + Send + 'static,
{
    pub(crate) fn new(
        server_name: Arc<str>,
        event_capacity: usize,
        fail_fast: bool,
        close_timeout: Duration,
    ) -> Self {
        Shared {
            server_name,
            generation: AtomicU64::new(0),
            status: watch::Sender::new(Status {
                current: None,
                generation: 0,
                closed: false,
                finished: false,
                close_deadline: None,
                outcomes: 0,
                recent: Default::default(),
                failing: None,
                wakers: HashMap::new(),
            }),
            hub: Hub::new(event_capacity),
            stop: Signal::default(),
            dead: Notify::new(),
            close_when_current_closed: AtomicBool::new(false),
            reconnect: Notify::new(),
            state: watch::Sender::new(State::Connecting {
                attempt: 0,
                next_attempt_at: None,
                last_error: None,
            }),
            fail_fast,
            close_timeout,
            handles: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
        }
    }
}

impl<A, C> Shared<A, C> {
    /// Registers a new handle and returns its id.
    pub(crate) fn add_handle(&self) -> u64 {
        self.handles.fetch_add(1, Ordering::Relaxed);
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets a handle; the last one begins closing.
    pub(crate) fn remove_handle(&self, id: u64, registered: bool) {
        if registered {
            self.status.send_if_modified(|s| {
                s.wakers.remove(&id);
                false
            });
        }
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.begin_close();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.stop.is_set()
    }

    /// Whether the connection of `generation` is still current.
    pub(crate) fn is_current(&self, generation: u64) -> bool {
        let s = self.status.borrow();
        s.generation == generation && s.current.is_some()
    }

    /// Stops the connection of `generation` from being current. Returns false if it already was.
    pub(crate) fn clear_current(&self, generation: u64) -> bool {
        let mut wakers = Wakers::default();
        let cleared = self.status.send_if_modified(|s| {
            if s.generation != generation || s.current.is_none() {
                return false;
            }
            s.current = None;
            s.forget_connections();
            wakers = s.bump(&self.generation);
            true
        });
        drop(wakers);
        cleared
    }

    /// Called by a handle that found the current connection's `is_closed` panicking.
    pub(crate) fn report_panicked(&self, generation: u64) {
        tracing::error!(
            server = %self.server_name,
            "the connection's is_closed panicked; it counts as dead",
        );
        self.report_dead(generation);
    }

    /// Called by a handle whose `poll_ready` on the connection of `generation` failed.
    pub(crate) fn report_dead(&self, generation: u64) {
        if self.clear_current(generation) {
            self.dead.notify_one();
        }
    }

    /// Begins closing: from now on nothing is current, `poll_ready` fails and the driver stops.
    /// Idempotent.
    pub(crate) fn begin_close(&self) {
        let mut wakers = Wakers::default();
        self.status.send_if_modified(|s| {
            if s.closed {
                return false;
            }
            s.closed = true;
            s.close_deadline = Some(deadline_after(Instant::now(), self.close_timeout));
            s.current = None;
            s.failing = None;
            s.forget_connections();
            wakers = s.bump(&self.generation);
            // Under the lock, so that whoever sees `closed` also sees the driver told to stop.
            self.stop.set();
            true
        });
        drop(wakers);
        self.state.send_replace(State::Closed);
    }

    /// When closing must be finished (the close timeout after it began); `None` before.
    pub(crate) fn close_deadline(&self) -> Option<Instant> {
        self.status.borrow().close_deadline
    }

    /// Publishes the loop's state, unless closing began.
    pub(crate) fn set_state(&self, state: State) {
        self.state.send_if_modified(|current| {
            if current.is_closed() {
                return false;
            }
            *current = state;
            true
        });
    }

    /// A new round begins: no longer failing fast until an attempt of it fails.
    pub(crate) fn begin_round(&self) {
        self.status.send_if_modified(|s| {
            s.failing = None;
            false
        });
    }

    /// Closing finished (or the driver is gone): wakes every waiter for good and ends the event
    /// streams.
    pub(crate) fn finish(&self) {
        self.begin_close();
        self.status.send_modify(|s| {
            s.finished = true;
        });
        self.hub.finish();
    }

    /// Registers `waker` to be woken when the connection of `generation` stops being current.
    /// Returns false (and registers nothing) if it already has.
    pub(crate) fn watch_generation(&self, id: u64, generation: u64, waker: &Waker) -> bool {
        let mut registered = false;
        self.status.send_if_modified(|s| {
            if s.generation == generation {
                register(&mut s.wakers, id, waker);
                registered = true;
            }
            false
        });
        registered
    }
}

impl<A, C: Clone> Shared<A, C> {
    /// The current connection, or the closed state, or else registers `waker` to be woken at the
    /// next change.
    pub(crate) fn lookup(&self, id: u64, waker: &Waker) -> Lookup<C> {
        let mut found = Lookup::Closed;
        self.status.send_if_modified(|s| {
            found = if s.closed {
                Lookup::Closed
            } else if let Some(conn) = &s.current {
                Lookup::Current(s.generation, conn.clone())
            } else if let Some(error) = &s.failing {
                Lookup::Failing(error.clone())
            } else {
                register(&mut s.wakers, id, waker);
                Lookup::Registered(s.generation)
            };
            false
        });
        found
    }

    /// Makes `conn` current, unless closing began. Returns its generation.
    pub(crate) fn set_current(&self, conn: &C) -> Option<u64> {
        let mut generation = None;
        let mut wakers = Wakers::default();
        self.status.send_if_modified(|s| {
            if s.closed {
                return false;
            }
            s.current = Some(conn.clone());
            s.failing = None;
            s.record_outcome(Ok(conn.clone()));
            wakers = s.bump(&self.generation);
            generation = Some(s.generation);
            true
        });
        drop(wakers);
        generation
    }

    /// Records a failed attempt.
    pub(crate) fn attempt_failed(&self, error: &ConnectError) {
        let mut wakers = Wakers::default();
        self.status.send_if_modified(|s| {
            if s.closed {
                return false;
            }
            if self.fail_fast {
                s.failing = Some(error.clone());
                // Handles waiting in poll_ready now fail fast.
                wakers = s.take_wakers();
            }
            s.record_outcome(Err(error.clone()));
            // Wakes the callers of `connected_or_failed_to_connect`.
            true
        });
        drop(wakers);
    }
}

/// `start + after`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(start: Instant, after: Duration) -> Instant {
    start
        .checked_add(after)
        .unwrap_or_else(|| start + FAR_FUTURE)
}

/// About thirty years: later than any deadline a program waits for, and addable to any instant.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// What a handle finds in the slot when it looks for a live connection.
pub(crate) enum Live<C> {
    /// A current connection that is not closed.
    Yes(C),
    /// None, or a closed one.
    No,
    /// The current connection's `is_closed` panicked: it is to be reported dead (once the
    /// status is no longer borrowed).
    Panicked(u64),
}

impl<C: crate::Closable + Clone> Status<C> {
    /// The current connection if it is live.
    pub(crate) fn live(&self) -> Live<C> {
        let Some(conn) = &self.current else {
            return Live::No;
        };
        match catch_unwind(AssertUnwindSafe(|| conn.is_closed())) {
            Ok(false) => Live::Yes(conn.clone()),
            Ok(true) => Live::No,
            Err(_) => Live::Panicked(self.generation),
        }
    }
}

fn register(wakers: &mut HashMap<u64, Waker>, id: u64, waker: &Waker) {
    match wakers.get_mut(&id) {
        Some(old) => old.clone_from(waker),
        None => {
            wakers.insert(id, waker.clone());
        }
    }
}
