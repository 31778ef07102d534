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
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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
