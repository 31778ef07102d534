//! Waiting for a condition behind a `Notify`, and a one-shot signal built on it: set once,
//! checked with one atomic load, awaited by any number of tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

    /// `is_set` in the single total order of sequentially consistent operations, for a
    /// check against another atomic that the setter reads after setting (each side then
    /// sees the other's write, or the other sees its own).
    #[inline]
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

    /// See [`Flag::is_set_seqcst`].
    #[inline]
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
/// The waiter is registered before each check, so that a change made (and notified with
/// `notify_waiters`) between the check and the wait is not missed. A dropped waiter leaves
/// nothing behind.
pub(crate) async fn wait_until<T>(notify: &Notify, mut check: impl FnMut() -> Option<T>) -> T {
    loop {
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

    use super::{Flag, Signal};
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
