//! The state of the connection loop, its changes, and `reconnect_now`.

mod support;

use std::time::Duration;

use support::*;
use tokio::time::Instant;
use tower::Layer;
use tower_persistent::backoff::{Exponential, RetryPolicy};
use tower_persistent::{Closable, Event, PersistentLayer, State};

/// `State` in a comparable form: (kind, attempt, next attempt in ms from start, last error).
fn summary(start: Instant, state: &State) -> (String, u32, Option<u64>, Option<String>) {
    match state {
        State::Connecting {
            attempt,
            next_attempt_at,
            last_error,
        } => (
            "connecting".into(),
            *attempt,
            next_attempt_at.map(|at| (at - start).as_millis() as u64),
            last_error.as_ref().map(|e| e.text()),
        ),
        State::Connected => ("connected".into(), 0, None, None),
        State::Closed => ("closed".into(), 0, None, None),
        other => (format!("{other:?}"), 0, None, None),
    }
}

// The state follows the loop: the attempt, the time of the next one and the last error while
// connecting; connected; waiting after a disconnection; closed from the call to close.
#[tokio::test(start_paused = true)]
async fn state_follows_the_loop() {
    let start = Instant::now();
    let connect = Connect::new(Script::new(start, [], Step::Ok("")));
    let p = PersistentLayer::new(
        "test",
        Lookup(Script::new(
            start,
            [Step::Err("e1"), Step::Err("e2")],
            Step::Ok("a"),
        )),
    )
    .retry_delay(|| Duration::from_secs(1))
    .jitter(0.0)
    .layer(connect.clone());

    let mut seen = vec![summary(start, &p.state())];
    // Bounded: a loop that never connects fails the comparison below.
    for _ in 0..8 {
        if p.state().is_connected() {
            break;
        }
        seen.push(summary(start, &p.state_changed().await));
    }
    let s = |kind: &str, attempt, next: Option<u64>, error: Option<&str>| {
        (kind.to_owned(), attempt, next, error.map(str::to_owned))
    };
    let e1 = "address lookup failed: e1";
    let e2 = "address lookup failed: e2";
    assert_eq!(
        seen,
        vec![
            s("connecting", 0, None, None),
            s("connecting", 1, Some(1000), Some(e1)),
            s("connecting", 2, Some(2000), Some(e2)),
            s("connected", 0, None, None),
        ],
    );

    // A young connection dies: waiting for the rest of its attempt's delay.
    until(start, 2500).await;
    let changed = p.state_changed();
    connect.conn(1).close().await;
    assert_eq!(
        summary(start, &changed.await),
        s("connecting", 0, Some(3000), None)
    );

    let changed = p.state_changed();
    drop(p.close());
    assert!(p.state().is_closed(), "closed from the call");
    assert!(changed.await.is_closed());
}

// `reconnect_now` cuts a retry wait short and starts the policy again from its first delay.
#[tokio::test(start_paused = true)]
async fn reconnect_now_cuts_the_wait_short_and_resets_the_backoff() {
    let start = Instant::now();
    let lookup = Script::new(start, [], Step::Err("down"));
    let doubling = RetryPolicy::exponential(Exponential {
        initial: Duration::from_secs(1),
        multiplier: 2.0,
        jitter: 0.0,
        max: Duration::from_secs(3600),
    })
    .unwrap();
    let p = PersistentLayer::new("test", Lookup(lookup.clone()))
        .retry_policy(doubling)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));

    // Attempts at 0, 1, 3, 7 s; the next one would be at 15 s.
    until(start, 10_000).await;
    assert_eq!(lookup.calls(), [0, 1000, 3000, 7000]);
    p.reconnect_now();
    until(start, 12_500).await;
    // At once, then the policy starts again: 1 s, then 2 s.
    assert_eq!(lookup.calls(), [0, 1000, 3000, 7000, 10_000, 11_000]);
    until(start, 13_001).await;
    assert_eq!(lookup.calls()[6], 13_000);

    // While an attempt is under way or once closed, it does nothing.
    p.close().await;
    p.reconnect_now();
    until(start, 100_000).await;
    assert_eq!(lookup.calls().len(), 7);
}

// `reconnect_now` also counts while the wait is about to begin, whenever the state shows the
// next attempt's time: during a `FailedToConnect` handler, and during a `Disconnected` one. The
// wait that follows is then not waited.
#[tokio::test(start_paused = true)]
async fn reconnect_now_during_a_handler_cuts_the_coming_wait() {
    let start = Instant::now();
    let lookup = Script::new(start, [Step::Err("down")], Step::Ok("a"));
    let connect = Connect::new(Script::new(start, [], Step::Ok("")));
    let p = PersistentLayer::new("test", Lookup(lookup.clone()))
        .retry_delay(|| Duration::from_secs(10))
        .jitter(0.0)
        .on_event(|event| async move {
            if matches!(event, Event::FailedToConnect(_) | Event::Disconnected) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .layer(connect.clone());

    until(start, 10).await;
    let (kind, attempt, next, _) = summary(start, &p.state());
    assert_eq!(
        (kind.as_str(), attempt, next),
        ("connecting", 1, Some(10_000))
    );
    p.reconnect_now();
    p.connected().await.unwrap();
    assert_eq!(ms(start), 50, "right after the handler");
    assert_eq!(lookup.calls(), [0, 50]);

    // The connection ends young: the next round is due 10 s after its attempt began.
    until(start, 1000).await;
    connect.conn(1).close().await;
    until(start, 1010).await;
    let (kind, attempt, next, _) = summary(start, &p.state());
    assert_eq!(
        (kind.as_str(), attempt, next),
        ("connecting", 0, Some(10_050))
    );
    p.reconnect_now();
    p.connected().await.unwrap();
    assert_eq!(ms(start), 1050, "right after the handler");
    assert_eq!(lookup.calls(), [0, 50, 1050]);

    // Asked while connected, it does nothing later: the next wait is waited in full.
    p.reconnect_now();
    until(start, 2000).await;
    connect.conn(2).close().await;
    until(start, 2100).await;
    assert_eq!(lookup.calls(), [0, 50, 1050]);
    until(start, 11_100).await;
    assert_eq!(lookup.calls(), [0, 50, 1050, 11_050]);
    p.close().await;
}

// Closed is the last state: `state_changed` called once closed resolves at once with it (there
// is no next change to wait for), as one called before the close resolves with it at the close.
#[tokio::test(start_paused = true)]
async fn state_changed_once_closed_resolves_at_once_with_closed() {
    let start = Instant::now();
    let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    p.connected().await.unwrap();
    let before = tokio::spawn(p.state_changed());
    tokio::task::yield_now().await;
    p.close().await;
    assert!(before.await.unwrap().is_closed());
    let after = tokio::time::timeout(Duration::from_secs(3600), p.state_changed()).await;
    assert!(after.expect("resolves at once").is_closed());
    assert_eq!(ms(start), 0);
}

// `reconnect_now` called in a loop (here 100 times at one instant, the driver let run after each
// call, every attempt failing at once) starts an attempt a millisecond at most after the last
// one began, as any delay is held to `MIN_RETRY_DELAY`: not one per call, in a busy loop. Once
// that millisecond is over, a call starts the attempt at once.
#[tokio::test(start_paused = true)]
async fn reconnect_now_in_a_loop_starts_an_attempt_a_millisecond_at_most() {
    let start = Instant::now();
    let calls: std::sync::Arc<std::sync::Mutex<Vec<u128>>> = Default::default();
    let lookup = {
        let calls = calls.clone();
        tower::service_fn(move |()| {
            calls.lock().unwrap().push(start.elapsed().as_micros());
            async { Err::<&'static str, _>(std::io::Error::other("down")) }
        })
    };
    let p = PersistentLayer::new("test", lookup)
        .retry_delay(|| Duration::from_secs(10))
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    let storm = || async {
        for _ in 0..100 {
            p.reconnect_now();
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
    };
    // The first attempt at 0; the storm at 0 starts the next one at 1 ms.
    tokio::task::yield_now().await;
    storm().await;
    assert_eq!(*calls.lock().unwrap(), [0]);
    until(start, 3).await;
    assert_eq!(*calls.lock().unwrap(), [0, 1_000]);
    // A storm 2 ms after that attempt began: one attempt at once, and the next at 4 ms.
    storm().await;
    until(start, 3).await;
    assert_eq!(*calls.lock().unwrap(), [0, 1_000, 3_000]);
    until(start, 10).await;
    assert_eq!(*calls.lock().unwrap(), [0, 1_000, 3_000, 4_000]);
    p.close().await;
}
