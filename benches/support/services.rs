//! The services the overhead benches compare: a trivial inner service, alone and under each
//! wrapper, built the same way for every bench.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tokio_util::sync::CancellationToken;
use tower::reconnect::Reconnect;
use tower::{Layer, Service, service_fn};
use tower_persistent::{Closable, ClosableService, Persistent, PersistentLayer};

/// The trivial inner service: answers `n + 1` at once.
#[derive(Clone, Copy)]
pub struct Inner;

impl Service<u64> for Inner {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, n: u64) -> Self::Future {
        ready(Ok(n + 1))
    }
}

/// `Inner` with the error type every wrapper here has, `BoxError`, and nothing else: the floor
/// of any such service in a harness whose loop unwraps each result (the unwrap of a
/// `Result<_, Infallible>` is free, that of a `Result<_, BoxError>` is a test and a panic path).
#[derive(Clone, Copy)]
pub struct InnerBoxError;

impl Service<u64> for InnerBoxError {
    type Response = u64;
    type Error = tower_persistent::BoxError;
    type Future = Ready<Result<u64, tower_persistent::BoxError>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, n: u64) -> Self::Future {
        ready(Ok(n + 1))
    }
}

/// `Inner` with `io::Error` for its error, as a service that can fail has: its future's error
/// path is real (a wrapper that turns it into a `BoxError` boxes it there).
#[derive(Clone, Copy)]
pub struct InnerIoError;

impl Service<u64> for InnerIoError {
    type Response = u64;
    type Error = std::io::Error;
    type Future = Ready<Result<u64, std::io::Error>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, n: u64) -> Self::Future {
        ready(Ok(n + 1))
    }
}

/// tower's `Reconnect` over [`InnerIoError`].
pub fn io_error_reconnect() -> impl Service<u64, Response = u64, Error = tower_persistent::BoxError>
{
    Reconnect::new(
        service_fn(|()| ready(Ok::<_, Infallible>(InnerIoError))),
        (),
    )
}

/// `Inner` as a connection with a hand-written `Closable` impl.
#[derive(Clone)]
pub struct Direct {
    inner: Inner,
    closed: CancellationToken,
}

impl Service<u64> for Direct {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, n: u64) -> Self::Future {
        self.inner.call(n)
    }
}

impl Closable for Direct {
    fn close(&self) -> impl Future<Output = ()> + Send {
        self.closed.cancel();
        ready(())
    }

    fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        self.closed.clone().cancelled_owned()
    }
}

/// A connected `Persistent` over `Inner` as a hand-written `Closable` connection. Needs a
/// runtime (entered) to spawn its driver; `connect` awaits the connection.
pub fn persistent() -> Persistent<(), Direct> {
    PersistentLayer::new("bench", service_fn(|()| ready(Ok::<_, Infallible>(())))).layer(
        service_fn(|()| {
            ready(Ok::<_, Infallible>(Direct {
                inner: Inner,
                closed: CancellationToken::new(),
            }))
        }),
    )
}

/// A connected `Persistent` over `ClosableService<Inner>`.
pub fn persistent_closable() -> Persistent<(), ClosableService<Inner>> {
    persistent_closable_over(Inner)
}

/// A connected `Persistent` over `ClosableService` over (a clone of) `inner`.
pub fn persistent_closable_over<S: Clone + Send + Sync + 'static>(
    inner: S,
) -> Persistent<(), ClosableService<S>> {
    PersistentLayer::new("bench", service_fn(|()| ready(Ok::<_, Infallible>(())))).layer(
        service_fn(move |()| ready(Ok::<_, Infallible>(ClosableService::new(inner.clone())))),
    )
}

/// tower's `Reconnect` over `Inner`.
pub type Reconnecting =
    Reconnect<tower::util::ServiceFn<fn(()) -> Ready<Result<Inner, Infallible>>>, ()>;

pub fn reconnect() -> Reconnecting {
    fn make(_: ()) -> Ready<Result<Inner, Infallible>> {
        ready(Ok(Inner))
    }
    Reconnect::new(
        service_fn(make as fn(()) -> Ready<Result<Inner, Infallible>>),
        (),
    )
}

/// The inner service as the README writes one: `service_fn` over an async block, with
/// `io::Error` (an async block's future leaves no niche for a wrapper's own state).
pub fn fn_inner() -> impl Service<
    u64,
    Response = u64,
    Error = std::io::Error,
    Future = impl Future<Output = Result<u64, std::io::Error>> + Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(|n: u64| async move { Ok::<_, std::io::Error>(n + 1) })
}

/// A connected `Persistent` over `ClosableService` over [`fn_inner`].
pub fn fn_persistent_closable()
-> impl Service<u64, Response = u64, Error = tower_persistent::BoxError> + Clone {
    persistent_closable_over(fn_inner())
}

/// tower's `Reconnect` over [`fn_inner`].
pub fn fn_reconnect() -> impl Service<u64, Response = u64, Error = tower_persistent::BoxError> {
    Reconnect::new(service_fn(|()| ready(Ok::<_, Infallible>(fn_inner()))), ())
}

/// One `poll_ready` + `call` + poll of the response, without a runtime (the services answer at
/// once). Panics if any of them is not ready.
#[inline(always)]
pub fn tight_round<S>(svc: &mut S, cx: &mut Context<'_>, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    let response = pin!(svc.call(n));
    match response.poll(cx) {
        Poll::Ready(Ok(m)) => m,
        _ => panic!("not answered at once"),
    }
}

/// `tight_round` with the request passed through `black_box` between `poll_ready` and `call`:
/// the compiler can no longer carry what `poll_ready` stored into `call` (a harness whose
/// request is built between the two, out of the compiler's sight, is shaped so). The answer
/// goes through `black_box` before the response future is dropped.
#[inline(always)]
pub fn tight_round_barrier<S>(svc: &mut S, cx: &mut Context<'_>, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    let response = pin!(svc.call(std::hint::black_box(n)));
    match response.poll(cx) {
        // The answer through `black_box` too, while the response future is alive (it is
        // dropped after): opaque code between its poll and its drop.
        Poll::Ready(Ok(m)) => std::hint::black_box(m),
        _ => panic!("not answered at once"),
    }
}

/// A context with a waker that does nothing.
pub fn noop_context() -> Context<'static> {
    Context::from_waker(Waker::noop())
}
