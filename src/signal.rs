//! Waiting for a condition behind a `Notify`, and a one-shot signal built on it: set once,
//! checked with one atomic load, awaited by any number of tasks.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

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
    pub(crate) async fn wait(&self) {
        wait_until(&self.notify, || self.is_set().then_some(())).await
    }
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
    use super::Signal;

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
