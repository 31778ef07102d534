//! The executor of an HTTP/2 connection's own futures: hyper's I/O task for the connection, a
//! future per request awaiting its response, a request body's pipe. They run inside the task
//! that drives hyper's connection (see `connection::drive`), not as tasks of their own.
//!
//! Over tokio's executor a request crosses hyper's dispatch, its I/O task and the response's
//! own task, each crossing a wake-up of a task and, on the multi-threaded runtime, often of a
//! parked thread: here they meet in one task, whose futures wake one another without waking
//! it (they are polled again in the same poll). Once hyper's connection has ended, what is
//! left (the I/O task finishing a graceful close, responses still on their way, request bodies
//! still being sent) is spawned, as tokio's executor would have run it: a connection's end
//! changes nothing of how they finish.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;

use super::connection::ConnDriver;
use crate::error::BoxError;
use crate::handover::{ConnTask, poll_task, spawn};

/// How many times one poll of the task polls its futures again, woken by one another, before
/// it yields to the runtime.
const MAX_ROUNDS: usize = 32;

/// How many futures the set holds (hyper's I/O task, responses awaited, request bodies) above
/// which requests that hyper's connection has just taken are not written at once: the task
/// yields to the runtime first, so that the requests other tasks send meanwhile go out in the
/// same write. Under load this writes about half as often, at less CPU per request; at most one
/// pass of the runtime's queue later. Below it, as with one request at a time, a request is
/// written in the poll that took it.
const GATHER_ABOVE: usize = 32;

/// The executor hyper's HTTP/2 connection is built with: futures go to the set of the task that
/// drives the connection (spawned on the current runtime once that one is gone).
#[derive(Clone)]
pub(super) struct LocalExec(Arc<Shared>);

struct Shared {
    /// Futures not yet taken by the set; `None` once the set is gone (futures are spawned).
    queue: Mutex<Option<Vec<ConnTask>>>,
    /// Whether `queue` holds any: the set looks under the lock only then.
    queued: AtomicBool,
    /// The thread polling the set (see [`this_thread`]), or 0.
    poller: AtomicUsize,
    /// Whether a future of the set (or hyper's connection) was woken by another, in this poll.
    woken: AtomicBool,
    /// The task that drives the connection.
    task: AtomicWaker,
}

thread_local! {
    static THREAD: u8 = const { 0 };
}

/// This thread, as an address: a thread's own static.
fn this_thread() -> usize {
    THREAD.with(|t| t as *const u8 as usize)
}

impl Shared {
    /// Whether this thread is polling the set: a wake-up or a future executed then is taken
    /// in the same poll (the task would otherwise wake itself, and be queued again).
    fn polled_here(&self) -> bool {
        self.poller.load(Ordering::SeqCst) == this_thread()
    }
}

/// A wake-up from outside (a request sent, the socket ready) wakes the task, through the
/// runtime as for any task: requests that come meanwhile go out together. One from inside,
/// as the task polls (hyper's I/O task waking a response's future), asks for one more round.
impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polled_here() {
            self.woken.store(true, Ordering::Relaxed);
        } else {
            self.task.wake();
        }
    }
}

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        let shared = &self.0;
        let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(queue) = queue.as_mut() else {
            drop(queue);
            spawn(Box::pin(future));
            return;
        };
        queue.push(Box::pin(future));
        shared.queued.store(true, Ordering::SeqCst);
        if !shared.polled_here() {
            shared.task.wake();
        }
    }
}

/// A future of hyper's; a panic ends it alone, as it would end a task.
struct Caught(ConnTask);

impl Future for Caught {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        poll_task(&mut self.0, cx)
    }
}

/// hyper's futures of one connection, polled by the task that drives it.
struct Local {
    shared: Arc<Shared>,
    /// The waker the futures are polled with.
    waker: Waker,
    set: FuturesUnordered<Caught>,
}

/// A new executor, and hyper's connection made with it (by `handshake`), driven with the
/// futures it executes.
pub(super) async fn with_local<F, E>(
    handshake: impl FnOnce(LocalExec) -> F,
) -> Result<(E, ConnDriver), hyper::Error>
where
    F: Future<Output = Result<(E, ConnFuture), hyper::Error>>,
{
    let shared = Arc::new(Shared {
        queue: Mutex::new(Some(Vec::new())),
        queued: AtomicBool::new(false),
        poller: AtomicUsize::new(0),
        woken: AtomicBool::new(false),
        task: AtomicWaker::new(),
    });
    let (sender, mut conn) = handshake(LocalExec(shared.clone())).await?;
    let mut local = Local {
        waker: Waker::from(shared.clone()),
        shared,
        set: FuturesUnordered::new(),
    };
    let driver: ConnDriver = Box::pin(async move {
        std::future::poll_fn(|cx| local.poll_with(&mut conn, cx))
            .await
            .map_err(BoxError::from)
    });
    Ok((sender, driver))
}

/// hyper's HTTP/2 connection, boxed.
pub(super) type ConnFuture = Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

impl Local {
    /// Polls `conn` (hyper's connection) and the futures of the set, until `conn` ends.
    fn poll_with(
        &mut self,
        conn: &mut ConnFuture,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), hyper::Error>> {
        let Local { shared, waker, set } = self;
        shared.task.register(cx.waker());
        let mut inner = Context::from_waker(waker);
        for _ in 0..MAX_ROUNDS {
            shared.woken.store(false, Ordering::Relaxed);
            shared.poller.store(this_thread(), Ordering::SeqCst);
            // The futures first: hyper's I/O task reads the end of the stream, if it has come,
            // before hyper's connection takes a request (which it then hands back unsent,
            // rather than failing it), as when the I/O task ran first as a task of its own.
            poll_set(shared, set, &mut inner);
            let woken_before = shared.woken.swap(false, Ordering::Relaxed);
            if let Poll::Ready(ended) = conn.as_mut().poll(&mut inner) {
                shared.poller.store(0, Ordering::SeqCst);
                return Poll::Ready(ended);
            }
            // hyper's connection woke a future (its I/O task, with requests to write) while
            // many are in flight: the requests of other tasks may gather first (see
            // `GATHER_ABOVE`); the next poll writes them all.
            if set.len() > GATHER_ABOVE && shared.woken.load(Ordering::Relaxed) {
                shared.poller.store(0, Ordering::SeqCst);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if woken_before {
                shared.woken.store(true, Ordering::Relaxed);
            }
            // Then what hyper's connection gave them (requests to write, responses to await).
            poll_set(shared, set, &mut inner);
            shared.poller.store(0, Ordering::SeqCst);
            if !shared.woken.load(Ordering::Relaxed) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls the futures of `set` that were woken, and those executed meanwhile.
fn poll_set(shared: &Shared, set: &mut FuturesUnordered<Caught>, cx: &mut Context<'_>) {
    loop {
        take_queued(shared, set);
        while let Poll::Ready(Some(())) = set.poll_next_unpin(cx) {}
        if !shared.queued.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Takes into `set` the futures executed since the last time.
fn take_queued(shared: &Shared, set: &mut FuturesUnordered<Caught>) {
    if !shared.queued.load(Ordering::SeqCst) {
        return;
    }
    let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
    shared.queued.store(false, Ordering::SeqCst);
    if let Some(queue) = queue.as_mut() {
        for future in queue.drain(..) {
            set.push(Caught(future));
        }
    }
}

/// Once hyper's connection is gone, its futures still running are spawned; and so are those
/// executed later.
impl Drop for Local {
    fn drop(&mut self) {
        let queued = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        for Caught(future) in std::mem::take(&mut self.set) {
            spawn(future);
        }
        for future in queued {
            spawn(future);
        }
    }
}
