//! The ready timeout: a handle that waits too long for a ready connection fails its call at once.

mod support;

use std::time::Duration;

use support::*;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::limit::ConcurrencyLimit;
use tower::util::ServiceFn;
use tower::{Layer, Service, ServiceExt};
use tower_persistent::{
    BoxError, Closable, ClosableService, Persistent, PersistentLayer, ReadyTimeout, Unavailable,
};

/// A persistent connection whose every lookup fails (one attempt a second), with `timeout` as
/// its ready timeout.
fn never_connected(start: Instant, timeout: Duration) -> Persistent<&'static str, Conn> {
    PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Err("down"))))
        .retry_delay(|| Duration::from_secs(1))
        .ready_timeout(timeout)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))))
}

// With no connection to be had, a request waits exactly the ready timeout, then fails with
// ReadyTimeout; without one, it would wait for ever (a timeout layer above bounds `call` only).
#[tokio::test(start_paused = true)]
async fn a_request_without_a_connection_fails_after_the_ready_timeout() {
    let start = Instant::now();
    let p = never_connected(start, Duration::from_secs(2));
    let error = p.clone().oneshot(1u32).await.unwrap_err();
    assert_eq!(ms(start), 2000);
    assert!(error.is::<ReadyTimeout>(), "{error}");
    assert_eq!(error.to_string(), "no connection was ready within 2s");
    p.close().await;
}

// Ready stays ready until `call` (tower's contract): a handle whose wait reached the ready
// timeout answers `Ready` to every later `poll_ready` at once, without a new wait, and its call
// fails with `ReadyTimeout`. (It used to begin a new wait: `Pending`, and p2c, which polls a
// service again before it calls it, never got a ready one.)
#[tokio::test(start_paused = true)]
async fn a_timed_out_handle_stays_ready_until_its_call() {
    let start = Instant::now();
    let p = never_connected(start, Duration::from_millis(500));
    let mut handle = p.clone();
    ServiceExt::<u32>::ready(&mut handle).await.unwrap();
    assert_eq!(ms(start), 500);
    for _ in 0..3 {
        let again = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(Service::<u32>::poll_ready(&mut handle, cx))
        })
        .await;
        assert!(matches!(again, std::task::Poll::Ready(Ok(()))), "{again:?}");
    }
    let error = handle.call(1u32).await.unwrap_err();
    assert!(error.is::<ReadyTimeout>(), "{error}");
    assert_eq!(ms(start), 500);
    // The next request waits the whole timeout again.
    let error = handle.ready().await.unwrap().call(2u32).await.unwrap_err();
    assert!(error.is::<ReadyTimeout>(), "{error}");
    assert_eq!(ms(start), 1000);
    p.close().await;
}

// Failing fast, a handle made ready without a connection takes one that is ready by the time
// it is polled again, before `call`.
#[tokio::test(start_paused = true)]
async fn a_handle_failing_fast_polled_again_takes_a_connection_come_meanwhile() {
    let start = Instant::now();
    // The first attempt fails at once, the second (after a second) connects.
    let lookup = Lookup(Script::new(start, [Step::Err("down")], Step::Ok("a")));
    let p = PersistentLayer::new("test", lookup)
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .fail_fast(true)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    let failed = p.connected_or_failed_to_connect().await.unwrap_err();
    assert_eq!(failed.text(), "address lookup failed: down");
    let mut handle = p.clone();
    ServiceExt::<u32>::ready(&mut handle).await.unwrap();
    assert_eq!(ms(start), 0);
    p.connected().await.unwrap();
    assert_eq!(ms(start), 1000);
    let again = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(Service::<u32>::poll_ready(&mut handle, cx))
    })
    .await;
    assert!(matches!(again, std::task::Poll::Ready(Ok(()))), "{again:?}");
    assert_eq!(handle.call(3u32).await.unwrap(), (1, 3));
    p.close().await;
}

/// Sends `request` through `handle`, whose call must fail with `ReadyTimeout`.
async fn timed_out(handle: &mut Persistent<&'static str, Conn>, request: u32) {
    let error = ServiceExt::<u32>::ready(handle)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap_err();
    assert!(error.is::<ReadyTimeout>(), "{error}");
}

/// Waits for `handle` to be ready, and gives the wait up after 100 ms (it must not be ready by
/// then).
async fn give_up_after_100ms(handle: &mut Persistent<&'static str, Conn>) {
    let ready = tokio::time::timeout(Duration::from_millis(100), ServiceExt::<u32>::ready(handle));
    assert!(ready.await.is_err(), "ready within 100 ms");
}

/// A lookup whose first call answers `a` 1.5 s after `start`; every later one fails.
fn lookup_answering_after_1500ms(start: Instant) -> Lookup {
    Lookup(Script::new(
        start,
        [Step::After(
            Duration::from_millis(1500),
            Box::new(Step::Ok("a")),
        )],
        Step::Err("down"),
    ))
}

// Each wait has its own timer: a handle that waited 1.5 s for its first connection, then waits
// again later, gets the whole timeout again; a connection in time answers.
#[tokio::test(start_paused = true)]
async fn every_wait_gets_the_whole_timeout() {
    let start = Instant::now();
    let connect = Connect::new(Script::new(start, [], Step::Ok("")));
    let p = PersistentLayer::new("test", lookup_answering_after_1500ms(start))
        .retry_delay(|| Duration::from_secs(10))
        .jitter(0.0)
        .ready_timeout(Duration::from_secs(2))
        .layer(connect.clone());
    let mut handle = p.clone();
    assert_eq!(
        ServiceExt::<u32>::ready(&mut handle)
            .await
            .unwrap()
            .call(7)
            .await
            .unwrap(),
        (1, 7)
    );
    assert_eq!(ms(start), 1500);

    until(start, 5000).await;
    connect.conn(1).close().await;
    timed_out(&mut handle, 8).await;
    assert_eq!(ms(start), 7000, "two seconds from the start of this wait");
    p.close().await;
}

// A wait that its caller gave up (its `ready()` dropped while pending) is over once the handle
// has not been polled for a second past its deadline: the next `poll_ready` begins a new wait
// with the whole timeout, rather than failing at once on the old deadline (a connection came
// and went meanwhile). Polled again within that second, the handle goes on with the old wait.
#[tokio::test(start_paused = true)]
async fn a_wait_given_up_by_its_caller_is_not_carried_over() {
    let start = Instant::now();
    let connect = Connect::new(Script::new(start, [], Step::Ok("")));
    let p = PersistentLayer::new("test", lookup_answering_after_1500ms(start))
        .retry_delay(|| Duration::from_secs(10))
        .jitter(0.0)
        .ready_timeout(Duration::from_secs(2))
        .layer(connect.clone());
    let mut handle = p.clone();
    // No connection yet: the caller gives up after 100 ms (the wait's deadline is at 2 s).
    give_up_after_100ms(&mut handle).await;
    p.connected().await.unwrap();
    assert_eq!(ms(start), 1500);
    // The connection dies young at 5 s: none until the next round, at 10 s, whose lookup fails.
    until(start, 5000).await;
    connect.conn(1).close().await;
    timed_out(&mut handle, 8).await;
    assert_eq!(
        ms(start),
        7000,
        "a whole wait from 5 s, not a failure at once"
    );

    // Given up at 7.1 s (deadline 9 s), polled again at 9.5 s: the same wait, over at once.
    give_up_after_100ms(&mut handle).await;
    until(start, 9500).await;
    timed_out(&mut handle, 9).await;
    assert_eq!(ms(start), 9500);
    p.close().await;
}

// A ready timeout of zero fails at once a call that would wait at all (no timer's tick first),
// and leaves alone one whose connection is ready.
#[tokio::test(start_paused = true)]
async fn a_ready_timeout_of_zero_fails_a_call_that_would_wait_at_all() {
    let start = Instant::now();
    let p = PersistentLayer::new("test", lookup_answering_after_1500ms(start))
        .ready_timeout(Duration::ZERO)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    // Between two ticks of the timer, where a timer of zero would wait for the next one.
    tokio::time::advance(Duration::from_micros(500)).await;
    let asked = Instant::now();
    let error = p.clone().oneshot(1u32).await.unwrap_err();
    assert!(error.is::<ReadyTimeout>(), "{error}");
    assert_eq!(error.to_string(), "no connection was ready within 0ns");
    assert_eq!(asked.elapsed(), Duration::ZERO);

    // Once the connection is made (1.5 s on), a call finds it ready and is answered.
    p.connected().await.unwrap();
    assert_eq!(p.clone().oneshot(2u32).await.unwrap(), (1, 2));
    p.close().await;
}

/// A handle that began to wait on one runtime and is then polled by another.
enum FirstRuntime {
    /// Dropped (its timers with it).
    Dropped,
    /// Alive, but no longer driven.
    Idle,
}

/// A handle's wait moves with it: begun on runtime A (cut off), and polled again on runtime B,
/// with A dropped or no longer driven, it still ends at the ready timeout, on a timer of B's.
/// (Its first timer was A's: B's poll panicked with A dropped, and waited for ever with A idle.)
fn a_wait_moves_to_the_runtime_that_polls_the_handle(first: FirstRuntime) {
    let driver_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // No address ever comes: every wait lasts the ready timeout.
    let handle = driver_runtime.block_on(async {
        PersistentLayer::new(
            "test",
            tower::service_fn(|()| std::future::pending::<Result<String, std::io::Error>>()),
        )
        .ready_timeout(Duration::from_millis(500))
        .layer(tower::service_fn(|_: String| async {
            Ok::<_, std::io::Error>(tower_persistent::ClosableService::new(tower::service_fn(
                |n: u32| async move { Ok::<_, std::io::Error>(n) },
            )))
        }))
    });
    let current_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let mut p = handle.clone();
    let a = current_thread();
    let cut_off = a.block_on(async {
        tokio::time::timeout(Duration::from_millis(100), p.ready())
            .await
            .is_err()
    });
    assert!(cut_off, "the wait should still be on after 100 ms");
    let _idle = match first {
        FirstRuntime::Dropped => {
            drop(a);
            None
        }
        FirstRuntime::Idle => Some(a),
    };
    let b = current_thread();
    let error = b.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            p.ready().await.unwrap();
            p.call(1).await.unwrap_err()
        })
        .await
        .expect("the wait should end at the ready timeout")
    });
    assert!(error.is::<ReadyTimeout>(), "{error}");
    driver_runtime.block_on(handle.close());
}

#[test]
fn a_wait_moves_from_a_dropped_runtime() {
    a_wait_moves_to_the_runtime_that_polls_the_handle(FirstRuntime::Dropped);
}

#[test]
fn a_wait_moves_from_a_runtime_no_longer_driven() {
    a_wait_moves_to_the_runtime_that_polls_the_handle(FirstRuntime::Idle);
}

/// A connection that takes one request at a time (a receiver), each answered when its sender
/// fires.
type OneAtATime = ClosableService<ConcurrencyLimit<ServiceFn<fn(oneshot::Receiver<()>) -> Answer>>>;
type Answer = std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// `layer` over one `OneAtATime` connection, the same one every time.
fn one_at_a_time(
    layer: PersistentLayer<Lookup, &'static str, OneAtATime>,
) -> Persistent<&'static str, OneAtATime> {
    fn answer(fired: oneshot::Receiver<()>) -> Answer {
        Box::pin(async move { fired.await.map_err(|_| std::io::Error::other("dropped")) })
    }
    let answer = answer as fn(oneshot::Receiver<()>) -> Answer;
    let conn = ClosableService::new(ConcurrencyLimit::new(tower::service_fn(answer), 1));
    layer.layer(tower::service_fn(move |_: &'static str| {
        std::future::ready(Ok::<_, std::io::Error>(conn.clone()))
    }))
}

/// Holds the one turn of `handle`'s connection until `done` fires (or is dropped).
async fn hold_the_turn(
    handle: &mut Persistent<&'static str, OneAtATime>,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), BoxError>>,
) {
    let (done, fired) = oneshot::channel();
    ServiceExt::<oneshot::Receiver<()>>::ready(&mut *handle)
        .await
        .unwrap();
    (done, tokio::spawn(handle.call(fired)))
}

/// `poll_ready` once.
async fn poll_once(
    handle: &mut Persistent<&'static str, OneAtATime>,
) -> std::task::Poll<Result<(), BoxError>> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(Service::<oneshot::Receiver<()>>::poll_ready(
            &mut *handle,
            cx,
        ))
    })
    .await
}

// A wait on a busy connection (its own `poll_ready` pending) that ends with the connection
// ready, then a call, leaves nothing behind: the handle's next wait on it gets the whole
// timeout, not what was left of the first one's.
#[tokio::test(start_paused = true)]
async fn a_wait_on_a_busy_connection_ends_with_its_readiness() {
    let start = Instant::now();
    let p = one_at_a_time(
        PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
            .ready_timeout(Duration::from_secs(2)),
    );
    let (mut first, mut second) = (p.clone(), p.clone());

    // `first` holds the connection's one turn until 1 s; `second` waits for it from 0 s and
    // takes it then.
    let (done, held) = hold_the_turn(&mut first).await;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        done.send(()).unwrap();
    });
    ServiceExt::<oneshot::Receiver<()>>::ready(&mut second)
        .await
        .unwrap();
    assert_eq!(ms(start), 1000);
    held.await.unwrap().unwrap();
    let (done, fired) = oneshot::channel();
    done.send(()).unwrap();
    second.call(fired).await.unwrap();

    // At 1.5 s `first` holds the turn for good; `second`'s new wait lasts 2 s from then.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_never, _held) = hold_the_turn(&mut first).await;
    let error = ServiceExt::<oneshot::Receiver<()>>::ready(&mut second)
        .await
        .unwrap()
        .call(oneshot::channel().1)
        .await
        .unwrap_err();
    assert!(error.is::<ReadyTimeout>(), "{error}");
    assert_eq!(ms(start), 3500, "two seconds from the start of this wait");
    p.close().await;
}

// Failing fast under a ready timeout of zero, a handle polled again while the connection come
// meanwhile is busy stays failing fast: its call fails with the last attempt's error
// (`Unavailable`), not with `ReadyTimeout` from the new wait that ended at once.
#[tokio::test(start_paused = true)]
async fn failing_fast_polled_again_on_a_busy_connection_keeps_its_error_under_a_zero_timeout() {
    let start = Instant::now();
    // The first attempt fails at once, the second (after a second) connects.
    let lookup = Lookup(Script::new(start, [Step::Err("down")], Step::Ok("a")));
    let p = one_at_a_time(
        PersistentLayer::new("test", lookup)
            .retry_delay(|| Duration::from_secs(1))
            .jitter(0.0)
            .fail_fast(true)
            .ready_timeout(Duration::ZERO),
    );
    p.connected_or_failed_to_connect().await.unwrap_err();
    let (mut handle, mut other) = (p.clone(), p.clone());
    assert!(matches!(
        poll_once(&mut handle).await,
        std::task::Poll::Ready(Ok(()))
    ));
    p.connected().await.unwrap();
    assert_eq!(ms(start), 1000);
    let (_done, _held) = hold_the_turn(&mut other).await;
    assert!(matches!(
        poll_once(&mut handle).await,
        std::task::Poll::Ready(Ok(()))
    ));
    let error = handle.call(oneshot::channel().1).await.unwrap_err();
    assert!(error.is::<Unavailable>(), "{error}");
    assert_eq!(
        chain(&*error),
        "persistent connection is unavailable: address lookup failed: down"
    );
    p.close().await;
}

// `Debug` says a handle is ready only when its `call` would not panic: not while it waits,
// on a busy connection or for one.
#[tokio::test(start_paused = true)]
async fn debug_says_ready_only_when_call_would_not_panic() {
    let start = Instant::now();
    let lookup = Lookup(Script::new(
        start,
        [Step::After(Duration::from_secs(1), Box::new(Step::Ok("a")))],
        Step::Ok("a"),
    ));
    let p = one_at_a_time(PersistentLayer::new("test", lookup));
    let (mut handle, mut other) = (p.clone(), p.clone());
    let ready = |handle: &Persistent<&'static str, OneAtATime>| {
        format!("{handle:?}").contains("ready: true")
    };
    assert!(!ready(&handle));
    assert!(
        poll_once(&mut handle).await.is_pending(),
        "no connection yet"
    );
    assert!(!ready(&handle));
    p.connected().await.unwrap();
    let (done, held) = hold_the_turn(&mut other).await;
    assert!(
        poll_once(&mut handle).await.is_pending(),
        "the connection is busy"
    );
    assert!(!ready(&handle));
    done.send(()).unwrap();
    held.await.unwrap().unwrap();
    assert!(matches!(
        poll_once(&mut handle).await,
        std::task::Poll::Ready(Ok(()))
    ));
    assert!(ready(&handle));
    let (done, fired) = oneshot::channel();
    done.send(()).unwrap();
    handle.call(fired).await.unwrap();
    assert!(!ready(&handle));
    p.close().await;
}
