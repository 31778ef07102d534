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
use tower_persistent::{Persistent, PersistentLayer};

impl Load for Echo {
    type Metric = usize;

    fn load(&self) -> usize {
        self.calls()
    }
}

fn replica(start: Instant, up: bool) -> Persistent<&'static str, Conn> {
    let lookup = if up { Step::Ok("a") } else { Step::Err("down") };
    PersistentLayer::new("replica", Lookup(Script::new(start, [], lookup)))
        .retry_delay(|| Duration::from_secs(1))
        .fail_fast(true)
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
            assert!(p.connected_or_failed_to_connect().await.is_err());
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
