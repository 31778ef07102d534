//! A stress test on a multi-threaded runtime: hundreds of clones racing `poll_ready`, `call`,
//! `connected`, drops and `reconnect_now` while the connection dies every millisecond, then
//! `close` in the middle of it all; a watchdog thread fails the test if anything hangs.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use support::*;
use tokio::time::{Instant, timeout};
use tower::{Layer, Service, ServiceExt};
use tower_persistent::{Closable, Closed, ConnectionClosed, PersistentLayer};

const SEED: u64 = 0x5eed_7ea5;
const CLONES: u32 = 300;
/// No single operation may take longer; the watchdog allows the whole test ten times more.
const LIMIT: Duration = Duration::from_secs(5);

/// Fails the process if `done` is not signalled within `limit` (a deadlock would also stop a
/// tokio timeout from firing).
fn watchdog(limit: Duration) -> mpsc::Sender<()> {
    let (done, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            eprintln!("stress test: watchdog fired after {limit:?}: something hangs");
            std::process::exit(101);
        }
    });
    done
}

// Hundreds of clones racing every handle operation while the connection dies (closed or broken
// readiness) every millisecond: every request is answered by the connection it was sent on,
// or fails with an error; none hangs, none is answered twice; close() in the middle resolves
// within the close timeout, and every clone then sees Closed.
#[test]
fn clones_race_every_operation_under_churn_and_close() {
    let done = watchdog(LIMIT * 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let start = Instant::now();
        let connect = Connect::new(Script::new(start, [], Step::Ok("")));
        let p = PersistentLayer::new("stress", Lookup(Script::new(start, [], Step::Ok("a"))))
            .retry_delay(|| Duration::from_millis(1))
            .close_timeout(Duration::from_secs(2))
            .layer(connect.clone());

        // Kills the current connection every millisecond: closed by the peer, or readiness
        // broken, in turn.
        let churn = {
            let p = p.clone();
            tokio::spawn(async move {
                for n in 0..2_000u32 {
                    if let Some(conn) = p.current_connection() {
                        if n % 2 == 0 {
                            conn.close().await;
                        } else {
                            conn.get_ref().break_ready();
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if p.is_closed() {
                        break;
                    }
                }
            })
        };

        let answered = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..CLONES {
            let p = p.clone();
            let (answered, failed) = (answered.clone(), failed.clone());
            tasks.spawn(async move {
                let mut rng = StdRng::seed_from_u64(SEED + u64::from(task));
                for n in 0..40u32 {
                    let request = task * 1000 + n;
                    match rng.random_range(0..10) {
                        // A request through a fresh clone.
                        0..=5 => {
                            let outcome = timeout(LIMIT, p.clone().oneshot(request))
                                .await
                                .unwrap_or_else(|_| panic!("request {request} hung"));
                            match outcome {
                                Ok((_, echoed)) => {
                                    assert_eq!(echoed, request, "answered someone else's request");
                                    answered.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(error) => {
                                    assert!(
                                        error.is::<Closed>() || error.is::<ConnectionClosed>(),
                                        "unexpected error: {error}"
                                    );
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        // Ready, then dropped without calling.
                        6 => {
                            let mut clone = p.clone();
                            let _ = timeout(
                                LIMIT,
                                std::future::poll_fn(|cx| {
                                    Service::<u32>::poll_ready(&mut clone, cx)
                                }),
                            )
                            .await
                            .expect("poll_ready hung");
                        }
                        // Waiting for a live connection.
                        7 => {
                            if let Ok(conn) = timeout(LIMIT, p.connected())
                                .await
                                .expect("connected() hung")
                            {
                                // Live when handed out; it may die right after.
                                let _ = conn;
                            }
                        }
                        8 => {
                            let _ = timeout(LIMIT, p.connected_or_failed_to_connect())
                                .await
                                .expect("connected_or_failed_to_connect() hung");
                        }
                        _ => p.reconnect_now(),
                    }
                    if p.is_closed() {
                        break;
                    }
                }
            });
        }

        tokio::time::sleep(Duration::from_millis(300)).await;
        let closing = Instant::now();
        timeout(LIMIT, p.close()).await.expect("close() hung");
        assert!(closing.elapsed() <= Duration::from_secs(2) + Duration::from_millis(200));
        while let Some(outcome) = timeout(LIMIT, tasks.join_next())
            .await
            .expect("a task hung after close")
        {
            outcome.unwrap();
        }
        churn.await.unwrap();

        // After close, every clone sees Closed at once.
        let mut clone = p.clone();
        let error = std::future::poll_fn(|cx| Service::<u32>::poll_ready(&mut clone, cx))
            .await
            .unwrap_err();
        assert!(error.is::<Closed>(), "{error}");
        assert!(p.connected().await.is_err());
        let made = connect.made();
        assert!(
            made.len() > 20,
            "only {} connections: not much churn",
            made.len()
        );
        assert!(made.iter().all(|c| c.is_closed()), "a connection left open");
        assert!(
            answered.load(Ordering::Relaxed) > 100,
            "{} answered, {} failed",
            answered.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
    });
    drop(runtime);
    done.send(()).unwrap();
}

// No `AttemptingToConnect` is published once `close()` has returned, even when closing begins
// as the driver is about to begin a round (on the same timer tick), with other threads taking
// the connection's locks meanwhile: a stream subscribed just after `close()` sees the last event
// before it, then at most the rest of a round begun before the call (its connection closed),
// then its end. 300 races.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_round_begins_once_close_has_returned() {
    use futures_util::StreamExt;
    let done = watchdog(10 * LIMIT);
    for round in 0..300 {
        let get_address = tower::service_fn(|()| async { Ok::<_, std::io::Error>("a") });
        let connect = tower::service_fn(|_: &'static str| async {
            Ok::<_, std::io::Error>(tower_persistent::ClosableService::new(tower::service_fn(
                |n: u32| async move { Ok::<_, std::io::Error>(n) },
            )))
        });
        let p = PersistentLayer::new("race", get_address)
            .retry_delay(|| Duration::from_millis(2))
            .jitter(0.0)
            .layer(connect);
        // A connection that dies young: the next round waits for the rest of the delay.
        timeout(LIMIT, p.connected())
            .await
            .unwrap()
            .unwrap()
            .close()
            .await;
        let at = timeout(LIMIT, async {
            loop {
                match p.state() {
                    tower_persistent::State::Connecting {
                        next_attempt_at: Some(at),
                        ..
                    } => return at,
                    tower_persistent::State::Connected => {
                        if let Some(conn) = p.current_connection() {
                            conn.close().await;
                        }
                    }
                    _ => {}
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        // Threads that take the slot's lock, as handles do.
        let spinning = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let (p, spinning) = (p.clone(), spinning.clone());
                std::thread::spawn(move || {
                    while spinning.load(Ordering::Relaxed) {
                        let _ = p.state();
                    }
                })
            })
            .collect();
        tokio::time::sleep_until(at).await;
        let closing = p.close();
        let mut events = p.events();
        spinning.store(false, Ordering::Relaxed);
        for spinner in spinners {
            spinner.join().unwrap();
        }
        let _last_before = timeout(LIMIT, events.next()).await.unwrap();
        let mut after = Vec::new();
        while let Some(event) = timeout(LIMIT, events.next()).await.unwrap() {
            after.push(event.name());
        }
        timeout(LIMIT, closing).await.unwrap();
        // (A round begun before the call may go on to its connection, closed at once.)
        assert!(
            !after.contains(&"attempting_to_connect"),
            "round {round}: after close(): {after:?}"
        );
    }
    done.send(()).unwrap();
}
