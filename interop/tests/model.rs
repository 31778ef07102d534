//! Property tests of the connection loop on a paused clock: scripted discovery and connector
//! (successes, failures, latencies, panics, hangs), connections that die, close gracefully or
//! misbehave when closed, handles that come and go, and `close()` at a random moment. After each
//! case the invariants of the loop are checked on what the callback saw.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service, ServiceExt};
use tower_persistent::{Closable, Event, Persistent, PersistentLayer};

const DELAY: Duration = Duration::from_millis(1000);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3000);
const CLOSE_TIMEOUT: Duration = Duration::from_millis(2000);

/// What one call of the lookup or the connector does, after `latency` ms.
#[derive(Clone, Debug)]
enum Outcome {
    Ok,
    Err(u8),
    Panic,
    Hang,
}

#[derive(Clone, Debug)]
struct Step {
    latency: u64,
    outcome: Outcome,
}

/// How a connection made by the model connector behaves.
#[derive(Clone, Copy, Debug, Default)]
struct Behaviour {
    close_hangs: bool,
    close_panics: bool,
    close_finished_panics: bool,
    /// When the peer closes it, it served and closed gracefully.
    graceful: bool,
}

/// Something the test does at a time.
#[derive(Clone, Debug)]
enum Action {
    /// The peer closes the current connection.
    PeerClose,
    /// The current connection's poll_ready starts failing.
    BreakReady,
    /// A new handle sends one request, then is dropped at once or kept until the end.
    Request { keep: bool },
    /// `connected()` is called; what it returns must be live.
    Connected,
    /// `reconnect_now()`.
    ReconnectNow,
}

#[derive(Clone, Debug)]
struct Case {
    lookups: Vec<Step>,
    connects: Vec<(Step, Behaviour)>,
    actions: Vec<(u64, Action)>,
    close_at: u64,
}

fn step() -> impl Strategy<Value = Step> {
    let outcome = prop_oneof![
        6 => Just(Outcome::Ok),
        3 => (0u8..3).prop_map(Outcome::Err),
        1 => Just(Outcome::Panic),
        1 => Just(Outcome::Hang),
    ];
    (prop_oneof![3 => Just(0u64), 2 => 0u64..2500], outcome)
        .prop_map(|(latency, outcome)| Step { latency, outcome })
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    (
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.4),
    )
        .prop_map(
            |(close_hangs, close_panics, close_finished_panics, graceful)| Behaviour {
                close_hangs,
                close_panics,
                close_finished_panics,
                graceful,
            },
        )
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::PeerClose),
        2 => Just(Action::BreakReady),
        3 => any::<bool>().prop_map(|keep| Action::Request { keep }),
        2 => Just(Action::Connected),
        1 => Just(Action::ReconnectNow),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(step(), 0..8),
        prop::collection::vec((step(), behaviour()), 0..8),
        prop::collection::vec((0u64..15_000, action()), 0..12),
        0u64..16_000,
    )
        .prop_map(|(lookups, connects, mut actions, close_at)| {
            actions.sort_by_key(|(at, _)| *at);
            Case {
                lookups,
                connects,
                actions,
                close_at,
            }
        })
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs a step: waits its latency, then answers, fails, panics or hangs.
async fn run<T>(step: Step, make: impl FnOnce() -> T) -> io::Result<T> {
    tokio::time::sleep(Duration::from_millis(step.latency)).await;
    match step.outcome {
        Outcome::Ok => Ok(make()),
        Outcome::Err(n) => Err(io::Error::other(format!("scripted error {n}"))),
        Outcome::Panic => panic!("scripted panic"),
        Outcome::Hang => std::future::pending().await,
    }
}

/// The lookup: its steps, then addresses at once. Records the time of every call.
#[derive(Clone)]
struct Lookup {
    start: Instant,
    steps: Arc<Mutex<VecDeque<Step>>>,
    calls: Arc<Mutex<Vec<u64>>>,
}

impl Service<()> for Lookup {
    type Response = u8;
    type Error = io::Error;
    type Future = BoxFuture<io::Result<u8>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(self.start.elapsed().as_millis() as u64);
            calls.len()
        };
        let step = self.steps.lock().unwrap().pop_front().unwrap_or(Step {
            latency: 0,
            outcome: Outcome::Ok,
        });
        // Two addresses in turn, so that ObtainedAddress deduplication is exercised.
        Box::pin(run(step, move || (n % 2) as u8))
    }
}

/// A connection of the model.
#[derive(Clone)]
struct Conn {
    id: usize,
    behaviour: Behaviour,
    broken: Arc<AtomicBool>,
    close_called: Arc<AtomicBool>,
    /// Cancelled when closing begins (by either side).
    closing: CancellationToken,
    /// Cancelled when closing finished.
    closed: CancellationToken,
    /// The peer closed it (and whether gracefully).
    by_peer: Arc<AtomicBool>,
}

impl Closable for Conn {
    fn close(&self) -> impl Future<Output = ()> + Send {
        self.close_called.store(true, Ordering::SeqCst);
        if self.behaviour.close_panics {
            panic!("scripted panic in close");
        }
        self.closing.cancel();
        let (closed, hangs) = (self.closed.clone(), self.behaviour.close_hangs);
        async move {
            if hangs {
                std::future::pending::<()>().await;
            }
            closed.cancel();
        }
    }

    fn is_closed(&self) -> bool {
        self.closing.is_cancelled()
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        let (closed, panics) = (self.closed.clone(), self.behaviour.close_finished_panics);
        async move {
            if panics {
                panic!("scripted panic in close_finished");
            }
            closed.cancelled().await
        }
    }

    fn closed_gracefully(&self) -> bool {
        self.by_peer.load(Ordering::SeqCst) && self.behaviour.graceful
    }
}

impl Service<u32> for Conn {
    type Response = usize;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<usize>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.broken.load(Ordering::SeqCst) || self.closing.is_cancelled() {
            Poll::Ready(Err(io::Error::other("broken")))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, _: u32) -> Self::Future {
        std::future::ready(Ok(self.id))
    }
}

/// The connector: its steps, then connections at once.
#[derive(Clone)]
struct Connect {
    steps: Arc<Mutex<VecDeque<(Step, Behaviour)>>>,
    made: Arc<Mutex<Vec<Conn>>>,
}

impl Service<u8> for Connect {
    type Response = Conn;
    type Error = io::Error;
    type Future = BoxFuture<io::Result<Conn>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u8) -> Self::Future {
        let (step, behaviour) = self.steps.lock().unwrap().pop_front().unwrap_or((
            Step {
                latency: 0,
                outcome: Outcome::Ok,
            },
            Behaviour::default(),
        ));
        let made = self.made.clone();
        Box::pin(run(step, move || {
            let mut made = made.lock().unwrap();
            let conn = Conn {
                id: made.len() + 1,
                behaviour,
                broken: Arc::default(),
                close_called: Arc::default(),
                closing: CancellationToken::new(),
                closed: CancellationToken::new(),
                by_peer: Arc::default(),
            };
            made.push(conn.clone());
            conn
        }))
    }
}

/// One event as the callback saw it: (ms, name, connection id).
type Seen = Arc<Mutex<Vec<(u64, &'static str, usize)>>>;

/// Runs one case on a paused clock and checks the invariants.
fn check(case: Case) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        // A hang is a failure, not a stuck test.
        match tokio::time::timeout(Duration::from_secs(10 * 3600), run_case(case)).await {
            Ok(result) => result,
            Err(_) => Err(TestCaseError::fail("the case hung")),
        }
    })
}

async fn run_case(case: Case) -> Result<(), TestCaseError> {
    {
        let start = Instant::now();
        let lookup = Lookup {
            start,
            steps: Arc::new(Mutex::new(case.lookups.into_iter().collect())),
            calls: Arc::default(),
        };
        let connect = Connect {
            steps: Arc::new(Mutex::new(case.connects.into_iter().collect())),
            made: Arc::default(),
        };
        let seen: Seen = Arc::default();
        let recorder = seen.clone();
        let p: Persistent<u8, Conn> = PersistentLayer::new("model", lookup.clone())
            .retry_delay(|| DELAY)
            .jitter(0.0)
            .connect_timeout(CONNECT_TIMEOUT)
            .close_timeout(CLOSE_TIMEOUT)
            .on_event(move |event: Event<u8, Conn>| {
                let id = match &event {
                    Event::Connected(conn) => conn.id,
                    _ => 0,
                };
                recorder.lock().unwrap().push((
                    start.elapsed().as_millis() as u64,
                    event.name(),
                    id,
                ));
                async {}
            })
            .layer(connect.clone());

        let mut kept = Vec::new();
        let mut requests = tokio::task::JoinSet::new();
        // When a wait could end early: graceful closes and reconnect_now.
        let mut graceful_deaths = Vec::new();
        let mut close_at = Some(case.close_at);
        let mut closed_at = None;
        for (at, action) in case.actions {
            if let Some(close) = close_at.filter(|c| *c <= at) {
                tokio::time::sleep_until(start + Duration::from_millis(close)).await;
                close_at = None;
                closed_at = Some(close_and_check(&p, start).await?);
            }
            tokio::time::sleep_until(start + Duration::from_millis(at)).await;
            match action {
                Action::PeerClose => {
                    if let Some(conn) = p.current_connection() {
                        conn.by_peer.store(true, Ordering::SeqCst);
                        if conn.behaviour.graceful && !conn.behaviour.close_finished_panics {
                            graceful_deaths.push(at);
                        }
                        conn.closing.cancel();
                        conn.closed.cancel();
                    }
                }
                Action::BreakReady => {
                    if let Some(conn) = p.current_connection() {
                        conn.broken.store(true, Ordering::SeqCst);
                    }
                }
                Action::Request { keep } => {
                    let handle = p.clone();
                    if keep {
                        kept.push(p.clone());
                    }
                    // Bounded: a request waits for a connection or for closing.
                    requests.spawn(async move {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(60), handle.oneshot(1)).await;
                    });
                }
                Action::Connected => {
                    // Only what is there at once: waiting is checked elsewhere.
                    if let Some(Ok(conn)) = futures_util::FutureExt::now_or_never(p.connected()) {
                        prop_assert!(
                            !conn.is_closed(),
                            "connected() returned a closed connection"
                        );
                    }
                }
                Action::ReconnectNow => {
                    // Cuts the wait short, on purpose.
                    graceful_deaths.push(at);
                    p.reconnect_now();
                }
            }
        }
        if let Some(close) = close_at {
            tokio::time::sleep_until(start + Duration::from_millis(close)).await;
            closed_at = Some(close_and_check(&p, start).await?);
        }
        let closed_at = closed_at.unwrap();
        while requests.join_next().await.is_some() {}
        drop(kept);

        // An hour later, nothing more happened.
        let events_then = seen.lock().unwrap().len();
        let lookups_then = lookup.calls.lock().unwrap().len();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        prop_assert_eq!(
            seen.lock().unwrap().len(),
            events_then,
            "events after closing"
        );
        prop_assert_eq!(
            lookup.calls.lock().unwrap().len(),
            lookups_then,
            "attempts after close"
        );

        let seen = seen.lock().unwrap().clone();
        let calls = lookup.calls.lock().unwrap().clone();
        let made = connect.made.lock().unwrap().clone();
        check_events(&seen, closed_at)?;
        check_attempt_starts(&calls, &seen, &graceful_deaths)?;
        // Every connection made is closed by the end: by its peer, or closed by the driver
        // (whose close may hang or panic, and is then given up).
        for conn in &made {
            prop_assert!(
                conn.by_peer.load(Ordering::SeqCst)
                    || conn.close_called.load(Ordering::SeqCst)
                    || conn.behaviour.close_finished_panics,
                "connection {} left open; events {:?}",
                conn.id,
                seen
            );
        }
        Ok(())
    }
}

/// Closes `p`, checks that it resolved within the close timeout, and returns when it began.
async fn close_and_check(p: &Persistent<u8, Conn>, start: Instant) -> Result<u64, TestCaseError> {
    let began = Instant::now();
    p.close().await;
    prop_assert!(
        began.elapsed() <= CLOSE_TIMEOUT,
        "close() took {:?}",
        began.elapsed()
    );
    prop_assert!(p.current_connection().is_none());
    Ok((began - start).as_millis() as u64)
}

/// Connected and Disconnected alternate; AttemptingToConnect only opens a round (first, or
/// right after Disconnected), never after closing began.
fn check_events(seen: &[(u64, &'static str, usize)], closed_at: u64) -> Result<(), TestCaseError> {
    let mut connected: Option<usize> = None;
    let mut previous: Option<&str> = None;
    for &(at, name, id) in seen {
        match name {
            "connected" => {
                prop_assert!(connected.is_none(), "two current connections: {:?}", seen);
                connected = Some(id);
            }
            "disconnected" => {
                prop_assert!(
                    connected.is_some(),
                    "Disconnected without Connected: {:?}",
                    seen
                );
                connected = None;
            }
            "attempting_to_connect" => {
                prop_assert!(
                    previous.is_none() || previous == Some("disconnected"),
                    "AttemptingToConnect in the middle of a round: {:?}",
                    seen
                );
                prop_assert!(
                    at <= closed_at,
                    "AttemptingToConnect after close: {:?}",
                    seen
                );
            }
            _ => {}
        }
        previous = Some(name);
    }
    prop_assert!(
        connected.is_none(),
        "the last connection was never disconnected: {:?}",
        seen
    );
    Ok(())
}

/// Attempt starts are at least the delay apart, except right after a connection that its peer
/// closed and whose `closed_gracefully` says so (for the HTTP connection: one that served),
/// which is replaced at once, or a `reconnect_now`.
fn check_attempt_starts(
    calls: &[u64],
    seen: &[(u64, &'static str, usize)],
    graceful_deaths: &[u64],
) -> Result<(), TestCaseError> {
    let delay = DELAY.as_millis() as u64;
    for pair in calls.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let graceful_between = graceful_deaths.iter().any(|&g| a <= g && g <= b);
        prop_assert!(
            b - a >= delay || graceful_between,
            "attempts at {} and {}: {:?} (events {:?})",
            a,
            b,
            calls,
            seen
        );
    }
    Ok(())
}

/// Silences the scripted panics (thousands of them), and only those.
fn quiet_scripted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !message.starts_with("scripted panic") {
                default(info);
            }
        }));
    });
}

/// How many cases: `PROPTEST_CASES` or 2,000.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    // Whatever the lookups, connects, connection deaths and handles do, and whenever close()
    // comes: Connected and Disconnected alternate, rounds open with AttemptingToConnect only,
    // nothing happens after close, attempt starts keep the delay (but after a graceful close),
    // close() resolves within the close timeout, every connection is closed by the end, and
    // connected() never hands out a closed connection.
    #[test]
    fn the_connection_loop_keeps_its_invariants(case in case()) {
        quiet_scripted_panics();
        check(case)?;
    }
}
