//! The connection slot: the current connection and everything that waits on it.
//!
//! One plain mutex guards the truth: the current connection and its generation, whether closing
//! began or finished, the loop's [`State`], the outcomes of the last attempts, the fail-fast
//! error, and the wakers of handles waiting in `poll_ready`. Every change is one step under the
//! lock, so what is observed together is consistent (`state()` says `Connected` exactly when
//! there is a current connection).
//!
//! Two things live outside the lock:
//! - an atomic copy of the generation, bumped (Release) under the lock whenever the current
//!   connection changes or closing begins, so that a handle ready on the current connection
//!   checks that it still is with one atomic load (Acquire);
//! - a `Notify` for the futures that wait for a change (`connected`, `close_finished`,
//!   `state_changed`, `connected_or_failed_to_connect`): they register before they look, and
//!   a dropped waiter leaves nothing behind.
//!
//! Wakers are woken, and the `Notify` notified, after the lock is released.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Closable;
use crate::error::ConnectError;
use crate::signal::wait_until;
use crate::state::State;

/// The outcome of one connection attempt.
pub(crate) type Outcome<C> = Result<C, ConnectError>;

/// How many attempt outcomes are kept: two can finish at one instant (an attempt that took
/// longer than its delay, then the next one at once) before a waiting caller runs; the attempts
/// of a round start at least 1 ms apart. (Rounds begun at once, connections replaced at once,
/// can make more at one instant: a caller that waited for an outcome then gets the oldest one
/// kept.)
const RECENT_OUTCOMES: usize = 2;

pub(crate) struct Slot<C> {
    /// A copy of `Inner::generation`, for the ready path.
    generation: AtomicU64,
    inner: Mutex<Inner<C>>,
    changed: Notify,
}

struct Inner<C> {
    current: Option<C>,
    /// Bumped whenever `current` changes or closing begins.
    generation: u64,
    /// Closing began (`close` was called or every handle dropped).
    closed: bool,
    /// Closing finished (or the driver is gone).
    finished: bool,
    /// When closing must be finished: set when closing begins.
    close_deadline: Option<Instant>,
    state: State,
    /// Bumped whenever `state` changes.
    state_version: u64,
    /// When the next round may begin if the current connection dies: the end of the delay of
    /// the attempt that made it.
    next_round_at: Option<Instant>,
    /// How many attempts have finished.
    outcomes: u64,
    /// The outcomes of the last few attempts, attempt `n` at `n % RECENT_OUTCOMES`; an
    /// outcome's connection is forgotten once the connection stops being current, so that it
    /// is neither kept alive nor handed out dead.
    recent: [Option<(u64, Option<Outcome<C>>)>; RECENT_OUTCOMES],
    /// With fail-fast: the error of the last failed attempt of this round, while there is no
    /// connection.
    failing: Option<ConnectError>,
    /// Handles waiting in `poll_ready`, in the order they began to wait; all are woken, in
    /// that order, on every change of `generation`.
    wakers: WakerQueue,
}

/// The largest queue of wakers kept for the next waiters once its wakers are woken.
const KEPT_WAKERS: usize = 64;

/// Places by handle id. The ids are the crate's own counter, never chosen from outside: a
/// multiplicative hash spreads them, without the cost of a keyed one.
type Places = HashMap<u64, usize, BuildHasherDefault<IdHasher>>;

/// The wakers of the handles waiting in `poll_ready`, in the order the handles began to wait,
/// and each one's place by handle id: a handle registers again in place, and leaves in O(1).
///
/// They are woken in that order: over HTTP/1.1 a new connection's turn then goes first to
/// the handles that have waited longest, who queue for it (the turn's own queue is first come,
/// first served) in the order they waited for the last one. (Woken in a map's order, the turn
/// went to whichever came first in it, however long others had waited: under churn a few
/// waited many seconds.)
#[derive(Default)]
struct WakerQueue {
    /// By arrival; `None` where a handle left.
    order: Vec<Option<(u64, Waker)>>,
    places: Places,
}

impl WakerQueue {
    fn register(&mut self, id: u64, waker: &Waker) {
        if let Some(&place) = self.places.get(&id) {
            if let Some((_, old)) = &mut self.order[place] {
                old.clone_from(waker);
            }
            return;
        }
        // Handles that left keep their places until the next wake-up: taken back when they
        // are more than those waiting, rather than the queue growing.
        if self.order.len() == self.order.capacity() && self.order.len() >= 2 * self.places.len() {
            self.compact();
        }
        self.places.insert(id, self.order.len());
        self.order.push(Some((id, waker.clone())));
    }

    fn remove(&mut self, id: u64) {
        if let Some(place) = self.places.remove(&id) {
            self.order[place] = None;
        }
    }

    /// Closes the gaps that handles that left made, in order.
    fn compact(&mut self) {
        self.order.retain(Option::is_some);
        for (place, entry) in self.order.iter().enumerate() {
            if let Some((id, _)) = entry {
                self.places.insert(*id, place);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.places.len()
    }
}

/// Hashes a handle id: Fibonacci hashing, whose high bits (hashbrown's tags) and low bits (its
/// buckets) both vary with consecutive ids.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` ids are hashed; any other key still hashes, byte by byte.
        for &byte in bytes {
            self.write_u64(self.0 ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
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

/// What a caller looking for a live connection finds.
pub(crate) enum Live<C> {
    /// A current connection that is not closed.
    Yes(C),
    /// None.
    No,
    /// The current connection of this generation is closed or closing (it may have begun
    /// closing by itself): to be reported to the driver (once the lock is released), which
    /// gives it the close timeout to finish.
    Closing(u64),
    /// The current connection's `is_closed` panicked: to be reported dead (once the lock is
    /// released).
    Panicked(u64),
}

/// Wakers taken out under the lock, woken when dropped (after the lock is released).
#[derive(Default)]
struct Wakers(WakerQueue);

impl Wakers {
    /// Wakes them in the order they came, and empties the queue (its room kept).
    fn wake_all(&mut self) {
        self.0.places.clear();
        for (_, waker) in self.0.order.drain(..).flatten() {
            waker.wake();
        }
    }
}

impl Drop for Wakers {
    fn drop(&mut self) {
        if !self.0.order.is_empty() {
            self.wake_all();
        }
    }
}

impl<C> Slot<C> {
    pub(crate) fn new() -> Self {
        Slot {
            generation: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                current: None,
                generation: 0,
                closed: false,
                finished: false,
                close_deadline: None,
                state: State::Connecting {
                    attempt: 0,
                    next_attempt_at: None,
                    last_error: None,
                },
                state_version: 0,
                next_round_at: None,
                outcomes: 0,
                recent: Default::default(),
                failing: None,
                wakers: WakerQueue::default(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<C>> {
        // Nothing user-supplied runs under the lock but `is_closed`, whose panics are caught:
        // a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `change` under the lock, then wakes whoever it asks to.
    fn change<T>(&self, change: impl FnOnce(&mut Inner<C>, &mut Effects) -> T) -> T {
        let mut effects = Effects::default();
        let result = {
            let mut inner = self.lock();
            change(&mut inner, &mut effects)
        };
        if effects.notify {
            self.changed.notify_waiters();
        }
        if let Some(mut woken) = effects.wakers.take() {
            woken.wake_all();
            // The emptied queue goes back, its room kept for the next waiters (who register at
            // once, in their next `poll_ready`), unless one was made meanwhile, or it is large
            // (the room of a herd is given back).
            if (1..=KEPT_WAKERS).contains(&woken.0.order.capacity()) {
                let mut inner = self.lock();
                if inner.wakers.order.capacity() == 0 {
                    std::mem::swap(&mut inner.wakers, &mut woken.0);
                }
            }
        }
        result
    }

    /// The generation of the current connection, for the ready path.
    ///
    /// Relaxed: nothing is published with it. A handle that finds its own generation still
    /// current uses its own copy of the connection; one that finds it changed takes the slot's
    /// lock, which orders what follows. A change that happens before the load (a `close()`
    /// that returned before the call, say) is seen all the same: a load sees the latest store
    /// to its location that happens before it. (An acquire load would also keep the compiler
    /// from reusing what it read before, such as the handle's pointer to this slot: a load
    /// more per check on the ready path.)
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Whether the connection of `generation` is still current.
    pub(crate) fn is_current(&self, generation: u64) -> bool {
        let inner = self.lock();
        inner.generation == generation && inner.current.is_some()
    }

    pub(crate) fn state(&self) -> State {
        self.lock().state.clone()
    }

    /// When closing must be finished; `None` before closing began.
    pub(crate) fn close_deadline(&self) -> Option<Instant> {
        self.lock().close_deadline
    }

    /// Publishes the loop's state (which does not change the slot), unless closing began.
    pub(crate) fn set_state(&self, state: State) {
        self.change(|inner, effects| {
            if !inner.closed {
                inner.set_state(state, effects);
            }
        });
    }

    /// A new round begins: no longer failing fast until an attempt of it fails.
    pub(crate) fn begin_round(&self) {
        self.lock().failing = None;
    }

    /// Records a failed attempt, and the state it leaves the loop in.
    pub(crate) fn attempt_failed(&self, error: &ConnectError, fail_fast: bool, state: State) {
        self.change(|inner, effects| {
            if inner.closed {
                return;
            }
            if fail_fast {
                inner.failing = Some(error.clone());
                // Handles waiting in poll_ready now fail fast.
                inner.hand_wakers(effects);
            }
            inner.record_outcome(Err(error.clone()));
            inner.set_state(state, effects);
        });
    }

    /// Stops the connection of `generation` from being current, and publishes that the loop
    /// waits for the next round, which begins at `next_round_at` or else at the time given
    /// with the connection. False if it already was not current.
    ///
    /// With `found_by`, the handle that found the connection dead in its `poll_ready` is not
    /// woken (it looks at the slot again in the same `poll_ready`; a wake-up of its own task
    /// would only poll it again).
    pub(crate) fn clear_current(
        &self,
        generation: u64,
        next_round_at: Option<Instant>,
        found_by: Option<u64>,
    ) -> bool {
        self.change(|inner, effects| {
            if inner.generation != generation || inner.current.is_none() {
                return false;
            }
            if let Some(id) = found_by {
                inner.wakers.remove(id);
            }
            inner.current = None;
            inner.forget_connections();
            inner.bump(&self.generation, effects);
            let next = next_round_at
                .or(inner.next_round_at)
                .map(|at| at.max(Instant::now()));
            inner.set_state(
                State::Connecting {
                    attempt: 0,
                    next_attempt_at: next,
                    last_error: None,
                },
                effects,
            );
            true
        })
    }

    /// Begins closing: from now on nothing is current, `poll_ready` fails and waiters learn it.
    /// Returns false if it had begun already.
    pub(crate) fn begin_close(&self, deadline: impl FnOnce() -> Instant) -> bool {
        self.change(|inner, effects| {
            if inner.closed {
                return false;
            }
            inner.closed = true;
            inner.close_deadline = Some(deadline());
            inner.current = None;
            inner.failing = None;
            inner.forget_connections();
            inner.bump(&self.generation, effects);
            inner.set_state(State::Closed, effects);
            true
        })
    }

    /// Closing finished (or the driver is gone): wakes every waiter for good.
    pub(crate) fn finish(&self) {
        self.change(|inner, effects| {
            if !inner.finished {
                inner.finished = true;
                effects.notify = true;
            }
        });
    }

    /// Registers `waker` to be woken when the connection of `generation` stops being current.
    /// Returns false (and registers nothing) if it already has.
    pub(crate) fn watch_generation(&self, id: u64, generation: u64, waker: &Waker) -> bool {
        let mut inner = self.lock();
        if inner.generation != generation {
            return false;
        }
        inner.wakers.register(id, waker);
        true
    }

    /// How many handles' wakers are registered.
    #[cfg(test)]
    pub(crate) fn waker_count(&self) -> usize {
        self.lock().wakers.len()
    }

    /// Forgets the waker of handle `id`.
    pub(crate) fn remove_waker(&self, id: u64) {
        self.lock().wakers.remove(id);
    }

    /// Resolves once closing finished.
    pub(crate) async fn finished(&self) {
        self.wait(|inner| inner.finished.then_some(())).await
    }

    /// Resolves with the state once its version is no longer `seen`.
    /// Closed is the last state: it is given at once, whatever `seen` was.
    pub(crate) async fn state_after(&self, seen: u64) -> State {
        self.wait(|inner| {
            (inner.state_version != seen || inner.state.is_closed()).then(|| inner.state.clone())
        })
        .await
    }

    /// The version of the state now.
    pub(crate) fn state_version(&self) -> u64 {
        self.lock().state_version
    }

    /// The version of the state now if it says that the loop waits, or is about to wait, for
    /// its next attempt (`Connecting` with a `next_attempt_at`).
    pub(crate) fn waiting_version(&self) -> Option<u64> {
        let inner = self.lock();
        matches!(
            inner.state,
            State::Connecting {
                next_attempt_at: Some(_),
                ..
            }
        )
        .then_some(inner.state_version)
    }

    /// Waits until `check` finds something in the slot.
    async fn wait<T>(&self, mut check: impl FnMut(&Inner<C>) -> Option<T>) -> T {
        wait_until(&self.changed, || check(&self.lock())).await
    }
}

impl<C: Clone> Slot<C> {
    /// The current connection, if any.
    pub(crate) fn current(&self) -> Option<C> {
        self.lock().current.clone()
    }

    /// The current connection, the closed state, the fail-fast error, or else registers
    /// `waker` to be woken at the next change.
    pub(crate) fn lookup(&self, id: u64, waker: &Waker) -> Lookup<C> {
        let mut inner = self.lock();
        if inner.closed {
            Lookup::Closed
        } else if let Some(conn) = &inner.current {
            Lookup::Current(inner.generation, conn.clone())
        } else if let Some(error) = &inner.failing {
            Lookup::Failing(error.clone())
        } else {
            inner.wakers.register(id, waker);
            Lookup::Registered(inner.generation)
        }
    }

    /// Makes `conn` current and publishes `Connected`, unless closing began. Returns its
    /// generation. Should it die, the next round begins at `next_round_at`.
    pub(crate) fn set_current(&self, conn: &C, next_round_at: Instant) -> Option<u64> {
        self.change(|inner, effects| {
            if inner.closed {
                return None;
            }
            inner.next_round_at = Some(next_round_at);
            inner.current = Some(conn.clone());
            inner.failing = None;
            inner.record_outcome(Ok(conn.clone()));
            inner.bump(&self.generation, effects);
            inner.set_state(State::Connected, effects);
            Some(inner.generation)
        })
    }

    /// Resolves with the first attempt outcome after `seen` outcomes, or `None` once closed.
    pub(crate) async fn outcome_after(&self, seen: u64) -> Option<Outcome<C>> {
        self.wait(|inner| {
            if inner.closed {
                return Some(None);
            }
            inner.outcome_after(seen).map(Some)
        })
        .await
    }
}

impl<C: Closable + Clone> Slot<C> {
    /// Whether closing began, and else the current connection if it is live. Also returns how
    /// many attempts have finished.
    pub(crate) fn live(&self) -> Option<(Live<C>, u64)> {
        let inner = self.lock();
        if inner.closed {
            return None;
        }
        Some((inner.live(), inner.outcomes))
    }

    /// Resolves with the first live connection, or `None` once closed. A current connection
    /// whose `is_closed` panics is passed to `panicked`, and one that is closed to `closing`
    /// (once, outside the lock).
    pub(crate) async fn live_connection(
        &self,
        mut panicked: impl FnMut(u64),
        mut closing: impl FnMut(u64),
    ) -> Option<C> {
        let mut reported = None;
        loop {
            let found = self
                .wait(|inner| {
                    if inner.closed {
                        return Some(None);
                    }
                    match inner.live() {
                        Live::No => None,
                        Live::Closing(generation) if reported == Some(generation) => None,
                        live => Some(Some(live)),
                    }
                })
                .await;
            match found? {
                Live::Yes(conn) => return Some(conn),
                Live::Panicked(generation) => panicked(generation),
                Live::Closing(generation) => {
                    reported = Some(generation);
                    closing(generation);
                }
                Live::No => unreachable!("waited for"),
            }
        }
    }
}

/// What a change asks for once the lock is released.
#[derive(Default)]
struct Effects {
    notify: bool,
    /// The wakers of a change of generation.
    wakers: Option<Wakers>,
}

impl<C> Inner<C> {
    /// Moves to the next generation.
    fn bump(&mut self, shared: &AtomicU64, effects: &mut Effects) {
        self.generation += 1;
        shared.store(self.generation, Ordering::Release);
        self.hand_wakers(effects);
        effects.notify = true;
    }

    /// Hands every registered waker to `effects`, to be woken once the lock is released.
    fn hand_wakers(&mut self, effects: &mut Effects) {
        effects.wakers = Some(Wakers(std::mem::take(&mut self.wakers)));
    }

    fn set_state(&mut self, state: State, effects: &mut Effects) {
        self.state = state;
        self.state_version += 1;
        effects.notify = true;
    }

    fn record_outcome(&mut self, outcome: Outcome<C>) {
        self.outcomes += 1;
        self.recent[(self.outcomes % RECENT_OUTCOMES as u64) as usize] =
            Some((self.outcomes, Some(outcome)));
    }

    /// Forgets the connections of the recent outcomes.
    fn forget_connections(&mut self) {
        for (_, outcome) in self.recent.iter_mut().flatten() {
            if matches!(outcome, Some(Ok(_))) {
                *outcome = None;
            }
        }
    }
}

impl<C: Clone> Inner<C> {
    /// The outcome of the first attempt to finish after `seen` attempts had finished: `None`
    /// while there is none yet. If that attempt's connection is already gone, the outcome of the
    /// attempt after it; if it is no longer kept, the oldest kept.
    fn outcome_after(&self, seen: u64) -> Option<Outcome<C>> {
        let oldest_kept = self.outcomes.saturating_sub(RECENT_OUTCOMES as u64 - 1);
        let mut wanted = (seen + 1).max(oldest_kept);
        while wanted <= self.outcomes {
            match &self.recent[(wanted % RECENT_OUTCOMES as u64) as usize] {
                Some((n, Some(outcome))) if *n == wanted => return Some(outcome.clone()),
                // Its connection died already: the next attempt's outcome.
                _ => wanted += 1,
            }
        }
        None
    }
}

impl<C: Closable + Clone> Inner<C> {
    fn live(&self) -> Live<C> {
        let Some(conn) = &self.current else {
            return Live::No;
        };
        match catch_unwind(AssertUnwindSafe(|| conn.is_closed())) {
            Ok(false) => Live::Yes(conn.clone()),
            Ok(true) => Live::Closing(self.generation),
            Err(_) => Live::Panicked(self.generation),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::counting;

    #[derive(Clone, Debug, PartialEq)]
    struct Conn(u32);

    impl Closable for Conn {
        async fn close(&self) {}
        fn is_closed(&self) -> bool {
            false
        }
        async fn close_finished(&self) {}
    }

    fn error(text: &'static str) -> ConnectError {
        ConnectError::connect(text.into())
    }

    // The state says Connected exactly while a connection is current, in the same step; the
    // atomic generation moves with every change of the current connection.
    #[test]
    fn state_and_generation_move_with_the_current_connection() {
        let slot = Slot::new();
        assert!(slot.current().is_none());
        assert!(matches!(slot.state(), State::Connecting { .. }));
        let generation = slot.set_current(&Conn(1), Instant::now()).unwrap();
        assert_eq!(slot.generation(), generation);
        assert_eq!(slot.current(), Some(Conn(1)));
        assert!(slot.state().is_connected());
        assert!(slot.is_current(generation));

        assert!(slot.clear_current(generation, None, None));
        assert!(slot.current().is_none());
        assert!(!slot.state().is_connected());
        assert!(!slot.is_current(generation));
        assert_eq!(slot.generation(), generation + 1);
        // Clearing the same generation again changes nothing.
        assert!(!slot.clear_current(generation, None, None));
        assert_eq!(slot.generation(), generation + 1);
    }

    // Closing empties the slot for good: nothing becomes current after it, lookups say Closed,
    // the deadline is the first close's.
    #[test]
    fn closing_is_final() {
        let slot = Slot::new();
        slot.set_current(&Conn(1), Instant::now()).unwrap();
        let at = Instant::now();
        assert!(slot.begin_close(|| at));
        assert!(!slot.begin_close(|| panic!("asked once")));
        assert_eq!(slot.close_deadline(), Some(at));
        assert!(slot.current().is_none());
        assert!(slot.state().is_closed());
        assert!(slot.set_current(&Conn(2), Instant::now()).is_none());
        assert!(slot.current().is_none());
        let (_, waker) = counting();
        assert!(matches!(slot.lookup(0, &waker), Lookup::Closed));
        slot.set_state(State::Connected);
        assert!(slot.state().is_closed(), "no state after Closed");
    }

    // A registered waker is woken once when the generation moves, and is then forgotten; a
    // waker registered for a past generation is refused.
    #[test]
    fn wakers_are_woken_once_per_change() {
        let slot = Slot::new();
        let (count, waker) = counting();
        let Lookup::Registered(generation) = slot.lookup(7, &waker) else {
            panic!("nothing current: registered");
        };
        // Registering again replaces, it does not add.
        slot.lookup(7, &waker);
        slot.set_current(&Conn(1), Instant::now());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        slot.set_state(State::Connected);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "a state alone wakes no handle"
        );
        assert!(!slot.watch_generation(7, generation, &waker));
        assert!(slot.watch_generation(7, generation + 1, &waker));
        slot.remove_waker(7);
        slot.clear_current(generation + 1, None, None);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "removed");
    }

    /// A waker that writes its id into `log` when woken.
    fn logging(id: u64, log: &Arc<Mutex<Vec<u64>>>) -> Waker {
        struct Logging(u64, Arc<Mutex<Vec<u64>>>);
        impl std::task::Wake for Logging {
            fn wake(self: Arc<Self>) {
                self.1.lock().unwrap().push(self.0);
            }
        }
        Waker::from(Arc::new(Logging(id, log.clone())))
    }

    // Waiting handles are woken in the order they began to wait: one that registers again keeps
    // its place, one that left is skipped; the places of many that left are taken back, in
    // order, rather than the queue growing.
    #[test]
    fn wakers_are_woken_in_the_order_the_handles_began_to_wait() {
        let slot = Slot::<Conn>::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        for id in [5, 3, 9, 1] {
            slot.lookup(id, &logging(id, &log));
        }
        slot.lookup(3, &logging(3, &log));
        slot.remove_waker(9);
        assert_eq!(slot.waker_count(), 3);
        slot.set_current(&Conn(1), Instant::now());
        assert_eq!(*log.lock().unwrap(), [5, 3, 1]);
        assert_eq!(slot.waker_count(), 0);

        // A thousand come, most leave, more come: the queue keeps no more room than twice
        // those waiting (and its first growth), and their order.
        let generation = slot.set_current(&Conn(2), Instant::now()).unwrap();
        slot.clear_current(generation, None, None);
        log.lock().unwrap().clear();
        for id in 100..1100 {
            slot.lookup(id, &logging(id, &log));
            if id % 10 != 0 {
                slot.remove_waker(id);
            }
        }
        let room = slot.lock().wakers.order.len();
        assert!(room <= 2 * 100 + 1, "{room}");
        slot.set_current(&Conn(3), Instant::now());
        let expected: Vec<u64> = (100..1100).filter(|id| id % 10 == 0).collect();
        assert_eq!(*log.lock().unwrap(), expected);
    }

    // A handle that found the current connection dead and clears it is not woken by its own
    // report; the other handles waiting on it are.
    #[test]
    fn the_handle_that_found_the_connection_dead_is_not_woken_by_it() {
        let slot = Slot::new();
        let generation = slot.set_current(&Conn(1), Instant::now()).unwrap();
        let (finder, finder_waker) = counting();
        let (other, other_waker) = counting();
        assert!(slot.watch_generation(1, generation, &finder_waker));
        assert!(slot.watch_generation(2, generation, &other_waker));
        assert!(slot.clear_current(generation, None, Some(1)));
        assert_eq!(
            finder.0.load(Ordering::SeqCst),
            0,
            "the finder is polling already"
        );
        assert_eq!(other.0.load(Ordering::SeqCst), 1);
        assert!(slot.current().is_none());
        assert!(!slot.is_current(generation));
        assert!(
            !slot.clear_current(generation, None, Some(2)),
            "cleared once: a second report changes nothing"
        );
        assert_eq!(other.0.load(Ordering::SeqCst), 1);
    }

    // With fail-fast, a failed attempt wakes the waiting handles and lookups fail fast until a
    // new round or a connection.
    #[test]
    fn fail_fast_is_a_round_long() {
        let slot = Slot::<Conn>::new();
        let (count, waker) = counting();
        slot.lookup(1, &waker);
        slot.attempt_failed(&error("down"), true, State::Closed);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(slot.lookup(1, &waker), Lookup::Failing(_)));
        slot.begin_round();
        assert!(matches!(slot.lookup(1, &waker), Lookup::Registered(_)));
        slot.attempt_failed(&error("down"), false, State::Closed);
        assert!(matches!(slot.lookup(1, &waker), Lookup::Registered(_)));
    }

    // Outcomes are handed out in order from the one after `seen`; a connection that stopped
    // being current is skipped; one too old falls back to the oldest kept.
    #[test]
    fn outcomes_in_order() {
        let slot = Slot::new();
        let connecting = State::Connecting {
            attempt: 0,
            next_attempt_at: None,
            last_error: None,
        };
        let (_, seen) = slot.live().unwrap();
        slot.attempt_failed(&error("a"), false, connecting.clone());
        let generation = slot.set_current(&Conn(1), Instant::now()).unwrap();
        let inner = slot.lock();
        assert_eq!(
            inner.outcome_after(seen).unwrap().unwrap_err().text(),
            "connect failed: a"
        );
        assert_eq!(inner.outcome_after(seen + 1).unwrap().unwrap(), Conn(1));
        assert!(inner.outcome_after(seen + 2).is_none());
        drop(inner);
        slot.clear_current(generation, None, None);
        assert!(
            slot.lock().outcome_after(seen + 1).is_none(),
            "dead: skipped"
        );
        for text in ["b", "c", "d", "e", "f"] {
            slot.attempt_failed(&error(text), false, connecting.clone());
        }
        // Seen long ago: the oldest kept (two are).
        assert_eq!(
            slot.lock().outcome_after(seen).unwrap().unwrap_err().text(),
            "connect failed: e"
        );
    }

    // Waiters registered before a change are woken by it; a waiter for the finish only by the
    // finish.
    #[tokio::test]
    async fn waiters_see_changes() {
        let slot = Arc::new(Slot::<Conn>::new());
        let version = slot.state_version();
        let state = tokio::spawn({
            let slot = slot.clone();
            async move { slot.state_after(version).await }
        });
        let finished = tokio::spawn({
            let slot = slot.clone();
            async move { slot.finished().await }
        });
        let outcome = tokio::spawn({
            let slot = slot.clone();
            async move { slot.outcome_after(0).await }
        });
        tokio::task::yield_now().await;
        slot.set_current(&Conn(3), Instant::now());
        assert!(state.await.unwrap().is_connected());
        assert_eq!(outcome.await.unwrap().unwrap().unwrap(), Conn(3));
        assert!(!finished.is_finished());
        slot.begin_close(Instant::now);
        slot.finish();
        finished.await.unwrap();
    }
}
