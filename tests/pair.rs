//! `PersistentLayer::pair`: the handle and the driver's future, driven by whoever holds it.

mod support;

use std::time::Duration;

use futures_util::FutureExt;
use support::*;
use tokio::time::Instant;
use tower_persistent::{Closed, PersistentLayer};

// Nothing happens until the driver's future is polled; then the loop runs as under layer(),
// and the future ends once closing finished.
#[tokio::test(start_paused = true)]
async fn the_loop_runs_where_the_future_is_polled() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let lookup = Script::new(start, [], Step::Ok("a"));
    let (p, driver) = PersistentLayer::new("pair", Lookup(lookup.clone()))
        .on_event(recorder.handler())
        .pair(Connect::new(Script::new(start, [], Step::Ok(""))));
    until(start, 5000).await;
    assert!(lookup.calls().is_empty(), "not polled: no attempt");
    assert!(p.current_connection().is_none());

    let driver = tokio::spawn(driver);
    p.connected().await.unwrap();
    assert_eq!(
        recorder.log(),
        timeline(&[
            (5000, "AttemptingToConnect"),
            (5000, "ObtainedAddress(\"a\")"),
            (5000, "Connected(1)"),
        ])
    );
    p.close().await;
    driver.await.unwrap();
    assert_eq!(recorder.events().last().unwrap(), "Disconnected");
}

// Dropping the driver's future, polled or not, ends the persistent connection: every handle
// sees it closed at once.
#[tokio::test(start_paused = true)]
async fn dropping_the_driver_closes_the_handles() {
    let start = Instant::now();
    let (p, driver) = PersistentLayer::new("pair", Lookup(Script::new(start, [], Step::Ok("a"))))
        .retry_delay(|| Duration::from_secs(1))
        .pair(Connect::new(Script::new(start, [], Step::Ok(""))));
    let waiting = tokio::spawn(p.connected());
    drop(driver);
    assert!(p.is_closed());
    assert!(matches!(waiting.await.unwrap(), Err(Closed { .. })));
    assert_eq!(p.close().now_or_never(), Some(()));
}
