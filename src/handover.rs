//! What a connector polled by a persistent connection's driver hands over to that driver
//! instead of asking the runtime for it: its connection's task, which the driver then polls
//! while the connection is current, and its deadline, which the driver's attempt timer then
//! keeps.
//!
//! Each saves a wake-up of another thread per connect on tokio's multi-threaded runtime: a
//! task that the connector spawns is pushed out of the worker's next-task slot by the request
//! that the driver wakes next, and a timer armed anew, with no sooner one pending, wakes the
//! thread that waits on the runtime's timers. The driver's own timer is kept from one attempt
//! to the next, so that arming it for a later deadline only moves it.
//!
//! The driver opens a [`Scope`] around each poll of the connect ([`within`]); a connector
//! polled outside any (on its own, or in a task of its own) spawns and times as usual.

use std::any::Any;
use std::cell::RefCell;
use std::pin::Pin;

use tokio::time::Instant;

/// A connection's own task: the future that drives it until it ends.
pub(crate) type ConnTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A connection's task handed over, with what tells whose it is.
pub(crate) struct HandedOver {
    pub(crate) task: ConnTask,
    /// The connection's identity, as `owner_of` gives it.
    owner: usize,
    /// The identity of a connection of the type that made the task; `None` for another type.
    owner_of: fn(&dyn Any) -> Option<usize>,
}

impl HandedOver {
    /// Whether this is `conn`'s own task.
    pub(crate) fn belongs_to(&self, conn: &dyn Any) -> bool {
        (self.owner_of)(conn) == Some(self.owner)
    }
}

/// What connectors handed over while the driver polled one attempt's connect.
#[derive(Default)]
pub(crate) struct Scope {
    pub(crate) tasks: Vec<HandedOver>,
    /// The soonest deadline a connector asked the driver to keep.
    pub(crate) deadline: Option<Instant>,
}

thread_local! {
    /// The scope of the connect that a driver is polling on this thread, if one is.
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `poll` (one poll of a connect) with hand-overs going to `scope`.
pub(crate) fn within<R>(scope: &mut Scope, poll: impl FnOnce() -> R) -> R {
    /// Puts the outer scope back, and what was handed over into `scope`, even on a panic.
    struct Restore<'a> {
        scope: &'a mut Scope,
        outer: Option<Scope>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let outer = self.outer.take();
            if let Some(inner) = SCOPE.with_borrow_mut(|s| std::mem::replace(s, outer)) {
                *self.scope = inner;
            }
        }
    }
    let outer = SCOPE.with_borrow_mut(|s| s.replace(std::mem::take(scope)));
    let _restore = Restore { scope, outer };
    poll()
}

/// Spawns a connection's `task` on the current runtime, or hands it over to the driver polling
/// the connect that made it (`None`, then). `owner` is the connection's identity, as
/// `owner_of` gives it for a connection of its type.
#[cfg_attr(not(feature = "hyper"), allow(dead_code))]
pub(crate) fn spawn_or_hand_over(
    task: ConnTask,
    owner: usize,
    owner_of: fn(&dyn Any) -> Option<usize>,
) -> Option<tokio::task::AbortHandle> {
    let task = SCOPE.with_borrow_mut(|scope| match scope {
        Some(scope) => {
            scope.tasks.push(HandedOver {
                task,
                owner,
                owner_of,
            });
            None
        }
        None => Some(task),
    });
    task.map(|task| tokio::spawn(task).abort_handle())
}

/// Asks the driver polling the connect, if one is, to keep `deadline`. True if one does: the
/// connector then needs no timer of its own, but polled at or after `deadline` it must end
/// (with its own error), as its own timer would have ended it.
#[cfg_attr(not(feature = "hyper"), allow(dead_code))]
pub(crate) fn keep_deadline(deadline: Instant) -> bool {
    SCOPE.with_borrow_mut(|scope| match scope {
        Some(scope) => {
            scope.deadline = Some(scope.deadline.map_or(deadline, |d| d.min(deadline)));
            true
        }
        None => false,
    })
}

/// Spawns `task` on the current runtime; with none, drops it (which ends it).
pub(crate) fn spawn(task: ConnTask) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}
