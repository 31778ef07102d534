//! The connection loop: events, deduplication, delays, and awaited handlers.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::time::Instant;
use tower::{Layer, service_fn};
use tower_persistent::{Closable, Event, PersistentLayer};

const SECOND: Duration = Duration::from_secs(1);

/// A persistent connection with a recorder, exact 1 s delays, and the given scripts.
fn start_with(
    start: Instant,
    lookup: Vec<Step>,
    connect: Vec<Step>,
) -> (
    tower_persistent::Persistent<&'static str, Conn>,
    Recorder,
    Script,
    Connect,
) {
    let recorder = Recorder::new(start);
    let lookup = Script::new(start, lookup, Step::Ok("a"));
    let connect = Connect::new(Script::new(start, connect, Step::Ok("")));
    let persistent = PersistentLayer::new("test", Lookup(lookup.clone()))
        .retry_delay(|| SECOND)
        .jitter(0.0)
        .on_event(recorder.handler())
        .layer(connect.clone());
    (persistent, recorder, lookup, connect)
}

// The first connection is reported as exactly AttemptingToConnect, ObtainedAddress, Connected.
#[tokio::test(start_paused = true)]
async fn first_connection_events() {
    let start = Instant::now();
    let (p, recorder, _, connect) = start_with(start, vec![], vec![]);
    let mut events = p.events();

    let conn = p.connected().await.unwrap();
    wait_event(&mut events, "connected").await;

    assert_eq!(conn.get_ref().id, 1);
    assert_eq!(connect.addresses.lock().unwrap().as_slice(), ["a"]);
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "ObtainedAddress(\"a\")"),
            (0, "Connected(1)"),
        ])
    );
    assert_eq!(p.current_connection().unwrap().get_ref().id, 1);
    // Connected: both waits answer at once with the current connection.
    assert_eq!(p.connected().await.unwrap().get_ref().id, 1);
    assert_eq!(
        p.connected_or_failed_to_connect()
            .await
            .unwrap()
            .get_ref()
            .id,
        1
    );
    assert_eq!(ms(start), 0);
    assert_eq!(p.server_name(), "test");
}

// A failed address lookup then a success is one round: a single AttemptingToConnect.
#[tokio::test(start_paused = true)]
async fn failed_lookup_then_success_is_one_round() {
    let start = Instant::now();
    let (p, recorder, lookup, _) = start_with(start, vec![Step::Err("no replica")], vec![]);
    let mut events = p.events();

    wait_event(&mut events, "connected").await;

    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "FailedToConnect(address lookup failed: no replica)"),
            (1000, "ObtainedAddress(\"a\")"),
            (1000, "Connected(1)"),
        ])
    );
    assert_eq!(lookup.calls(), [0, 1000]);
}

// Within a round, addresses a, a, b, a give a, b, a and errors e1, e1, e2, e1 give e1, e2, e1;
// lookup and connect errors share one slot; both slots are cleared by a new round.
#[tokio::test(start_paused = true)]
async fn deduplication_within_a_round() {
    let start = Instant::now();
    let ok = Step::Ok;
    let (p, recorder, _, connect) = start_with(
        start,
        vec![ok("a"), ok("a"), ok("b"), ok("a"), ok("a"), ok("a")],
        vec![
            Step::Err("e1"),
            Step::Err("e1"),
            Step::Err("e2"),
            Step::Err("e1"),
            Step::Ok(""),
        ],
    );
    let mut events = p.events();
    wait_event(&mut events, "connected").await;
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "ObtainedAddress(\"a\")"),
            (0, "FailedToConnect(connect failed: e1)"),
            (2000, "ObtainedAddress(\"b\")"),
            (2000, "FailedToConnect(connect failed: e2)"),
            (3000, "ObtainedAddress(\"a\")"),
            (3000, "FailedToConnect(connect failed: e1)"),
            (4000, "Connected(1)"),
        ])
    );

    // A new round clears both slots: the same address and error are reported again.
    connect.script.push(Step::Err("e1"));
    connect.script.push(Step::Ok(""));
    connect.conn(1).close().await;
    wait_event(&mut events, "connected").await;
    assert_eq!(
        recorder.log()[8..],
        timeline(&[
            (4000, "Disconnected"),
            (5000, "AttemptingToConnect"),
            (5000, "ObtainedAddress(\"a\")"),
            (5000, "FailedToConnect(connect failed: e1)"),
            (6000, "Connected(2)"),
        ])
    );
}

// Errors of the lookup and of the connector share one deduplication slot.
#[tokio::test(start_paused = true)]
async fn lookup_and_connect_errors_share_a_slot() {
    let start = Instant::now();
    let (p, recorder, _, _) = start_with(
        start,
        vec![Step::Ok("a"), Step::Err("e1"), Step::Ok("a"), Step::Ok("a")],
        vec![
            Step::Err("e1"),
            Step::Err("e1"),
            Step::Err("e1"),
            Step::Ok(""),
        ],
    );
    let mut events = p.events();
    wait_event(&mut events, "connected").await;
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "ObtainedAddress(\"a\")"),
            (0, "FailedToConnect(connect failed: e1)"),
            (1000, "FailedToConnect(address lookup failed: e1)"),
            (2000, "FailedToConnect(connect failed: e1)"),
            (4000, "Connected(1)"),
        ])
    );
}

/// Runs `attempts` failing attempts and returns the gaps between their starts.
async fn attempt_gaps(layer_delay: Option<Duration>, attempts: usize) -> (Vec<Duration>, usize) {
    let times = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let delay_calls = Arc::new(AtomicUsize::new(0));
    let lookup = {
        let times = times.clone();
        service_fn(move |()| {
            times.lock().unwrap().push(Instant::now());
            std::future::ready(Err::<&'static str, _>(std::io::Error::other("down")))
        })
    };
    let mut layer = PersistentLayer::new("test", lookup);
    if let Some(delay) = layer_delay {
        let delay_calls = delay_calls.clone();
        layer = layer.retry_delay(move || {
            delay_calls.fetch_add(1, Ordering::SeqCst);
            delay
        });
    }
    let p = layer.layer(Connect::new(Script::new(Instant::now(), [], Step::Ok(""))));
    // Bounded: each wait reports one attempt (the check below fails if they do not come).
    for _ in 0..attempts * 2 {
        if times.lock().unwrap().len() >= attempts {
            break;
        }
        let _ = p.connected_or_failed_to_connect().await;
    }
    assert!(times.lock().unwrap().len() >= attempts);
    p.close().await;
    let times = times.lock().unwrap().clone();
    let gaps = times.windows(2).map(|w| w[1] - w[0]).collect();
    (gaps, delay_calls.load(Ordering::SeqCst))
}

// The starts of two attempts are 0.7 d to 1.3 d apart, randomised, and the delay function is
// called once per attempt.
#[tokio::test(start_paused = true)]
async fn delays_are_jittered_within_thirty_percent() {
    let (gaps, delay_calls) = attempt_gaps(Some(SECOND), 200).await;
    assert_eq!(gaps.len(), 199);
    for gap in &gaps {
        assert!(
            (Duration::from_millis(700)..=Duration::from_millis(1300)).contains(gap),
            "gap {gap:?}"
        );
    }
    let mut distinct = gaps.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 150,
        "only {} distinct gaps",
        distinct.len()
    );
    // Both halves of the range are used.
    assert!(gaps.iter().any(|g| *g < Duration::from_millis(900)));
    assert!(gaps.iter().any(|g| *g > Duration::from_millis(1100)));
    // One call per attempt: the 200 made, and the one whose timer was running at close.
    assert!((200..=201).contains(&delay_calls), "{delay_calls} calls");
}

// Without `retry_delay` the delay is 10 s, jittered.
#[tokio::test(start_paused = true)]
async fn default_delay_is_ten_seconds() {
    let (gaps, _) = attempt_gaps(None, 20).await;
    for gap in &gaps {
        assert!(
            (Duration::from_secs(7)..=Duration::from_secs(13)).contains(gap),
            "gap {gap:?}"
        );
    }
}

// The timer starts before the lookup: a slow lookup does not push the next attempt back.
#[tokio::test(start_paused = true)]
async fn delay_separates_the_starts_of_attempts() {
    let start = Instant::now();
    let slow_failure = Step::After(Duration::from_millis(300), Box::new(Step::Err("slow")));
    let (p, recorder, lookup, _) =
        start_with(start, vec![slow_failure.clone(), slow_failure], vec![]);
    let mut events = p.events();
    wait_event(&mut events, "connected").await;
    assert_eq!(lookup.calls(), [0, 1000, 2000]);
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (300, "FailedToConnect(address lookup failed: slow)"),
            (2000, "ObtainedAddress(\"a\")"),
            (2000, "Connected(1)"),
        ])
    );
}

// A connection that outlived the delay is replaced at once; one that died young waits for the
// rest of its attempt's delay.
#[tokio::test(start_paused = true)]
async fn long_lived_connection_reconnects_at_once_young_one_waits() {
    let start = Instant::now();
    let (p, recorder, _, connect) = start_with(start, vec![], vec![]);
    let mut events = p.events();
    wait_event(&mut events, "connected").await;

    until(start, 5000).await;
    connect.conn(1).close().await;
    wait_event(&mut events, "connected").await;

    until(start, 5300).await;
    connect.conn(2).close().await;
    wait_event(&mut events, "connected").await;

    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "ObtainedAddress(\"a\")"),
            (0, "Connected(1)"),
            (5000, "Disconnected"),
            (5000, "AttemptingToConnect"),
            (5000, "ObtainedAddress(\"a\")"),
            (5000, "Connected(2)"),
            (5300, "Disconnected"),
            (6000, "AttemptingToConnect"),
            (6000, "ObtainedAddress(\"a\")"),
            (6000, "Connected(3)"),
        ])
    );
}

// Handlers are awaited: no lookup before the AttemptingToConnect handler finishes, and no
// Disconnected before the Connected handler finishes, though the connection died meanwhile.
#[tokio::test(start_paused = true)]
async fn event_handlers_are_awaited() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let lookup = Script::new(start, [], Step::Ok("a"));
    let connect = Connect::new(Script::new(start, [], Step::Ok("")));
    let handler_recorder = recorder.clone();
    let p = PersistentLayer::new("test", Lookup(lookup.clone()))
        .retry_delay(|| SECOND)
        .jitter(0.0)
        .on_event(move |event: Event<&'static str, Conn>| {
            let recorder = handler_recorder.clone();
            async move {
                let pause = match &event {
                    Event::AttemptingToConnect => 500,
                    Event::Connected(_) => 2000,
                    _ => 0,
                };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                recorder.record(&event);
            }
        })
        .layer(connect.clone());
    let mut events = p.events();

    let conn = p.connected().await.unwrap();
    assert_eq!(ms(start), 500);
    conn.close().await;
    wait_event(&mut events, "disconnected").await;
    assert_eq!(lookup.calls()[0], 500);
    assert_eq!(
        recorder.log(),
        timeline(&[
            (500, "AttemptingToConnect"),
            (500, "ObtainedAddress(\"a\")"),
            (2500, "Connected(1)"),
            (2500, "Disconnected"),
        ])
    );
}

// A connector that never answers is bounded by `tower::timeout` stacked under the layer: the
// attempt fails with the timeout's error and the loop goes on.
#[tokio::test(start_paused = true)]
async fn hanging_connector_is_cut_off_by_a_timeout_layer() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let connect = Connect::new(Script::new(start, [Step::Hang], Step::Ok("")));
    let p = tower::ServiceBuilder::new()
        .layer(
            PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
                .retry_delay(|| SECOND)
                .jitter(0.0)
                .on_event(recorder.handler()),
        )
        .timeout(Duration::from_secs(5))
        .service(connect.clone());
    let failure = p.connected_or_failed_to_connect().await.unwrap_err();
    assert_eq!(failure.text(), "connect failed: request timed out");
    p.connected().await.unwrap();
    assert_eq!(connect.script.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "ObtainedAddress(\"a\")"),
            (5000, "FailedToConnect(connect failed: request timed out)"),
            (5000, "Connected(1)"),
        ])
    );
}

/// `S`, whose `poll_ready` fails the first `failures` times it is polled.
#[derive(Clone)]
struct FailsReady<S> {
    inner: S,
    failures: Arc<AtomicUsize>,
    what: &'static str,
}

impl<S, R> tower::Service<R> for FailsReady<S>
where
    S: tower::Service<R, Error = std::io::Error>,
{
    type Response = S::Response;
    type Error = std::io::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return std::task::Poll::Ready(Err(std::io::Error::other(self.what)));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.inner.call(request)
    }
}

// A lookup or a connector whose `poll_ready` fails is a failed attempt, and is used again at the
// next attempt (not given up for good, as tower's rule for a failed `poll_ready` would have it):
// the lookup fails once, then the connector once, then both serve.
#[tokio::test(start_paused = true)]
async fn failed_poll_ready_of_lookup_or_connector_is_a_failed_attempt_and_used_again() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let lookup = FailsReady {
        inner: Lookup(Script::new(start, [], Step::Ok("a"))),
        failures: Arc::new(AtomicUsize::new(1)),
        what: "lookup not ready",
    };
    let connect = Connect::new(Script::new(start, [], Step::Ok("")));
    let connect = FailsReady {
        inner: connect.clone(),
        failures: Arc::new(AtomicUsize::new(1)),
        what: "connector not ready",
    };
    let p = PersistentLayer::new("test", lookup.clone())
        .retry_delay(|| SECOND)
        .jitter(0.0)
        .on_event(recorder.handler())
        .layer(connect.clone());
    let mut events = p.events();

    wait_event(&mut events, "connected").await;

    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (
                0,
                "FailedToConnect(address lookup failed: lookup not ready)"
            ),
            (1000, "ObtainedAddress(\"a\")"),
            (1000, "FailedToConnect(connect failed: connector not ready)"),
            (2000, "Connected(1)"),
        ])
    );
    assert_eq!(lookup.failures.load(Ordering::SeqCst), 0);
    assert_eq!(connect.failures.load(Ordering::SeqCst), 0);
    p.close().await;
}
