//! Discovery from a real 3-member etcd cluster on 127.0.0.1 (Debian's `etcd`, started and
//! stopped by the test, data in a temporary directory): three HTTP replicas register with a
//! lease; the client is answered; a replica dies abruptly, its lease expires and the client
//! moves on; an etcd member dies and discovery goes on; every member stops, the current
//! connection keeps serving and attempts report the lookup error; etcd comes back and the
//! client recovers. The lookup errors without a server run on the paused clock.
//!
//! `.ci/run` installs etcd. Without it the cluster test fails in CI (`CI` set) and is reported
//! as ignored elsewhere (`build.rs` tells).
#[path = "../../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Empty;
use support::etcd::{Cluster, INSTALL, etcd_binary};
use support::proxy::Proxy;
use support::web::{HttpServer, get, text};
use tokio::time::{Instant, timeout};
use tower::{Layer, ServiceExt};
use tower_persistent::discovery::{Etcd, Publication};
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{Closable, Event, Events, Persistent, PersistentLayer};

/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);

const PREFIX: &str = "/services/orders/";

type Conn = HttpConnection<Empty<Bytes>>;
type Client = Persistent<SocketAddr, Conn>;

/// Asks `/` and returns the name of the replica that answered.
async fn ask(client: &Client) -> Result<String, tower_persistent::BoxError> {
    let response = timeout(LIMIT, client.clone().oneshot(get("/")))
        .await
        .expect("a request hung")?;
    let answer = text(response).await;
    Ok(answer.trim_end_matches(" /").to_owned())
}

/// Reads `events` until `wanted` picks one, within the limit.
async fn until_event<T>(
    events: &mut Events<SocketAddr, Conn>,
    mut wanted: impl FnMut(&Event<SocketAddr, Conn>) -> Option<T>,
) -> T {
    timeout(LIMIT, async {
        loop {
            let event = events.next().await.expect("the event stream ended");
            if let Some(found) = wanted(&event) {
                return found;
            }
        }
    })
    .await
    .expect("the awaited event did not come")
}

/// The keys under the prefix, read directly with etcd-client.
async fn keys(endpoints: &[String]) -> Vec<String> {
    let mut client = etcd_client::Client::connect(endpoints, None).await.unwrap();
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    let answer = timeout(LIMIT, client.get(PREFIX, Some(options)))
        .await
        .unwrap()
        .unwrap();
    answer
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_owned())
        .collect()
}

/// A multi-threaded runtime, and a 1-member etcd cluster started on it (for tests that make
/// runtimes of their own beside it).
fn cluster_on_a_runtime_of_its_own() -> (tokio::runtime::Runtime, Cluster) {
    let binary = etcd_binary().expect(INSTALL);
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = main.block_on(Cluster::start(&binary, 1)).unwrap();
    (main, cluster)
}

// Replicas registered in a 3-member etcd cluster are found, followed and dropped as replicas,
// members and the whole cluster fail and come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn replicas_in_etcd_under_failures() {
    let binary = etcd_binary().expect(INSTALL);
    let mut cluster = Cluster::start(&binary, 3).await.unwrap();
    let endpoints = cluster.endpoints();
    let discovery = Etcd::connect(&endpoints, PREFIX)
        .await
        .unwrap()
        .timeout(Duration::from_millis(500))
        .addresses::<SocketAddr>();

    // Three replicas register, each under a lease of 2 s.
    let mut replicas = Vec::new();
    let mut publications: Vec<Option<Publication>> = Vec::new();
    for name in ["r0", "r1", "r2"] {
        let server = HttpServer::start(name).await.unwrap();
        let publication = discovery
            .publish(name, server.address, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(
            publication.path().to_str().unwrap(),
            format!("{PREFIX}{name}")
        );
        replicas.push(Some(server));
        publications.push(Some(publication));
    }
    assert_eq!(
        keys(&endpoints).await,
        [
            "/services/orders/r0",
            "/services/orders/r1",
            "/services/orders/r2"
        ]
    );

    let client: Client = PersistentLayer::new("orders", discovery.clone())
        .retry_delay(|| Duration::from_millis(100))
        .layer(HttpConnector::http1());
    let mut events = client.events();
    let first = ask(&client).await.unwrap();
    let index = |name: &str| name[1..].parse::<usize>().unwrap();

    // A replica dies abruptly: its server is gone, its lease is no longer kept alive.
    let dead = index(&first);
    let dead_address = replicas[dead].as_ref().unwrap().address;
    replicas[dead].take().unwrap().kill().await;
    publications[dead].take().unwrap().abandon();
    let moved_to = until_event(&mut events, |event| match event {
        Event::Connected(c) if c.peer_addr() != dead_address => Some(c.peer_addr()),
        _ => None,
    })
    .await;
    let second = ask(&client).await.unwrap();
    assert_ne!(second, first);
    assert_eq!(replicas[index(&second)].as_ref().unwrap().address, moved_to);
    // Its key goes when the lease expires (2 s, and etcd's own granularity).
    let dead_key = format!("{PREFIX}{first}");
    let started = Instant::now();
    while keys(&endpoints).await.contains(&dead_key) {
        assert!(
            started.elapsed() < LIMIT,
            "the lease of {dead_key} never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(keys(&endpoints).await.len(), 2);

    // An etcd member dies: lookups go on through the others.
    cluster.kill(0).await;
    for i in 0..10 {
        let t = Instant::now();
        let address = timeout(LIMIT, discovery.clone().oneshot(()))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("lookup {i} after {:?}: {e:?}", t.elapsed()));
        assert_ne!(address, dead_address);
    }
    // And a new connection finds its replica through them.
    client.current_connection().unwrap().close().await;
    until_event(&mut events, |event| {
        matches!(event, Event::Connected(_)).then_some(())
    })
    .await;
    ask(&client).await.unwrap();

    // Every member stops: the current connection keeps serving...
    cluster.kill_all().await;
    for _ in 0..3 {
        ask(&client).await.unwrap();
    }
    // ...and the attempts of a new round report the lookup error.
    client.current_connection().unwrap().close().await;
    let failure = until_event(&mut events, |event| match event {
        Event::FailedToConnect(error) => Some(error.text()),
        _ => None,
    })
    .await;
    assert!(
        failure.starts_with(&format!(
            "address lookup failed: etcd did not answer a lookup of {PREFIX} within 500ms"
        )),
        "{failure}"
    );

    // etcd comes back (the data of each member kept): the client recovers.
    for i in 0..3 {
        cluster.restart(i).unwrap();
    }
    for i in 0..3 {
        cluster.wait_healthy(i).await.unwrap();
    }
    until_event(&mut events, |event| {
        matches!(event, Event::Connected(_)).then_some(())
    })
    .await;
    let after = ask(&client).await.unwrap();
    assert_ne!(after, first);

    // Clean shutdown: each remaining replica withdraws, and its key goes at once.
    for publication in publications.iter_mut().filter_map(Option::take) {
        timeout(LIMIT, publication.withdraw())
            .await
            .unwrap()
            .unwrap();
    }
    assert!(keys(&endpoints).await.is_empty());
    // Nothing published: a lookup says so.
    let error = timeout(LIMIT, discovery.clone().oneshot(()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "no replica published under /services/orders/ in etcd"
    );
    client.close().await;
}

// No etcd answers: a lookup fails with the timeout's text, at the timeout (paused clock).
#[tokio::test(start_paused = true)]
async fn an_unreachable_etcd_fails_the_lookup_at_its_timeout() {
    let nobody = support::line::closed_port().await;
    let discovery = Etcd::connect(&[nobody.to_string()], PREFIX)
        .await
        .unwrap()
        .timeout(Duration::from_secs(3));
    let start = Instant::now();
    let error = discovery.oneshot(()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(
        error.to_string(),
        "etcd did not answer a lookup of /services/orders/ within 3s"
    );
    // A timeout of zero: the lookup fails at once, without a busy loop.
    let at_once = Etcd::connect(&[nobody.to_string()], PREFIX)
        .await
        .unwrap()
        .timeout(Duration::ZERO);
    let zero = Instant::now();
    let quick = at_once.oneshot(()).await.unwrap_err();
    assert_eq!(zero.elapsed(), Duration::ZERO);
    assert_eq!(
        quick.to_string(),
        "etcd did not answer a lookup of /services/orders/ within 0ns"
    );
    // Its source is the last of the errors tried again: nobody listens.
    let last = std::error::Error::source(&error)
        .expect("the last error")
        .to_string();
    assert!(last.contains("tcp connect error"), "{last}");

    // Through a persistent connection, a failed attempt whose text says so.
    let discovery = Etcd::connect(&[nobody.to_string()], PREFIX)
        .await
        .unwrap()
        .timeout(Duration::from_secs(3));
    let client = PersistentLayer::new("orders", discovery)
        .retry_delay(|| Duration::from_secs(60))
        .layer(HttpConnector::<Empty<Bytes>>::http1());
    let error = client.connected_or_failed_to_connect().await.unwrap_err();
    assert!(
        error.text().starts_with(
            "address lookup failed: etcd did not answer a lookup of /services/orders/ within 3s: "
        ),
        "{}",
        error.text()
    );
    client.close().await;
}

// With every member down, a lookup's error reads the same whichever member its last try
// reached (the members' addresses are not in it): a round of attempts reports it once, as
// `FailedToConnect` dedups by text (paused clock; 1 s between attempts, lookups of 500 ms).
#[tokio::test(start_paused = true)]
async fn an_unreachable_etcd_fails_each_attempt_with_the_same_text() {
    let dead = [
        support::line::closed_port().await.to_string(),
        support::line::closed_port().await.to_string(),
        support::line::closed_port().await.to_string(),
    ];
    let discovery = Etcd::connect(&dead, PREFIX)
        .await
        .unwrap()
        .timeout(Duration::from_millis(500));
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lookups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (record, count, looked_up) = (failures.clone(), attempts.clone(), lookups.clone());
    // The lookups counted.
    let discovery = tower::service_fn(move |()| {
        looked_up.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        discovery.clone().oneshot(())
    });
    let client = PersistentLayer::new("orders", discovery)
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .on_event(move |event: Event<String, HttpConnection<Empty<Bytes>>>| {
            if let Event::FailedToConnect(error) = &event {
                record.lock().unwrap().push(error.text());
            }
            async {}
        })
        .layer(tower::service_fn(move |_: String| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err::<HttpConnection<Empty<Bytes>>, _>(std::io::Error::other("unreached")) }
        }));
    // Eight attempts, one a second, each a lookup that fails at 500 ms.
    tokio::time::sleep(Duration::from_millis(7_900)).await;
    client.close().await;
    let failures = failures.lock().unwrap().clone();
    // Eight attempts, each failed at its lookup (the connector never called), one report.
    assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 8);
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].starts_with(
            "address lookup failed: etcd did not answer a lookup of /services/orders/ within \
             500ms: grpc request error: Unavailable: tcp connect error: Connection refused"
        ),
        "{}",
        failures[0]
    );
}

// A member that accepts connections and never answers (frozen) fails every lookup with the
// same text, however little time the lookup's tries had left of its timeout (the real clock,
// on which some always passes between the lookup's start and its first try): a round of
// attempts reports it once (lookups of 400 ms, tries paced at 100 ms).
#[tokio::test]
async fn a_silent_etcd_fails_each_attempt_with_the_same_text() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = silent.local_addr().unwrap().to_string();
    // Every connection accepted and held, never read from nor written to.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let discovery = Etcd::connect(&[endpoint], PREFIX)
        .await
        .unwrap()
        .timeout(Duration::from_millis(400));
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (looked_up, mut lookups) = tokio::sync::watch::channel(0_usize);
    let record = failures.clone();
    let discovery = tower::service_fn(move |()| {
        looked_up.send_modify(|n| *n += 1);
        discovery.clone().oneshot(())
    });
    let client = PersistentLayer::new("orders", discovery)
        .retry_delay(|| Duration::from_millis(100))
        .jitter(0.0)
        .on_event(move |event: Event<String, HttpConnection<Empty<Bytes>>>| {
            if let Event::FailedToConnect(error) = &event {
                record.lock().unwrap().push(error.text());
            }
            async {}
        })
        .layer(tower::service_fn(move |_: String| async {
            Err::<HttpConnection<Empty<Bytes>>, _>(std::io::Error::other("unreached"))
        }));
    // Four lookups failed (the fifth begun), one after another.
    timeout(Duration::from_secs(10), lookups.wait_for(|n| *n >= 5))
        .await
        .expect("five lookups in 10 s")
        .unwrap();
    client.close().await;
    holder.abort();
    let failures = failures.lock().unwrap().clone();
    assert_eq!(
        failures,
        [
            "address lookup failed: etcd did not answer a lookup of /services/orders/ within \
          400ms: a try got no answer within 100ms"
        ],
    );
}

// An endpoint that is not an address, or whose port is out of range, is refused when the
// lookup is made.
#[tokio::test]
async fn an_invalid_endpoint_is_refused() {
    let error = Etcd::connect(&["http://[bad"], PREFIX).await.unwrap_err();
    assert!(
        error.to_string().starts_with("cannot make an etcd client"),
        "{error}"
    );
    let error = Etcd::connect(&["127.0.0.1:99999"], PREFIX)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot make an etcd client: invalid endpoint \"127.0.0.1:99999\": the port is not a \
         number from 0 to 65535"
    );
}

// With etcd out of reach, a withdrawal takes the revoke's timeout, and no more: the keep-alive
// turn under way is given up, and no other starts. Here each turn fails at its timeout, a
// whole period (a third of the TTL), so that the next turn is always due as one ends (before,
// a withdrawal waited for the turn under way, then for a geometric number of further turns:
// 1.5 to 2 timeouts, often more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn a_withdrawal_with_etcd_down_takes_one_timeout() {
    let binary = etcd_binary().expect(INSTALL);
    let mut cluster = Cluster::start(&binary, 1).await.unwrap();
    let endpoints = cluster.endpoints();
    let etcd_timeout = Duration::from_secs(1);
    let discovery = Etcd::connect(&endpoints, PREFIX)
        .await
        .unwrap()
        .timeout(etcd_timeout);
    let mut publications = Vec::new();
    for n in 0..8 {
        let publication = timeout(
            LIMIT,
            discovery.publish(&format!("r{n}"), "127.0.0.1:9009", Duration::from_secs(3)),
        )
        .await
        .unwrap()
        .unwrap();
        publications.push(publication);
    }
    cluster.kill_all().await;
    // Two and a half periods with etcd gone: each registration is in a keep-alive turn that
    // fails at its timeout (the scenario itself, not a wait for a signal).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let withdrawals = publications.into_iter().map(|publication| async move {
        let start = Instant::now();
        let withdrawn = timeout(LIMIT, publication.withdraw()).await.unwrap();
        (start.elapsed(), withdrawn)
    });
    let withdrawn = futures_util::future::join_all(withdrawals).await;
    for (n, (took, withdrawn)) in withdrawn.into_iter().enumerate() {
        // What may follow names the last error, which depends on how far the connection got.
        let error = withdrawn.unwrap_err().to_string();
        let said = format!("etcd did not answer lease revoke for /services/orders/r{n} within 1s");
        assert!(
            error == said || error.starts_with(&format!("{said} (last error: ")),
            "{error}"
        );
        assert!(took >= etcd_timeout, "{took:?}");
        assert!(took < etcd_timeout + Duration::from_millis(500), "{took:?}");
    }
}

// A registration whose lease is lost is published again under a new lease, and a withdrawal
// waits for that to finish, then revokes the new lease: the key does not come back. Settings
// at their limits (`Duration::MAX`) keep every request bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn a_lost_lease_is_renewed_and_a_withdrawal_is_final() {
    let binary = etcd_binary().expect(INSTALL);
    let cluster = Cluster::start(&binary, 1).await.unwrap();
    let endpoints = cluster.endpoints();
    let discovery = Etcd::connect(&endpoints, PREFIX)
        .await
        .unwrap()
        .timeout(Duration::MAX);
    let published = Instant::now();
    let publication = timeout(
        LIMIT,
        discovery.publish("r9", "127.0.0.1:9009", Duration::from_secs(2)),
    )
    .await
    .unwrap()
    .unwrap();
    let key = format!("{PREFIX}r9");
    let mut etcd = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    let lease_of = |answer: etcd_client::GetResponse| answer.kvs().first().map(|kv| kv.lease());
    let first = lease_of(etcd.get(key.as_str(), None).await.unwrap()).expect("published");

    // The lease is revoked behind the registration's back, as if it had expired, before the
    // registration's first keep-alive turn (a third of the TTL after the grant): that turn
    // opens a keep-alive stream, whose first answer etcd-client reports as an error.
    etcd.lease_revoke(first).await.unwrap();
    assert_eq!(lease_of(etcd.get(key.as_str(), None).await.unwrap()), None);
    // The keep-alive notices and publishes again, under a new lease.
    let started = Instant::now();
    let second = loop {
        if let Some(lease) = lease_of(etcd.get(key.as_str(), None).await.unwrap()) {
            break lease;
        }
        assert!(started.elapsed() < LIMIT, "{key} was never published again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(second, first);
    // At the first keep-alive turn (a third of the TTL), which finds the lease gone: not a
    // turn later (1.33 s).
    let republished = published.elapsed();
    assert!(republished < Duration::from_millis(1200), "{republished:?}");
    assert_eq!(
        timeout(LIMIT, discovery.clone().oneshot(()))
            .await
            .unwrap()
            .unwrap(),
        "127.0.0.1:9009"
    );

    // Withdrawn: the key goes and stays gone, past the keep-alive's next turns.
    timeout(LIMIT, publication.withdraw())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease_of(etcd.get(key.as_str(), None).await.unwrap()), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lease_of(etcd.get(key.as_str(), None).await.unwrap()), None);

    // A TTL of Duration::MAX is held to etcd's longest lease; withdrawn all the same.
    let forever = timeout(
        LIMIT,
        discovery.publish("r10", "127.0.0.1:9010", Duration::MAX),
    )
    .await
    .unwrap()
    .unwrap();
    let lease = lease_of(etcd.get(format!("{PREFIX}r10"), None).await.unwrap()).unwrap();
    let granted = etcd.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(granted.granted_ttl(), 9_000_000_000);
    timeout(LIMIT, forever.withdraw()).await.unwrap().unwrap();
    assert!(keys(&endpoints).await.is_empty());

    // Someone puts values too large to read at once under the prefix (4 of 1.4 MB, more than
    // a client takes in one answer), and 100 small ones that are not addresses: lookups read
    // the keys, then the values a page at a time (a page too large halved), every key if need
    // be.
    let big = "x".repeat(1_400_000);
    for name in ["big-1", "big-2", "big-3", "big-4"] {
        etcd.put(format!("{PREFIX}{name}"), big.as_str(), None)
            .await
            .unwrap();
    }
    for n in 0..100 {
        etcd.put(format!("{PREFIX}junk-{n:03}"), "not an address", None)
            .await
            .unwrap();
    }
    let mut kv = etcd.kv_client();
    let direct = kv
        .get(PREFIX, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap_err();
    assert!(
        direct.to_string().contains("message length too large"),
        "{direct}"
    );
    // (As `String`s, those values would be addresses: read them as socket addresses.)
    let sockets = discovery.clone().addresses::<SocketAddr>();
    let error = timeout(LIMIT, sockets.clone().oneshot(()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "no replica found under /services/orders/ in etcd: its values are too large to read at \
         once, and none of its 104 keys holds an address"
    );
    let replica = timeout(
        LIMIT,
        discovery.publish("r11", "127.0.0.1:9011", Duration::from_secs(60)),
    )
    .await
    .unwrap()
    .unwrap();
    // Found by every lookup, wherever in the 105 keys the lookup starts.
    for _ in 0..5 {
        let found = timeout(LIMIT, sockets.clone().oneshot(())).await.unwrap();
        assert_eq!(found.unwrap(), "127.0.0.1:9011".parse().unwrap());
    }
    timeout(LIMIT, replica.withdraw()).await.unwrap().unwrap();
    drop(cluster);
}

// A published key that another client deletes, or overwrites with another value and no
// lease, while its lease lives, is put back as published (same value, same lease) at the
// registration's next keep-alive turn; withdrawn, it stays gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn a_key_deleted_or_overwritten_by_others_is_put_back() {
    let binary = etcd_binary().expect(INSTALL);
    let cluster = Cluster::start(&binary, 1).await.unwrap();
    let endpoints = cluster.endpoints();
    let discovery = Etcd::connect(&endpoints, PREFIX).await.unwrap();
    // Keep-alive turns every second.
    let publication = timeout(
        LIMIT,
        discovery.publish("r12", "127.0.0.1:9012", Duration::from_secs(3)),
    )
    .await
    .unwrap()
    .unwrap();
    let key = format!("{PREFIX}r12");
    let mut etcd = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    let entry = |answer: etcd_client::GetResponse| {
        answer
            .kvs()
            .first()
            .map(|kv| (kv.value_str().unwrap().to_owned(), kv.lease()))
    };
    let published = entry(etcd.get(key.as_str(), None).await.unwrap()).expect("published");
    assert_eq!(published.0, "127.0.0.1:9012");
    let mut changes = etcd.watch(key.as_str(), None).await.unwrap();
    // The next put of the key, as (value, lease).
    let mut next_put = async || {
        timeout(LIMIT, async {
            loop {
                let answer = changes.message().await.unwrap().expect("the watch ended");
                for event in answer.events() {
                    if event.event_type() == etcd_client::EventType::Put {
                        let kv = event.kv().unwrap();
                        return (kv.value_str().unwrap().to_owned(), kv.lease());
                    }
                }
            }
        })
        .await
        .expect("the key was not put back")
    };

    etcd.delete(key.as_str(), None).await.unwrap();
    assert_eq!(next_put().await, published);

    etcd.put(key.as_str(), "127.0.0.1:1", None).await.unwrap();
    assert_eq!(
        next_put().await,
        ("127.0.0.1:1".to_owned(), 0),
        "the overwrite"
    );
    assert_eq!(next_put().await, published);
    assert_eq!(
        timeout(LIMIT, discovery.clone().oneshot(()))
            .await
            .unwrap()
            .unwrap(),
        "127.0.0.1:9012"
    );

    timeout(LIMIT, publication.withdraw())
        .await
        .unwrap()
        .unwrap();
    assert!(keys(&endpoints).await.is_empty());
    drop(cluster);
}

// An `Etcd` whose runtime (the one `connect` ran on, where etcd-client runs its connections)
// has shut down fails every lookup and withdrawal at once, saying why, instead of trying again
// until its timeout (30 s here; before, a lookup waited it out and blamed etcd).
#[test]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
fn an_etcd_whose_runtime_has_shut_down_fails_at_once_saying_so() {
    let (main, cluster) = cluster_on_a_runtime_of_its_own();
    let endpoints = cluster.endpoints();
    let setup = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (discovery, publication) = setup.block_on(async {
        let discovery = Etcd::connect(&endpoints, PREFIX)
            .await
            .unwrap()
            .timeout(Duration::from_secs(30));
        let publication = timeout(
            LIMIT,
            discovery.publish("r20", "127.0.0.1:9020", Duration::from_secs(3)),
        )
        .await
        .unwrap()
        .unwrap();
        (discovery, publication)
    });
    main.block_on(async {
        // From another runtime, while the one it was made on runs: answered.
        let answer = timeout(LIMIT, discovery.clone().oneshot(())).await.unwrap();
        assert_eq!(answer.unwrap(), "127.0.0.1:9020");
    });
    drop(setup);
    main.block_on(async {
        let bound = Duration::from_secs(5);
        let lookup = timeout(bound, discovery.clone().oneshot(()))
            .await
            .expect("the lookup waited for its timeout")
            .unwrap_err();
        assert_eq!(
            lookup.to_string(),
            "etcd lookup of /services/orders/ failed: the tokio runtime this Etcd was made on \
             (where etcd-client runs its connections) has shut down; make the Etcd on the \
             runtime that uses it"
        );
        let withdrawal = timeout(bound, publication.withdraw())
            .await
            .expect("the withdrawal waited for its timeout")
            .unwrap_err();
        assert_eq!(
            withdrawal.to_string(),
            "etcd lease revoke for /services/orders/r20: the tokio runtime this Etcd was made \
             on (where etcd-client runs its connections) has shut down; make the Etcd on the \
             runtime that uses it"
        );
        let publish = timeout(
            bound,
            discovery.publish("r21", "127.0.0.1:9021", Duration::from_secs(3)),
        )
        .await
        .expect("the publication waited for its timeout")
        .unwrap_err();
        assert_eq!(
            publish.to_string(),
            "etcd lease grant for /services/orders/r21: the tokio runtime this Etcd was made on \
             (where etcd-client runs its connections) has shut down; make the Etcd on the \
             runtime that uses it"
        );
        // An Etcd made on this runtime publishes and withdraws.
        let fresh = Etcd::connect(&endpoints, PREFIX).await.unwrap();
        let publication = timeout(
            LIMIT,
            fresh.publish("r22", "127.0.0.1:9022", Duration::from_secs(3)),
        )
        .await
        .unwrap()
        .unwrap();
        timeout(LIMIT, publication.withdraw())
            .await
            .unwrap()
            .unwrap();
    });
    drop(cluster);
}

// Keys under the prefix whose values are not addresses: the lookup's error says how many keys
// there are and that none holds an address, apart from no key at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn keys_without_addresses_are_told_apart_from_no_key() {
    let binary = etcd_binary().expect(INSTALL);
    let cluster = Cluster::start(&binary, 1).await.unwrap();
    let endpoints = cluster.endpoints();
    let prefix = "/services/garbage/";
    let discovery = Etcd::connect(&endpoints, prefix)
        .await
        .unwrap()
        .addresses::<SocketAddr>();
    let mut etcd = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    let lookup = async || {
        timeout(LIMIT, discovery.clone().oneshot(()))
            .await
            .unwrap()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        lookup().await,
        "no replica published under /services/garbage/ in etcd"
    );
    etcd.put(format!("{prefix}a"), "not an address", None)
        .await
        .unwrap();
    assert_eq!(
        lookup().await,
        "no replica published under /services/garbage/ in etcd: its one key holds no address"
    );
    etcd.put(format!("{prefix}b"), "", None).await.unwrap();
    etcd.put(format!("{prefix}c"), vec![0xff, 0xfe], None)
        .await
        .unwrap();
    assert_eq!(
        lookup().await,
        "no replica published under /services/garbage/ in etcd: none of its 3 keys holds an \
         address"
    );
    drop(cluster);
}

// A zero timeout fails every request at once without sending it, against a live cluster too:
// no lookup answers, and a publication fails before etcd grants it a lease (which it would then
// leave behind until its TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn a_zero_timeout_sends_nothing() {
    let binary = etcd_binary().expect(INSTALL);
    let cluster = Cluster::start(&binary, 1).await.unwrap();
    let endpoints = cluster.endpoints();
    let prefix = "/services/zero/";
    let mut etcd = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    etcd.put(format!("{prefix}a"), "127.0.0.1:7000", None)
        .await
        .unwrap();
    let live = Etcd::connect(&endpoints, prefix).await.unwrap();
    assert_eq!(
        timeout(LIMIT, live.clone().oneshot(()))
            .await
            .unwrap()
            .unwrap(),
        "127.0.0.1:7000"
    );
    let zero = live.timeout(Duration::ZERO);
    for _ in 0..50 {
        let error = timeout(LIMIT, zero.clone().oneshot(()))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "etcd did not answer a lookup of /services/zero/ within 0ns"
        );
    }
    for n in 0..10 {
        let error = timeout(
            LIMIT,
            zero.publish(&format!("z{n}"), "127.0.0.1:7001", Duration::from_secs(60)),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("etcd did not answer lease grant for /services/zero/z{n} within 0ns")
        );
    }
    let leases = etcd.leases().await.unwrap();
    assert!(leases.leases().is_empty(), "{:?}", leases.leases());
    drop(cluster);
}

// The turn goes on after the key answered last when keys are put or deleted between lookups:
// none answered twice in a row, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn the_turn_goes_on_after_the_last_key_as_keys_change() {
    let binary = etcd_binary().expect(INSTALL);
    let cluster = Cluster::start(&binary, 1).await.unwrap();
    let endpoints = cluster.endpoints();
    let prefix = "/services/turn/";
    let mut etcd = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    for (name, port) in [("a", 1), ("b", 2), ("c", 3)] {
        etcd.put(format!("{prefix}{name}"), format!("127.0.0.1:{port}"), None)
            .await
            .unwrap();
    }
    let discovery = Etcd::connect(&endpoints, prefix)
        .await
        .unwrap()
        .addresses::<SocketAddr>();
    let port = async || {
        timeout(LIMIT, discovery.clone().oneshot(()))
            .await
            .unwrap()
            .unwrap()
            .port()
    };
    assert_eq!([port().await, port().await], [1, 2]);
    etcd.delete(format!("{prefix}a"), None).await.unwrap();
    assert_eq!([port().await, port().await], [3, 2]);
    etcd.put(format!("{prefix}0"), "127.0.0.1:9", None)
        .await
        .unwrap();
    assert_eq!([port().await, port().await, port().await], [3, 9, 2]);
    drop(cluster);
}

// A publication whose key etcd does not store (a value larger than etcd takes in one request)
// fails, and leaves no lease behind: the lease granted for it is revoked (it used to stay
// until its TTL ran out, its key with it had etcd stored the key after all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn a_publication_whose_key_is_not_stored_leaves_no_lease() {
    let binary = etcd_binary().expect(INSTALL);
    let cluster = Cluster::start(&binary, 1).await.unwrap();
    let endpoints = cluster.endpoints();
    let discovery = Etcd::connect(&endpoints, PREFIX)
        .await
        .unwrap()
        .timeout(Duration::from_secs(1));
    // A TTL that no other lease of this test has, to find its lease by.
    let ttl = Duration::from_secs(777);
    let too_large = "x".repeat(2 * 1024 * 1024);
    let error = timeout(LIMIT, discovery.publish("r40", &too_large, ttl))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        error.to_string().contains("put of /services/orders/r40"),
        "{error}"
    );
    let mut client = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    let leases = timeout(LIMIT, client.leases()).await.unwrap().unwrap();
    for lease in leases.leases() {
        let alive = timeout(LIMIT, client.lease_time_to_live(lease.id(), None))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            alive.granted_ttl(),
            777,
            "the failed publication's lease is left"
        );
    }
    assert!(keys(&endpoints).await.is_empty());
    drop(cluster);
}

// A withdrawal is bounded even when the runtime its publication was made on is no longer
// driven (a current-thread runtime kept outside its `block_on`): the keep-alive task, which
// cannot run, is waited for two timeouts at most, then the revoke fails at its own timeout
// (it used to wait for that task for good).
#[test]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
fn a_withdrawal_from_a_runtime_no_longer_driven_takes_three_timeouts() {
    let (main, cluster) = cluster_on_a_runtime_of_its_own();
    let endpoints = cluster.endpoints();
    let etcd_timeout = Duration::from_millis(300);
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let publication = setup.block_on(async {
        let discovery = Etcd::connect(&endpoints, PREFIX)
            .await
            .unwrap()
            .timeout(etcd_timeout);
        timeout(
            LIMIT,
            discovery.publish("r41", "127.0.0.1:9041", Duration::from_secs(3)),
        )
        .await
        .unwrap()
        .unwrap()
    });
    // `setup` is kept, and no longer driven.
    main.block_on(async {
        let start = Instant::now();
        let error = timeout(LIMIT, publication.withdraw())
            .await
            .expect("the withdrawal waited for good")
            .unwrap_err();
        let took = start.elapsed();
        let said = "etcd did not answer lease revoke for /services/orders/r41 within 300ms";
        assert!(
            error.to_string() == said || error.to_string().starts_with(&format!("{said} (")),
            "{error}"
        );
        assert!(took >= etcd_timeout * 3, "{took:?}");
        assert!(
            took < etcd_timeout * 3 + Duration::from_millis(500),
            "{took:?}"
        );
    });
    drop(setup);
    drop(cluster);
}

// A keep-alive turn that finds the key as published writes nothing to etcd's log (its check is
// a transaction of comparisons alone, which etcd answers as a read): two turns commit no
// proposal. (Its check used to compare and put in one transaction, a write to the log of
// every member at every turn of every replica.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn a_keep_alive_turn_writes_nothing_when_the_key_is_as_published() {
    const COMMITTED: &str = "etcd_server_proposals_committed_total";
    let binary = etcd_binary().expect(INSTALL);
    let cluster = Cluster::start(&binary, 1).await.unwrap();
    let endpoints = cluster.endpoints();
    let discovery = Etcd::connect(&endpoints, PREFIX).await.unwrap();
    let publication = timeout(
        LIMIT,
        // Turns 2 s apart: the remaining TTL (in whole seconds, rounded up) falls to 4 before
        // each one.
        discovery.publish("r42", "127.0.0.1:9042", Duration::from_secs(6)),
    )
    .await
    .unwrap()
    .unwrap();
    let mut client = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    let lease = client
        .get(format!("{PREFIX}r42"), None)
        .await
        .unwrap()
        .kvs()[0]
        .lease();
    let committed = cluster.metric(0, COMMITTED).await.expect(COMMITTED);
    // Two turns (a third of the TTL apart), each seen as the lease's TTL going back up.
    let mut renewals = 0;
    let mut last_ttl = i64::MAX;
    for _ in 0..100 {
        let ttl = client.lease_time_to_live(lease, None).await.unwrap().ttl();
        if ttl > last_ttl {
            renewals += 1;
            if renewals == 2 {
                break;
            }
        }
        last_ttl = ttl;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(renewals, 2, "two keep-alive turns");
    assert_eq!(
        cluster.metric(0, COMMITTED).await.expect(COMMITTED),
        committed,
        "proposals committed by the turns"
    );
    timeout(LIMIT, publication.withdraw())
        .await
        .unwrap()
        .unwrap();
    drop(cluster);
}

// A grant whose answer is slow gets tries beside it (one every 500 ms with a 2 s timeout), and
// etcd carries every one out; they all name one lease, so the publication leaves one lease, the
// one its key is under (each try used to grant a lease of its own: three here, two of them
// holding nothing until their TTL ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn a_grant_tried_beside_a_slow_one_grants_one_lease() {
    let binary = etcd_binary().expect(INSTALL);
    let cluster = Cluster::start(&binary, 1).await.unwrap();
    let endpoints = cluster.endpoints();
    let member: SocketAddr = endpoints[0].trim_start_matches("http://").parse().unwrap();
    // 700 ms each way: an answer 1.4 s after its try, tries sent at 0, 0.5 and 1 s.
    let slow = Proxy::start(member, Duration::from_millis(700)).await;
    let discovery = timeout(LIMIT, Etcd::connect(&[slow.address().to_string()], PREFIX))
        .await
        .unwrap()
        .unwrap()
        .timeout(Duration::from_secs(2));
    let publication = timeout(
        LIMIT,
        discovery.publish("r50", "127.0.0.1:50", Duration::from_secs(600)),
    )
    .await
    .unwrap()
    .unwrap();
    // Every try of the grant reached etcd before the put, which followed them on the same
    // connection (sent once the first answer came, at 1.4 s): all were carried out before the
    // publication returned.
    let mut client = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    let leases = timeout(LIMIT, client.leases()).await.unwrap().unwrap();
    let ids: Vec<i64> = leases.leases().iter().map(|lease| lease.id()).collect();
    let stored = timeout(LIMIT, client.get(format!("{PREFIX}r50"), None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids, [stored.kvs()[0].lease()], "one lease, the key's");
    // What a later try meets, and takes as its answer: etcd's refusal of a lease that exists.
    let again = etcd_client::LeaseGrantOptions::new().with_id(ids[0]);
    match timeout(LIMIT, client.lease_grant(600, Some(again)))
        .await
        .unwrap()
    {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
            assert_eq!(status.message(), "etcdserver: lease already exists");
        }
        other => panic!("a second grant of one lease: {other:?}"),
    }
    timeout(LIMIT, publication.withdraw())
        .await
        .unwrap()
        .unwrap();
    drop(cluster);
}
