//! What the handles of one persistent connection and its driver share, by concern:
//!
//! - the [`Slot`]: the current connection and everything that waits on it (`slot.rs`);
//! - [`Commands`] from the handles to the driver: stop, a connection reported dead, reconnect
//!   now, close when the current connection closes;
//! - the event [`Hub`] that `events()` streams subscribe to (`event.rs`);
//! - the count of handles, the last of which begins closing when dropped.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::event::Hub;
use crate::layer::Config;
use crate::signal::Bell;
use crate::slot::Slot;

pub(crate) struct Shared<A, C> {
    pub(crate) server_name: Arc<str>,
    pub(crate) fail_fast: bool,
    pub(crate) ready_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
    pub(crate) slot: Slot<C>,
    pub(crate) commands: Commands,
    pub(crate) hub: Hub<A, C>,
    handles: Handles,
    /// Whether the driver was ever polled: see [`Shared::driver_started`].
    driver: AtomicU8,
    /// The connection's `Closable::is_closed`, for code whose bounds do not name `Closable`
    /// (the handle's `Service` impl).
    is_closed: fn(&C) -> bool,
}

/// What the handles ask of the driver.
#[derive(Default)]
pub(crate) struct Commands {
    /// Set when closing begins: stops the driver's waiting.
    pub(crate) stop: Bell,
    /// Rung when a handle saw the current connection fail (its `poll_ready`, or its
    /// `is_closed` panicked) or closing; taken by the driver.
    pub(crate) dead: Bell,
    /// `reconnect_now` was called: cut the current wait short.
    pub(crate) reconnect: Notify,
    /// `reconnect_now` was called while the state said a wait was due: the version of that
    /// state, plus one (zero: none). A wait that begins while the state is still that one
    /// (after a `FailedToConnect` handler, or the close of a dead connection) is not waited.
    pub(crate) reconnect_asked: AtomicU64,
    /// Close the persistent connection once the current connection dies.
    pub(crate) close_when_current_closed: AtomicBool,
}

/// The driver was never polled.
const DRIVER_UNPOLLED: u8 = 0;
/// The driver was polled: it runs the loop, and closing waits for it.
const DRIVER_RUNNING: u8 = 1;
/// Closing began before the driver was ever polled: closing finished at once, without it.
const DRIVER_GIVEN_UP: u8 = 2;

/// Counts the handles, and numbers them.
#[derive(Default)]
struct Handles {
    live: AtomicUsize,
    next_id: AtomicU64,
}

impl<A, C> Shared<A, C>
where
    A: Clone + Send + 'static,
    C: Clone + crate::Closable + Send + 'static,
{
    pub(crate) fn new(config: &Config) -> Self {
        Shared {
            server_name: config.server_name.clone(),
            fail_fast: config.fail_fast,
            ready_timeout: config.ready_timeout,
            close_timeout: config.close_timeout,
            slot: Slot::new(),
            commands: Commands::default(),
            hub: Hub::new(config.event_capacity),
            handles: Handles::default(),
            driver: AtomicU8::new(DRIVER_UNPOLLED),
            is_closed: C::is_closed,
        }
    }
}

impl<A, C> Shared<A, C> {
    /// Registers a new handle and returns its id.
    pub(crate) fn add_handle(&self) -> u64 {
        self.handles.live.fetch_add(1, Ordering::Relaxed);
        self.handles.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets a handle; the last one begins closing.
    pub(crate) fn remove_handle(&self, id: u64, registered: bool) {
        if registered {
            self.slot.remove_waker(id);
        }
        if self.handles.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.begin_close();
        }
    }

    /// True from the moment closing began; one atomic load.
    pub(crate) fn is_closed(&self) -> bool {
        self.commands.stop.is_set()
    }

    /// Called by a handle that found the current connection's `is_closed` panicking.
    pub(crate) fn report_panicked(&self, generation: u64) {
        tracing::error!(
            server = %self.server_name,
            "the connection's is_closed panicked; it counts as dead",
        );
        self.report_dead(generation, None);
    }

    /// Called when the connection of `generation` failed (`found_by`: the handle whose
    /// `poll_ready` found it so, which is not woken for it): the connection stops being current
    /// at once, and the driver is told.
    pub(crate) fn report_dead(&self, generation: u64, found_by: Option<u64>) {
        if self.slot.clear_current(generation, None, found_by) {
            self.commands.dead.ring();
        }
    }

    /// Reports the connection of `generation`, which `conn` is, to the driver if it is closed or
    /// closing (`report_closing`), or dead if its `is_closed` panics.
    pub(crate) fn check_closing(&self, generation: u64, conn: &C) {
        match catch_unwind(AssertUnwindSafe(|| (self.is_closed)(conn))) {
            Ok(false) => {}
            Ok(true) => self.report_closing(generation),
            Err(_) => self.report_panicked(generation),
        }
    }

    /// Called by a caller that met the current connection of `generation` closed or closing
    /// (it may have begun closing by itself, and might never finish): the driver is told, and
    /// gives it the close timeout to finish before the next round.
    pub(crate) fn report_closing(&self, generation: u64) {
        if self.slot.generation() == generation {
            self.commands.dead.ring();
        }
    }

    /// Begins closing: from now on nothing is current, `poll_ready` fails and the driver stops.
    /// Idempotent.
    pub(crate) fn begin_close(&self) {
        self.slot.begin_close(|| {
            // Under the slot's lock, so that whoever sees the slot closed also sees the driver
            // told to stop.
            self.commands.stop.ring();
            deadline_after(Instant::now(), self.close_timeout)
        });
        // A round the driver is about to begin (it saw no stop yet) publishes no
        // `AttemptingToConnect` once this returns.
        self.hub.stop_rounds();
        // A driver never polled has nothing to close, and may never run (a `pair()` driver
        // kept but never spawned): closing finishes here, and the driver, if polled later,
        // ends at its first poll.
        if self
            .driver
            .compare_exchange(
                DRIVER_UNPOLLED,
                DRIVER_GIVEN_UP,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.finished();
        }
    }

    /// Called by the driver at its first poll (once): true if it is to run the loop, false if
    /// closing began (and finished) before it was polled.
    pub(crate) fn driver_started(&self) -> bool {
        self.driver
            .compare_exchange(
                DRIVER_UNPOLLED,
                DRIVER_RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Closing finished (or the driver is gone): wakes every waiter for good and ends the event
    /// streams.
    pub(crate) fn finish(&self) {
        self.begin_close();
        self.finished();
    }

    /// What [`finish`](Self::finish) does once closing began. Idempotent.
    fn finished(&self) {
        // The streams end first: a subscriber that comes once `close()` has resolved finds
        // its stream ended after the last event.
        self.hub.finish();
        self.slot.finish();
        // The driver waits no more.
        self.commands.stop.forget();
        self.commands.dead.forget();
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
