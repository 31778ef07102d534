//! `Load` for `Persistent`: tower's p2c balancer over one persistent connection per replica.

mod support;

use std::time::Duration;

use support::*;
use tokio::time::Instant;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::Load;
use tower::{Layer, Service, ServiceExt};
use tower_persistent::load::ConnectionLoad;
use tower_persistent::{Persistent, PersistentLayer, ReadyTimeout, Unavailable};

impl Load for Echo {
    type Metric = usize;

    fn load(&self) -> usize {
        self.calls()
    }
}

fn replica(start: Instant, up: bool) -> Persistent<&'static str, Conn> {
    replica_failing_fast(start, up, true)
}

fn replica_failing_fast(
    start: Instant,
    up: bool,
    fail_fast: bool,
) -> Persistent<&'static str, Conn> {
    let lookup = if up { Step::Ok("a") } else { Step::Err("down") };
    PersistentLayer::new("replica", Lookup(Script::new(start, [], lookup)))
        .retry_delay(|| Duration::from_secs(1))
        .fail_fast(fail_fast)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))))
}

// A replica that is down and fails fast weighs more than any connected one, so p2c sends every
// request to the replicas that are up: none of 240 requests fails.
#[tokio::test(start_paused = true)]
async fn p2c_sends_nothing_to_a_replica_that_fails_fast() {
    let start = Instant::now();
    let replicas = [
        replica(start, true),
        replica(start, false),
        replica(start, true),
    ];
    for (i, p) in replicas.iter().enumerate() {
        if i == 1 {
            // Failing fast once its first attempt failed.
            let error = p.connected_or_failed_to_connect().await.unwrap_err();
            assert_eq!(error.text(), "address lookup failed: down");
            assert_eq!(p.load(), ConnectionLoad::NotConnected);
        } else {
            p.connected().await.unwrap();
            assert_eq!(p.load(), ConnectionLoad::Connected(0));
        }
    }
    let mut balance = Balance::new(ServiceList::new(replicas.to_vec()));
    for n in 0..240u32 {
        let (_, answered) = balance.ready().await.unwrap().call(n).await.unwrap();
        assert_eq!(answered, n);
    }
    // Both replicas that are up took requests; the one down took none.
    let loads: Vec<_> = replicas.iter().map(Load::load).collect();
    assert!(
        matches!(loads[0], ConnectionLoad::Connected(n) if n > 0),
        "{loads:?}"
    );
    assert_eq!(loads[1], ConnectionLoad::NotConnected);
    assert!(
        matches!(loads[2], ConnectionLoad::Connected(n) if n > 0),
        "{loads:?}"
    );
}

// p2c compares two different replicas, picked at random among the ready ones. With two of three
// down and failing fast (ready, and failing at once), a pair of the two down ones sends the
// request to one of them: it fails at once with `Unavailable` (about a third of the requests);
// every other request goes to the replica that is up.
#[tokio::test(start_paused = true)]
async fn p2c_with_two_replicas_failing_fast_sends_to_one_when_it_picks_both() {
    let start = Instant::now();
    let replicas = [
        replica(start, false),
        replica(start, true),
        replica(start, false),
    ];
    for (i, p) in replicas.iter().enumerate() {
        if i == 1 {
            p.connected().await.unwrap();
        } else {
            let error = p.connected_or_failed_to_connect().await.unwrap_err();
            assert_eq!(error.text(), "address lookup failed: down");
        }
    }
    let mut balance = Balance::new(ServiceList::new(replicas.to_vec()));
    let mut failed = 0;
    for n in 0..300u32 {
        let called = Instant::now();
        match balance.ready().await.unwrap().call(n).await {
            Ok((_, answered)) => assert_eq!(answered, n),
            Err(error) => {
                assert!(error.is::<Unavailable>(), "{error}");
                failed += 1;
            }
        }
        assert_eq!(called.elapsed(), Duration::ZERO, "answered at once");
    }
    // (Two thirds of the pairs hold the replica that is up: 300 requests all answered would
    // happen once in 10^52 runs.)
    assert!(0 < failed && failed < 300, "{failed}");
    assert_eq!(replicas[1].load(), ConnectionLoad::Connected(300 - failed));
}

// Without fail-fast a replica that is down is not ready, and p2c picks among the ready ones
// only: with two of three down, every request goes to the one that is up.
#[tokio::test(start_paused = true)]
async fn p2c_sends_nothing_to_replicas_that_wait_for_a_connection() {
    let start = Instant::now();
    let replicas = [
        replica_failing_fast(start, false, false),
        replica_failing_fast(start, true, false),
        replica_failing_fast(start, false, false),
    ];
    replicas[1].connected().await.unwrap();
    let mut balance = Balance::new(ServiceList::new(replicas.to_vec()));
    for n in 0..300u32 {
        let (_, answered) = balance.ready().await.unwrap().call(n).await.unwrap();
        assert_eq!(answered, n);
    }
    assert_eq!(replicas[1].load(), ConnectionLoad::Connected(300));
    assert_eq!(replicas[0].load(), ConnectionLoad::NotConnected);
}

// With a ready timeout (and no fail-fast), p2c over replicas that are all down answers within the ready timeout: its request
// fails with `ReadyTimeout` instead of waiting for good (p2c polls a service again before it
// calls it, and a handle whose wait reached the timeout stays ready until its call).
#[tokio::test(start_paused = true)]
async fn p2c_over_replicas_all_down_answers_within_the_ready_timeout() {
    let start = Instant::now();
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Err("down"))))
                .retry_delay(|| Duration::from_secs(1))
                .ready_timeout(Duration::from_millis(500))
                .layer(Connect::new(Script::new(start, [], Step::Ok(""))))
        })
        .collect();
    let mut balance = Balance::new(ServiceList::new(replicas.clone()));
    let ready = tokio::time::timeout(Duration::from_secs(60), balance.ready()).await;
    let error = ready.unwrap().unwrap().call(1u32).await.unwrap_err();
    assert!(error.is::<ReadyTimeout>(), "{error}");
    assert_eq!(ms(start), 500);
    for p in &replicas {
        p.close().await;
    }
}
