//! The event stream: most recent event first, order, lag reports, end.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use support::*;
use tokio::time::Instant;
use tower::Layer;
use tower_persistent::{Closable, Event, PersistentLayer};

// A new subscriber first receives the most recent event, then every later one, in order; the
// stream ends once closing finished.
#[tokio::test(start_paused = true)]
async fn new_subscriber_gets_the_latest_event_then_the_rest() {
    let start = Instant::now();
    let connect = Connect::new(Script::new(start, [], Step::Ok("")));
    let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .layer(connect.clone());
    let from_start = p.events();
    p.connected().await.unwrap();

    let mut late = p.events();
    connect.conn(1).close().await;
    p.connected().await.unwrap();
    p.close().await;

    let all: Vec<String> = from_start.map(|e| describe(&e)).collect().await;
    assert_eq!(
        all,
        [
            "AttemptingToConnect",
            "ObtainedAddress(\"a\")",
            "Connected(1)",
            "Disconnected",
            "AttemptingToConnect",
            "ObtainedAddress(\"a\")",
            "Connected(2)",
            "Disconnected",
        ]
    );
    let mut seen = Vec::new();
    while let Some(event) = late.next().await {
        seen.push(describe(&event));
    }
    assert_eq!(seen, all[2..]);

    // A subscriber after the end gets the last event, then the end.
    let after: Vec<String> = p.events().map(|e| describe(&e)).collect().await;
    assert_eq!(after, ["Disconnected"]);
}

// A subscriber that falls behind is told how many events it missed, then goes on.
#[tokio::test(start_paused = true)]
async fn slow_subscriber_is_told_how_many_events_it_missed() {
    let start = Instant::now();
    let errors = ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"];
    let lookup = Script::new(start, errors.map(Step::Err), Step::Ok("a"));
    let p = PersistentLayer::new("test", Lookup(lookup))
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .event_capacity(4)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    let mut events = p.events();
    p.connected().await.unwrap();

    // 12 events were sent (AttemptingToConnect, 9 failures, ObtainedAddress, Connected); 4 kept.
    assert!(matches!(events.next().await, Some(Event::Lagged(8))));
    let mut rest = Vec::new();
    for _ in 0..4 {
        rest.push(describe(&events.next().await.unwrap()));
    }
    assert_eq!(
        rest,
        [
            "FailedToConnect(address lookup failed: e8)",
            "FailedToConnect(address lookup failed: e9)",
            "ObtainedAddress(\"a\")",
            "Connected(1)",
        ]
    );
}

// Events compare by variant and contents (errors by kind and text), for tests and filters.
#[tokio::test(start_paused = true)]
async fn events_compare_by_contents() {
    type E = Event<u16, u8>;
    assert_eq!(E::AttemptingToConnect, E::AttemptingToConnect);
    assert_eq!(E::ObtainedAddress(80), E::ObtainedAddress(80));
    assert_ne!(E::ObtainedAddress(80), E::ObtainedAddress(81));
    assert_eq!(E::Connected(1), E::Connected(1));
    assert_ne!(E::Connected(1), E::Disconnected);
    assert_eq!(format!("{:?}", E::Connected(1)), "Connected(..)");

    // Two failed attempts with the same cause give equal events.
    let start = Instant::now();
    let lookup = Script::new(
        start,
        [Step::Err("x"), Step::Err("x"), Step::Err("y")],
        Step::Ok("a"),
    );
    let p = PersistentLayer::new("test", Lookup(lookup))
        .retry_delay(|| Duration::from_secs(1))
        .layer(Connect::new(Script::new(
            start,
            [Step::Err("x")],
            Step::Ok(""),
        )));
    let first = p.connected_or_failed_to_connect().await.unwrap_err();
    let second = p.connected_or_failed_to_connect().await.unwrap_err();
    assert_eq!(first, second);
    assert_eq!(
        Event::<u16, u8>::FailedToConnect(first.clone()),
        Event::FailedToConnect(second)
    );
    // Another text, and another kind (the connect's, not the lookup's), are other events.
    let other_text = p.connected_or_failed_to_connect().await.unwrap_err();
    assert_eq!(other_text.text(), "address lookup failed: y");
    assert_ne!(first, other_text);
    let other_kind = p.connected_or_failed_to_connect().await.unwrap_err();
    assert!(other_kind.is_connect(), "{}", other_kind.text());
    assert_ne!(first, other_kind);
    assert_ne!(
        Event::<u16, u8>::FailedToConnect(first),
        Event::FailedToConnect(other_kind)
    );
}

// A subscriber that comes once `close()` has resolved gets the last event, `Disconnected`, and
// its stream has ended already (on a multi-thread runtime, where the driver finishes on
// another thread than the one `close()` resolves on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_after_close_finds_its_stream_ended() {
    use futures_util::FutureExt;
    for round in 0..50 {
        let start = Instant::now();
        let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
            .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
        p.connected().await.unwrap();
        p.close().await;
        let mut late = p.events();
        assert!(
            matches!(late.next().now_or_never(), Some(Some(Event::Disconnected))),
            "round {round}"
        );
        assert!(
            matches!(late.next().now_or_never(), Some(None)),
            "round {round}: the stream has not ended"
        );
    }
}
