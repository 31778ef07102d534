//! Tracing output of the connection loop, and of etcd discovery's keep-alive (alone in their
//! binary: tracing's callsite cache is process-wide).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::time::Instant;
use tower::Layer;
use tower_persistent::PersistentLayer;

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Every event is logged, FailedToConnect at ERROR and the rest at INFO, with the server name,
// inside the span that was current when the layer was applied.
#[tokio::test(start_paused = true)]
async fn every_event_is_traced() {
    let text = traced_in(
        || tracing::info_span!("caller", request_id = 42),
        tracing::Level::INFO,
    )
    .await;
    let lines: Vec<&str> = text.lines().collect();
    let expected = [
        " INFO caller{request_id=42}:persistent_connection{server=orders}: tower_persistent::driver: attempting to connect server=\"orders\"",
        "ERROR caller{request_id=42}:persistent_connection{server=orders}: tower_persistent::driver: failed to connect server=\"orders\" error=address lookup failed: no replica",
        " INFO caller{request_id=42}:persistent_connection{server=orders}: tower_persistent::driver: obtained address server=\"orders\" address=\"a\"",
        " INFO caller{request_id=42}:persistent_connection{server=orders}: tower_persistent::driver: connected server=\"orders\"",
        " INFO caller{request_id=42}:persistent_connection{server=orders}: tower_persistent::driver: disconnected server=\"orders\"",
    ];
    assert_eq!(lines, expected, "{text}");
}

// With INFO spans filtered out (a subscriber at WARN), the driver's own span is off, and its
// events still come inside the caller's span.
#[tokio::test(start_paused = true)]
async fn events_keep_the_callers_span_when_info_spans_are_off() {
    let text = traced_in(
        || tracing::error_span!("caller", request_id = 7),
        tracing::Level::WARN,
    )
    .await;
    let lines: Vec<&str> = text.lines().collect();
    let expected = [
        "ERROR caller{request_id=7}: tower_persistent::driver: failed to connect server=\"orders\" error=address lookup failed: no replica",
    ];
    assert_eq!(lines, expected, "{text}");
}

/// What a persistent connection made inside the span `span` makes logs at `level` and above,
/// from its start to its close: its first address lookup fails, the second attempt (a second
/// later) connects. (The span is made once the subscriber is set.)
async fn traced_in(span: impl FnOnce() -> tracing::Span, level: tracing::Level) -> String {
    let (buffer, guard) = capture(level);
    let start = Instant::now();
    let p = span().in_scope(|| {
        PersistentLayer::new(
            "orders",
            Lookup(Script::new(start, [Step::Err("no replica")], Step::Ok("a"))),
        )
        .retry_delay(|| Duration::from_secs(1))
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))))
    });
    p.connected().await.unwrap();
    p.close().await;
    drop(guard);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

/// A subscriber, for this thread while the guard lives, that writes the lines of `level` and
/// above into the buffer.
fn capture(level: tracing::Level) -> (Buffer, tracing::subscriber::DefaultGuard) {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(level)
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

/// Runs `body` with a subscriber that keeps ERROR and WARN lines, and gives them back.
async fn errors_of<F: std::future::Future<Output = ()>>(body: F) -> Vec<String> {
    let (buffer, guard) = capture(tracing::Level::WARN);
    body.await;
    drop(guard);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

// An event handler that panics when called, or when its future is polled, is logged at ERROR
// with its panic's message, and the loop goes on.
#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_logged() {
    use tower_persistent::Event;
    let lines = errors_of(async {
        let start = Instant::now();
        let p = PersistentLayer::new("orders", Lookup(Script::new(start, [], Step::Ok("a"))))
            .on_event(move |event: Event<&'static str, Conn>| {
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
        p.connected().await.unwrap();
        p.close().await;
    })
    .await;
    assert_eq!(
        lines,
        [
            "ERROR tower_persistent::driver: on_event handler panicked; going on server=\"orders\" event=\"attempting_to_connect\" panic=handler called and panicked",
            "ERROR tower_persistent::driver: on_event handler panicked; going on server=\"orders\" event=\"obtained_address\" panic=handler polled and panicked",
        ],
        "{lines:#?}"
    );
}

// A connection whose close panics, on its death or on closing, is logged at ERROR and given up.
#[tokio::test(start_paused = true)]
async fn a_panicking_close_is_logged() {
    use support::faulty::{Faults, FaultyConnect};
    let lines = errors_of(async {
        let start = Instant::now();
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
        let mut p = PersistentLayer::new("orders", Lookup(Script::new(start, [], Step::Ok("a"))))
            .retry_delay(|| Duration::from_secs(1))
            .jitter(0.0)
            .layer(connect);
        p.connected().await.unwrap();
        until(start, 100).await;
        use tower::{Service, ServiceExt};
        let (id, _) = p.ready().await.unwrap().call(1).await.unwrap();
        assert_eq!(id, 2);
        p.close().await;
    })
    .await;
    assert_eq!(
        lines,
        [
            "ERROR tower_persistent::driver: the connection's close panicked; dropping it server=\"orders\" panic=close of connection 1 panicked",
            "ERROR tower_persistent::driver: the connection's close panicked; dropping it server=\"orders\" panic=close of connection 2 panicked",
        ],
        "{lines:#?}"
    );
}

// A keep-alive stream kept from the last turn that has ended since (its connection cut: a
// member down, a network cut) is replaced within the turn: the lease is renewed in that turn,
// and no keep-alive fails (it used to fail that turn, with a WARN, and renew a period later).
#[tokio::test]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server; .ci/run installs it)"
)]
async fn a_keep_alive_stream_cut_between_turns_is_replaced_in_the_turn() {
    use support::etcd::{Cluster, INSTALL, etcd_binary};
    use support::proxy::Proxy;
    use tower_persistent::discovery::Etcd;

    const LIMIT: Duration = Duration::from_secs(30);
    let (buffer, guard) = capture(tracing::Level::WARN);
    let binary = etcd_binary().expect(INSTALL);
    let cluster = Cluster::start(&binary, 1).await.unwrap();
    let member = cluster.endpoints()[0].parse().unwrap();
    let proxy = Proxy::start(member, Duration::ZERO).await;
    let discovery: Etcd = Etcd::connect(&[proxy.address().to_string()], "/services/orders/")
        .await
        .unwrap();
    // How many times etcd has renewed a lease, in all.
    let renewed = || async {
        cluster
            .metric(0, "etcd_debugging_lease_renewed_total")
            .await
            .expect("etcd's metrics")
    };
    // Waits until etcd has renewed a lease more than `n` times.
    let renewed_after = |n: f64| async move {
        tokio::time::timeout(LIMIT, async {
            while renewed().await <= n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the lease was not renewed");
    };
    // A turn every second.
    let publication = tokio::time::timeout(
        LIMIT,
        discovery.publish("r1", "127.0.0.1:1", Duration::from_secs(3)),
    )
    .await
    .unwrap()
    .unwrap();
    // The first turn opens the keep-alive stream (its first message renews the lease), kept for
    // the next turns.
    renewed_after(0.0).await;
    let before = renewed().await;
    proxy.cut();
    // The next turn finds it ended, and renews on a new one, over a new connection.
    let cut_at = Instant::now();
    tokio::time::timeout(LIMIT, proxy.until_accepted(2))
        .await
        .expect("no new connection");
    renewed_after(before).await;
    let renewed_in = cut_at.elapsed();
    tokio::time::timeout(LIMIT, publication.withdraw())
        .await
        .unwrap()
        .unwrap();
    drop(guard);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text, "", "nothing failed");
    assert_eq!(
        proxy.accepted(),
        2,
        "one connection before the cut, one after"
    );
    // In the turn after the cut, a second at most after it (not two).
    assert!(renewed_in < Duration::from_millis(1_500), "{renewed_in:?}");
}

/// An address whose `Debug` panics.
#[derive(Clone, PartialEq)]
struct Unprintable;

impl std::fmt::Debug for Unprintable {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("no Debug for this address")
    }
}

// An address whose Debug panics, under a subscriber that formats it: the line says so, and
// the loop goes on (it connects, and serves).
#[tokio::test(start_paused = true)]
async fn an_address_whose_debug_panics_is_logged_and_survived() {
    use tower::{ServiceExt, service_fn};
    use tower_persistent::ClosableService;
    let (buffer, guard) = capture(tracing::Level::INFO);
    let lookup = service_fn(|()| async { Ok::<_, std::io::Error>(Unprintable) });
    let connect = service_fn(|_: Unprintable| async {
        let conn = service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n + 1) });
        Ok::<_, std::io::Error>(ClosableService::new(conn))
    });
    let p = PersistentLayer::new("orders", lookup).layer(connect);
    p.connected().await.unwrap();
    assert_eq!(p.clone().oneshot(1).await.unwrap(), 2);
    p.close().await;
    drop(guard);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let expected = [
        " INFO persistent_connection{server=orders}: tower_persistent::driver: attempting to connect server=\"orders\"",
        " INFO persistent_connection{server=orders}: tower_persistent::driver: obtained address server=\"orders\" address=<panicked: no Debug for this address>",
        " INFO persistent_connection{server=orders}: tower_persistent::driver: connected server=\"orders\"",
        " INFO persistent_connection{server=orders}: tower_persistent::driver: disconnected server=\"orders\"",
    ];
    assert_eq!(lines, expected, "{text}");
}

/// A subscriber layer that panics on every event.
struct PanicsOnEvents;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicsOnEvents {
    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        panic!("this subscriber cannot take events")
    }
}

// A subscriber that panics on every event loses its lines, and the loop goes on: it connects,
// and its events reach the streams.
#[tokio::test(start_paused = true)]
async fn a_panicking_subscriber_does_not_end_the_loop() {
    use tracing_subscriber::layer::SubscriberExt;
    let guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(PanicsOnEvents));
    let start = Instant::now();
    let p = PersistentLayer::new(
        "orders",
        Lookup(Script::new(start, [Step::Err("no replica")], Step::Ok("a"))),
    )
    .retry_delay(|| Duration::from_secs(1))
    .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    let mut events = p.events();
    wait_event(&mut events, "connected").await;
    assert_eq!(p.connected().await.unwrap().get_ref().id, 1);
    p.close().await;
    assert!(p.is_closed());
    drop(guard);
}
