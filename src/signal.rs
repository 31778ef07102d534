//! Waiting for a condition behind a `Notify`, and a one-shot signal built on it: set once,
//! checked with one atomic load, awaited by any number of tasks. And a [`Bell`], the lighter
//! signal that one task (the driver) waits for.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A one-shot flag, embedded where it is shared.
#[derive(Debug, Default)]
pub(crate) struct Flag {
    set: AtomicBool,
    notify: Notify,
}

impl Flag {
    /// Sets the flag and wakes every waiter. Returns true for the call that set it.
    pub(crate) fn set(&self) -> bool {
        // Sequentially consistent: see `is_set_seqcst`.
        let first = !self.set.swap(true, Ordering::SeqCst);
        if first {
            self.notify.notify_waiters();
        }
        first
    }

    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// `is_set` for a check that reads nothing published with the flag (a ready path's test):
    /// a set that happens before the load is seen all the same, and the compiler may keep what
    /// it read before the load (an acquire load is a load more per check on such a path).
    #[inline]
    pub(crate) fn is_set_relaxed(&self) -> bool {
        self.set.load(Ordering::Relaxed)
    }

    /// `is_set` in the single total order of sequentially consistent operations, for a
    /// check against another atomic that the setter reads after setting (each side then
    /// sees the other's write, or the other sees its own).
    #[inline]
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))]
    pub(crate) fn is_set_seqcst(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Resolves once the flag is set.
    pub(crate) fn wait(&self) -> FlagWait<'_> {
        FlagWait {
            flag: self,
            notified: self.notify.notified(),
            registered: None,
        }
    }
}

pin_project! {
    /// [`Flag::wait`]'s future. Polled again with the waker it registered last (a driver's
    /// `select!` polls its stop signal at every wake-up), it only loads the flag: each poll of
    /// the `Notified` under it takes the `Notify`'s lock.
    pub(crate) struct FlagWait<'a> {
        flag: &'a Flag,
        // Made with the future, before the flag is first checked: a `set` after that check
        // notifies it even before it is polled.
        #[pin]
        notified: Notified<'a>,
        registered: Option<Waker>,
    }
}

impl Future for FlagWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // Twice at most: a `Notified` resolves only after the flag was set (`set` notifies
        // after setting), and each new one is made before the flag is checked again.
        loop {
            if this.flag.is_set() {
                return Poll::Ready(());
            }
            if !waker_changed(this.registered, cx.waker()) {
                return Poll::Pending;
            }
            match this.notified.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    *this.registered = None;
                    this.notified.set(this.flag.notify.notified());
                }
            }
        }
    }
}

/// Whether `waker` is not the one in `registered` (none yet, or another task's); if so, it
/// becomes the one there. For a waiter that registers with what it waits on only when the
/// waker changes.
pub(crate) fn waker_changed(registered: &mut Option<Waker>, waker: &Waker) -> bool {
    if registered.as_ref().is_some_and(|w| w.will_wake(waker)) {
        return false;
    }
    *registered = Some(waker.clone());
    true
}

/// A flag that one task waits for (the driver: its stop signal, the reports of a dead
/// connection): setting it wakes the waker that task registered last. Lighter than a [`Flag`]
/// for its waiter: polled again with the waker it registered, a wait only loads the flag and
/// compares the waker with the one registered (no lock, no list of waiters). For one waiting
/// task: a second task waiting on the same bell would take the first one's place.
///
/// The waker stays registered when it is woken (until it is replaced, or [`Self::forget`]
/// drops it): a waker taken away by one ring, while its task cleared the flag of an earlier
/// one, would leave the next ring with nobody to wake.
#[derive(Debug, Default)]
pub(crate) struct Bell {
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// Which waker is registered (its data and vtable pointers; zero for none), written under
    /// the lock: the waiting task, the only one to register, compares its own with them.
    registered: [AtomicUsize; 2],
}

impl Bell {
    /// Sets the flag and wakes the waiting task. Returns true for the call that set it.
    pub(crate) fn ring(&self) -> bool {
        // Sequentially consistent, as `Flag::set`.
        let first = !self.set.swap(true, Ordering::SeqCst);
        // Set before the wake-up, and the waker read under the lock it is registered under:
        // a task that registered, then found the flag clear, is woken. Woken once the lock is
        // released (an executor may poll the task within `wake`).
        let waker = self.lock().clone();
        if let Some(waker) = waker {
            waker.wake();
        }
        first
    }

    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// See [`Flag::is_set_relaxed`].
    #[inline]
    pub(crate) fn is_set_relaxed(&self) -> bool {
        self.set.load(Ordering::Relaxed)
    }

    /// Ready once the flag is set; the flag stays set.
    pub(crate) fn poll_set(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_set() || (self.register(cx.waker()) && self.is_set()) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Ready once the flag is set, which it clears: for a bell rung again and again, every ring
    /// since the last take is taken at once.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.take() || (self.register(cx.waker()) && self.take()) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Registers `waker` unless it is the one registered already; true if it was not (the
    /// flag is then to be checked again: a `ring` before the registration is seen now).
    fn register(&self, waker: &Waker) -> bool {
        let polled = identity(waker);
        // Only the waiting task registers: if its waker is the one there, it stays there.
        if self.registered[0].load(Ordering::Relaxed) == polled[0]
            && self.registered[1].load(Ordering::Relaxed) == polled[1]
        {
            return false;
        }
        // The identity kept is the registered clone's: alive in the bell, no other waker can
        // have it unless it wakes the same task (the borrowed waker's own may be reused once
        // that waker is gone, and a clone need not share it).
        let waker = waker.clone();
        let kept = identity(&waker);
        let mut registered = self.lock();
        let replaced = registered.replace(waker);
        self.registered[0].store(kept[0], Ordering::Relaxed);
        self.registered[1].store(kept[1], Ordering::Relaxed);
        drop(registered);
        drop(replaced);
        // The lock, released, orders the registration before the flag's check that follows.
        true
    }

    /// Clears the flag; true if it was set.
    fn take(&self) -> bool {
        // A plain load first: the read-modify-write only when there is something to take.
        self.set.load(Ordering::Acquire) && self.set.swap(false, Ordering::AcqRel)
    }

    /// Resolves once the flag is set (see [`Self::poll_set`]).
    pub(crate) fn wait(&self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_set(cx))
    }

    /// Resolves once the flag is set, and clears it (see [`Self::poll_take`]).
    pub(crate) fn taken(&self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_take(cx))
    }

    /// Drops the registered waker (the waiting task is gone: its waker would keep the task's
    /// memory alive as long as the bell).
    pub(crate) fn forget(&self) {
        let mut registered = self.lock();
        self.registered[0].store(0, Ordering::Relaxed);
        self.registered[1].store(0, Ordering::Relaxed);
        let forgotten = registered.take();
        drop(registered);
        drop(forgotten);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A waker's identity, as `Waker::will_wake` compares them: its data and vtable pointers.
fn identity(waker: &Waker) -> [usize; 2] {
    [
        waker.data() as usize,
        std::ptr::from_ref(waker.vtable()) as usize,
    ]
}

/// A [`Flag`] of its own: cloneable, all clones share one flag.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signal(Arc<Flag>);

impl Signal {
    /// Sets the signal and wakes every waiter. Returns true for the call that set it.
    pub(crate) fn set(&self) -> bool {
        self.0.set()
    }

    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_set()
    }

    /// See [`Flag::is_set_relaxed`].
    #[inline]
    pub(crate) fn is_set_relaxed(&self) -> bool {
        self.0.is_set_relaxed()
    }

    /// See [`Flag::is_set_seqcst`].
    #[inline]
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))]
    pub(crate) fn is_set_seqcst(&self) -> bool {
        self.0.is_set_seqcst()
    }

    /// Resolves once the signal is set; borrows nothing.
    pub(crate) fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let this = self.0.clone();
        async move { this.wait().await }
    }
}

/// Resolves with what `check` finds, checking again each time `notify` wakes its waiters.
///
/// A check that finds something registers nothing. Otherwise the waiter is registered and
/// `check` runs again before the wait, so that a change made (and notified with
/// `notify_waiters`) between the first check and the wait is not missed. Woken, the waiter
/// checks first: a change that answers it (a new connection, for 10,000 waiters at once) costs
/// no registration, nor its removal, in the `Notify`'s list, which the notifier holds locked
/// while it wakes them. A dropped waiter leaves nothing behind.
pub(crate) async fn wait_until<T>(notify: &Notify, mut check: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(found) = check() {
            return found;
        }
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(found) = check() {
            return found;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Poll};

    use super::{Bell, Flag, Signal};
    use crate::testing::counting;

    // A wait polled again with the waker it registered stays registered; polled with another
    // waker, it wakes that one; set between polls, it resolves at its next poll; set before it
    // is first polled, it resolves at once.
    #[test]
    fn a_wait_wakes_the_waker_it_was_polled_with_last() {
        let flag = Flag::default();
        let (a, wa) = counting();
        let (b, wb) = counting();
        let mut wait = pin!(flag.wait());
        for _ in 0..3 {
            assert!(
                wait.as_mut()
                    .poll(&mut Context::from_waker(&wa))
                    .is_pending()
            );
        }
        assert!(
            wait.as_mut()
                .poll(&mut Context::from_waker(&wb))
                .is_pending()
        );
        assert!(flag.set());
        assert_eq!(a.0.load(Ordering::SeqCst), 0, "a is no longer registered");
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert!(wait.as_mut().poll(&mut Context::from_waker(&wb)).is_ready());

        let flag = Flag::default();
        let mut early = pin!(flag.wait());
        flag.set();
        assert_eq!(
            early.as_mut().poll(&mut Context::from_waker(&wa)),
            Poll::Ready(())
        );
    }

    // A bell's waker stays registered when woken: a waiter that took one ring and polls again
    // with the same waker (which it then does not register again) is woken by the next ring;
    // polled with another waker, that one replaces it.
    #[test]
    fn a_bell_wakes_its_waiter_at_every_ring() {
        let bell = Bell::default();
        let (a, wa) = counting();
        let (b, wb) = counting();
        let mut cx = Context::from_waker(&wa);
        assert!(bell.poll_take(&mut cx).is_pending());
        for ring in 1..=3 {
            assert!(bell.ring());
            assert_eq!(a.0.load(Ordering::SeqCst), ring);
            assert!(bell.poll_take(&mut cx).is_ready());
            assert!(bell.poll_take(&mut cx).is_pending());
        }
        // Rung twice before a take: one take.
        bell.ring();
        assert!(!bell.ring());
        assert!(bell.poll_take(&mut cx).is_ready());
        assert!(bell.poll_take(&mut cx).is_pending());

        let mut cx = Context::from_waker(&wb);
        assert!(bell.poll_take(&mut cx).is_pending());
        bell.ring();
        assert_eq!(a.0.load(Ordering::SeqCst), 5, "a is no longer registered");
        assert_eq!(b.0.load(Ordering::SeqCst), 1);

        // Forgotten: no one to wake.
        bell.forget();
        assert!(bell.poll_take(&mut cx).is_ready());
        bell.ring();
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
    }

    // A bell's set flag stays set: `poll_set` is ready at once after a ring, before or after
    // it registered.
    #[test]
    fn a_set_bell_stays_set() {
        let bell = Bell::default();
        let (a, wa) = counting();
        let mut cx = Context::from_waker(&wa);
        assert!(bell.poll_set(&mut cx).is_pending());
        assert!(!bell.is_set());
        assert!(bell.ring());
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        for _ in 0..2 {
            assert!(bell.poll_set(&mut cx).is_ready());
        }
        assert!(bell.is_set());
    }

    // A waiter started before the signal is set resolves when it is; one started after resolves
    // at once; only the first `set` reports setting it.
    #[tokio::test]
    async fn set_wakes_waiters() {
        let signal = Signal::default();
        let early = tokio::spawn(signal.wait());
        tokio::task::yield_now().await;
        assert!(!signal.is_set());
        assert!(signal.set());
        assert!(!signal.set());
        early.await.unwrap();
        signal.wait().await;
        assert!(signal.is_set());
    }
}
