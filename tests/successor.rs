//! `Closable::set_successor`: where the connection that replaces a dead one is announced, and
//! when, on tokio's paused clock.

mod support;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use support::*;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_persistent::{Closable, Persistent, PersistentLayer, Successor};

/// A test connection that keeps its successor.
#[derive(Clone)]
struct Kept {
    conn: Conn,
    successor: Arc<Mutex<Option<Successor<Kept>>>>,
    /// What `closed_gracefully` answers.
    graceful: bool,
}

impl Kept {
    fn id(&self) -> usize {
        self.conn.get_ref().id
    }

    fn successor(&self) -> Successor<Kept> {
        self.successor
            .lock()
            .unwrap()
            .clone()
            .expect("set_successor was called when the connection became current")
    }
}

impl Closable for Kept {
    fn close(&self) -> impl Future<Output = ()> + Send {
        self.conn.close()
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        self.conn.close_finished()
    }

    fn closed_gracefully(&self) -> bool {
        self.graceful
    }

    fn set_successor(&self, successor: Successor<Self>) {
        let mut kept = self.successor.lock().unwrap();
        assert!(kept.is_none(), "set_successor was called twice");
        *kept = Some(successor);
    }
}

impl Service<u32> for Kept {
    type Response = (usize, u32);
    type Error = tower_persistent::BoxError;
    type Future = <Conn as Service<u32>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.conn.poll_ready(cx)
    }

    fn call(&mut self, n: u32) -> Self::Future {
        self.conn.call(n)
    }
}

/// A persistent connection of [`Kept`] connections with exact 1 s delays, its connector
/// scripted by `connect`.
fn start(start: Instant, connect: Vec<Step>) -> (Persistent<&'static str, Kept>, Connect) {
    start_graceful(start, connect, false)
}

/// The same, its connections answering `graceful` when asked whether they closed gracefully.
fn start_graceful(
    start: Instant,
    connect: Vec<Step>,
    graceful: bool,
) -> (Persistent<&'static str, Kept>, Connect) {
    let lookup = Script::new(start, [], Step::Ok("a"));
    let connect = Connect::new(Script::new(start, connect, Step::Ok("")));
    let keep = tower::util::MapResponseLayer::new(move |conn: Conn| Kept {
        conn,
        successor: Arc::default(),
        graceful,
    });
    let p = PersistentLayer::new("test", Lookup(lookup))
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .layer(keep.layer(connect.clone()));
    (p, connect)
}

// A connection that dies is succeeded by the connection the next attempt makes: announced as
// soon as that one is current (at once here: the first connection outlived its delay), and the
// same to every clone of the successor.
#[tokio::test(start_paused = true)]
async fn the_successor_is_the_next_connection_made() {
    let t0 = Instant::now();
    let (p, connect) = start(t0, vec![]);
    let first = p.connected().await.unwrap();
    assert_eq!(first.id(), 1);
    let successor = first.successor();
    assert!(!successor.is_announced());

    tokio::time::sleep(Duration::from_secs(5)).await;
    let waiter = tokio::spawn({
        let successor = successor.clone();
        async move { successor.get().await.map(|c| (c.id(), ms(t0))) }
    });
    connect.conn(1).close().await;
    assert_eq!(waiter.await.unwrap(), Some((2, 5000)));
    assert!(successor.is_announced());
    assert_eq!(successor.get().await.unwrap().id(), 2);
    assert_eq!(p.current_connection().unwrap().id(), 2);
    // A request on the successor reaches it.
    assert_eq!(
        successor.get().await.unwrap().oneshot(7).await.unwrap(),
        (2, 7)
    );
    p.close().await;
}

// A connection that dies young (before its attempt's retry delay has passed) has no successor:
// announced at once, since the next round must first wait out the delay.
#[tokio::test(start_paused = true)]
async fn a_connection_dying_young_has_no_successor() {
    let t0 = Instant::now();
    let (p, connect) = start(t0, vec![]);
    let first = p.connected().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiter = tokio::spawn({
        let successor = first.successor();
        async move { successor.get().await.map(|c| c.id()).ok_or(ms(t0)) }
    });
    connect.conn(1).close().await;
    assert_eq!(waiter.await.unwrap(), Err(200));
    // The next connection comes after the delay all the same.
    let second = p.connected().await.unwrap();
    assert_eq!((second.id(), ms(t0)), (2, 1000));
    p.close().await;
}

// When the attempt that follows a death at once fails, there is no successor, announced when
// it fails (though a later attempt makes a connection).
#[tokio::test(start_paused = true)]
async fn an_attempt_failing_after_a_death_announces_no_successor() {
    let t0 = Instant::now();
    let failing = Step::After(Duration::from_millis(300), Box::new(Step::Err("refused")));
    let (p, connect) = start(t0, vec![Step::Ok(""), failing]);
    let first = p.connected().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waiter = tokio::spawn({
        let successor = first.successor();
        async move { successor.get().await.map(|c| c.id()).ok_or(ms(t0)) }
    });
    connect.conn(1).close().await;
    // The attempt at 5 s fails at 5.3 s: no successor, announced then.
    assert_eq!(waiter.await.unwrap(), Err(5300));
    // The attempt at 6 s makes connection 2; it announces no one's succession.
    let second = p.connected().await.unwrap();
    assert_eq!((second.id(), ms(t0)), (2, 6000));
    assert!(!second.successor().is_announced());
    p.close().await;
}

// Closing announces that the current connection has no successor, and so does closing while
// a dead connection waits for its successor's attempt, and so does dropping every handle.
#[tokio::test(start_paused = true)]
async fn closing_announces_no_successor() {
    let t0 = Instant::now();
    let (p, _) = start(t0, vec![]);
    let first = p.connected().await.unwrap();
    let waiter = tokio::spawn({
        let successor = first.successor();
        async move { successor.get().await.map(|c| c.id()).ok_or(ms(t0)) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.close().await;
    assert_eq!(waiter.await.unwrap(), Err(300));

    // Dead at 5.3 s; the attempt that follows at once hangs until closing stops it at 5.8 s.
    let (p, connect) = start(t0, vec![Step::Ok(""), Step::Hang]);
    let first = p.connected().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    connect.conn(1).close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!first.successor().is_announced());
    p.close().await;
    assert!(first.successor().is_announced());
    assert!(first.successor().get().await.is_none());
    assert_eq!(ms(t0), 5_800);

    // Every handle dropped: the driver ends.
    let (p, _) = start(t0, vec![]);
    let first = p.connected().await.unwrap();
    let successor = first.successor();
    drop(p);
    drop(first);
    let announced = tokio::time::timeout(Duration::from_secs(60), successor.get()).await;
    assert!(announced.unwrap().is_none());
    assert_eq!(ms(t0), 5_800);
}

// Connections closed gracefully are replaced at once, eight within a millisecond at most: each
// one's successor is announced, the ninth's too, once that millisecond is over (its wait is no
// retry delay).
#[tokio::test(start_paused = true)]
async fn a_connection_replaced_at_once_after_a_burst_has_its_successor() {
    let t0 = Instant::now();
    let (p, connect) = start_graceful(t0, vec![], true);
    let mut current = p.connected().await.unwrap();
    for n in 1..=9 {
        assert_eq!(current.id(), n);
        let successor = current.successor();
        connect.conn(n).close().await;
        let next = successor.get().await.expect("a successor");
        // The ninth replacement at once within the millisecond waits for its end.
        let at = if n < 9 { 0 } else { 1 };
        assert_eq!((next.id(), ms(t0)), (n + 1, at));
        current = next;
    }
    p.close().await;
}
