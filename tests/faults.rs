//! Faults and bad input: connections whose closing hangs or panics, settings at the limits of
//! their types, a driver dropped with its runtime, close from inside a handler, calls after close.

mod support;

use std::future::poll_fn;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::Notify;

use futures_util::{FutureExt, StreamExt};
use support::faulty::{Faults, Faulty, FaultyConnect};
use support::*;
use tokio::time::{Instant, timeout};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_persistent::backoff::{Exponential, RetryPolicy};
use tower_persistent::{Closed, Event, Persistent, PersistentLayer};

type P = Persistent<&'static str, Faulty>;

const SECOND: Duration = Duration::from_secs(1);

/// Every event handed to `on_event`, with its time in ms.
#[derive(Clone)]
struct Log {
    start: Instant,
    lines: Arc<Mutex<Vec<(u64, String)>>>,
}

impl Log {
    fn new(start: Instant) -> Self {
        Log {
            start,
            lines: Arc::default(),
        }
    }

    fn push(&self, line: impl Into<String>) {
        self.lines
            .lock()
            .unwrap()
            .push((ms(self.start), line.into()));
    }

    fn record(&self, event: &Event<&'static str, Faulty>) {
        self.push(match event {
            Event::Connected(conn) => format!("Connected({})", conn.id),
            Event::FailedToConnect(error) => format!("FailedToConnect({})", error.text()),
            other => format!("{other:?}"),
        });
    }

    fn get(&self) -> Vec<(u64, String)> {
        self.lines.lock().unwrap().clone()
    }
}

/// A layer with exact 1 s delays over a lookup that answers "a", recording events in `log`.
fn layer(log: &Log) -> PersistentLayer<Lookup, &'static str, Faulty> {
    let start = log.start;
    let log = log.clone();
    PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .retry_delay(|| SECOND)
        .jitter(0.0)
        .on_event(move |event| {
            log.record(&event);
            std::future::ready(())
        })
}

/// A round that connects at once at `at` ms: AttemptingToConnect, ObtainedAddress("a"),
/// Connected(`id`).
fn round(at: u64, id: usize) -> Vec<(u64, String)> {
    vec![
        (at, "AttemptingToConnect".to_owned()),
        (at, "ObtainedAddress(\"a\")".to_owned()),
        (at, format!("Connected({id})")),
    ]
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

// A connection whose close never finishes is given up after the close timeout (10 s by
// default): it is told so (`abort`, once, then), close() resolves, Disconnected is delivered,
// and the driver task ends.
#[tokio::test(start_paused = true)]
async fn close_gives_up_a_connection_whose_close_never_finishes() {
    let start = Instant::now();
    let log = Log::new(start);
    let connect = FaultyConnect::new([Faults {
        close_hangs: true,
        ..Faults::default()
    }]);
    let p = layer(&log).layer(connect.clone());
    p.connected().await.unwrap();
    assert_eq!(alive_tasks(), 1, "the driver");

    until(start, 100).await;
    let closing = tokio::spawn(p.close());
    until(start, 10_099).await;
    assert_eq!(connect.conn(1).aborts(), 0, "not before the close timeout");
    closing.await.unwrap();
    assert_eq!(ms(start), 10_100);
    assert!(connect.conn(1).closing_began());
    assert_eq!(connect.conn(1).aborts(), 1);
    assert_eq!(
        log.get(),
        [round(0, 1), timeline(&[(10_100, "Disconnected")])].concat()
    );
    tokio::task::yield_now().await;
    assert_eq!(alive_tasks(), 0, "the driver task ended");
}

// The close timeout is a setting; every later close resolves together with the first.
#[tokio::test(start_paused = true)]
async fn close_timeout_is_a_setting_shared_by_every_close() {
    let start = Instant::now();
    let log = Log::new(start);
    let connect = FaultyConnect::new([Faults {
        close_hangs: true,
        ..Faults::default()
    }]);
    let p = layer(&log)
        .close_timeout(Duration::from_secs(3))
        .layer(connect.clone());
    p.connected().await.unwrap();
    let first = tokio::spawn(p.close());
    until(start, 1000).await;
    p.close().await;
    assert_eq!(ms(start), 3000);
    first.await.unwrap();
    assert_eq!(ms(start), 3000);
}

/// A persistent connection (close timeout 2 s) connected to a connection whose `poll_ready`
/// fails and whose close and `close_finished` never finish, then one that works.
async fn dying_connection_whose_close_hangs(
    log: &Log,
) -> (FaultyConnect, Persistent<&'static str, Faulty>) {
    let connect = FaultyConnect::new([Faults {
        ready_fails: true,
        close_hangs: true,
        close_finished_hangs: true,
        ..Faults::default()
    }]);
    let p = layer(log)
        .close_timeout(Duration::from_secs(2))
        .layer(connect.clone());
    p.connected().await.unwrap();
    (connect, p)
}

/// The events of `dying_connection_whose_close_hangs`, once its close is given up at 2.1 s
/// (reported dead at 100 ms, close timeout 2 s): Disconnected then, and the next round at once.
fn given_up_at_the_close_timeout() -> Vec<(u64, String)> {
    [
        round(0, 1),
        timeline(&[(2100, "Disconnected")]),
        round(2100, 2),
    ]
    .concat()
}

// A dead connection (its poll_ready fails) whose close and close_finished never finish holds
// up the next connection for the close timeout at most.
#[tokio::test(start_paused = true)]
async fn a_dead_connection_whose_close_hangs_holds_up_the_next_for_the_close_timeout() {
    let start = Instant::now();
    let log = Log::new(start);
    let (connect, mut p) = dying_connection_whose_close_hangs(&log).await;
    until(start, 100).await;

    // The handle sees the connection fail, reports it dead, and waits for the next one.
    let (id, _) = p.ready().await.unwrap().call(7).await.unwrap();
    assert_eq!(id, 2);
    assert_eq!(ms(start), 2100);
    assert_eq!(connect.conn(1).aborts(), 1, "given up");
    assert_eq!(log.get(), given_up_at_the_close_timeout());
    assert_eq!(connect.conn(1).calls(), 0);
    p.close().await;
}

// A connection reported dead stops being current at the report (state and current connection
// say so at once), while Disconnected waits for its close: given up at the close timeout.
#[tokio::test(start_paused = true)]
async fn a_dead_connection_stops_being_current_at_once_and_is_disconnected_when_its_close_ends() {
    let start = Instant::now();
    let log = Log::new(start);
    let (connect, mut p) = dying_connection_whose_close_hangs(&log).await;
    until(start, 100).await;
    assert!(p.state().is_connected());

    // One poll_ready reports it dead; the handle is then Pending.
    let polled = poll_fn(|cx| Poll::Ready(p.poll_ready(cx).is_pending())).await;
    assert!(polled, "no connection to be ready on");
    assert!(p.current_connection().is_none());
    assert!(matches!(
        p.state(),
        tower_persistent::State::Connecting { .. }
    ));
    until(start, 2099).await;
    assert_eq!(
        log.get(),
        round(0, 1),
        "no Disconnected while the close runs"
    );
    assert_eq!(connect.conn(1).aborts(), 0);

    until(start, 2101).await;
    assert_eq!(connect.conn(1).aborts(), 1, "given up");
    assert_eq!(log.get(), given_up_at_the_close_timeout());
    assert_eq!(p.connected().await.unwrap().id, 2);
    p.close().await;
}

// A panic of close_finished counts as the connection's death: Disconnected, then a new round
// after the attempt's delay.
#[tokio::test(start_paused = true)]
async fn a_panicking_close_finished_is_the_connection_dying() {
    let start = Instant::now();
    let log = Log::new(start);
    let connect = FaultyConnect::new([Faults {
        close_finished_panics: true,
        ..Faults::default()
    }]);
    let p = layer(&log).layer(connect.clone());
    until(start, 1000).await;
    assert_eq!(p.connected().await.unwrap().id, 2);
    assert_eq!(
        log.get(),
        [
            round(0, 1),
            timeline(&[(0, "Disconnected")]),
            round(1000, 2),
        ]
        .concat()
    );
    assert!(connect.conn(1).closing_began(), "closed by the driver");
    p.close().await;
    assert_eq!(
        log.get().last().unwrap(),
        &(1000, "Disconnected".to_owned())
    );
}

// A panic of close, on a dead connection or on closing, counts as closed (its log line:
// `interop/tests/tracing.rs`).
#[tokio::test(start_paused = true)]
async fn a_panicking_close_counts_as_closed() {
    let start = Instant::now();
    let log = Log::new(start);
    let panics = Faults {
        close_panics: true,
        ..Faults::default()
    };
    let connect = FaultyConnect::new([
        Faults {
            ready_fails: true,
            ..panics
        },
        panics,
    ]);
    let mut p = layer(&log).layer(connect.clone());
    p.connected().await.unwrap();
    until(start, 100).await;
    let (id, _) = p.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!((id, ms(start)), (2, 1000));

    until(start, 1500).await;
    p.close().await;
    assert_eq!(ms(start), 1500);
    // Given up, each (its close gave no future to wait for).
    assert_eq!(connect.conn(1).aborts(), 1);
    assert_eq!(connect.conn(2).aborts(), 1);
    assert_eq!(
        log.get(),
        [
            round(0, 1),
            timeline(&[(100, "Disconnected")]),
            round(1000, 2),
            timeline(&[(1500, "Disconnected")]),
        ]
        .concat()
    );
}

// A panic of is_closed, met by connected(), counts as the connection's death too: it is
// reported, Disconnected follows, and connected() resolves with the next connection.
#[tokio::test(start_paused = true)]
async fn a_panicking_is_closed_is_the_connection_dying() {
    let start = Instant::now();
    let log = Log::new(start);
    let connect = FaultyConnect::new([Faults {
        is_closed_panics: true,
        ..Faults::default()
    }]);
    let p = layer(&log).layer(connect.clone());
    until(start, 100).await;
    assert_eq!(p.connected().await.unwrap().id, 2);
    assert_eq!(ms(start), 1000);
    assert_eq!(
        log.get(),
        [
            round(0, 1),
            timeline(&[(100, "Disconnected")]),
            round(1000, 2),
        ]
        .concat()
    );
    p.close().await;
}

// A connection that begins closing by itself and never finishes, met by connected(), is
// reported to the driver, which gives it the close timeout: then Disconnected, a new round, and
// connected() resolves with the next connection. connected_or_failed_to_connect() does the same.
#[tokio::test(start_paused = true)]
async fn a_connection_closing_by_itself_for_ever_is_given_the_close_timeout() {
    let start = Instant::now();
    let log = Log::new(start);
    let hangs = Faults {
        close_hangs: true,
        ..Faults::default()
    };
    let connect = FaultyConnect::new([hangs, hangs]);
    let p = layer(&log)
        .close_timeout(Duration::from_secs(2))
        .layer(connect.clone());
    assert_eq!(p.connected().await.unwrap().id, 1);
    until(start, 100).await;
    connect.conn(1).begin_closing_by_itself();
    let bound = Duration::from_secs(60);
    let next = tokio::time::timeout(bound, p.connected()).await;
    assert_eq!(next.expect("connected() hung").unwrap().id, 2);
    assert_eq!(ms(start), 2100);

    until(start, 2200).await;
    connect.conn(2).begin_closing_by_itself();
    let next = tokio::time::timeout(bound, p.connected_or_failed_to_connect()).await;
    assert_eq!(
        next.expect("connected_or_failed_to_connect() hung")
            .unwrap()
            .id,
        3
    );
    assert_eq!(ms(start), 4200);
    assert_eq!(
        log.get(),
        [
            round(0, 1),
            timeline(&[(2100, "Disconnected")]),
            round(2100, 2),
            timeline(&[(4200, "Disconnected")]),
            round(4200, 3),
        ]
        .concat()
    );
    // The driver closed each of them once (their close hangs: given up after 2 s).
    assert_eq!((connect.conn(1).closes(), connect.conn(2).closes()), (1, 1));
    p.close().await;
}

// The same met by a handle waiting in poll_ready: its connection is not ready and begins closing
// by itself; the handle reports it, and is ready on the next connection once the close timeout
// has passed. Without a report nothing would bound the wait: the connection never says it is
// dead, and its close_finished never resolves.
#[tokio::test(start_paused = true)]
async fn a_handle_waiting_on_a_connection_closing_by_itself_gets_the_next_one() {
    let start = Instant::now();
    let log = Log::new(start);
    let connect = FaultyConnect::new([Faults {
        close_hangs: true,
        ready_pending: true,
        ..Faults::default()
    }]);
    let mut p = layer(&log)
        .close_timeout(Duration::from_secs(2))
        .layer(connect.clone());
    p.connected().await.unwrap();
    let closing = connect.conn(1);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        closing.begin_closing_by_itself();
    });
    let ready = tokio::time::timeout(Duration::from_secs(60), p.ready()).await;
    let (id, _) = ready
        .expect("poll_ready hung")
        .unwrap()
        .call(7)
        .await
        .unwrap();
    assert_eq!(id, 2);
    assert_eq!(ms(start), 2100);
    assert_eq!(
        log.get(),
        [
            round(0, 1),
            timeline(&[(2100, "Disconnected")]),
            round(2100, 2),
        ]
        .concat()
    );
    assert_eq!(connect.conn(1).calls(), 0);
    assert_eq!(connect.conn(1).closes(), 1);
    p.close().await;
}

// close() awaited inside an on_event handler resolves at once (closing begun); the rest of
// closing follows when the handler returns.
#[tokio::test(start_paused = true)]
async fn close_awaited_inside_a_handler_resolves() {
    let start = Instant::now();
    let log = Log::new(start);
    let handle: Arc<OnceLock<P>> = Arc::default();
    let in_handler = handle.clone();
    let handler_log = log.clone();
    let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .on_event(move |event: Event<&'static str, Faulty>| {
            let handle = in_handler.clone();
            let log = handler_log.clone();
            async move {
                log.record(&event);
                if let Event::Connected(_) = event {
                    tokio::time::sleep(SECOND).await;
                    let p = handle.get().unwrap();
                    p.close().await;
                    assert!(p.is_closed());
                    log.push("closed inside the handler");
                }
            }
        })
        .layer(FaultyConnect::default());
    handle.set(p.clone()).ok().unwrap();
    p.close_finished().await;
    assert_eq!(ms(start), 1000);
    assert_eq!(
        log.get(),
        [
            round(0, 1),
            timeline(&[(1000, "closed inside the handler"), (1000, "Disconnected")]),
        ]
        .concat()
    );
}

// A handler that never finishes does not hold close() beyond the close timeout: it is
// abandoned then, and Disconnected is delivered.
#[tokio::test(start_paused = true)]
async fn close_resolves_within_the_timeout_while_a_handler_never_finishes() {
    let start = Instant::now();
    let log = Log::new(start);
    let handler_log = log.clone();
    let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .close_timeout(Duration::from_secs(2))
        .on_event(move |event: Event<&'static str, Faulty>| {
            let log = handler_log.clone();
            async move {
                log.record(&event);
                if let Event::Connected(_) = event {
                    std::future::pending::<()>().await;
                }
            }
        })
        .layer(FaultyConnect::default());
    until(start, 100).await;
    let mut events = p.events();
    assert!(p.current_connection().is_some());
    p.close().await;
    assert_eq!(ms(start), 2100);
    assert_eq!(
        log.get(),
        [round(0, 1), timeline(&[(2100, "Disconnected")])].concat()
    );
    let names: Vec<&str> = events.by_ref().map(|e| e.name()).collect().await;
    assert_eq!(names, ["connected", "disconnected"]);
    tokio::task::yield_now().await;
    assert_eq!(alive_tasks(), 0);
}

// A handle made ready before close() and called after it does not reach the connection: the
// call fails with Closed.
#[tokio::test(start_paused = true)]
async fn a_call_after_close_never_reaches_the_connection() {
    let start = Instant::now();
    let connect = FaultyConnect::default();
    let mut p = layer(&Log::new(start)).layer(connect.clone());
    poll_fn(|cx| Service::<u32>::poll_ready(&mut p, cx))
        .await
        .unwrap();
    let closing = p.close();
    let error = p.call(1).await.unwrap_err();
    assert!(error.is::<Closed>(), "{error}");
    assert_eq!(connect.conn(1).calls(), 0);
    closing.await;
}

// The same across threads, 200 times: a handle made ready on one thread, then a close()
// begun on another before the call (a channel orders them); the call fails with Closed and
// never reaches the connection. (The ready path reads the generation relaxed: what happens
// before the load must still be seen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_a_close_on_another_thread_never_reaches_the_connection() {
    for round in 0..200 {
        let connect = FaultyConnect::default();
        let p = layer(&Log::new(Instant::now())).layer(connect.clone());
        p.connected().await.unwrap();
        let mut handle = p.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
        let caller = std::thread::spawn(move || {
            let mut cx = Context::from_waker(Waker::noop());
            // Connected: ready at once.
            match Service::<u32>::poll_ready(&mut handle, &mut cx) {
                Poll::Ready(Ok(())) => {}
                _ => panic!("a connected handle is ready at once"),
            }
            ready_tx.send(()).unwrap();
            closed_rx.recv().unwrap();
            let mut call = std::pin::pin!(handle.call(1));
            match std::future::Future::poll(call.as_mut(), &mut cx) {
                Poll::Ready(result) => result.map(|_| ()),
                Poll::Pending => panic!("a call after close() fails at once"),
            }
        });
        ready_rx.recv().unwrap();
        let closing = p.close();
        closed_tx.send(()).unwrap();
        let error = caller.join().unwrap().unwrap_err();
        assert!(error.is::<Closed>(), "round {round}: {error}");
        assert_eq!(connect.conn(1).calls(), 0, "round {round}");
        closing.await;
    }
}

// A driver dropped with its runtime before it ever ran: every handle learns at once that the
// persistent connection is closed.
#[test]
fn handles_learn_at_once_that_a_driver_dropped_with_its_runtime_is_gone() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lookup = Script::new(Instant::now(), [], Step::Ok("a"));
    let mut p: P = runtime.block_on(async {
        PersistentLayer::new("test", Lookup(lookup.clone())).layer(FaultyConnect::default())
    });
    drop(runtime);
    assert!(lookup.calls().is_empty(), "the driver never ran");

    assert!(p.is_closed());
    assert_eq!(p.close().now_or_never(), Some(()));
    assert_eq!(p.close_finished().now_or_never(), Some(()));
    assert!(matches!(
        p.connected().now_or_never(),
        Some(Err(Closed { .. }))
    ));
    let outcome = p.connected_or_failed_to_connect().now_or_never().unwrap();
    assert!(outcome.is_err_and(|e| e.is_closed()));
    let mut cx = Context::from_waker(Waker::noop());
    match Service::<u32>::poll_ready(&mut p, &mut cx) {
        Poll::Ready(Err(error)) => assert!(error.is::<Closed>(), "{error}"),
        _ => panic!("poll_ready must fail at once"),
    }
    assert!(p.current_connection().is_none());
    assert!(p.events().next().now_or_never().unwrap().is_none());
}

// A driver dropped with its runtime while a connection is current (so without its
// `Disconnected`): the persistent connection keeps nothing of that connection (a late
// subscriber is not told of it), and every handle learns that it is closed.
#[test]
fn a_driver_dropped_with_its_runtime_while_connected_keeps_no_connection() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Held by every clone of the connection, and by the connector until the driver is gone.
    let token = Arc::new(());
    let held = token.clone();
    let p = runtime.block_on(async move {
        let connect = service_fn(move |_: &'static str| {
            let held = held.clone();
            async move {
                let echo = service_fn(move |n: u32| {
                    let _held = &held;
                    std::future::ready(Ok::<u32, io::Error>(n))
                });
                Ok::<_, io::Error>(tower_persistent::ClosableService::new(echo))
            }
        });
        let p = PersistentLayer::new(
            "test",
            Lookup(Script::new(Instant::now(), [], Step::Ok("a"))),
        )
        .layer(connect);
        let conn = p.connected().await.unwrap();
        drop(conn);
        p
    });
    assert!(
        Arc::strong_count(&token) > 2,
        "the connection and the connector hold it"
    );
    drop(runtime);

    assert!(p.is_closed());
    assert!(p.current_connection().is_none());
    let mut events = p.events();
    let first = events.next().now_or_never().expect("the stream has ended");
    assert!(
        !matches!(first, Some(Event::Connected(_))),
        "a closed persistent connection told a new subscriber it is connected"
    );
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "the connection is still held by the persistent connection"
    );
}

/// An address whose comparison panics: user code the driver cannot guard.
#[derive(Clone, Debug)]
struct Treacherous;

impl PartialEq for Treacherous {
    fn eq(&self, _: &Self) -> bool {
        panic!("comparison panicked")
    }
}

// A driver killed by a panic it cannot catch ends the persistent connection: waiting handles
// learn it at once (Closed), none hangs.
#[tokio::test(start_paused = true)]
async fn a_driver_killed_by_a_panic_is_seen_as_closed() {
    let lookups = Arc::new(std::sync::Mutex::new(Vec::new()));
    let counted = lookups.clone();
    let p = PersistentLayer::new(
        "test",
        service_fn(move |()| {
            // The first address is new (no comparison); the second is compared, and panics.
            let first = {
                let mut times = counted.lock().unwrap();
                times.push(Instant::now());
                times.len() == 1
            };
            async move {
                if first {
                    Err(io::Error::other("down"))
                } else {
                    Ok(Treacherous)
                }
            }
        }),
    )
    .retry_delay(|| SECOND)
    .layer(service_fn(|_: Treacherous| async {
        Err::<Faulty, _>(io::Error::other("refused"))
    }));
    let waiting = tokio::spawn(p.connected());
    let close_finished = tokio::spawn(p.close_finished());
    // Attempt 1 fails on the lookup; attempt 2 obtains the address, attempt 3 compares it.
    let error = timeout(Duration::from_secs(60), waiting)
        .await
        .expect("a waiting handle hung")
        .unwrap()
        .unwrap_err();
    assert_eq!(error.to_string(), "persistent connection is closed");
    // At once: when the third lookup answered (the paused clock has not moved since).
    let lookups = lookups.lock().unwrap().clone();
    assert_eq!(lookups.len(), 3);
    assert_eq!(Instant::now(), lookups[2]);
    timeout(Duration::from_secs(60), close_finished)
        .await
        .expect("close_finished hung")
        .unwrap();
    assert!(p.is_closed());
}

// Every Duration setting accepts Duration::MAX and zero, and every jitter or capacity its type
// holds, without a panic: deadlines saturate, delays are held to [1 ms, 1 h].
#[tokio::test(start_paused = true)]
async fn every_setting_accepts_every_value() {
    for timeout in [Duration::ZERO, Duration::MAX] {
        let start = Instant::now();
        let lookup = Script::new(start, [Step::Err("down")], Step::Ok("a"));
        let p = PersistentLayer::new("test", Lookup(lookup.clone()))
            .retry_delay(|| Duration::MAX)
            .jitter(f64::NAN)
            .jitter(-1.0)
            .jitter(f64::INFINITY)
            .jitter(0.0)
            .connect_timeout(timeout)
            .close_timeout(timeout)
            .backoff_reset_after(timeout)
            .ready_timeout(timeout)
            .event_capacity(usize::MAX)
            .layer(FaultyConnect::default());
        assert_eq!(p.connected().await.unwrap().id, 1);
        assert_eq!(lookup.calls(), [0, 3_600_000]);
        p.close().await;
    }

    // A jitter above 1 is held to 1: delays within [0, 2 s] (at least the 1 ms floor).
    let start = Instant::now();
    let lookup = Script::new(start, [], Step::Err("down"));
    let p = PersistentLayer::new("test", Lookup(lookup.clone()))
        .retry_delay(|| SECOND)
        .jitter(7.5)
        .layer(FaultyConnect::default());
    until(start, 60_000).await;
    p.close().await;
    let calls = lookup.calls();
    assert!(calls.windows(2).all(|w| w[1] - w[0] <= 2000), "{calls:?}");
    assert!(calls.len() >= 30, "{calls:?}");
    // Spread over the whole window, not held to 0 (each gap falls below 500 ms or above
    // 1,500 ms with odds of one in four: none of sixty would, one time in ten million).
    assert!(calls.windows(2).any(|w| w[1] - w[0] < 500), "{calls:?}");
    assert!(calls.windows(2).any(|w| w[1] - w[0] > 1500), "{calls:?}");

    // Policies at the limits of their parameters.
    let policies = [
        RetryPolicy::constant(Duration::MAX, 1.0).unwrap(),
        RetryPolicy::exponential(Exponential {
            initial: Duration::MAX,
            multiplier: f64::MAX,
            jitter: 1.0,
            max: Duration::MAX,
        })
        .unwrap(),
        RetryPolicy::full_jitter(Duration::MAX, Duration::MAX).unwrap(),
        RetryPolicy::decorrelated_jitter(Duration::MAX, Duration::MAX).unwrap(),
        RetryPolicy::from_fn(|_| Duration::MAX),
        RetryPolicy::from_fn(|_| Duration::ZERO),
    ];
    for policy in policies {
        for delay in policy.delays().take(50) {
            assert!(
                (Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&delay),
                "{policy:?}: {delay:?}"
            );
        }
        let start = Instant::now();
        let lookup = Script::new(start, [Step::Err("down")], Step::Ok("a"));
        let p = PersistentLayer::new("test", Lookup(lookup.clone()))
            .retry_policy(policy)
            .connect_timeout(Duration::MAX)
            .layer(FaultyConnect::default());
        p.connected().await.unwrap();
        let calls = lookup.calls();
        assert!(calls.len() == 2 && calls[1] <= 3_600_000, "{calls:?}");
        p.close().await;
    }
}

// A connection whose close hangs, with a zero close timeout: closing gives it one poll, then
// gives it up at once.
#[tokio::test(start_paused = true)]
async fn a_zero_close_timeout_gives_up_at_once() {
    let start = Instant::now();
    let connect = FaultyConnect::new([Faults {
        close_hangs: true,
        ..Faults::default()
    }]);
    let p = layer(&Log::new(start))
        .close_timeout(Duration::ZERO)
        .layer(connect.clone());
    p.connected().await.unwrap();
    p.close().await;
    assert_eq!(ms(start), 0);
    assert!(connect.conn(1).closing_began());
}

// A young connection that served and that the peer closed in good order is replaced at once,
// and the published state says so even when a handle met the connection dead first (the
// handle clears it with its attempt's own next round, 5 s later): seen from the Disconnected
// handler, which the driver awaits.
#[tokio::test(start_paused = true)]
async fn a_graceful_close_met_first_by_a_handle_publishes_the_next_round_as_now() {
    let start = Instant::now();
    let (release, disconnected) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (r, d) = (release.clone(), disconnected.clone());
    let graceful = Faults {
        graceful: true,
        ..Faults::default()
    };
    let connect = FaultyConnect::new([graceful]);
    let p: P = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .retry_delay(|| Duration::from_secs(5))
        .jitter(0.0)
        .on_event(move |event: Event<&'static str, Faulty>| {
            let (r, d) = (r.clone(), d.clone());
            async move {
                if matches!(event, Event::Disconnected) {
                    d.notify_one();
                    r.notified().await;
                }
            }
        })
        .layer(connect.clone());
    p.connected().await.unwrap();
    until(start, 1000).await;
    let conn = connect.conn(1);
    conn.set_faults(Faults {
        ready_fails: true,
        ..graceful
    });
    conn.close_by_peer();
    // Before the driver runs: the handle meets the connection dead and waits for the next.
    let mut handle = tower_test::mock::Spawn::new(p.clone());
    assert!(handle.poll_ready::<u32>().is_pending());
    disconnected.notified().await;
    match p.state() {
        tower_persistent::State::Connecting {
            next_attempt_at, ..
        } => assert_eq!(
            next_attempt_at.map(|at| (at - start).as_millis()),
            Some(1000)
        ),
        other => panic!("expected connecting, got {other:?}"),
    }
    release.notify_one();
    assert_eq!(p.connected().await.unwrap().id, 2);
    assert_eq!(ms(start), 1000, "replaced at once");
    assert!(handle.is_woken());
    assert!(handle.poll_ready::<u32>().is_ready());
    drop(handle);
    p.close().await;
    // Closed in time, each: neither was given up.
    assert_eq!(connect.conn(1).aborts(), 0);
    assert_eq!(connect.conn(2).aborts(), 0);
}

// Attempts that all time out at limits the retry delay's jitter set (each delay longer than the
// connect timeout, and each its attempt's limit) fail with one error, reported once in the
// round: a constant delay with jitter, and gRPC's exponential policy growing past the connect
// timeout.
#[tokio::test(start_paused = true)]
async fn a_round_of_timeouts_is_reported_once_whatever_the_limits() {
    let timed_out = |connect_timeout: &str| {
        format!(
            "FailedToConnect(connection attempt timed out in its address lookup (connect \
             timeout {connect_timeout}, or the attempt's retry delay if longer))"
        )
    };
    let cases = [
        // (policy, connect timeout, how long, at least this many attempts)
        (None, Duration::from_secs(5), 120_000, 9),
        (
            Some(RetryPolicy::exponential(Exponential::grpc()).unwrap()),
            Duration::from_secs(20),
            1_200_000,
            14,
        ),
    ];
    for (policy, connect_timeout, run_for, at_least) in cases {
        let start = Instant::now();
        let lookup = Script::new(start, [], Step::Hang);
        let recorder = Recorder::new(start);
        let mut layer = PersistentLayer::new("test", Lookup(lookup.clone()))
            .connect_timeout(connect_timeout)
            .on_event(recorder.handler());
        if let Some(policy) = policy {
            layer = layer.retry_policy(policy);
        }
        let p = layer.layer(Connect::new(Script::new(start, [], Step::Ok(""))));
        until(start, run_for).await;
        p.close().await;
        let calls = lookup.calls();
        assert!(calls.len() >= at_least, "{calls:?}");
        // The attempts' limits differ (the delays between them do).
        assert!(
            calls.windows(3).any(|w| w[1] - w[0] != w[2] - w[1]),
            "{calls:?}"
        );
        assert_eq!(
            recorder.events(),
            [
                "AttemptingToConnect".to_owned(),
                timed_out(&format!("{connect_timeout:?}")),
            ]
        );
    }
}

/// A connection that is closed as soon as it is made, and says every time that it closed
/// gracefully (which a connection that served nothing should not say).
#[derive(Clone)]
struct GracefulLiar;

impl Service<u32> for GracefulLiar {
    type Response = u32;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<u32>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, n: u32) -> Self::Future {
        std::future::ready(Ok(n))
    }
}

impl tower_persistent::Closable for GracefulLiar {
    fn close(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    fn is_closed(&self) -> bool {
        true
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    fn closed_gracefully(&self) -> bool {
        true
    }
}

// A connection that dies as soon as it is made, saying every time that it closed gracefully, is
// replaced at once eight times within a millisecond (`MIN_RETRY_DELAY`) at most, the ninth
// once that millisecond is over: no busy loop (the paused clock moves on), whatever the retry
// delay.
#[tokio::test(start_paused = true)]
async fn a_connection_that_always_claims_a_graceful_close_is_replaced_eight_times_a_millisecond() {
    let start = Instant::now();
    let lookup = Script::new(start, [], Step::Ok("a"));
    let p = PersistentLayer::new("test", Lookup(lookup.clone()))
        .retry_delay(|| Duration::from_secs(10))
        .layer(service_fn(|_: &'static str| async {
            Ok::<_, io::Error>(GracefulLiar)
        }));
    until(start, 3).await;
    let calls = lookup.calls();
    let at = |ms: u64| calls.iter().filter(|&&t| t == ms).count();
    // The first round, then eight replacements at once at 0 ms; eight at 1 and at 2 ms.
    assert_eq!((at(0), at(1), at(2)), (9, 8, 8), "{calls:?}");
    // (The rounds due at 3 ms may or may not have begun.)
    assert!(calls.iter().all(|&t| t <= 3), "{calls:?}");
    timeout(Duration::from_secs(60), p.close())
        .await
        .expect("close hung");
    assert_eq!(ms(start), 3);
}
