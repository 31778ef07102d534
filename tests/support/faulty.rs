//! A connection whose `Closable` methods and `poll_ready` misbehave on demand, and its connector.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::CancellationToken;
use tower::Service;
use tower_persistent::Closable;

/// What a [`Faulty`] connection gets wrong.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// `close` starts closing but its future never resolves (a graceful close stuck on a peer).
    pub close_hangs: bool,
    /// `close` panics.
    pub close_panics: bool,
    /// `close_finished` never resolves, even once closed.
    pub close_finished_hangs: bool,
    /// `close_finished` panics when awaited.
    pub close_finished_panics: bool,
    /// `is_closed` panics.
    pub is_closed_panics: bool,
    /// `poll_ready` fails.
    pub ready_fails: bool,
    /// `poll_ready` is pending (woken when the connection begins closing by itself).
    pub ready_pending: bool,
    /// `closed_gracefully` answers true.
    pub graceful: bool,
}

/// A connection answering request `n` with `(id, n)`, with the faults it was made with (which
/// can be changed later).
#[derive(Clone, Debug)]
pub struct Faulty {
    pub id: usize,
    state: Arc<FaultyState>,
}

#[derive(Debug)]
struct FaultyState {
    faults: Mutex<Faults>,
    /// Cancelled when closing begins.
    closing: CancellationToken,
    /// Cancelled when closing finished.
    closed: CancellationToken,
    calls: AtomicUsize,
    /// Calls of `close`.
    closes: AtomicUsize,
    /// Calls of `abort`.
    aborts: AtomicUsize,
    /// The waker of the last pending `poll_ready`.
    waiting: Mutex<Option<Waker>>,
}

impl Faulty {
    pub fn new(id: usize, faults: Faults) -> Self {
        Faulty {
            id,
            state: Arc::new(FaultyState {
                faults: Mutex::new(faults),
                closing: CancellationToken::new(),
                closed: CancellationToken::new(),
                calls: AtomicUsize::new(0),
                closes: AtomicUsize::new(0),
                aborts: AtomicUsize::new(0),
                waiting: Mutex::new(None),
            }),
        }
    }

    pub fn faults(&self) -> Faults {
        *self.state.faults.lock().unwrap()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().unwrap() = faults;
    }

    /// The peer closes the connection: closing begins and finishes (unless `close_finished`
    /// hangs).
    pub fn close_by_peer(&self) {
        self.state.closing.cancel();
        self.state.closed.cancel();
    }

    /// The connection begins closing by itself (`is_closed` is true from now on) and never
    /// finishes by itself.
    pub fn begin_closing_by_itself(&self) {
        self.state.closing.cancel();
        if let Some(waker) = self.state.waiting.lock().unwrap().take() {
            waker.wake();
        }
    }

    /// How many times `close` was called.
    pub fn closes(&self) -> usize {
        self.state.closes.load(Ordering::SeqCst)
    }

    /// How many times `abort` was called (the persistent connection gave the connection up).
    pub fn aborts(&self) -> usize {
        self.state.aborts.load(Ordering::SeqCst)
    }

    /// Requests that reached this connection.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Whether closing began, read without the `is_closed` fault.
    pub fn closing_began(&self) -> bool {
        self.state.closing.is_cancelled()
    }
}

impl Closable for Faulty {
    fn close(&self) -> impl Future<Output = ()> + Send {
        let faults = self.faults();
        self.state.closes.fetch_add(1, Ordering::SeqCst);
        if faults.close_panics {
            panic!("close of connection {} panicked", self.id);
        }
        self.state.closing.cancel();
        let state = self.state.clone();
        async move {
            if faults.close_hangs {
                std::future::pending::<()>().await;
            }
            state.closed.cancel();
        }
    }

    fn is_closed(&self) -> bool {
        if self.faults().is_closed_panics {
            panic!("is_closed of connection {} panicked", self.id);
        }
        self.state.closing.is_cancelled()
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        let faults = self.faults();
        let closed = self.state.closed.clone();
        let id = self.id;
        async move {
            if faults.close_finished_panics {
                panic!("close_finished of connection {id} panicked");
            }
            if faults.close_finished_hangs {
                std::future::pending::<()>().await;
            }
            closed.cancelled().await;
        }
    }

    fn abort(&self) {
        self.state.aborts.fetch_add(1, Ordering::SeqCst);
    }

    fn closed_gracefully(&self) -> bool {
        self.faults().graceful
    }
}

impl Service<u32> for Faulty {
    type Response = (usize, u32);
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<(usize, u32)>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.faults().ready_fails {
            Poll::Ready(Err(io::Error::other("broken connection")))
        } else if self.faults().ready_pending {
            *self.state.waiting.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, n: u32) -> Self::Future {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok((self.id, n)))
    }
}

/// A connector making [`Faulty`] connections numbered from 1, each with the next faults of its
/// list (then none), at once.
#[derive(Clone, Default)]
pub struct FaultyConnect {
    faults: Arc<Mutex<VecDeque<Faults>>>,
    pub made: Arc<Mutex<Vec<Faulty>>>,
}

impl FaultyConnect {
    pub fn new(faults: impl IntoIterator<Item = Faults>) -> Self {
        FaultyConnect {
            faults: Arc::new(Mutex::new(faults.into_iter().collect())),
            made: Arc::default(),
        }
    }

    /// The n-th connection made (from 1).
    pub fn conn(&self, n: usize) -> Faulty {
        self.made.lock().unwrap()[n - 1].clone()
    }

    pub fn count(&self) -> usize {
        self.made.lock().unwrap().len()
    }
}

impl<A: Send + 'static> Service<A> for FaultyConnect {
    type Response = Faulty;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<Faulty>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: A) -> Self::Future {
        let faults = self.faults.lock().unwrap().pop_front().unwrap_or_default();
        let mut made = self.made.lock().unwrap();
        let conn = Faulty::new(made.len() + 1, faults);
        made.push(conn.clone());
        std::future::ready(Ok(conn))
    }
}
