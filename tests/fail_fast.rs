//! Fail-fast: calls fail at once while the current round is failing, `poll_ready` never fails for
//! it, and a router can move on to another backend.

mod support;

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use support::*;
use tokio::time::{Instant, timeout};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_persistent::{Closed, Persistent, PersistentLayer, Unavailable};

type P = Persistent<&'static str, Conn>;

fn persistent(start: Instant, lookup: Vec<Step>, fail_fast: bool) -> P {
    PersistentLayer::new("test", Lookup(Script::new(start, lookup, Step::Ok("a"))))
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .fail_fast(fail_fast)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))))
}

// Before the first failure of a round handles wait; after it, poll_ready is Ready and calls fail
// at once with Unavailable (the attempt's error as source), waking the handles that waited; once
// connected, calls go through; closing is the only Err from poll_ready.
#[tokio::test(start_paused = true)]
async fn calls_fail_fast_while_the_round_is_failing() {
    let start = Instant::now();
    let slow_failure = Step::After(Duration::from_millis(100), Box::new(Step::Err("down")));
    let p = persistent(start, vec![slow_failure], true);

    let mut waiting = tower_test::mock::Spawn::new(p.clone());
    until(start, 50).await;
    assert!(
        waiting.poll_ready::<u32>().is_pending(),
        "the first attempt is in flight"
    );

    until(start, 150).await;
    assert!(waiting.is_woken(), "woken by the failure");
    assert!(matches!(waiting.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    let error = waiting.call(1).await.unwrap_err();
    let unavailable = error.downcast_ref::<Unavailable>().expect("Unavailable");
    assert_eq!(error.to_string(), "persistent connection is unavailable");
    assert_eq!(
        unavailable.connect_error().text(),
        "address lookup failed: down"
    );
    assert_eq!(support::ms(start), 150, "at once");

    // The next attempt (at 1 s) connects: calls go through again.
    p.connected().await.unwrap();
    assert_eq!(support::ms(start), 1000);
    assert_eq!(p.clone().oneshot(2).await.unwrap(), (1, 2));

    drop(p.close());
    let mut handle = p.clone();
    let error = poll_fn(|cx| Service::<u32>::poll_ready(&mut handle, cx))
        .await
        .unwrap_err();
    assert!(error.is::<Closed>());
}

// Without fail-fast (the default), the same failure leaves poll_ready Pending until connected.
#[tokio::test(start_paused = true)]
async fn wait_for_ready_is_the_default() {
    let start = Instant::now();
    let p = PersistentLayer::new(
        "test",
        Lookup(Script::new(start, [Step::Err("down")], Step::Ok("a"))),
    )
    .retry_delay(|| Duration::from_secs(1))
    .jitter(0.0)
    .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    assert_eq!(p.clone().oneshot(3).await.unwrap(), (1, 3));
    assert_eq!(support::ms(start), 1000);
}

/// A backend whose address lookup always fails.
fn always_down(start: Instant, fail_fast: bool) -> P {
    PersistentLayer::new("down", Lookup(Script::new(start, [], Step::Err("refused"))))
        .retry_delay(|| Duration::from_secs(1))
        .fail_fast(fail_fast)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))))
}

/// A router that sends each request to the first backend that does not fail fast, as a `Steer`
/// with failover would.
async fn route(backends: &[P], request: u32) -> Result<(usize, u32), BoxError> {
    let mut last = None;
    for backend in backends {
        match backend.clone().oneshot(request).await {
            Err(error) if error.is::<Unavailable>() => last = Some(error),
            other => return other,
        }
    }
    Err(last.expect("at least one backend"))
}

// A router moves on from a backend that is down to one that is up, at once, with fail-fast; with
// wait-for-ready it would wait on the first backend for ever.
#[tokio::test(start_paused = true)]
async fn a_router_moves_on_to_another_backend() {
    let start = Instant::now();
    let down = always_down(start, true);
    let up = persistent(start, vec![], true);
    let backends = [down.clone(), up.clone()];

    // Let the first attempts finish (the down backend's fails at once).
    up.connected().await.unwrap();
    for request in 0..10 {
        assert_eq!(route(&backends, request).await.unwrap(), (1, request));
    }
    assert_eq!(support::ms(start), 0, "no waiting");

    // With wait-for-ready on the down backend, the router is stuck there.
    let stuck = [always_down(start, false), up.clone()];
    assert!(
        timeout(Duration::from_secs(60), route(&stuck, 1))
            .await
            .is_err()
    );
}
