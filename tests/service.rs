//! The tower face: readiness, waking, dead connections, calls.

mod support;

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use support::*;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_persistent::{Closable, ClosableService, Persistent, PersistentLayer};

type P = Persistent<&'static str, Conn>;

fn start_with(start: Instant, lookup: Vec<Step>) -> (P, Recorder, Connect) {
    let recorder = Recorder::new(start);
    let connect = Connect::new(Script::new(start, [], Step::Ok("")));
    let p = PersistentLayer::new("test", Lookup(Script::new(start, lookup, Step::Ok("a"))))
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .on_event(recorder.handler())
        .layer(connect.clone());
    (p, recorder, connect)
}

// Without a connection every waiting clone (a thousand) is Pending, and all are woken when one
// arrives.
#[tokio::test(start_paused = true)]
async fn poll_ready_waits_and_wakes_every_clone() {
    let start = Instant::now();
    let (p, _, _) = start_with(start, vec![Step::Err("down")]);
    let mut clones: Vec<_> = (0..1000)
        .map(|_| tower_test::mock::Spawn::new(p.clone()))
        .collect();
    for clone in &mut clones {
        assert!(clone.poll_ready::<u32>().is_pending());
    }

    until(start, 999).await;
    assert!(
        clones.iter().all(|c| !c.is_woken()),
        "woken before a connection"
    );
    p.connected().await.unwrap();
    assert_eq!(ms(start), 1000);

    for clone in &mut clones {
        assert!(clone.is_woken());
        assert!(matches!(clone.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    }
    let mut first = clones.swap_remove(0);
    assert_eq!(first.call(5).await.unwrap(), (1, 5));
}

// A `ClosableService` closed on one thread refuses the next request of a clone on another (a
// channel orders the close before it), and the inner service sees none: 200 rounds. (Its
// ready path reads the closed flag relaxed: what happens before the load must still be seen.)
#[test]
fn a_closable_service_closed_on_another_thread_refuses_the_next_request() {
    for round in 0..200 {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let conn = ClosableService::new(service_fn(move |n: u32| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, io::Error>(n))
        }));
        let mut other = conn.clone();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
        let caller = std::thread::spawn(move || {
            closed_rx.recv().unwrap();
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match Service::<u32>::poll_ready(&mut other, &mut cx) {
                Poll::Ready(Err(error)) => error,
                Poll::Ready(Ok(())) => panic!("round {round}: ready after close()"),
                Poll::Pending => panic!("round {round}: pending after close()"),
            }
        });
        drop(conn.close());
        closed_tx.send(()).unwrap();
        let error = caller.join().unwrap();
        assert!(
            error.is::<tower_persistent::ConnectionClosed>(),
            "round {round}: {error}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0, "round {round}");
    }
}

// A handle that waits on a connection's own `poll_ready` is woken when closing begins.
#[tokio::test(start_paused = true)]
async fn pending_on_the_connection_is_woken_by_close() {
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    let conn = ClosableService::new(mock);
    let p = PersistentLayer::new("test", service_fn(|()| async { Ok::<_, io::Error>(1) })).layer(
        service_fn(move |_: i32| {
            let conn = conn.clone();
            async move { Ok::<_, io::Error>(conn) }
        }),
    );
    p.connected().await.unwrap();
    // The mock allows no request: its poll_ready stays Pending.
    let mut waiting = tower_test::mock::Spawn::new(p.clone());
    handle.allow(0);
    assert!(waiting.poll_ready::<u32>().is_pending());
    assert!(!waiting.is_woken());

    drop(p.close());
    assert!(waiting.is_woken());
    let error = match waiting.poll_ready::<u32>() {
        Poll::Ready(Err(error)) => error,
        other => panic!("{other:?}"),
    };
    assert!(error.is::<tower_persistent::Closed>());
}

/// A connection that does not close itself when its `poll_ready` fails: only the driver's
/// `close` closes it.
#[derive(Clone)]
struct Stubborn {
    id: usize,
    broken: Arc<std::sync::atomic::AtomicBool>,
    closed: CancellationToken,
    close_calls: Arc<AtomicUsize>,
}

impl Service<u32> for Stubborn {
    type Response = (usize, u32);
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<(usize, u32)>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.broken.load(Ordering::SeqCst) {
            Poll::Ready(Err(io::Error::other("broken pipe")))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, n: u32) -> Self::Future {
        std::future::ready(Ok((self.id, n)))
    }
}

impl Closable for Stubborn {
    async fn close(&self) {
        self.close_calls.fetch_add(1, Ordering::SeqCst);
        self.closed.cancel();
    }

    fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        self.closed.clone().cancelled_owned()
    }
}

// A connection whose poll_ready fails is closed by the driver and replaced; the caller of
// poll_ready only sees a delay, never the error.
#[tokio::test(start_paused = true)]
async fn failing_poll_ready_closes_and_replaces_the_connection() {
    let start = Instant::now();
    let made = Arc::new(std::sync::Mutex::new(Vec::<Stubborn>::new()));
    let connect = {
        let made = made.clone();
        service_fn(move |_: &'static str| {
            let mut made = made.lock().unwrap();
            let conn = Stubborn {
                id: made.len() + 1,
                broken: Arc::default(),
                closed: CancellationToken::new(),
                close_calls: Arc::default(),
            };
            made.push(conn.clone());
            std::future::ready(Ok::<_, io::Error>(conn))
        })
    };
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = events.clone();
    let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .on_event(move |event| {
            log.lock().unwrap().push((ms(start), event.name()));
            std::future::ready(())
        })
        .layer(connect);
    let mut handle = p.clone();
    assert_eq!(handle.ready().await.unwrap().call(1).await.unwrap(), (1, 1));

    until(start, 300).await;
    let first = made.lock().unwrap()[0].clone();
    first.broken.store(true, Ordering::SeqCst);
    let reply = handle.ready().await.unwrap().call(2).await.unwrap();

    assert_eq!(reply, (2, 2));
    assert_eq!(ms(start), 1000, "the caller waited for the next connection");
    assert!(first.is_closed());
    assert_eq!(first.close_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        *events.lock().unwrap(),
        [
            (0, "attempting_to_connect"),
            (0, "obtained_address"),
            (0, "connected"),
            (300, "disconnected"),
            (1000, "attempting_to_connect"),
            (1000, "obtained_address"),
            (1000, "connected"),
        ]
    );
}

// `layer` outside a tokio runtime panics with a message that says why and what to use instead
// (tokio's own said only that no reactor was running).
#[test]
#[should_panic(
    expected = "PersistentLayer::layer must be called within a tokio runtime, on which it spawns the \
                persistent connection's driver (outside one, PersistentLayer::pair gives the \
                driver to run yourself)"
)]
fn layer_outside_a_runtime_panics_with_a_clear_message() {
    let lookup = service_fn(|()| async { Ok::<_, io::Error>("a") });
    let connect = service_fn(|_: &'static str| async {
        Ok::<_, io::Error>(ClosableService::new(service_fn(|n: u32| async move {
            Ok::<_, io::Error>(n)
        })))
    });
    let _p = PersistentLayer::new("test", lookup).layer(connect);
}

// `layer` on a runtime without timers panics at once, with tokio's message saying so: the
// driver needs them, and without this check its first timer (a lookup that does not finish at
// once, a retry delay, a close) panicked inside it, which ended the persistent connection as a
// close would, long after the configuration was made.
#[test]
#[should_panic(
    expected = "A Tokio 1.x context was found, but timers are disabled. Call `enable_time` on the \
                runtime builder to enable timers."
)]
fn layer_on_a_runtime_without_timers_panics_at_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let lookup = service_fn(|()| async { Ok::<_, io::Error>("a") });
    let connect = service_fn(|_: &'static str| async {
        Ok::<_, io::Error>(ClosableService::new(service_fn(|n: u32| async move {
            Ok::<_, io::Error>(n)
        })))
    });
    let _enter = runtime.enter();
    let _p = PersistentLayer::new("test", lookup).layer(connect);
}

// `call` without readiness panics with a fixed message.
#[tokio::test(start_paused = true)]
#[should_panic(
    expected = "Persistent::call was called before Persistent::poll_ready returned Ready(Ok(()))"
)]
async fn call_without_poll_ready_panics() {
    let (mut p, _, _) = start_with(Instant::now(), vec![]);
    p.connected().await.unwrap();
    drop(p.call(1));
}

// A clone does not inherit readiness.
#[tokio::test(start_paused = true)]
#[should_panic(expected = "Persistent::call was called before")]
async fn clones_never_copy_readiness() {
    let (mut p, _, _) = start_with(Instant::now(), vec![]);
    poll_fn(|cx| Service::<u32>::poll_ready(&mut p, cx))
        .await
        .unwrap();
    let mut clone = p.clone();
    drop(clone.call(1));
}

// One readiness, one call: a second call needs poll_ready again.
#[tokio::test(start_paused = true)]
#[should_panic(expected = "Persistent::call was called before")]
async fn readiness_is_used_up_by_a_call() {
    let (mut p, _, _) = start_with(Instant::now(), vec![]);
    poll_fn(|cx| Service::<u32>::poll_ready(&mut p, cx))
        .await
        .unwrap();
    drop(p.call(1));
    drop(p.call(2));
}

// `call` sends on the connection that poll_ready reserved, even if another one became current.
#[tokio::test(start_paused = true)]
async fn call_uses_the_reserved_connection() {
    let start = Instant::now();
    let (mut p, _, connect) = start_with(start, vec![]);
    poll_fn(|cx| Service::<u32>::poll_ready(&mut p, cx))
        .await
        .unwrap();

    until(start, 5000).await;
    let mut events = p.events();
    connect.conn(1).close().await;
    // The stream starts with the most recent event, the first Connected.
    wait_event(&mut events, "disconnected").await;
    wait_event(&mut events, "connected").await;
    assert_eq!(p.current_connection().unwrap().get_ref().id, 2);

    assert_eq!(p.call(1).await.unwrap(), (1, 1));
    assert_eq!(p.ready().await.unwrap().call(2).await.unwrap(), (2, 2));
}

// A request in flight when its connection dies gets the error; nothing is retried.
#[tokio::test(start_paused = true)]
async fn request_in_flight_gets_the_error_and_is_not_retried() {
    let (first_mock, mut first) = tower_test::mock::pair::<u32, u32>();
    let (second_mock, mut second) = tower_test::mock::pair::<u32, u32>();
    let mocks = Arc::new(std::sync::Mutex::new(vec![second_mock, first_mock]));
    let connect = service_fn(move |_: u8| {
        let mock = mocks
            .lock()
            .unwrap()
            .pop()
            .expect("two connections at most");
        std::future::ready(Ok::<_, io::Error>(ClosableService::new(mock)))
    });
    let p = ServiceBuilder::new()
        .layer(PersistentLayer::new(
            "test",
            service_fn(|()| async { Ok::<_, io::Error>(0_u8) }),
        ))
        .service(connect);
    let first_conn = p.connected().await.unwrap();

    let response = p.clone().oneshot(1);
    let (response, request) = tokio::join!(response, async {
        let (request, reply) = first.next_request().await.unwrap();
        first_conn.close().await;
        drop(reply);
        request
    });
    assert_eq!(request, 1);
    // The caller sees the failure.
    assert_eq!(response.unwrap_err().to_string(), "service closed");

    // The next connection serves new requests; the failed one was not resent.
    let next = p.clone().oneshot(2);
    let (response, request) = tokio::join!(next, async {
        let (request, reply) = second.next_request().await.unwrap();
        reply.send_response(20);
        request
    });
    assert_eq!((request, response.unwrap()), (2, 20));
    second.allow(1);
    assert!(
        tokio::time::timeout(Duration::from_secs(60), second.next_request())
            .await
            .is_err()
    );
}

// Handles are `Send`, `Sync` and `'static`, usable from many tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_serve_many_tasks() {
    let start = Instant::now();
    let (p, _, _) = start_with(start, vec![]);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                let mut sum = 0;
                for n in 0..100 {
                    sum += p.clone().oneshot(i * 100 + n).await.unwrap().1;
                }
                sum
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, (0..6400).sum::<u32>());
}

// Under churn (the connection closed every millisecond by another thread), requests from many
// tasks on a multi-threaded runtime are all served: no lost wake-up, no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_survive_connection_churn() {
    let start = Instant::now();
    let connect = Connect::new(Script::new(start, [], Step::Ok("")));
    let p = PersistentLayer::new("churn", Lookup(Script::new(start, [], Step::Ok("a"))))
        .retry_delay(|| Duration::from_millis(1))
        .layer(connect.clone());
    let chaos = {
        let p = p.clone();
        tokio::spawn(async move {
            for _ in 0..300 {
                if let Some(conn) = p.current_connection() {
                    conn.close().await;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8u32 {
        let p = p.clone();
        tasks.spawn(async move {
            for n in 0..200u32 {
                let request = task * 1000 + n;
                let reply =
                    tokio::time::timeout(Duration::from_secs(10), p.clone().oneshot(request))
                        .await
                        .expect("a request hung")
                        .unwrap();
                assert_eq!(reply.1, request);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    chaos.await.unwrap();
    assert!(
        connect.made().len() > 10,
        "{} connections",
        connect.made().len()
    );
    p.close().await;
}
