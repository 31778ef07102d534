//! What the HTTP connector hands over to the persistent connection's driver that polls it: an
//! HTTP/1.1 connection's task (run inside the driver while the connection is current, on its
//! own once it is not) and the connect's deadline (kept by the driver's one timer). And an
//! HTTP/2 connection run as one task: hyper's futures for it inside the connection's task.
#![cfg(all(feature = "hyper", unix))]

mod support;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use http_body_util::{Either, Empty};
use support::web::{HttpServer, get, serve_one, text};
use support::yield_until;
use tokio::io::DuplexStream;
use tokio::time::{Instant, sleep, timeout};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_persistent::discovery::Fixed;
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{Closable, PersistentLayer};

/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);

type Body = Empty<Bytes>;

/// In-memory streams, each served by a test server named `mem` (one task per stream), made
/// after `delay` (none: at once).
fn memory(
    delay: Duration,
) -> impl tower::Service<(), Response = DuplexStream, Error = io::Error, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |_: ()| async move {
        if !delay.is_zero() {
            sleep(delay).await;
        }
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve_one("mem", server));
        Ok::<_, io::Error>(client)
    })
}

/// Streams whose far end never speaks (kept open in `held`).
fn silent(
    held: Arc<Mutex<Vec<DuplexStream>>>,
) -> impl tower::Service<(), Response = DuplexStream, Error = io::Error, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |_: ()| {
        let (client, server) = tokio::io::duplex(1024);
        held.lock().unwrap().push(server);
        async { Ok::<_, io::Error>(client) }
    })
}

/// Tasks alive on this runtime.
fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Sends `GET path` through `client`, within `LIMIT`, and checks that it is answered with
/// `expected`.
async fn answers<S, B>(client: &S, path: &str, expected: &str)
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let response = timeout(LIMIT, client.clone().oneshot(get(path)))
        .await
        .expect("the request was not answered in time")
        .unwrap();
    assert_eq!(text(response).await, expected);
}

/// Checks that a persistent connection over `connector` (retry delay 60 s) fails its first
/// attempt exactly `after` its start, with the error `text`.
async fn first_attempt_fails<M>(connector: M, after: Duration, text: &str)
where
    M: tower::Service<(), Response = HttpConnection<Body>> + Send + 'static,
    M::Error: Into<tower_persistent::BoxError>,
    M::Future: Send,
{
    let start = Instant::now();
    let client = PersistentLayer::new("mem", Fixed::new(()))
        .retry_delay(|| Duration::from_secs(60))
        .layer(connector);
    let error = client.connected_or_failed_to_connect().await.unwrap_err();
    assert_eq!(start.elapsed(), after);
    assert_eq!(error.text(), text);
    client.close().await;
}

// Without an `on_event` handler, a persistent connection over HTTP/1.1 runs its connection's
// task inside its driver: one task of its own (the other is the test server's). With a handler
// (which the driver awaits while the connection is current), and for the connector used alone,
// the connection's task is spawned as usual.
#[tokio::test(flavor = "current_thread")]
async fn an_http1_connections_task_runs_inside_the_driver_without_a_handler() {
    let before = alive();
    let client = PersistentLayer::new("mem", Fixed::new(()))
        .layer(HttpConnector::<Body>::http1().over(memory(Duration::ZERO)));
    answers(&client, "/a", "mem /a").await;
    assert_eq!(alive() - before, 2, "the driver and the server");
    client.close().await;

    let before = alive();
    let handled = PersistentLayer::new("mem", Fixed::new(()))
        .on_event(|_| std::future::ready(()))
        .layer(HttpConnector::<Body>::http1().over(memory(Duration::ZERO)));
    answers(&handled, "/b", "mem /b").await;
    assert_eq!(
        alive() - before,
        3,
        "the driver, the connection's task and the server"
    );
    handled.close().await;

    let before = alive();
    let alone = timeout(
        LIMIT,
        HttpConnector::<Body>::http1()
            .over(memory(Duration::ZERO))
            .oneshot(()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(alive() - before, 2, "the connection's task and the server");
    alone.close().await;
}

// A request in flight when closing begins is answered: the connection's task, run by the driver
// until then, runs on its own and drains the request within the close timeout. The close
// finishes with the answer, 300 ms after the request.
#[tokio::test(start_paused = true)]
async fn a_request_in_flight_when_closing_begins_is_answered() {
    let client = PersistentLayer::new("mem", Fixed::new(()))
        .layer(HttpConnector::<Body>::http1().over(memory(Duration::ZERO)));
    timeout(LIMIT, client.connected_or_failed_to_connect())
        .await
        .unwrap()
        .unwrap();
    let connection = client.current_connection().unwrap();
    let start = Instant::now();
    let request = tokio::spawn(client.clone().oneshot(get("/slow")));
    assert!(yield_until(|| connection.in_flight() != 0).await);
    let closed = {
        let client = client.clone();
        tokio::spawn(async move {
            client.close().await;
            start.elapsed()
        })
    };
    let response = timeout(LIMIT, request).await.unwrap().unwrap().unwrap();
    assert_eq!(text(response).await, "mem /slow");
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    let closed_after = timeout(LIMIT, closed).await.unwrap().unwrap();
    assert_eq!(closed_after, Duration::from_millis(300));
    assert!(connection.is_closed());
    assert!(!connection.closed_gracefully(), "closed by us");
}

// The connector's deadline, kept by the driver, ends the attempt at exactly that time and with
// the connector's own error, as the connector's own timer does when the connector is used
// alone. When the driver's deadline comes first it ends the attempt, with its own error; when
// both fall at the same time the connector's error is given.
#[tokio::test(start_paused = true)]
async fn the_sooner_deadline_ends_a_silent_connect_with_its_own_error() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let cases = [
        // (the persistent connection's, the connector's, after, error)
        (20, 3, 3, "connect failed: connect timed out after 3s"),
        (
            2,
            3,
            2,
            "connection attempt timed out (connect timeout 2s, or the attempt's retry delay if longer)",
        ),
        (3, 3, 3, "connect failed: connect timed out after 3s"),
    ];
    for (attempt, connect, after, expected) in cases {
        let start = Instant::now();
        let client = PersistentLayer::new("mem", Fixed::new(()))
            .connect_timeout(Duration::from_secs(attempt))
            // (An attempt's deadline is never sooner than the retry delay.)
            .retry_delay(|| Duration::from_millis(1))
            .layer(
                HttpConnector::<Body>::http2()
                    .connect_timeout(Duration::from_secs(connect))
                    .over(silent(held.clone())),
            );
        let error = client.connected_or_failed_to_connect().await.unwrap_err();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(after),
            "{attempt} {connect}"
        );
        assert_eq!(error.text(), expected, "{attempt} {connect}");
        client.close().await;
    }

    // Alone, the connector keeps its deadline with a timer of its own.
    let streams = held.lock().unwrap().len();
    let start = Instant::now();
    let error = HttpConnector::<Body>::http2()
        .connect_timeout(Duration::from_secs(3))
        .over(silent(held.clone()))
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(error.to_string(), "connect timed out after 3s");
    assert_eq!(held.lock().unwrap().len(), streams + 1);
}

// A connector whose connect is moved to a task of its own after its first poll (so that the
// driver no longer polls it) still ends at its deadline: polled outside the driver, it arms a
// timer of its own.
#[tokio::test(start_paused = true)]
async fn a_connect_moved_to_a_task_of_its_own_keeps_its_deadline() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let mut inner = HttpConnector::<Body>::http2()
        .connect_timeout(Duration::from_secs(3))
        .over(silent(held.clone()));
    let moving = service_fn(move |_: ()| {
        let mut connecting = Box::pin(inner.call(()));
        async move {
            // Polled once here, in the driver's poll; then on a task of its own.
            if let Some(done) = (&mut connecting).now_or_never() {
                return done;
            }
            tokio::spawn(connecting).await.unwrap()
        }
    });
    let timed_out = "connect failed: connect timed out after 3s";
    first_attempt_fails(moving, Duration::from_secs(3), timed_out).await;
}

// No timer of the driver's is left armed once the connection is made: on a paused clock
// (which tokio moves to the next timer whenever the runtime waits for nothing else), waiting
// for a server on another runtime, over HTTP/1.1 and HTTP/2, does not move the clock; and no
// event comes after `Connected`. (The clock is paused once connected: during the connect,
// the connect's own deadline is a timer the paused clock would move to.)
#[tokio::test]
async fn no_timer_is_left_armed_once_connected() {
    // The server runs on a runtime of its own: `/slow` takes 300 ms there.
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let server = support::web::HttpServer::start("far").await.unwrap();
            address_tx.send(server.address).unwrap();
            let _ = stop_rx.await;
            server.kill().await;
        });
    });
    let address = address_rx.recv_timeout(LIMIT).unwrap();
    for connector in [
        HttpConnector::<Body>::http1(),
        HttpConnector::<Body>::http2(),
    ] {
        // A TCP connect waits: the attempt's timer is armed for it.
        let client = PersistentLayer::new("far", Fixed::new(address)).layer(connector);
        let mut events = client.events().map(|event| event.name());
        timeout(LIMIT, client.connected_or_failed_to_connect())
            .await
            .unwrap()
            .unwrap();
        tokio::time::pause();
        let start = Instant::now();
        let response = client.clone().oneshot(get("/slow")).await.unwrap();
        assert_eq!(text(response).await, "far /slow");
        assert_eq!(start.elapsed(), Duration::ZERO, "the paused clock moved");
        tokio::time::resume();
        let mut seen = Vec::new();
        while let Some(Some(name)) = events.next().now_or_never() {
            seen.push(name);
        }
        assert_eq!(
            seen,
            ["attempting_to_connect", "obtained_address", "connected"]
        );
        client.close().await;
    }
    stop_tx.send(()).unwrap();
    server_thread.join().unwrap();
}

// A runtime shut down while its persistent connection is current drops the driver and the
// connection's task it runs: a clone of the connection kept outside finds it finished, and a
// request on it fails at once instead of waiting for a task that will never run.
#[test]
fn a_runtime_shut_down_while_connected_finishes_the_connection() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, connection) = runtime.block_on(async {
        let client = PersistentLayer::new("mem", Fixed::new(()))
            .layer(HttpConnector::<Body>::http1().over(memory(Duration::ZERO)));
        answers(&client, "/a", "mem /a").await;
        let connection = client.current_connection().unwrap();
        (client, connection)
    });
    assert!(!connection.is_closed());
    drop(runtime);
    assert!(connection.is_closed());
    assert!(client.is_closed());
    let outcome = futures_util::FutureExt::now_or_never(connection.clone().oneshot(get("/b")));
    match outcome {
        Some(Err(error)) => assert!(error.is::<tower_persistent::ConnectionClosed>(), "{error}"),
        other => panic!(
            "expected the connection closed at once, got {:?}",
            other.map(|r| r.map(|_| ()))
        ),
    }
}

// A connector that uses the connections it makes before it returns one (a warm-up request on
// the connection it keeps, a close of one it does not keep) is served: the tasks handed over
// run while the connect is under way. With an `on_event` handler too.
#[tokio::test(start_paused = true)]
async fn a_connector_may_use_its_connections_before_it_returns_one() {
    let inner = HttpConnector::<Body>::http1().over(memory(Duration::ZERO));
    let connector = service_fn(move |(): ()| {
        let mut inner = inner.clone();
        async move {
            let spare = inner.call(()).await?;
            let mut kept = inner.call(()).await?;
            let warm = kept.ready().await?.call(get("/warm")).await?;
            assert_eq!(text(warm).await, "mem /warm");
            spare.close().await;
            assert!(spare.is_closed());
            Ok::<_, tower_persistent::BoxError>(kept)
        }
    });
    for handler in [false, true] {
        let mut layer = PersistentLayer::new("mem", Fixed::new(()))
            .connect_timeout(Duration::from_secs(2))
            .retry_delay(|| Duration::from_secs(60));
        if handler {
            layer = layer.on_event(|_| std::future::ready(()));
        }
        let client = layer.layer(connector.clone());
        let start = Instant::now();
        timeout(LIMIT, client.connected_or_failed_to_connect())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO, "handler: {handler}");
        answers(&client, "/a", "mem /a").await;
        client.close().await;
    }
}

/// Streams: the first fails after 100 ms; the others never come.
fn failing_then_hanging()
-> impl tower::Service<(), Response = DuplexStream, Error = io::Error, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let calls = Arc::new(Mutex::new(0));
    service_fn(move |_: ()| {
        let first = {
            let mut calls = calls.lock().unwrap();
            *calls += 1;
            *calls == 1
        };
        async move {
            if first {
                sleep(Duration::from_millis(100)).await;
                return Err(io::Error::other("refused"));
            }
            std::future::pending().await
        }
    })
}

// Each connect of an attempt keeps its own deadline: a second connect after a first that
// failed (a retry), and connects raced in a `FuturesUnordered` (which polls a connect only when
// it is woken), end at their deadline with their own error.
#[tokio::test(start_paused = true)]
async fn every_connect_of_an_attempt_keeps_its_own_deadline() {
    let retrying = {
        let inner = HttpConnector::<Body>::http1()
            .connect_timeout(Duration::from_secs(1))
            .over(failing_then_hanging());
        service_fn(move |(): ()| {
            let mut inner = inner.clone();
            async move {
                match inner.call(()).await {
                    Ok(conn) => Ok(conn),
                    Err(_) => inner.call(()).await,
                }
            }
        })
    };
    let timed_out = "connect failed: connect timed out after 1s";
    first_attempt_fails(retrying, Duration::from_millis(1100), timed_out).await;

    let held = Arc::new(Mutex::new(Vec::new()));
    let racing = {
        let inner = HttpConnector::<Body>::http2()
            .connect_timeout(Duration::from_secs(1))
            .over(silent(held.clone()));
        service_fn(move |(): ()| {
            let inner = inner.clone();
            async move {
                let mut race: futures_util::stream::FuturesUnordered<_> =
                    (0..2).map(|_| inner.clone().oneshot(())).collect();
                let mut last = None;
                while let Some(outcome) = race.next().await {
                    match outcome {
                        Ok(conn) => return Ok(conn),
                        Err(error) => last = Some(error),
                    }
                }
                Err(last.expect("two connects"))
            }
        })
    };
    first_attempt_fails(racing, Duration::from_secs(1), timed_out).await;
    assert_eq!(held.lock().unwrap().len(), 2);
}

// A connector that runs the HTTP connector on an executor of its own (`Handle::block_on` under
// `block_in_place`, inside the driver's poll) is not polled by the driver: nothing is handed
// over to the driver, which could not run it. Its warm-up request is answered, and its connect
// timeout (1 s, against a stream that fails after 4 s) ends the attempt, with its own error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_on_an_executor_of_its_own_hands_nothing_over() {
    let warming = {
        let inner = HttpConnector::<Body>::http1().over(memory(Duration::ZERO));
        service_fn(move |(): ()| {
            let mut inner = inner.clone();
            let made = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async move {
                    let mut conn = inner.call(()).await?;
                    let warm = timeout(LIMIT, conn.ready().await?.call(get("/warm")))
                        .await
                        .map_err(|_| "the warm-up was not answered")??;
                    assert_eq!(text(warm).await, "mem /warm");
                    Ok::<_, tower_persistent::BoxError>(conn)
                })
            });
            std::future::ready(made)
        })
    };
    let client = PersistentLayer::new("mem", Fixed::new(())).layer(warming);
    timeout(LIMIT, client.connected_or_failed_to_connect())
        .await
        .unwrap()
        .unwrap();
    answers(&client, "/a", "mem /a").await;
    client.close().await;

    let timing_out = {
        let late = service_fn(|_: ()| async {
            sleep(Duration::from_secs(4)).await;
            Err::<DuplexStream, _>(io::Error::other("refused late"))
        });
        let inner = HttpConnector::<Body>::http1()
            .connect_timeout(Duration::from_secs(1))
            .over(late);
        service_fn(move |(): ()| {
            let mut inner = inner.clone();
            let made = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(inner.call(()))
            });
            std::future::ready(made)
        })
    };
    let client = PersistentLayer::new("mem", Fixed::new(()))
        .retry_delay(|| Duration::from_secs(60))
        .layer(timing_out);
    let start = std::time::Instant::now();
    let error = timeout(LIMIT, client.connected_or_failed_to_connect())
        .await
        .unwrap()
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(3)).contains(&took),
        "{took:?}"
    );
    assert_eq!(error.text(), "connect failed: connect timed out after 1s");
    client.close().await;
}

// A driver of yours (`pair`) takes nothing over: requests do not depend on your polling it.
// Connected while polled, it is left unpolled while a request is made, and a request in flight
// when it is dropped, on a thread outside the runtime, is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_of_yours_takes_nothing_over() {
    let (client, driver) = PersistentLayer::new("mem", Fixed::new(()))
        .pair(HttpConnector::<Body>::http1().over(memory(Duration::ZERO)));
    let mut driver = Box::pin(driver);
    tokio::select! {
        _ = &mut driver => panic!("the driver ended"),
        connected = timeout(LIMIT, client.connected()) => drop(connected.unwrap().unwrap()),
    }
    // Not polled while this request is made.
    answers(&client, "/a", "mem /a").await;
    let connection = client.current_connection().unwrap();
    let request = tokio::spawn(client.clone().oneshot(get("/slow")));
    timeout(LIMIT, async {
        while connection.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the request never went in flight");
    std::thread::spawn(move || drop(driver)).join().unwrap();
    let response = timeout(LIMIT, request).await.unwrap().unwrap().unwrap();
    assert_eq!(text(response).await, "mem /slow");
}

// While an `ObtainedAddress` handler runs no timer of the attempt's is armed (the lookup's is
// gone): on a paused clock, a handler that waits on I/O from outside the runtime does not see
// the clock move.
#[tokio::test(start_paused = true)]
async fn no_timer_is_armed_while_an_address_handler_runs() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    // Outside the runtime: answers one connection with one byte.
    let answering = std::thread::spawn(move || {
        use std::io::Write;
        let (mut socket, _) = listener.accept().unwrap();
        socket.write_all(b"!").unwrap();
    });
    let waited = Arc::new(Mutex::new(None));
    // A lookup that waits once: the attempt's timer is armed for it.
    let lookup = service_fn(|()| async {
        tokio::task::yield_now().await;
        Ok::<_, io::Error>(())
    });
    let client = PersistentLayer::new("mem", lookup)
        .on_event({
            let waited = waited.clone();
            move |event: tower_persistent::Event<(), HttpConnection<Body>>| {
                let waited = waited.clone();
                async move {
                    if let tower_persistent::Event::ObtainedAddress(()) = event {
                        use tokio::io::AsyncReadExt;
                        let start = Instant::now();
                        let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
                        let mut byte = [0u8; 1];
                        socket.read_exact(&mut byte).await.unwrap();
                        *waited.lock().unwrap() = Some(start.elapsed());
                    }
                }
            }
        })
        .layer(HttpConnector::<Body>::http1().over(memory(Duration::ZERO)));
    let start = Instant::now();
    // (No timeout of the test's own here: it would be a timer, which the paused clock would
    // move to. The thread answers at once.)
    client.connected().await.unwrap();
    assert_eq!(*waited.lock().unwrap(), Some(Duration::ZERO));
    assert_eq!(start.elapsed(), Duration::ZERO);
    answering.join().unwrap();
    client.close().await;
}

// Over HTTP/2, hyper's futures for a connection (its I/O, a future per request awaiting its
// response, a request body's pipe) run inside the connection's own task: requests in flight
// add no task. (With tokio's executor, as hyper's own examples use, each request in flight is
// a task of its own, and the I/O another.) The server runs on a runtime of its own, whose
// tasks are not counted.
#[test]
fn http2_requests_in_flight_add_no_task() {
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = servers.block_on(HttpServer::start("s")).unwrap();
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    clients.block_on(async {
        let conn: HttpConnection<Body> =
            timeout(LIMIT, HttpConnector::http2().oneshot(server.address))
                .await
                .unwrap()
                .unwrap();
        answers(&conn, "/a", "s /a").await;
        assert_eq!(alive(), 1, "the connection's task");
        // The server's `/hang` never answers.
        let mut requests: futures_util::stream::FuturesUnordered<_> = (0..16)
            .map(|_| conn.clone().oneshot(get("/hang")))
            .collect();
        tokio::select! {
            answered = requests.next() => panic!("answered: {answered:?}"),
            arrived = server.stats.requests(17, LIMIT) => assert!(arrived, "requests lost"),
        }
        assert_eq!(conn.in_flight(), 16);
        assert_eq!(alive(), 1, "the connection's task, and none per request");
        drop(requests);
        conn.close().await;
    });
    servers.block_on(server.kill());
}

/// A request body: one frame, then, polled again once `go` is woken, a panic.
struct PanicsLater {
    sent: bool,
    go: Arc<Mutex<(bool, Option<std::task::Waker>)>>,
}

impl hyper::body::Body for PanicsLater {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        if !self.sent {
            self.sent = true;
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from("x")))));
        }
        let mut go = self.go.lock().unwrap();
        if !go.0 {
            go.1 = Some(cx.waker().clone());
            return std::task::Poll::Pending;
        }
        panic!("the request body panicked");
    }
}

/// The answer to `request` on `conn`, within `LIMIT`.
async fn answer<B>(conn: &HttpConnection<B>, request: http::Request<B>) -> String
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<tower_persistent::BoxError>,
{
    let response = timeout(LIMIT, conn.clone().oneshot(request))
        .await
        .expect("the request was not answered in time")
        .unwrap();
    text(response).await
}

// A request body that panics as hyper's HTTP/2 connection sends it (from its pipe, one of the
// futures run inside the connection's task) ends that request's sending alone, as it would
// end a task of its own: the connection goes on serving.
#[tokio::test]
async fn an_http2_request_body_panicking_ends_only_its_own_sending() {
    let server = HttpServer::start("s").await.unwrap();
    let conn: HttpConnection<Either<PanicsLater, Body>> =
        timeout(LIMIT, HttpConnector::http2().oneshot(server.address))
            .await
            .unwrap()
            .unwrap();
    let go = Arc::new(Mutex::new((false, None)));
    // `/drain` answers at once and reads the body on: the body waits for `go`.
    let panics = http::Request::post(format!("http://{}/drain", server.address))
        .body(Either::Left(PanicsLater {
            sent: false,
            go: go.clone(),
        }))
        .unwrap();
    assert_eq!(answer(&conn, panics).await, "s /drain");
    let waker = {
        let mut go = go.lock().unwrap();
        go.0 = true;
        go.1.take().expect("the body waits to be polled again")
    };
    waker.wake();
    // Another request on the same connection: answered.
    let second = http::Request::get(format!("http://{}/b", server.address))
        .body(Either::Right(Body::new()))
        .unwrap();
    assert_eq!(answer(&conn, second).await, "s /b");
    assert!(go.is_poisoned(), "the body panicked, holding its lock");
    assert!(!conn.is_closed());
    assert_eq!(server.accepted(), 1);
    conn.close().await;
    server.stop().await;
}
