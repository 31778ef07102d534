//! Tracing output of the connection loop (alone in its binary: tracing's callsite cache is
//! process-wide).

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
    let (buffer, _guard) = capture(tracing::Level::INFO);
    let start = Instant::now();
    let span = tracing::info_span!("caller", request_id = 42);
    let p = span.in_scope(|| {
        PersistentLayer::new(
            "orders",
            Lookup(Script::new(start, [Step::Err("no replica")], Step::Ok("a"))),
        )
        .retry_delay(|| Duration::from_secs(1))
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))))
    });
    p.connected().await.unwrap();
    p.close().await;

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
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
