//! Panics in user code never kill the connection loop.

mod support;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use support::*;
use tokio::time::Instant;
use tower::{Layer, Service};
use tower_persistent::{Event, PersistentLayer};

// A panic of the address lookup or of the connector is a failed attempt whose error says it
// panicked; the loop retries after the delay.
#[tokio::test(start_paused = true)]
async fn panics_in_lookup_and_connect_are_failed_attempts() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let lookup = Script::new(start, [Step::Panic("lookup boom")], Step::Ok("a"));
    let connect = Connect::new(Script::new(
        start,
        [Step::Panic("connect boom")],
        Step::Ok(""),
    ));
    let p = PersistentLayer::new("test", Lookup(lookup))
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .on_event(recorder.handler())
        .layer(connect);
    let mut events = p.events();

    let failure = p.connected_or_failed_to_connect().await.unwrap_err();
    assert!(failure.is_address() && failure.is_panic());
    assert_eq!(failure.text(), "address lookup panicked: lookup boom");
    let failure = p.connected_or_failed_to_connect().await.unwrap_err();
    assert!(failure.is_connect() && failure.is_panic());
    wait_event(&mut events, "connected").await;

    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "FailedToConnect(address lookup panicked: lookup boom)"),
            (1000, "ObtainedAddress(\"a\")"),
            (1000, "FailedToConnect(connect panicked: connect boom)"),
            (2000, "Connected(1)"),
        ])
    );
}

// A lookup or a connect given up at the connect timeout whose future panics as it is dropped:
// a failed attempt whose error says it panicked, and the loop goes on (it ended the driver).
#[tokio::test(start_paused = true)]
async fn a_call_that_panics_as_it_is_dropped_at_the_timeout_is_a_failed_attempt() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let lookup = Script::new(
        start,
        [Step::HangThenPanicOnDrop("lookup dropped")],
        Step::Ok("a"),
    );
    let connect = Connect::new(Script::new(
        start,
        [Step::HangThenPanicOnDrop("connect dropped")],
        Step::Ok(""),
    ));
    // Each attempt is given up at 300 ms; the next one starts then (the delay, 100 ms, has
    // passed).
    let p = PersistentLayer::new("test", Lookup(lookup))
        .retry_delay(|| Duration::from_millis(100))
        .jitter(0.0)
        .connect_timeout(Duration::from_millis(300))
        .on_event(recorder.handler())
        .layer(connect);
    let mut events = p.events();

    let failure = p.connected_or_failed_to_connect().await.unwrap_err();
    assert!(failure.is_address() && failure.is_panic());
    assert_eq!(failure.text(), "address lookup panicked: lookup dropped");
    let failure = p.connected_or_failed_to_connect().await.unwrap_err();
    assert!(failure.is_connect() && failure.is_panic());
    wait_event(&mut events, "connected").await;
    assert!(!p.is_closed());

    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (
                300,
                "FailedToConnect(address lookup panicked: lookup dropped)"
            ),
            (300, "ObtainedAddress(\"a\")"),
            (600, "FailedToConnect(connect panicked: connect dropped)"),
            (600, "Connected(1)"),
        ])
    );
    p.close().await;
}

// A connect under way when closing begins, whose future panics as it is dropped: the close
// finishes all the same, at once.
#[tokio::test(start_paused = true)]
async fn a_connect_that_panics_as_it_is_dropped_by_a_close_does_not_hold_it_up() {
    let start = Instant::now();
    let connect = Connect::new(Script::new(
        start,
        [Step::HangThenPanicOnDrop("connect dropped")],
        Step::Ok(""),
    ));
    let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .connect_timeout(Duration::from_secs(5))
        .layer(connect.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(connect.script.calls(), vec![0]);
    p.close().await;
    assert_eq!(ms(start), 10);
    assert!(p.is_closed());
}

/// An address lookup whose `poll_ready` panics on its first call.
#[derive(Clone)]
struct PanickyReady(Arc<AtomicUsize>);

impl Service<()> for PanickyReady {
    type Response = &'static str;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<&'static str>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("not ready at all");
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        std::future::ready(Ok("a"))
    }
}

// A panic in the lookup's `poll_ready` counts as a panicked lookup too.
#[tokio::test(start_paused = true)]
async fn panic_in_poll_ready_of_the_lookup_is_a_failed_attempt() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let p = PersistentLayer::new("test", PanickyReady(Arc::default()))
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .on_event(recorder.handler())
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    p.connected().await.unwrap();
    assert_eq!(ms(start), 1000);
    assert_eq!(
        recorder.events()[1],
        "FailedToConnect(address lookup panicked: not ready at all)"
    );
}

// A panicking event handler (when called or when polled) does not stop the loop (its log line:
// `interop/tests/tracing.rs`).
#[tokio::test(start_paused = true)]
async fn panicking_event_handler_is_survived() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let log = recorder.clone();
    let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .on_event(move |event: Event<&'static str, Conn>| {
            log.record(&event);
            if let Event::AttemptingToConnect = event {
                panic!("handler called and panicked");
            }
            async move {
                if let Event::ObtainedAddress(_) = event {
                    panic!("handler polled and panicked");
                }
            }
        })
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    let mut events = p.events();
    wait_event(&mut events, "connected").await;
    assert_eq!(
        recorder.events(),
        [
            "AttemptingToConnect",
            "ObtainedAddress(\"a\")",
            "Connected(1)"
        ]
    );
    p.close().await;
    assert_eq!(recorder.events().last().unwrap(), "Disconnected");
}

// A panicking delay function falls back to the default delay for that attempt.
#[tokio::test(start_paused = true)]
async fn panicking_retry_delay_uses_the_default() {
    let start = Instant::now();
    let lookup = Script::new(start, [Step::Err("down")], Step::Ok("a"));
    let p = PersistentLayer::new("test", Lookup(lookup.clone()))
        .retry_delay(|| panic!("no delay for you"))
        .jitter(0.0)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    p.connected().await.unwrap();
    assert_eq!(lookup.calls(), [0, 10_000]);
}

// A delay function that returns zero is held to the 1 ms floor (no busy loop); one that returns
// `Duration::MAX` to the one-hour ceiling (no overflow, and closing still works).
#[tokio::test(start_paused = true)]
async fn zero_and_huge_delays_are_bounded() {
    let start = Instant::now();
    let lookup = Script::new(start, [], Step::Err("down"));
    let p = PersistentLayer::new("test", Lookup(lookup.clone()))
        .retry_delay(|| Duration::ZERO)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    until(start, 100).await;
    p.close().await;
    let calls = lookup.calls();
    assert_eq!(calls.len(), 100, "one attempt per millisecond: {calls:?}");

    let start = Instant::now();
    let lookup = Script::new(start, [], Step::Err("down"));
    let p = PersistentLayer::new("test", Lookup(lookup.clone()))
        .retry_delay(|| Duration::MAX)
        .jitter(0.0)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    until(start, 3 * 3_600_000 + 1).await;
    assert_eq!(lookup.calls(), [0, 3_600_000, 7_200_000, 10_800_000]);
    p.close().await;
    assert_eq!(ms(start), 3 * 3_600_000 + 1);
}

/// An error of the address lookup whose `Display` panics, or whose sources loop back to it.
#[derive(Debug)]
enum Odd {
    PanickyDisplay,
    Loop,
}

impl std::fmt::Display for Odd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Odd::PanickyDisplay => panic!("no words"),
            Odd::Loop => f.write_str("loops"),
        }
    }
}

impl std::error::Error for Odd {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Odd::PanickyDisplay => None,
            Odd::Loop => Some(self),
        }
    }
}

// An address lookup failing with an error whose `Display` panics, or whose sources loop, does
// not kill or hang the loop: the error's text says so or is cut, repeated failures are told
// apart as usual, and the next lookup that succeeds connects.
#[tokio::test(start_paused = true)]
async fn errors_whose_display_panics_or_whose_sources_loop_are_failed_attempts() {
    let looped = format!("address lookup failed{}: ...", ": loops".repeat(32));
    for (odd, text) in [
        (
            (|| Odd::PanickyDisplay) as fn() -> Odd,
            "address lookup failed: <panicked: no words>".to_owned(),
        ),
        (|| Odd::Loop, looped),
    ] {
        let start = Instant::now();
        let recorder = Recorder::new(start);
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup = tower::service_fn(move |()| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(odd()) } else { Ok("a") } }
        });
        let p = PersistentLayer::new("test", lookup)
            .retry_delay(|| Duration::from_secs(1))
            .jitter(0.0)
            .on_event(recorder.handler())
            .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
        let failure = p.connected_or_failed_to_connect().await.unwrap_err();
        assert_eq!(failure.text(), text);
        let mut events = p.events();
        wait_event(&mut events, "connected").await;
        // The second failure has the same text: not told again.
        assert_eq!(
            recorder.log(),
            timeline(&[
                (0, "AttemptingToConnect"),
                (0, &format!("FailedToConnect({text})")),
                (2000, "ObtainedAddress(\"a\")"),
                (2000, "Connected(1)"),
            ])
        );
        p.close().await;
    }
}

/// Panics when dropped.
struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

/// Pending for good; panics when dropped.
fn bomb(message: &'static str) -> impl Future<Output = ()> + Send {
    let guard = PanicOnDrop(message);
    async move {
        let _guard = guard;
        std::future::pending::<()>().await
    }
}

/// What the connections of [`bombs`] do, and what was done to them.
#[derive(Default)]
struct Bombs {
    /// `close` hangs, and its future panics as it is dropped.
    close: std::sync::atomic::AtomicBool,
    /// `close_finished`'s future panics as it is dropped before the connection is closed.
    close_finished: std::sync::atomic::AtomicBool,
    /// `poll_ready` fails.
    broken: std::sync::atomic::AtomicBool,
    closes: AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
    changed: tokio::sync::Notify,
}

/// A connection whose futures may panic as they are dropped.
#[derive(Clone)]
struct BombConn(Arc<Bombs>);

impl tower_persistent::Closable for BombConn {
    fn close(&self) -> impl Future<Output = ()> + Send {
        self.0.closes.fetch_add(1, Ordering::SeqCst);
        let bombs = self.0.clone();
        async move {
            if bombs.close.load(Ordering::SeqCst) {
                bomb("close dropped").await
            }
            bombs.closed.store(true, Ordering::SeqCst);
            bombs.changed.notify_waiters();
        }
    }

    fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        let bombs = self.0.clone();
        async move {
            let guard = bombs
                .close_finished
                .load(Ordering::SeqCst)
                .then(|| PanicOnDrop("close_finished dropped"));
            loop {
                let changed = bombs.changed.notified();
                if bombs.closed.load(Ordering::SeqCst) {
                    break;
                }
                changed.await;
            }
            std::mem::forget(guard);
        }
    }
}

impl Service<u32> for BombConn {
    type Response = u32;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<u32>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.0.broken.load(Ordering::SeqCst) {
            Poll::Ready(Err(io::Error::other("broken")))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, n: u32) -> Self::Future {
        std::future::ready(Ok(n))
    }
}

/// Events by name, with their time in ms.
type EventLog = Arc<std::sync::Mutex<Vec<(u64, &'static str)>>>;

/// A persistent connection of [`BombConn`]s sharing `bombs`, closing within 1 s, whose
/// `Connected` handler (with `handler_bomb`) hangs and panics as it is dropped. Returns it, the
/// events' log (ms, event), and how many connections were made.
fn bombs(
    bombs: Arc<Bombs>,
    handler_bomb: bool,
) -> (
    tower_persistent::Persistent<&'static str, BombConn>,
    EventLog,
    Arc<AtomicUsize>,
) {
    let start = Instant::now();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let made = Arc::new(AtomicUsize::new(0));
    let (logged, counted) = (log.clone(), made.clone());
    let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .retry_delay(|| Duration::from_millis(100))
        .jitter(0.0)
        .close_timeout(Duration::from_secs(1))
        .on_event(move |event: Event<&'static str, BombConn>| {
            logged.lock().unwrap().push((ms(start), event.name()));
            let bombing = handler_bomb && matches!(event, Event::Connected(_));
            async move {
                if bombing {
                    bomb("handler dropped").await
                }
            }
        })
        .layer(tower::service_fn(move |_: &'static str| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, io::Error>(BombConn(bombs.clone())))
        }));
    (p, log, made)
}

// A handler abandoned at the close deadline whose future panics as it is dropped: the connection
// is closed and `Disconnected` delivered, at the deadline.
#[tokio::test(start_paused = true)]
async fn a_handler_that_panics_as_it_is_dropped_at_the_close_deadline_is_survived() {
    let state = Arc::new(Bombs::default());
    let (p, log, _) = bombs(state.clone(), true);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let start = Instant::now();
    p.close().await;
    assert_eq!(ms(start), 1000);
    assert_eq!(state.closes.load(Ordering::SeqCst), 1);
    assert_eq!(
        *log.lock().unwrap(),
        [
            (0, "attempting_to_connect"),
            (0, "obtained_address"),
            (0, "connected"),
            (1010, "disconnected"),
        ]
    );
}

// A connection's close that never finishes, whose future panics as it is dropped at the close
// timeout: the connection is given up and `Disconnected` delivered, at the deadline.
#[tokio::test(start_paused = true)]
async fn a_close_that_panics_as_it_is_dropped_at_the_close_timeout_is_survived() {
    let state = Arc::new(Bombs::default());
    state.close.store(true, Ordering::SeqCst);
    let (p, log, _) = bombs(state.clone(), false);
    p.connected().await.unwrap();
    let start = Instant::now();
    p.close().await;
    assert_eq!(ms(start), 1000);
    assert_eq!(log.lock().unwrap().last(), Some(&(1000, "disconnected")));
}

// The same for a connection reported dead (its `poll_ready` failed): given up at the close
// timeout, and the loop goes on with a new connection.
#[tokio::test(start_paused = true)]
async fn a_dead_connections_close_that_panics_as_it_is_dropped_is_survived() {
    let state = Arc::new(Bombs::default());
    state.close.store(true, Ordering::SeqCst);
    let (p, log, made) = bombs(state.clone(), false);
    p.connected().await.unwrap();
    state.broken.store(true, Ordering::SeqCst);
    let mut handle = p.clone();
    let ready = std::future::poll_fn(|cx| {
        let _ = Service::<u32>::poll_ready(&mut handle, cx);
        Poll::Ready(())
    });
    ready.await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while made.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no new connection");
    assert!(!p.is_closed());
    assert_eq!(
        *log.lock().unwrap(),
        [
            (0, "attempting_to_connect"),
            (0, "obtained_address"),
            (0, "connected"),
            (1000, "disconnected"),
            (1000, "attempting_to_connect"),
            (1000, "obtained_address"),
            (1000, "connected"),
        ]
    );
    p.close().await;
}

// A connection's `close_finished` future that panics as it is dropped when closing begins: the
// connection is closed and `Disconnected` delivered at once.
#[tokio::test(start_paused = true)]
async fn a_close_finished_that_panics_as_it_is_dropped_is_survived() {
    let state = Arc::new(Bombs::default());
    state.close_finished.store(true, Ordering::SeqCst);
    let (p, log, _) = bombs(state.clone(), false);
    p.connected().await.unwrap();
    p.close().await;
    assert_eq!(state.closes.load(Ordering::SeqCst), 1);
    assert_eq!(log.lock().unwrap().last(), Some(&(0, "disconnected")));
}
