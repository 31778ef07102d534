//! The state shared by every handle of one persistent connection and its driver.
//!
//! One `watch` channel holds the truth (the current connection, whether closing began or
//! finished, who waits for the outcome of the next attempt, the wakers of handles waiting in
//! `poll_ready`);
//! every change is made under its lock. An atomic generation number, bumped under that lock
//! whenever the current connection changes or closing begins, lets a handle that is ready on the
//! current connection check that it still is with one atomic load.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Waker;

use tokio::sync::{Notify, oneshot, watch};

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
    /// Callers of `connected_or_failed_to_connect` waiting for the outcome of the next attempt;
    /// dropped (which tells them the connection closed) when closing begins.
    outcome_waiters: Vec<oneshot::Sender<Result<C, ConnectError>>>,
    /// With fail-fast: the error of the last failed attempt of this round, while there is no
    /// connection.
    failing: Option<ConnectError>,
    /// Handles waiting in `poll_ready`, by handle id; all are woken on every change of
    /// `generation`.
    wakers: HashMap<u64, Waker>,
}

impl<C> Status<C> {
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
    handles: AtomicUsize,
    next_id: AtomicU64,
}

impl<A, C> Shared<A, C>
where
    A: Clone + Send + 'static,
    C: Clone + Send + 'static,
{
    pub(crate) fn new(server_name: Arc<str>, event_capacity: usize, fail_fast: bool) -> Self {
        Shared {
            server_name,
            generation: AtomicU64::new(0),
            status: watch::Sender::new(Status {
                current: None,
                generation: 0,
                closed: false,
                finished: false,
                outcome_waiters: Vec::new(),
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
            wakers = s.bump(&self.generation);
            true
        });
        drop(wakers);
        cleared
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
            s.current = None;
            s.failing = None;
            s.outcome_waiters.clear();
            wakers = s.bump(&self.generation);
            // Under the lock, so that whoever sees `closed` also sees the driver told to stop.
            self.stop.set();
            true
        });
        drop(wakers);
        self.state.send_replace(State::Closed);
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
            for waiter in s.outcome_waiters.drain(..) {
                let _ = waiter.send(Ok(conn.clone()));
            }
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
            if self.fail_fast && !s.closed {
                s.failing = Some(error.clone());
                // Handles waiting in poll_ready now fail fast.
                wakers = s.take_wakers();
            }
            for waiter in s.outcome_waiters.drain(..) {
                let _ = waiter.send(Err(error.clone()));
            }
            false
        });
        drop(wakers);
    }

    /// A live current connection, or else a receiver of the outcome of the next attempt (which
    /// errs if closing begins first).
    pub(crate) fn live_or_next_outcome(
        &self,
    ) -> Result<C, oneshot::Receiver<Result<C, ConnectError>>>
    where
        C: crate::Closable,
    {
        let mut found = None;
        self.status.send_if_modified(|s| {
            if let Some(conn) = s.current.as_ref().filter(|c| !c.is_closed()) {
                found = Some(Ok(conn.clone()));
            } else {
                let (sender, receiver) = oneshot::channel();
                if !s.closed {
                    s.outcome_waiters.push(sender);
                }
                found = Some(Err(receiver));
            }
            false
        });
        found.expect("set by the closure")
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
