//! What a connector polled by a persistent connection's driver hands over to that driver
//! instead of asking the runtime for it: its connection's task, which the driver then polls
//! while the connection is current, and its deadline, which the driver's attempt timer then
//! keeps.
//!
//! Each saves a wake-up of another thread per connect on tokio's multi-threaded runtime: a
//! task that the connector spawns is pushed out of the worker's next-task slot by the request
//! that the driver wakes next, and a timer armed anew, with no sooner one pending, wakes the
//! thread that waits on the runtime's timers (the driver arms one for the attempt anyway).
//!
//! The driver opens a [`Scope`] around each poll of the connect ([`within`]). Only a connector
//! polled by the driver itself, with the driver's own waker, hands over: one polled under
//! another waker (a `FuturesUnordered` of connects, an executor of its own such as
//! `Handle::block_on` under `block_in_place`, a task of its own) spawns and times as usual, for
//! the driver would not be the one to poll it again. While the connect is under way the driver
//! polls the tasks handed over (a connector may use a connection before it returns one) and
//! polls the connect again at each deadline kept (the connector then ends, with its own error).
//! Once the attempt is over, whatever the driver does not adopt is spawned.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

/// A connection's own task: the future that drives it until it ends.
pub(crate) type ConnTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A connection's task handed over, with what tells whose it is.
struct HandedOver {
    task: ConnTask,
    /// The connection's identity, as `owner_of` gives it.
    owner: usize,
    /// The identity of a connection of the type that made the task; `None` for another type.
    owner_of: fn(&dyn Any) -> Option<usize>,
}

impl HandedOver {
    /// Whether this is `conn`'s own task.
    fn belongs_to(&self, conn: &dyn Any) -> bool {
        (self.owner_of)(conn) == Some(self.owner)
    }
}

/// What connectors handed over while the driver polled one attempt's connect.
#[derive(Default)]
pub(crate) struct Scope {
    tasks: Vec<HandedOver>,
    /// The deadlines that connectors asked the driver to keep.
    deadlines: Vec<Instant>,
    /// The waker the driver polls the connect with (set by [`within`]).
    waker: Option<Waker>,
}

/// How many deadlines one attempt keeps at most; a connector asking for more keeps its own.
pub(crate) const MAX_DEADLINES: usize = 16;

impl Scope {
    /// Polls the tasks handed over, and drops those that ended (a panic ends a task, as it
    /// would a spawned one).
    pub(crate) fn poll_tasks(&mut self, cx: &mut Context<'_>) {
        self.tasks
            .retain_mut(|handed| poll_task(&mut handed.task, cx).is_pending());
    }

    /// The attempt made `made` (if it made a connection the driver may keep the task of): its
    /// task, if handed over, to adopt; the others are spawned.
    pub(crate) fn adopt<C: 'static>(&mut self, made: Option<&C>) -> Adopted {
        let mut adopted = Adopted(None);
        for handed in self.tasks.drain(..) {
            match made {
                Some(conn) if adopted.0.is_none() && handed.belongs_to(conn as &dyn Any) => {
                    adopted.0 = Some(handed.task)
                }
                _ => spawn(handed.task),
            }
        }
        adopted
    }

    /// Forgets the deadlines that are `now` or earlier (the connectors that asked for them end
    /// when polled); false if there were none.
    pub(crate) fn forget_due(&mut self, now: Instant) -> bool {
        let before = self.deadlines.len();
        self.deadlines.retain(|deadline| *deadline > now);
        self.deadlines.len() != before
    }

    /// The soonest deadline kept.
    pub(crate) fn soonest(&self) -> Option<Instant> {
        self.deadlines.iter().min().copied()
    }

    /// Whether a connector polled with `waker` is polled by the driver itself.
    fn polled_by_driver(&self, waker: &Waker) -> bool {
        self.waker.as_ref().is_some_and(|w| w.will_wake(waker))
    }
}

/// The attempt is over: the tasks left are spawned.
impl Drop for Scope {
    fn drop(&mut self) {
        for handed in self.tasks.drain(..) {
            spawn(handed.task);
        }
    }
}

thread_local! {
    /// The scope of the connect that a driver is polling on this thread, if one is.
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `poll` (one poll of a connect, with `cx`) with hand-overs going to `scope`.
pub(crate) fn within<R>(
    scope: &mut Scope,
    cx: &mut Context<'_>,
    poll: impl FnOnce(&mut Context<'_>) -> R,
) -> R {
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
    if !scope.polled_by_driver(cx.waker()) {
        scope.waker = Some(cx.waker().clone());
    }
    let outer = SCOPE.with_borrow_mut(|s| s.replace(std::mem::take(scope)));
    let _restore = Restore { scope, outer };
    poll(cx)
}

/// Spawns a connection's `task` on the current runtime, or hands it over to the driver polling
/// the connect that made it, if it polls this future itself (`None`, then). `owner` is the
/// connection's identity, as `owner_of` gives it for a connection of its type.
#[cfg_attr(not(feature = "hyper"), allow(dead_code))]
pub(crate) async fn spawn_or_hand_over(
    task: ConnTask,
    owner: usize,
    owner_of: fn(&dyn Any) -> Option<usize>,
) -> Option<tokio::task::AbortHandle> {
    let mut task = Some(task);
    let task = std::future::poll_fn(|cx| {
        let task = task.take().expect("polled once");
        Poll::Ready(SCOPE.with_borrow_mut(|scope| match scope {
            Some(scope) if scope.polled_by_driver(cx.waker()) => {
                scope.tasks.push(HandedOver {
                    task,
                    owner,
                    owner_of,
                });
                None
            }
            _ => Some(task),
        }))
    })
    .await;
    task.map(|task| tokio::spawn(task).abort_handle())
}

/// Asks the driver polling the connect, if it polls it itself (with the driver's own `waker`),
/// to keep `deadline`. True if it does: the connector then needs no timer of its own, but
/// polled at or after `deadline` it must end (with its own error), as its own timer would have
/// ended it, and polled otherwise it must keep its deadline itself.
#[cfg_attr(not(feature = "hyper"), allow(dead_code))]
pub(crate) fn keep_deadline(deadline: Instant, waker: &Waker) -> bool {
    SCOPE.with_borrow_mut(|scope| {
        let Some(scope) = scope else {
            return false;
        };
        if !scope.polled_by_driver(waker) {
            return false;
        }
        if scope.deadlines.contains(&deadline) {
            return true;
        }
        if scope.deadlines.len() >= MAX_DEADLINES {
            return false;
        }
        scope.deadlines.push(deadline);
        true
    })
}

/// Polls `task`; a panic ends it, as it would end a spawned task.
pub(crate) fn poll_task(task: &mut ConnTask, cx: &mut Context<'_>) -> Poll<()> {
    catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))).unwrap_or(Poll::Ready(()))
}

/// The task of the current connection, adopted by the driver: polled by it while the
/// connection is current, and spawned if it has not ended when the driver stops watching the
/// connection (or is dropped).
#[derive(Default)]
pub(crate) struct Adopted(Option<ConnTask>);

impl Adopted {
    /// Spawns the task if it has not ended: no longer polled here.
    pub(crate) fn release(&mut self) {
        if let Some(task) = self.0.take() {
            spawn(task);
        }
    }

    /// Resolves when the task has ended, or at once if there is none.
    pub(crate) fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(task) = &mut self.0 else {
            return Poll::Ready(());
        };
        let ended = poll_task(task, cx);
        if ended.is_ready() {
            self.0 = None;
        }
        ended
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        self.release();
    }
}

/// Spawns `task` on the current runtime; with none, drops it (which ends it).
pub(crate) fn spawn(task: ConnTask) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}
