//! Closing: in every phase of the loop, what it leaves behind, and dropping the last handle.

mod support;

use std::future::poll_fn;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use support::*;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_persistent::{Closable, Closed, Event, Persistent, PersistentLayer};

type P = Persistent<&'static str, Conn>;

/// A persistent connection with exact 1 s delays whose Disconnected handler takes 50 ms.
fn start_with(
    start: Instant,
    lookup: Vec<Step>,
    connect: Vec<Step>,
) -> (P, Recorder, Script, Connect) {
    let recorder = Recorder::new(start);
    let lookup = Script::new(start, lookup, Step::Ok("a"));
    let connect = Connect::new(Script::new(start, connect, Step::Ok("")));
    let handler_recorder = recorder.clone();
    let p = PersistentLayer::new("test", Lookup(lookup.clone()))
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .on_event(move |event: Event<&'static str, Conn>| {
            let recorder = handler_recorder.clone();
            async move {
                if let Event::Disconnected = event {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                recorder.record(&event);
            }
        })
        .layer(connect.clone());
    (p, recorder, lookup, connect)
}

/// Checks everything that must hold once closing finished, an hour later.
async fn assert_closed_for_good(start: Instant, p: &P, recorder: &Recorder, lookup: &Script) {
    let events_before = recorder.log();
    let lookups_before = lookup.calls();

    assert!(p.is_closed());
    assert!(p.current_connection().is_none());
    assert_eq!(p.connected().await.unwrap_err(), Closed::default());
    assert!(
        p.connected_or_failed_to_connect()
            .await
            .unwrap_err()
            .is_closed()
    );
    let mut handle = p.clone();
    let error = poll_fn(|cx| Service::<u32>::poll_ready(&mut handle, cx))
        .await
        .unwrap_err();
    assert!(error.is::<Closed>(), "{error}");
    assert_eq!(error.to_string(), "persistent connection is closed");

    until(start, ms(start) + 3_600_000).await;
    assert_eq!(recorder.log(), events_before, "events after closing");
    assert_eq!(lookup.calls(), lookups_before, "attempts after closing");
    // Closing again is a no-op that resolves at once.
    p.close().await;
    p.close_finished().await;
}

// Closing during the address lookup drops the lookup and delivers no Disconnected.
#[tokio::test(start_paused = true)]
async fn close_while_looking_up_the_address() {
    let start = Instant::now();
    let (p, recorder, lookup, connect) = start_with(start, vec![Step::Hang], vec![]);
    until(start, 100).await;
    assert_eq!(lookup.dropped.load(std::sync::atomic::Ordering::SeqCst), 0);

    let closing = p.close();
    assert!(p.is_closed(), "closed from the call, before any poll");
    assert!(p.current_connection().is_none());
    closing.await;

    assert_eq!(ms(start), 100);
    assert_eq!(lookup.dropped.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(connect.made().is_empty());
    assert_eq!(recorder.log(), timeline(&[(0, "AttemptingToConnect")]));
    assert_closed_for_good(start, &p, &recorder, &lookup).await;
}

// Closing during connect drops the connect and delivers no Disconnected.
#[tokio::test(start_paused = true)]
async fn close_while_connecting() {
    let start = Instant::now();
    let (p, recorder, lookup, connect) = start_with(start, vec![], vec![Step::Hang]);
    until(start, 100).await;
    p.close().await;

    assert_eq!(ms(start), 100);
    assert_eq!(
        connect
            .script
            .dropped
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(connect.made().is_empty());
    assert_eq!(
        recorder.log(),
        timeline(&[(0, "AttemptingToConnect"), (0, "ObtainedAddress(\"a\")")])
    );
    assert_closed_for_good(start, &p, &recorder, &lookup).await;
}

// Closing while connected closes the connection, delivers Disconnected, and only then resolves.
#[tokio::test(start_paused = true)]
async fn close_while_connected() {
    let start = Instant::now();
    let (p, recorder, lookup, _) = start_with(start, vec![], vec![]);
    let conn = p.connected().await.unwrap();
    until(start, 100).await;

    let closing = p.close();
    assert!(
        p.current_connection().is_none(),
        "not current from the call"
    );
    let second = p.close();
    let finished = p.close_finished();
    closing.await;
    assert_eq!(ms(start), 150, "resolves after the Disconnected handler");
    assert!(conn.is_closed());
    // Later calls resolve together with the first.
    second.await;
    finished.await;
    assert_eq!(ms(start), 150);
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "ObtainedAddress(\"a\")"),
            (0, "Connected(1)"),
            (150, "Disconnected"),
        ])
    );
    assert_closed_for_good(start, &p, &recorder, &lookup).await;
}

// Closing while waiting to retry resolves at once and no attempt follows.
#[tokio::test(start_paused = true)]
async fn close_while_waiting_to_retry() {
    let start = Instant::now();
    let (p, recorder, lookup, _) = start_with(start, vec![Step::Err("down")], vec![]);
    until(start, 500).await;
    p.close().await;

    assert_eq!(ms(start), 500);
    assert_eq!(lookup.calls(), [0]);
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "FailedToConnect(address lookup failed: down)"),
        ])
    );
    assert_closed_for_good(start, &p, &recorder, &lookup).await;
}

// Closing while waiting out the delay after a young connection died: no new round.
#[tokio::test(start_paused = true)]
async fn close_while_waiting_after_a_disconnection() {
    let start = Instant::now();
    let (p, recorder, lookup, connect) = start_with(start, vec![], vec![]);
    p.connected().await.unwrap();
    connect.conn(1).close().await;
    let mut events = p.events();
    // Streams receive an event as it is emitted, before the handler runs.
    wait_event(&mut events, "disconnected").await;
    assert_eq!(ms(start), 0);
    until(start, 600).await;
    p.close().await;
    assert_eq!(ms(start), 600);
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "ObtainedAddress(\"a\")"),
            (0, "Connected(1)"),
            (50, "Disconnected"),
        ])
    );
    assert_closed_for_good(start, &p, &recorder, &lookup).await;
}

// A connection produced after close was called is closed and never becomes current.
#[tokio::test(start_paused = true)]
async fn connection_made_after_close_is_closed_and_never_current() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let handle: Arc<OnceLock<P>> = Arc::default();
    let made: Arc<OnceLock<Conn>> = Arc::default();
    let connect = {
        let handle = handle.clone();
        let made = made.clone();
        service_fn(move |_: &'static str| {
            // The connector closes the persistent connection, then answers at once.
            let closing = handle.get().unwrap().close();
            drop(closing);
            let conn = Connect::new(Script::new(start, [], Step::Ok(""))).call("a");
            let made = made.clone();
            async move {
                let conn = conn.await?;
                made.set(conn.clone()).ok().unwrap();
                Ok::<_, std::io::Error>(conn)
            }
        })
    };
    let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .on_event(recorder.handler())
        .layer(connect);
    handle.set(p.clone()).ok().unwrap();

    p.close_finished().await;
    let conn = made.get().expect("the connector ran");
    assert!(conn.is_closed());
    assert!(p.current_connection().is_none());
    assert_eq!(
        recorder.events(),
        ["AttemptingToConnect", "ObtainedAddress(\"a\")"]
    );
}

// Dropping the last handle stops the driver and closes the connection; dropping a clone does not.
#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_closes() {
    let start = Instant::now();
    let (p, recorder, lookup, _) = start_with(start, vec![], vec![]);
    let conn = p.connected().await.unwrap();
    let mut events = p.events();
    let clone = p.clone();

    drop(p);
    until(start, 1000).await;
    assert!(!conn.is_closed());
    assert!(!clone.is_closed());

    drop(clone);
    conn.close_finished().await;
    // The stream delivers Disconnected, then ends.
    let mut rest = Vec::new();
    while let Some(event) = events.next().await {
        rest.push(describe(&event));
    }
    assert_eq!(rest, ["Connected(1)", "Disconnected"]);
    until(start, 3_600_000).await;
    assert_eq!(lookup.calls(), [0]);
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "ObtainedAddress(\"a\")"),
            (0, "Connected(1)"),
            (1050, "Disconnected"),
        ])
    );
}

// `close_when_current_connection_is_closed` leaves the connection alone, then closes when it dies.
#[tokio::test(start_paused = true)]
async fn close_when_current_connection_is_closed_waits_for_the_connection() {
    let start = Instant::now();
    let (p, recorder, lookup, connect) = start_with(start, vec![], vec![]);
    p.connected().await.unwrap();

    p.close_when_current_connection_is_closed();
    until(start, 5000).await;
    assert!(!p.is_closed());
    assert_eq!(p.current_connection().unwrap().get_ref().id, 1);
    let mut handle = p.clone();
    assert_eq!(handle.ready().await.unwrap().call(7).await.unwrap(), (1, 7));

    connect.conn(1).close().await;
    p.close_finished().await;
    assert_eq!(ms(start), 5050);
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "ObtainedAddress(\"a\")"),
            (0, "Connected(1)"),
            (5050, "Disconnected"),
        ])
    );
    assert_closed_for_good(start, &p, &recorder, &lookup).await;
}

// Without a connection, `close_when_current_connection_is_closed` closes at once.
#[tokio::test(start_paused = true)]
async fn close_when_current_connection_is_closed_without_one_closes_at_once() {
    let start = Instant::now();
    let (p, recorder, lookup, _) = start_with(start, vec![Step::Err("down")], vec![]);
    until(start, 200).await;
    p.close_when_current_connection_is_closed();
    assert!(p.is_closed());
    p.close_finished().await;
    assert_eq!(ms(start), 200);
    assert_closed_for_good(start, &p, &recorder, &lookup).await;
}

// `close_finished` starts nothing.
#[tokio::test(start_paused = true)]
async fn close_finished_starts_nothing() {
    let start = Instant::now();
    let (p, _, _, _) = start_with(start, vec![], vec![]);
    p.connected().await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(60), p.close_finished()).await;
    assert!(waited.is_err());
    assert!(!p.is_closed());
    assert!(p.current_connection().is_some());
}

/// A connector whose call blocks its thread (as a blocking DNS call would) until `release` is
/// sent, after telling `started`; then it connects.
fn blocking_connect(
    started: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
) -> impl Service<
    &'static str,
    Response = Conn,
    Error = std::io::Error,
    Future = std::future::Ready<std::io::Result<Conn>>,
> + Send
+ 'static {
    let release = std::sync::Mutex::new(release);
    service_fn(move |address: &'static str| {
        let _ = started.send(());
        let _ = release
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(20));
        std::future::ready(Ok(tower_persistent::ClosableService::new(Echo::new(
            1, address,
        ))))
    })
}

// A driver that cannot run (its connector blocks the thread) cannot finish closing: `close()`
// waits for it, past the close timeout, and resolves once the driver runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_a_blocked_driver_and_resolves_once_it_runs() {
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let p: P = PersistentLayer::new(
        "test",
        Lookup(Script::new(Instant::now(), [], Step::Ok("a"))),
    )
    .close_timeout(Duration::from_millis(100))
    .layer(blocking_connect(started_tx, release_rx));
    tokio::task::spawn_blocking(move || started.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the connector was never called");
    // The driver's thread is blocked in the connector until `release` is sent.
    let mut closing = Box::pin(p.close());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut closing)
            .await
            .is_err(),
        "close() resolved though the driver could not run"
    );
    assert!(p.is_closed());
    release.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), closing)
        .await
        .expect("close() never resolved once the driver could run");
    assert!(p.close_finished().now_or_never().is_some());
    assert!(p.current_connection().is_none());
}

// A driver whose runtime is no longer driven (a current-thread runtime whose `block_on`
// returned) cannot finish closing either: `close()`, polled on another runtime, waits, and
// resolves once that runtime is dropped.
#[test]
fn close_waits_for_a_driver_whose_runtime_is_not_driven_until_it_is_dropped() {
    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let p: P = idle.block_on(async {
        let p: P = PersistentLayer::new(
            "test",
            Lookup(Script::new(Instant::now(), [], Step::Ok("a"))),
        )
        .close_timeout(Duration::from_millis(100))
        .layer(Connect::new(Script::new(Instant::now(), [], Step::Ok(""))));
        p.connected().await.unwrap();
        p
    });
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    other.block_on(async {
        assert!(
            tokio::time::timeout(Duration::from_millis(300), p.close())
                .await
                .is_err(),
            "close() resolved though the driver could not run"
        );
    });
    assert!(p.close_finished().now_or_never().is_none());
    drop(idle);
    assert!(p.close().now_or_never().is_some());
    assert!(p.close_finished().now_or_never().is_some());
}

// `connected()` looks at the connection in the call, as `connected_or_failed_to_connect()` does:
// a connection live at the call is the answer even if closing begins before the first poll; a
// call made once closed fails, though the future is polled later.
#[tokio::test(start_paused = true)]
async fn connected_answers_with_the_connection_live_at_the_call() {
    let start = Instant::now();
    let (p, _recorder, _lookup, _) = start_with(start, vec![], vec![]);
    let conn = p.connected().await.unwrap();

    let connected = p.connected();
    let either = p.connected_or_failed_to_connect();
    p.close().await;
    assert_eq!(connected.await.unwrap().get_ref().id, conn.get_ref().id);
    assert_eq!(either.await.unwrap().get_ref().id, conn.get_ref().id);
    assert_eq!(p.connected().await.unwrap_err(), Closed::default());
}
