//! The HTTP connector under faults, over real sockets on 127.0.0.1: servers that greet with
//! less than a SETTINGS frame, clones racing for an HTTP/1.1 connection, servers that close
//! connections gracefully after serving (or without serving), settings at their limits.
#![cfg(feature = "hyper")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::web::{HttpServer, get, text};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_persistent::transport::{ClosedInFlight, HttpConnection, HttpConnector, ResponseBody};
use tower_persistent::{BoxError, Closable, Event, Persistent, PersistentLayer};

/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);

type Conn = HttpConnection<Empty<Bytes>>;
type Client = Persistent<SocketAddr, Conn>;

/// Event names with their times since `start`.
#[derive(Clone)]
struct Log {
    start: Instant,
    lines: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Log {
    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The times of the events named `name`.
    fn times(&self, name: &str) -> Vec<Duration> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.starts_with(name))
            .map(|(t, _)| *t)
            .collect()
    }
}

/// A persistent client of `address` over `connector`, with the given layer settings.
fn client(
    address: SocketAddr,
    connector: HttpConnector<Empty<Bytes>>,
    configure: impl FnOnce(
        PersistentLayer<Fixed, SocketAddr, Conn>,
    ) -> PersistentLayer<Fixed, SocketAddr, Conn>,
) -> (Client, Log) {
    client_of(address, connector, configure)
}

/// `client`, for any request body type.
fn client_of<B>(
    address: SocketAddr,
    connector: HttpConnector<B>,
    configure: impl FnOnce(
        PersistentLayer<Fixed, SocketAddr, HttpConnection<B>>,
    ) -> PersistentLayer<Fixed, SocketAddr, HttpConnection<B>>,
) -> (Persistent<SocketAddr, HttpConnection<B>>, Log)
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let log = Log {
        start: Instant::now(),
        lines: Arc::default(),
    };
    let recorder = log.clone();
    let layer = configure(PersistentLayer::new(
        "web",
        tower_persistent::discovery::Fixed::new(address),
    ))
    .on_event(move |event: Event<SocketAddr, HttpConnection<B>>| {
        let line = match &event {
            Event::FailedToConnect(e) => format!("FailedToConnect({})", e.text()),
            other => other.name().to_owned(),
        };
        let at = recorder.start.elapsed();
        recorder.lines.lock().unwrap().push((at, line));
        async {}
    });
    let client = ServiceBuilder::new().layer(layer).service(connector);
    (client, log)
}

type Fixed = tower_persistent::discovery::Fixed<SocketAddr>;

/// The times of the attempts in `log`: as many as `count` says, each starting `delay` or more
/// after the one before (`context` names the case in a failure).
fn attempts_spaced_by(
    log: &Log,
    delay: Duration,
    count: std::ops::RangeInclusive<usize>,
    context: &str,
) -> Vec<Duration> {
    let attempts = log.times("attempting_to_connect");
    assert!(
        count.contains(&attempts.len()),
        "{context}: {attempts:?} {:?}",
        log.lines()
    );
    for pair in attempts.windows(2) {
        assert!(pair[1] - pair[0] >= delay, "{context}: {attempts:?}");
    }
    attempts
}

/// A server that accepts connections, writes `greeting` on each, and then holds them silently.
async fn greeting_server(greeting: &'static [u8]) -> (SocketAddr, JoinSet<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(greeting).await;
            held.push(socket);
        }
    });
    (address, tasks)
}

// An HTTP/2 server that sends one byte, or a SETTINGS header without its payload, and goes
// silent is not a connection: the connect timeout cuts the attempt off.
#[tokio::test]
async fn http2_waits_for_a_whole_settings_frame() {
    for greeting in [&[0u8][..], &[0, 0, 6, 4, 0, 0, 0, 0, 0][..]] {
        let (address, _server) = greeting_server(greeting).await;
        let (client, log) = client(
            address,
            HttpConnector::http2().connect_timeout(Duration::from_millis(200)),
            |layer| layer.retry_delay(|| Duration::from_secs(60)),
        );
        let outcome = timeout(LIMIT, client.connected_or_failed_to_connect())
            .await
            .unwrap();
        let error = outcome.unwrap_err();
        assert_eq!(
            error.text(),
            "connect failed: connect timed out after 200ms",
            "greeting {greeting:?}"
        );
        assert_eq!(
            log.lines(),
            [
                "attempting_to_connect",
                "obtained_address",
                "FailedToConnect(connect failed: connect timed out after 200ms)"
            ]
        );
        client.close().await;
    }
}

// An HTTP/2 server whose first frame is not SETTINGS fails the attempt with an error that
// says so, every time: also an HTTP/1.1 server's answer (read as a frame of type `P`), on which
// hyper ends its connection as the greeting is found wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_first_frame_must_be_settings() {
    // A PING frame (type 6) with its 8-byte payload; an HTTP/1.1 server's refusal.
    let ping: &[u8] = &[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let http1: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    for (greeting, frame_type) in [(ping, "0x06"), (http1, "0x50")] {
        for round in 0..20 {
            let (address, _server) = greeting_server(greeting).await;
            // A short delay: on two threads the first attempt may fail before the call below
            // waits for an outcome, which is then the next attempt's.
            let (client, _) = client(address, HttpConnector::http2(), |layer| {
                layer.retry_delay(|| Duration::from_millis(10))
            });
            let error = timeout(LIMIT, client.connected_or_failed_to_connect())
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(
                error.text(),
                format!(
                    "connect failed: server's first http/2 frame was not SETTINGS (frame type {frame_type})"
                ),
                "round {round}"
            );
            client.close().await;
        }
    }
}

// Many clones racing for one keep-alive HTTP/1.1 connection on two threads: every request that
// poll_ready admitted is answered; none fails with "connection was not ready".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_admitted_requests_never_fail_a_readiness_race() {
    let server = HttpServer::start("s").await.unwrap();
    let (client, log) = client(server.address, HttpConnector::http1(), |layer| layer);
    let mut tasks = JoinSet::new();
    for task in 0..32 {
        let client = client.clone();
        tasks.spawn(async move {
            for n in 0..50 {
                // One response in four is large, read by hyper in many chunks.
                let path = if n % 4 == 0 {
                    format!("/big/{task}/{n}")
                } else {
                    format!("/{task}/{n}")
                };
                let response = timeout(LIMIT, client.clone().oneshot(get(&path)))
                    .await
                    .expect("a request hung")
                    .unwrap_or_else(|e| panic!("request {path} failed: {e}"));
                let body = text(response).await;
                assert_eq!(body.lines().next().unwrap(), format!("s {path}"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(server.accepted(), 1, "one connection throughout");
    assert_eq!(
        log.lines(),
        ["attempting_to_connect", "obtained_address", "connected"]
    );
    client.close().await;
}

/// A server on HTTP/1.1 and HTTP/2 that ends each connection in good order after `every`
/// responses: `Connection: close` on HTTP/1.1, GOAWAY on HTTP/2. `every` = 0 accepts and closes
/// at once without serving.
struct ClosingServer {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    _tasks: JoinSet<()>,
}

impl ClosingServer {
    async fn start(every: usize) -> ClosingServer {
        ClosingServer::start_answering_after(every, Duration::ZERO).await
    }

    /// Over HTTP/2, the `every`th response of a connection comes `late` after its GOAWAY.
    async fn start_answering_after(every: usize, late: Duration) -> ClosingServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                if every == 0 {
                    drop(socket);
                    continue;
                }
                connections.spawn(serve_closing(socket, every, late));
            }
        });
        ClosingServer {
            address,
            accepted,
            _tasks: tasks,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve_closing(socket: tokio::net::TcpStream, every: usize, late: Duration) {
    let served = Arc::new(AtomicUsize::new(0));
    let done = CancellationToken::new();
    let (counter, last) = (served.clone(), done.clone());
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let http2 = request.version() == http::Version::HTTP_2;
        let last = last.clone();
        async move {
            let mut response = hyper::Response::new(Full::new(Bytes::from(format!("{n}"))));
            if n == every {
                if http2 {
                    last.cancel();
                    tokio::time::sleep(late).await;
                } else {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, "close".parse().unwrap());
                }
            }
            Ok::<_, Infallible>(response)
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = done.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

// With the default 10 s retry delay, a server that ends its connections gracefully every 5th
// response (Connection: close, GOAWAY), or after the first (HTTP/2: a GOAWAY with the response,
// so that hyper's connection ends before the caller has seen it), never makes a request wait
// for the delay: such a connection served requests, so it is replaced at once.
#[tokio::test]
async fn a_connection_closed_gracefully_after_serving_is_replaced_at_once() {
    for every in [5, 1] {
        for connector in [HttpConnector::http1(), HttpConnector::http2()] {
            let server = ClosingServer::start(every).await;
            let (client, log) = client(server.address, connector.clone(), |layer| layer);
            let started = Instant::now();
            let mut answered = 0;
            // Until the fourth connection (an HTTP/2 server may answer a request or two past
            // its GOAWAY); bounded.
            while server.accepted() < 4 && answered < 100 {
                let response = timeout(LIMIT, client.clone().oneshot(get("/")))
                    .await
                    .expect("a request hung")
                    .expect("a request failed");
                text(response).await.parse::<usize>().unwrap();
                answered += 1;
            }
            // Three graceful closes; a single wait for the delay would take 7 s at least.
            assert_eq!(server.accepted(), 4, "{every} {connector:?}");
            assert!(
                started.elapsed() < Duration::from_secs(7),
                "{every} {connector:?}: {:?}",
                log.lines()
            );
            if every > 1 {
                // (After one response, the fourth connection may be over already.)
                assert_eq!(log.times("disconnected").len(), 3, "{connector:?}");
            }
            client.close().await;
        }
    }
}

// HTTP/2: a server that ends each connection with a GOAWAY on its first request, which it
// answers 200 ms later (past the 50 ms for which a connection's end waits for the responses in
// flight, to tell whether it served). The GOAWAY let the request go on: the connection serves
// it, in good order, and is replaced at once; before, it counted as not having served and the
// next request waited the retry delay (5 s here).
#[tokio::test]
async fn an_http2_goaway_before_a_slow_answer_is_replaced_at_once() {
    let server = ClosingServer::start_answering_after(1, Duration::from_millis(200)).await;
    let delay = Duration::from_secs(5);
    let (client, log) = client(server.address, HttpConnector::http2(), |layer| {
        layer.retry_delay(move || delay).jitter(0.0)
    });
    for _ in 0..3 {
        let response = timeout(LIMIT, client.clone().oneshot(get("/")))
            .await
            .expect("a request hung")
            .expect("a request failed");
        assert_eq!(text(response).await, "1");
    }
    // (The connection that replaces the third may be made already.)
    assert!((3..=4).contains(&server.accepted()));
    // Each attempt after an end: at once, not a retry delay later.
    let (ends, attempts) = (
        log.times("disconnected"),
        log.times("attempting_to_connect"),
    );
    assert!(ends.len() >= 2, "{:?}", log.lines());
    for (end, attempt) in ends.iter().zip(&attempts[1..]) {
        assert!(
            *attempt - *end < Duration::from_secs(1),
            "{:?}",
            log.lines()
        );
    }
    client.close().await;
}

// HTTP/2: the server sends GOAWAY with a request in flight that it goes on with (a long
// answer, a stream), then a new request comes.
// - On a connection that had not answered yet: hyper's connection ends, and the connection
//   waits up to 50 ms for the responses in flight, to tell whether it served; a request that
//   comes then meets it closing, and the persistent connection closes it. That close found the
//   server closing it already: it neither holds the next round until the request left is
//   answered or cut off at the close timeout (an hour here), nor cuts it off.
// - On one that had answered: its verdict is known (a close in good order after serving), and
//   it finishes as hyper's connection ends, without that wait.
// Either way the new request is served at once on a new connection, and the server answers the
// request left afterwards. (The first case needs the new request to come within those 50 ms:
// a run that misses them, the test's task held off that long, is made again, a few times at
// most.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_meeting_an_http2_goaway_is_served_at_once_and_the_requests_left_go_on() {
    let server = HttpServer::start("s").await.unwrap();
    let mut caught = false;
    for _ in 0..5 {
        caught = goaway_met_by_a_request(&server, false).await;
        if caught {
            break;
        }
    }
    assert!(caught, "no request came within the 50 ms in five runs");
    // Finished as hyper's connection ended, before the request came.
    assert!(goaway_met_by_a_request(&server, true).await);
}

/// One case of `a_request_meeting_an_http2_goaway_...` on a new persistent client of `server`:
/// whether the request met the connection in the state the case is about (closing, not yet
/// finished, if it had not answered; finished, if it had).
async fn goaway_met_by_a_request(server: &HttpServer, answered_before: bool) -> bool {
    let hour = Duration::from_secs(3600);
    let connector = HttpConnector::http2().close_timeout(hour);
    let (client, log) = client(server.address, connector, |layer| {
        layer.retry_delay(move || hour).close_timeout(hour)
    });
    let conn = timeout(LIMIT, client.connected()).await.unwrap().unwrap();
    let requests = server.stats.requests.load(Ordering::SeqCst);
    if answered_before {
        let response = timeout(LIMIT, client.clone().oneshot(get("/")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(text(response).await, "s /");
    }
    let left = tokio::spawn(client.clone().oneshot(get("/goaway-gate")));
    let sent = requests + 1 + usize::from(answered_before);
    assert!(server.stats.requests(sent, LIMIT).await);
    timeout(LIMIT, async {
        while !conn.is_closed() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the GOAWAY did not end hyper's connection");
    let finished = futures_util::FutureExt::now_or_never(conn.close_finished()).is_some();
    let response = timeout(LIMIT, client.clone().oneshot(get("/")))
        .await
        .expect("the request waited for the connection left")
        .unwrap();
    assert_eq!(text(response).await, "s /");
    // Not cut off: the server's answer to the request left comes whole.
    server.stats.gate.notify_one();
    let left = timeout(LIMIT, left).await.unwrap().unwrap().unwrap();
    assert_eq!(text(left).await, "s /goaway-gate");
    timeout(LIMIT, client.close()).await.unwrap();
    let round = [
        "attempting_to_connect",
        "obtained_address",
        "connected",
        "disconnected",
    ];
    assert_eq!(log.lines(), [round, round].concat());
    finished == answered_before
}

// HTTP/2: a server killed (its sockets closed, no GOAWAY) with the connection's first request
// in flight, which then fails: the connection did not serve, and the next attempt meets the
// retry delay (a request left in flight by an end of stream does not count as one the server
// goes on serving, as those that a GOAWAY leaves do).
#[tokio::test]
async fn an_http2_server_killed_with_a_request_in_flight_meets_the_retry_delay() {
    let server = HttpServer::start("s").await.unwrap();
    let delay = Duration::from_millis(800);
    let (client, log) = client(server.address, HttpConnector::http2(), |layer| {
        layer.retry_delay(move || delay).jitter(0.0)
    });
    let in_flight = tokio::spawn(client.clone().oneshot(get("/hang")));
    assert!(server.stats.requests(1, LIMIT).await);
    assert_eq!(server.stats.requests.load(Ordering::SeqCst), 1);
    let mut events = client.events();
    server.kill().await;
    let failed = timeout(LIMIT, in_flight).await.unwrap().unwrap();
    assert!(failed.is_err());
    // The second attempt's lookup: its `attempting_to_connect` is in the log by then (events
    // reach the streams before the handler, which the driver awaits before the next one).
    timeout(LIMIT, support::wait_event(&mut events, "obtained_address"))
        .await
        .expect("no second attempt");
    let (ends, attempts) = (
        log.times("disconnected"),
        log.times("attempting_to_connect"),
    );
    assert_eq!(attempts.len(), 2, "{:?}", log.lines());
    assert!(
        attempts[1] - attempts[0] >= delay,
        "{attempts:?} {ends:?} {:?}",
        log.lines()
    );
    client.close().await;
}

// Sixteen clients with a 3 s timeout and the default settings, against a server that closes
// its HTTP/1.1 connection after every response: no request times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_after_every_response_stalls_no_request() {
    let server = HttpServer::start_closing_after_each("s").await.unwrap();
    let (client, _) = client(server.address, HttpConnector::http1(), |layer| layer);
    let mut tasks = JoinSet::new();
    for _ in 0..16 {
        let client = client.clone();
        tasks.spawn(async move {
            let (mut timed_out, mut answered) = (0, 0);
            for _ in 0..10 {
                match timeout(Duration::from_secs(3), client.clone().oneshot(get("/c"))).await {
                    Err(_) => timed_out += 1,
                    // A request sent as the server closes may fail with the connection;
                    // it never waits.
                    Ok(Ok(response)) => {
                        assert_eq!(text(response).await, "s /c");
                        answered += 1;
                    }
                    Ok(Err(_)) => {}
                }
            }
            (timed_out, answered)
        });
    }
    let (mut timed_out, mut answered) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (t, a) = done.unwrap();
        timed_out += t;
        answered += a;
    }
    assert_eq!(timed_out, 0);
    // Requests are served (each connection serves one): not failed at once, all of them.
    assert!(answered >= 16, "{answered} of 160 answered");
    client.close().await;
}

// A server that accepts and closes without serving still meets the retry delay: one attempt
// per delay, no storm.
#[tokio::test]
async fn a_server_closing_without_serving_meets_the_retry_delay() {
    let server = ClosingServer::start(0).await;
    let delay = Duration::from_millis(300);
    let (client, log) = client(server.address, HttpConnector::http1(), |layer| {
        layer.retry_delay(move || delay).jitter(0.0)
    });
    tokio::time::sleep(Duration::from_millis(1350)).await;
    client.close().await;
    let attempts = attempts_spaced_by(&log, delay, 4..=5, "");
    assert_eq!(server.accepted(), attempts.len());
}

/// In-memory streams, each served by a server that ends the connection in good order once it
/// has been idle for `idle` (HTTP/1.1: closed between requests; HTTP/2: GOAWAY), as most
/// servers do; the server starts `late` after the stream is made (over HTTP/2, its greeting
/// comes that late).
fn late_idle_closing(
    late: Duration,
    idle: Duration,
) -> impl Service<(), Response = tokio::io::DuplexStream, Error = std::io::Error, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_: ()| {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            tokio::time::sleep(late).await;
            serve_idle_closing(server, idle).await
        });
        async { Ok::<_, std::io::Error>(client) }
    })
}

/// A persistent connection of `()` through `connector`, with a 10 s retry delay and no jitter,
/// and the times since `start` of its `AttemptingToConnect` events.
fn recording_attempts<M>(
    start: Instant,
    connector: M,
) -> (Persistent<(), Conn>, Arc<Mutex<Vec<Duration>>>)
where
    M: Service<(), Response = Conn> + Send + 'static,
    M::Error: Into<BoxError>,
    M::Future: Send,
{
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let recorder = attempts.clone();
    let client = PersistentLayer::new("idle", tower_persistent::discovery::Fixed::new(()))
        .retry_delay(|| Duration::from_secs(10))
        .jitter(0.0)
        .on_event(move |event: Event<(), Conn>| {
            if let Event::AttemptingToConnect = event {
                recorder.lock().unwrap().push(start.elapsed());
            }
            async {}
        })
        .layer(connector);
    (client, attempts)
}

async fn serve_idle_closing(socket: tokio::io::DuplexStream, idle: Duration) {
    let activity = Arc::new(tokio::sync::Notify::new());
    let on_request = activity.clone();
    let service = hyper::service::service_fn(move |_: hyper::Request<Incoming>| {
        on_request.notify_one();
        async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok")))) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(connection);
    // The idle wait starts again with each request (each is answered at once).
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = activity.notified() => {}
            _ = tokio::time::sleep(idle) => break,
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

// A server with an idle timeout (2 s) shorter than the retry delay (10 s), and requests rarer
// than it: every connection ends idle, in good order. The first served, and is replaced at
// once; so is its replacement, which never served but sat idle for the server's 2 s, and so on
// (one connection per 2 s): a request at 7 s finds a connection ready (on the old code, it
// waited until 12 s). A server that closes an unserved connection sooner (half a second after
// accepting it) still meets the retry delay.
#[tokio::test(start_paused = true)]
async fn a_connection_the_server_closes_idle_is_replaced_at_once_served_or_not() {
    let s = Duration::from_secs;
    for connector in [
        HttpConnector::<Empty<Bytes>>::http1(),
        HttpConnector::http2(),
    ] {
        // The server's idle timeout, when requests are sent, how long the test watches, and
        // when attempts start (seconds).
        for (idle, requests, watched, expected) in [
            (s(2), vec![0, 7], 12, vec![0, 2, 4, 6, 9, 11]),
            (Duration::from_millis(500), vec![], 25, vec![0, 10, 20]),
        ] {
            let start = Instant::now();
            let (client, attempts) = recording_attempts(
                start,
                connector
                    .clone()
                    .over(late_idle_closing(Duration::ZERO, idle)),
            );
            for at in &requests {
                tokio::time::sleep_until(start + s(*at)).await;
                let response = timeout(LIMIT, client.clone().oneshot(get("/")))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(text(response).await, "ok");
                // Answered at once: no wait for a connection.
                assert_eq!(start.elapsed(), s(*at), "{connector:?} {idle:?}");
            }
            tokio::time::sleep_until(start + s(watched)).await;
            let attempts = attempts.lock().unwrap().clone();
            assert_eq!(
                attempts,
                expected.into_iter().map(s).collect::<Vec<_>>(),
                "{connector:?} {idle:?}"
            );
            client.close().await;
        }
    }
}

// An HTTP/2 server that greets 1.1 s after accepting and then closes at once (GOAWAY after
// 1 ms), never serving: the wait for its greeting is not idleness, so it meets the retry delay
// (10 s) rather than getting a new connection per 1.1 s.
#[tokio::test(start_paused = true)]
async fn an_http2_server_greeting_late_then_closing_meets_the_retry_delay() {
    let start = Instant::now();
    let (client, attempts) = recording_attempts(
        start,
        HttpConnector::<Empty<Bytes>>::http2().over(late_idle_closing(
            Duration::from_millis(1100),
            Duration::from_millis(1),
        )),
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    let attempts = attempts.lock().unwrap().clone();
    let s = Duration::from_secs;
    assert_eq!(attempts, [s(0), s(10), s(20)]);
    client.close().await;
}

/// A server that reads each request's first bytes on each connection it accepts, answers
/// `answer`, then closes the connection (`close`) or holds it open.
async fn answering_server(answer: &'static [u8], close: bool) -> (SocketAddr, JoinSet<()>) {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            connections.spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(answer).await;
                if !close {
                    // Held open until the client closes it.
                    let _ = socket.read(&mut request).await;
                }
            });
        }
    });
    (address, tasks)
}

// HTTP/1.1 servers that answer with something that is not HTTP (their socket held open, or an
// HTTP/2 SETTINGS frame), cut a response's body short and close (the body read to its error),
// or answer `101 Switching Protocols` unasked, did not close the connection in good order
// though hyper ends it without an error of its own: each request is followed by the retry
// delay, never by a new connection at once (no storm).
#[tokio::test]
async fn http1_answers_that_fail_meet_the_retry_delay() {
    const CUT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc";
    // What the server answers, whether it then closes, whether the caller reads the body, and
    // what the caller sees.
    let answers: [(&[u8], bool, bool, &str); 4] = [
        (
            b"garbage\r\n\r\n",
            false,
            true,
            "invalid HTTP version parsed",
        ),
        (
            b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
            false,
            true,
            "invalid HTTP version parsed",
        ),
        (CUT, true, true, "error reading a body from connection"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n",
            true,
            false,
            "101 Switching Protocols",
        ),
    ];
    for (answer, close, read, seen) in answers {
        let (address, _server) = answering_server(answer, close).await;
        let delay = Duration::from_millis(300);
        let (client, log) = client(address, HttpConnector::http1(), |layer| {
            layer.retry_delay(move || delay).jitter(0.0)
        });
        let started = Instant::now();
        let mut requests = 0;
        // Requests one after another for 1 s (each bounded).
        while started.elapsed() < Duration::from_secs(1) {
            let outcome = match timeout(LIMIT, client.clone().oneshot(get("/")))
                .await
                .expect("a request hung")
            {
                Ok(response) if read => http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .map(|_| "read".to_owned())
                    .unwrap_or_else(|e| e.to_string()),
                Ok(response) => response.status().to_string(),
                Err(e) => e.to_string(),
            };
            assert_eq!(outcome, seen, "{answer:?}");
            requests += 1;
            assert!(requests < 50, "{answer:?}: {:?}", log.lines());
        }
        client.close().await;
        let attempts = attempts_spaced_by(&log, delay, 3..=5, &format!("{answer:?}"));
        // One request per connection: the next waits for the next connection.
        assert!(requests <= attempts.len(), "{requests} {attempts:?}");
    }
}

// A server that answers in full and closes (`Connection: close`) while the caller has yet to
// read the body: the connection is closed at once (no new request goes to it), finishes once
// the body is read, and is then replaced at once, as closed in good order. A body held unread
// holds none of that for more than a moment: the next request, made while it is held, is
// answered on the next connection at once.
#[tokio::test]
async fn http1_close_after_a_response_is_graceful_once_its_body_is_read() {
    let (address, _server) = answering_server(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        true,
    )
    .await;
    let (client, log) = client(address, HttpConnector::http1(), |layer| {
        layer.retry_delay(|| Duration::from_secs(60))
    });
    let response = timeout(LIMIT, client.clone().oneshot(get("/")))
        .await
        .unwrap()
        .unwrap();
    let conn = client.current_connection().unwrap();
    // hyper's connection ends with the response; the body, read or not, is in its channel.
    timeout(LIMIT, async {
        while !conn.is_closed() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the connection did not close");
    let finished = conn.close_finished();
    tokio::pin!(finished);
    let pending =
        std::future::poll_fn(|cx| std::task::Poll::Ready(finished.as_mut().poll(cx).is_pending()))
            .await;
    assert!(pending, "finished before its response was read");
    assert_eq!(text(response).await, "ok");
    timeout(LIMIT, finished).await.unwrap();
    assert!(conn.closed_gracefully());

    // Replaced at once, not after the 60 s delay; this time the body is held unread while the
    // next request is made.
    let held = timeout(Duration::from_secs(5), client.clone().oneshot(get("/")))
        .await
        .expect("the connection was not replaced at once")
        .unwrap();
    let asked = Instant::now();
    let response = timeout(Duration::from_secs(5), client.clone().oneshot(get("/")))
        .await
        .expect("the connection was not replaced at once")
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the held body held up the next connection for {:?}",
        asked.elapsed()
    );
    assert_eq!(text(response).await, "ok");
    assert_eq!(text(held).await, "ok");
    assert_eq!(
        log.times("attempting_to_connect").len(),
        3,
        "{:?}",
        log.lines()
    );
    client.close().await;
}

// The connector's Duration settings accept Duration::MAX and zero without a panic, a hang or a
// busy loop: requests are served and the client closes, at either end of the range.
#[tokio::test]
async fn connector_settings_accept_every_value() {
    let server = HttpServer::start("s").await.unwrap();
    for connector in [HttpConnector::http1(), HttpConnector::http2()] {
        let connector = connector
            .connect_timeout(Duration::MAX)
            .close_timeout(Duration::MAX)
            .http2_keep_alive(Duration::MAX, Duration::MAX);
        let (client, _) = client(server.address, connector, |layer| layer);
        let response = timeout(LIMIT, client.clone().oneshot(get("/max")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(text(response).await, "s /max");
        timeout(LIMIT, client.close()).await.unwrap();
    }

    // Zero: a connect timeout that a connect on loopback may or may not meet in its first
    // poll, and the shortest keep-alive; whatever happens is bounded and closes.
    let connector = HttpConnector::http2()
        .connect_timeout(Duration::ZERO)
        .close_timeout(Duration::ZERO)
        .http2_keep_alive(Duration::ZERO, Duration::ZERO);
    let (client, _) = client(server.address, connector, |layer| {
        layer.retry_delay(|| Duration::from_millis(50))
    });
    match timeout(LIMIT, client.connected_or_failed_to_connect())
        .await
        .unwrap()
    {
        Ok(_) => {}
        Err(error) => assert_eq!(error.text(), "connect failed: connect timed out after 0ns"),
    }
    timeout(LIMIT, client.close()).await.unwrap();
}

// A keep-alive of zero on a healthy HTTP/2 server: its timeout is held to 100 ms, so that PINGs
// answered a few milliseconds late on a busy machine do not close the connection. One
// connection serves a second and a half of requests with idle gaps between them longer than
// the interval (held to 100 ms), where PINGs go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_keep_alive_keeps_a_healthy_connection() {
    let server = HttpServer::start("s").await.unwrap();
    let connector = HttpConnector::http2().http2_keep_alive(Duration::ZERO, Duration::ZERO);
    let (client, log) = client(server.address, connector, |layer| {
        layer.retry_delay(|| Duration::from_millis(50))
    });
    let start = Instant::now();
    let mut served = 0;
    // Bounded by time: a second and a half, and each request by LIMIT.
    while start.elapsed() < Duration::from_millis(1500) {
        let response = timeout(LIMIT, client.clone().oneshot(get("/k")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(text(response).await, "s /k");
        served += 1;
        // An idle gap, for a PING: one goes 100 ms after the last frame read.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(served >= 5, "{served} requests");
    assert_eq!(
        log.times("connected").len(),
        1,
        "{served} requests: {:?}",
        log.lines()
    );
    assert!(log.times("disconnected").is_empty(), "{:?}", log.lines());
    timeout(LIMIT, client.close()).await.unwrap();
}

// A graceful close that waits its close timeout for a request in flight and then closes the
// socket: the request fails with ClosedInFlight (not with hyper's word for a dispatch task
// dropped by its runtime), over HTTP/1.1 and HTTP/2, and the server's connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_by_a_close_fails_with_closed_in_flight() {
    let server = HttpServer::start("s").await.unwrap();
    for (round, connector) in [HttpConnector::http1(), HttpConnector::http2()]
        .into_iter()
        .enumerate()
    {
        let close_timeout = Duration::from_millis(200);
        let (client, _) = client(
            server.address,
            connector.close_timeout(close_timeout),
            |l| l,
        );
        let mut handle = client.clone();
        // The server never answers `/hang`.
        let ready = timeout(LIMIT, handle.ready()).await.unwrap().unwrap();
        let response = tokio::spawn(ready.call(get("/hang")));
        let closing = Instant::now();
        timeout(LIMIT, client.close()).await.unwrap();
        assert!(
            closing.elapsed() >= close_timeout,
            "{:?}",
            closing.elapsed()
        );
        assert_cut_off(response, &server, round + 1).await;
    }
}

// The persistent connection's close timeout bounds the whole close: a connection whose own
// close would wait longer for a request in flight (the connector's close timeout is
// `Duration::MAX`) is given up at it (`Closable::abort`), and the request is cut off then,
// though a handle still holds a clone of the connection; the socket closes. Over HTTP/1.1 and
// HTTP/2, with the connection's task run by the driver (no event handler) or spawned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_given_up_by_the_persistent_connection_cuts_off_the_request() {
    let server = HttpServer::start("s").await.unwrap();
    let close_timeout = Duration::from_millis(200);
    let mut round = 0;
    for handler in [false, true] {
        for connector in [HttpConnector::http1(), HttpConnector::http2()] {
            let connector = connector.close_timeout(Duration::MAX);
            let client = if handler {
                client(server.address, connector, |l| {
                    l.close_timeout(close_timeout)
                })
                .0
            } else {
                ServiceBuilder::new()
                    .layer(
                        PersistentLayer::new(
                            "web",
                            tower_persistent::discovery::Fixed::new(server.address),
                        )
                        .close_timeout(close_timeout),
                    )
                    .service(connector)
            };
            round += 1;
            let mut handle = client.clone();
            // The server never answers `/hang`.
            let ready = timeout(LIMIT, handle.ready()).await.unwrap().unwrap();
            let response = tokio::spawn(ready.call(get("/hang")));
            assert!(server.stats.requests(round, LIMIT).await);
            let closing = Instant::now();
            timeout(LIMIT, client.close()).await.unwrap();
            let took = closing.elapsed();
            assert!(took >= close_timeout, "{took:?}");
            // (Before, the request waited for good, and the socket stayed open.)
            assert_cut_off(response, &server, round).await;
            drop(handle);
        }
    }
}

/// A request for `path` on a clone of `conn`, sent: the server has it.
async fn sent(
    conn: &Conn,
    server: &HttpServer,
    path: &str,
) -> tokio::task::JoinHandle<Result<http::Response<ResponseBody>, BoxError>> {
    let mut ready = timeout(LIMIT, conn.clone().ready_oneshot())
        .await
        .unwrap()
        .unwrap();
    let response = tokio::spawn(ready.call(get(path)));
    assert!(server.stats.requests(1, LIMIT).await);
    response
}

/// `response`'s request was cut off by a close, and the socket closed: the server's
/// connections ended, `ended` of them so far.
async fn assert_cut_off(
    response: tokio::task::JoinHandle<Result<http::Response<ResponseBody>, BoxError>>,
    server: &HttpServer,
    ended: usize,
) {
    let error = timeout(LIMIT, response)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(error.is::<ClosedInFlight>(), "{error:?}");
    assert_eq!(
        error.to_string(),
        "connection closed with the request in flight: its close timed out or was aborted"
    );
    assert!(server.stats.ended(ended, LIMIT).await, "the socket is open");
}

/// A bare HTTP/2 connection to `address` whose close waits 200 ms for requests in flight.
async fn http2_closing_after_200ms<B>(address: SocketAddr) -> HttpConnection<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connector = HttpConnector::<B>::http2().close_timeout(Duration::from_millis(200));
    timeout(LIMIT, connector.oneshot(address))
        .await
        .unwrap()
        .unwrap()
}

// Over HTTP/2 hyper drives the stream in a task of its own, for as long as a stream is open on
// it, even once its connection has ended. The server began to shut down (GOAWAY) with a request
// in flight, and hyper's connection ended on it (the connection closing by itself): a close of
// ours then has nothing of its own to wait for, and leaves the server the request, which it
// answers later; giving the connection up (`abort`) cuts such a request off and closes the
// socket. (The close timeout is an hour: a close that waited for the request would hang.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_after_a_goaway_leaves_the_server_its_request_and_an_abort_cuts_it_off() {
    let server = HttpServer::start("s").await.unwrap();
    let connector = HttpConnector::http2().close_timeout(Duration::from_secs(3600));
    for (path, ended) in [("/goaway-gate", 1), ("/goaway-hang", 2)] {
        let conn: Conn = timeout(LIMIT, connector.clone().oneshot(server.address))
            .await
            .unwrap()
            .unwrap();
        let response = sent(&conn, &server, path).await;
        timeout(LIMIT, async {
            while !conn.is_closed() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the GOAWAY did not end hyper's connection");
        timeout(LIMIT, conn.close())
            .await
            .expect("the close waited for the request the server goes on with");
        if path == "/goaway-gate" {
            // Not cut off: the server's answer comes whole.
            server.stats.gate.notify_one();
            let response = timeout(LIMIT, response).await.unwrap().unwrap().unwrap();
            assert_eq!(text(response).await, "s /goaway-gate");
            assert!(
                server.stats.ended(ended, LIMIT).await,
                "the connection went on"
            );
        } else {
            conn.abort();
            assert_cut_off(response, &server, ended).await;
        }
    }
}

// The same with the close asked for as soon as the request was taken: it may come before
// hyper's connection has ended on the GOAWAY (a close of ours: the request is cut off at the
// close timeout, 200 ms) or after (the server's end: the close leaves it the request, and
// `abort` cuts it off). Either way the request is cut off, and the socket closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_as_a_goaway_comes_then_an_abort_cut_off_the_request_left() {
    let server = HttpServer::start("s").await.unwrap();
    let conn: Conn = http2_closing_after_200ms(server.address).await;
    let response = sent(&conn, &server, "/goaway-hang").await;
    timeout(LIMIT, conn.close()).await.unwrap();
    conn.abort();
    assert_cut_off(response, &server, 1).await;
}

// A close begun, then every handle dropped, a request in flight that the server never
// answers: the request is cut off at the close timeout, and the socket closed. (With its last
// handle, hyper's connection ends; its own task goes on driving the stream.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_then_the_handles_dropped_cuts_off_the_request() {
    let server = HttpServer::start("s").await.unwrap();
    let conn: Conn = http2_closing_after_200ms(server.address).await;
    let response = sent(&conn, &server, "/hang").await;
    // Closing begins at the call; the future is not awaited.
    drop(conn.close());
    drop(conn);
    assert_cut_off(response, &server, 1).await;
}

// A request body still being sent after its response has come whole (the server answered
// early): nothing is counted in flight, yet the stream is open. A close gives it the close
// timeout, then closes the socket and drops the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_ends_an_upload_that_outlives_its_response() {
    type Upload = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;
    let server = HttpServer::start("s").await.unwrap();
    let mut conn: HttpConnection<Upload> = http2_closing_after_200ms(server.address).await;
    // Resolves once the body is dropped (its sender goes with it).
    let (body_alive, body_dropped) = tokio::sync::oneshot::channel::<()>();
    let chunks = futures_util::stream::repeat_with(move || {
        let _alive = &body_alive;
        Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from_static(&[b'u'; 1024])))
    });
    let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(chunks));
    let request = http::Request::post("/drain").body(body).unwrap();
    let response = timeout(LIMIT, async {
        conn.ready().await.unwrap().call(request).await.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(text(response).await, "s /drain");
    assert_eq!(conn.in_flight(), 0);
    timeout(LIMIT, conn.close()).await.unwrap();
    assert!(server.stats.ended(1, LIMIT).await, "the socket is open");
    // The body is dropped: nothing sends it any more.
    assert!(timeout(LIMIT, body_dropped).await.is_ok());
}

// A close that cuts a response off while its body is being read (the server sent the head and
// the first bytes of the body, then stalled): the close waits its close timeout for it, then
// the body fails with hyper's own error, whose text differs by HTTP version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_cut_off_by_a_close_fails_with_hyper_error() {
    let server = HttpServer::start("s").await.unwrap();
    let close_timeout = Duration::from_millis(200);
    for (connector, seen) in [
        (
            HttpConnector::http1(),
            "connection closed before message completed",
        ),
        (
            HttpConnector::http2(),
            "error reading a body from connection",
        ),
    ] {
        let (client, _) = client(
            server.address,
            connector.close_timeout(close_timeout),
            |l| l,
        );
        let (mut body, first) = first_bytes(&client, "/stall-body").await;
        assert_eq!(first, "s /stall-body");
        let closing = Instant::now();
        timeout(LIMIT, client.close()).await.unwrap();
        let took = closing.elapsed();
        assert!(took >= close_timeout, "{took:?}");
        let error = timeout(LIMIT, http_body_util::BodyExt::frame(&mut body))
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(error.to_string(), seen, "{error:?}");
    }
}

// An HTTP/2 server whose streams are all taken (its limit of one open stream held by a request
// it never answers), or that allows none (a limit of zero): a request waits inside its call, in
// hyper, for a stream. `poll_ready` is ready at once (an HTTP/2 connection takes requests,
// which hyper queues), so a ready timeout does not end that wait; a `tower::timeout` above the
// handle does. The request never reaches the server, the connection stays current, and it
// serves again as soon as a stream is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_server_out_of_streams_holds_a_request_in_its_call() {
    let ready_timeout = Duration::from_millis(100);
    let request_timeout = Duration::from_millis(500);
    for limit in [1, 0] {
        let server = HttpServer::start_with_max_streams("s", limit)
            .await
            .unwrap();
        let (client, log) = client(server.address, HttpConnector::http2(), |l| {
            l.ready_timeout(ready_timeout)
        });
        let conn = timeout(LIMIT, client.connected()).await.unwrap().unwrap();
        // With a limit of one, a request the server never answers holds the stream.
        let hung = if limit == 1 {
            let mut handle = client.clone();
            let ready = timeout(LIMIT, handle.ready()).await.unwrap().unwrap();
            let hung = tokio::spawn(ready.call(get("/hang")));
            assert!(server.stats.requests(1, LIMIT).await);
            Some(hung)
        } else {
            None
        };
        let mut handle = client.clone();
        // Ready at once, though no stream is free.
        let ready = timeout(ready_timeout, handle.ready())
            .await
            .expect("ready at once")
            .unwrap();
        let waiting = tokio::spawn(ready.call(get("/a")));
        let mut timed = tower::timeout::Timeout::new(client.clone(), request_timeout);
        let started = Instant::now();
        let error = timeout(LIMIT, timed.ready().await.unwrap().call(get("/b")))
            .await
            .expect("the timeout above the handle ends the wait")
            .unwrap_err();
        assert!(error.is::<tower::timeout::error::Elapsed>(), "{error:?}");
        assert!(started.elapsed() >= request_timeout);
        assert!(!waiting.is_finished(), "limit {limit}");
        assert_eq!(conn.in_flight(), limit as usize + 1, "limit {limit}");
        assert_eq!(
            server.stats.requests.load(Ordering::SeqCst),
            limit as usize,
            "no request beyond the limit reached the server"
        );
        if let Some(hung) = hung {
            // The hung request given up: its stream is reset and freed, and the waiting
            // request goes out on the same connection.
            hung.abort();
            let response = timeout(LIMIT, waiting).await.unwrap().unwrap().unwrap();
            assert_eq!(text(response).await, "s /a");
        } else {
            waiting.abort();
        }
        assert_eq!(
            log.lines(),
            ["attempting_to_connect", "obtained_address", "connected"],
            "limit {limit}"
        );
        timeout(LIMIT, client.close()).await.unwrap();
    }
}

/// The events of a first connection that ended and was not replaced (yet).
const ONE_CONNECTION_ENDED: [&str; 4] = [
    "attempting_to_connect",
    "obtained_address",
    "connected",
    "disconnected",
];

/// A `GET` of `path` through `client`: its response body, and the body's first bytes.
async fn first_bytes(client: &Client, path: &str) -> (ResponseBody, Bytes) {
    let response = timeout(LIMIT, client.clone().oneshot(get(path)))
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let first = timeout(LIMIT, http_body_util::BodyExt::frame(&mut body))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (body, first.into_data().unwrap())
}

/// A request body of your own kind: `frames` frames of 64 KiB.
type Upload = http_body_util::combinators::BoxBody<Bytes, BoxError>;

fn upload(frames: usize) -> Upload {
    use http_body_util::BodyExt;
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let frames =
        (0..frames).map(move |_| Ok::<_, BoxError>(hyper::body::Frame::data(chunk.clone())));
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// Waits until `log` has an event named `name` (bounded by `LIMIT`).
async fn logged(log: &Log, name: &str) {
    timeout(LIMIT, async {
        while log.times(name).is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {name} in {:?}", log.lines()));
}

/// A server that, on each connection, reads a request's head (to its blank line) and answers
/// with `serve`'s doing.
async fn raw_server<F, Fut>(serve: F) -> (SocketAddr, JoinSet<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut tasks = JoinSet::new();
    let serve = Arc::new(serve);
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((socket, _)) = listener.accept().await {
            connections.spawn(serve(socket));
        }
    });
    (address, tasks)
}

/// Reads from `socket` up to the end of a request's head; false if the stream ended first.
async fn read_head(socket: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

// A server that closes, or resets, the connection while the client writes a request body
// (128 MiB: it cannot all be in the socket's buffers) after reading its head and 4 KiB: the
// request fails, with one of the errors the faults table names, over HTTP/1.1. (On Linux a
// socket closed with bytes unread sends a reset too, so the close here ends in one as well:
// the reset comes at the close, or at the drop with a zero linger.) The connection is then
// replaced after the retry delay (it ended with an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_or_resetting_while_a_body_is_written_fails_the_request() {
    for reset in [false, true] {
        let (address, _server) = raw_server(move |mut socket| async move {
            use tokio::io::AsyncReadExt;
            if !read_head(&mut socket).await {
                return;
            }
            let mut some = [0u8; 4096];
            let _ = socket.read(&mut some).await;
            if reset {
                // A reset for the client, in its socket once the socket is dropped.
                #[allow(deprecated)]
                socket.set_linger(Some(Duration::ZERO)).unwrap();
            }
        })
        .await;
        let (client, log) = client_of(address, HttpConnector::<Upload>::http1(), |l| {
            l.retry_delay(|| Duration::from_secs(3600))
        });
        let request = http::Request::post("/upload").body(upload(2048)).unwrap();
        let error = timeout(LIMIT, client.clone().oneshot(request))
            .await
            .expect("the request is answered")
            .unwrap_err();
        let error = support::chain(&*error);
        assert!(
            error == "connection closed before message completed"
                || error.starts_with("connection error: ")
                || error.starts_with("error writing a body to connection: "),
            "reset {reset}: {error}"
        );
        // Ended with an error: no new connection before the delay.
        logged(&log, "disconnected").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(log.lines(), ONE_CONNECTION_ENDED, "reset {reset}");
        timeout(LIMIT, client.close()).await.unwrap();
    }
}

// An HTTP/1.1 server that answers `413` before it has read the request body, then closes:
// the answer arrives, or the request fails with `error writing a body to connection` (as bare
// hyper races). Once the answer came, the close that the rest of the body meets (a reset: the
// server's unread bytes) is the server's close after answering: the connection, which served,
// is replaced at once (it waited for the retry delay, as after a failure). When the write
// failed first, nothing tells that the server answered: the connection did not end in good
// order, and the next round waits for the delay, whether or not it had served before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_answer_before_the_body_then_a_close_is_replaced_at_once_once_answered() {
    let (address, _server) = raw_server(|mut socket| async move {
        // `GET`s are answered and the connection kept; a `POST` gets its `413` at once.
        loop {
            let mut method = [0u8; 3];
            if tokio::io::AsyncReadExt::read_exact(&mut socket, &mut method)
                .await
                .is_err()
                || !read_head(&mut socket).await
            {
                return;
            }
            if &method == b"GET" {
                if socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            let _ = socket
                .write_all(
                    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            return;
        }
    })
    .await;
    let mut outcomes = std::collections::BTreeSet::new();
    for served in [false, true] {
        for round in 0..4 {
            let (client, log) = client_of(address, HttpConnector::<Upload>::http1(), |l| {
                l.retry_delay(|| Duration::from_secs(3600))
            });
            if served {
                let get = http::Request::get("/").body(upload(0)).unwrap();
                let response = timeout(LIMIT, client.clone().oneshot(get))
                    .await
                    .expect("the GET is answered")
                    .unwrap();
                assert_eq!(response.status(), 200);
                timeout(
                    LIMIT,
                    http_body_util::BodyExt::collect(response.into_body()),
                )
                .await
                .unwrap()
                .unwrap();
            }
            let request = http::Request::post("/upload").body(upload(512)).unwrap();
            let answered = match timeout(LIMIT, client.clone().oneshot(request))
                .await
                .expect("the request is answered")
            {
                Ok(response) => {
                    assert_eq!(response.status(), 413);
                    outcomes.insert("413");
                    true
                }
                Err(error) => {
                    assert!(
                        support::chain(&*error).starts_with("error writing a body to connection: "),
                        "{}",
                        support::chain(&*error)
                    );
                    outcomes.insert("write failed");
                    false
                }
            };
            logged(&log, "disconnected").await;
            let context = format!("served {served}, round {round}, outcomes so far {outcomes:?}");
            if answered {
                timeout(LIMIT, async {
                    while log.times("connected").len() < 2 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("not replaced at once: {:?}, {context}", log.lines()));
                let mut again = ONE_CONNECTION_ENDED.to_vec();
                again.extend_from_slice(&ONE_CONNECTION_ENDED[..3]);
                assert_eq!(log.lines(), again, "{context}");
            } else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(log.lines(), ONE_CONNECTION_ENDED, "{context}");
            }
            timeout(LIMIT, client.close()).await.unwrap();
        }
    }
}

// An HTTP/1.1 response body held unread keeps the connection's turn: another clone's request
// waits (here past 300 ms), fails with `ReadyTimeout` under a ready timeout, and is answered on
// the same connection once the body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_body_held_unread_keeps_the_turn() {
    let server = HttpServer::start("s").await.unwrap();
    let ready_timeout = Duration::from_millis(300);
    let (timed, _) = client(server.address, HttpConnector::http1(), |l| {
        l.ready_timeout(ready_timeout)
    });
    let held = timeout(LIMIT, timed.clone().oneshot(get("/big")))
        .await
        .unwrap()
        .unwrap();
    let error = timeout(LIMIT, timed.clone().oneshot(get("/x")))
        .await
        .expect("the ready timeout ends the wait")
        .unwrap_err();
    assert_eq!(error.to_string(), "no connection was ready within 300ms");
    drop(held);
    timeout(LIMIT, timed.close()).await.unwrap();

    let (client, log) = client(server.address, HttpConnector::http1(), |l| l);
    let held = timeout(LIMIT, client.clone().oneshot(get("/big")))
        .await
        .unwrap()
        .unwrap();
    let other = tokio::spawn(client.clone().oneshot(get("/x")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!other.is_finished(), "the other clone waits its turn");
    let body = text(held).await;
    assert!(body.starts_with("s /big\n"), "{}", &body[..20]);
    let answer = timeout(LIMIT, other).await.unwrap().unwrap().unwrap();
    assert_eq!(text(answer).await, "s /x");
    assert_eq!(
        log.lines(),
        ["attempting_to_connect", "obtained_address", "connected"],
        "the same connection"
    );
    timeout(LIMIT, client.close()).await.unwrap();
}

// An HTTP/1.1 response body dropped half read: hyper closes the connection (the rest of the
// answer cannot be skipped), the caller's doing, and it is replaced at once (the retry delay is
// an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_body_dropped_half_read_is_replaced_at_once() {
    let (address, _server) = raw_server(|mut socket| async move {
        while read_head(&mut socket).await {
            let length = 4 * 1024 * 1024;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n");
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'y'; 64 * 1024];
            for _ in 0..length / chunk.len() {
                if socket.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let (client, log) = client(address, HttpConnector::http1(), |l| {
        l.retry_delay(|| Duration::from_secs(3600))
    });
    let (body, first) = first_bytes(&client, "/big").await;
    assert!(!first.is_empty());
    drop(body);
    let next = timeout(LIMIT, client.clone().oneshot(get("/next")))
        .await
        .expect("answered on a new connection at once")
        .unwrap();
    assert_eq!(next.status(), 200);
    // Looked at while `next` is held: dropped half read, it ends this connection too.
    assert_eq!(
        log.lines(),
        [
            "attempting_to_connect",
            "obtained_address",
            "connected",
            "disconnected",
            "attempting_to_connect",
            "obtained_address",
            "connected"
        ]
    );
    drop(next);
    timeout(LIMIT, client.close()).await.unwrap();
}

// A black hole: a name whose one address is a listener whose queue of connections to accept
// is full, so that the kernel drops the connect's SYN and it never completes. The connect
// timeout (10 s, on a paused clock) cuts the attempt off, with the faults table's text.
#[tokio::test(start_paused = true)]
async fn a_black_hole_takes_the_whole_connect_timeout() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    // Fill the queue: connects complete (the kernel answers for the listener) until it is full.
    let mut held = Vec::new();
    for _ in 0..16 {
        match timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            Ok(Ok(stream)) => held.push(stream),
            _ => break,
        }
    }
    assert!(held.len() < 16, "the queue never filled");
    let client: Persistent<String, Conn> = PersistentLayer::new(
        "web",
        tower_persistent::discovery::Fixed::new(format!("localhost:{}", address.port())),
    )
    .layer(HttpConnector::http1());
    let start = Instant::now();
    let error = timeout(LIMIT, client.connected_or_failed_to_connect())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.text(), "connect failed: connect timed out after 10s");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    timeout(LIMIT, client.close()).await.unwrap();
    drop(listener);
}

/// Accepts one connection on `listener`, reads a request's head (every read bounded by
/// `LIMIT`) and answers it `ok` (HTTP/1.1, `content-length: 2`); the socket, for what follows.
fn accept_and_answer_ok(listener: &std::net::TcpListener) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let (mut socket, _) = listener.accept().unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .unwrap();
    socket
}

// An idle connection whose server has closed it ends as soon as a request's `poll_ready` finds
// that end in the socket (the probe), without waiting for the runtime's I/O driver to tell
// hyper's task: here the driver does not turn at all while a task keeps the scheduler busy (a
// current-thread runtime that polls its driver only when no task is ready), and the connection
// is finished meanwhile. (Before, it ended only once that task stopped: over HTTP/1.1 until
// `73d85b6`, over HTTP/2 until the probe's find ended it too.)
#[test]
fn an_idle_http1_connection_found_ended_by_the_probe_ends_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (close, close_asked) = std::sync::mpsc::channel::<()>();
    let (closed, closed_seen) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let socket = accept_and_answer_ok(&listener);
        close_asked.recv_timeout(LIMIT).unwrap();
        // The end of stream is in the client's socket once this returns.
        socket.shutdown(std::net::Shutdown::Both).unwrap();
        closed.send(()).unwrap();
    });
    // An end of stream between responses: in good order, as hyper counts it.
    let graceful = true;
    ended_by_the_probe_at_once(
        HttpConnector::http1(),
        address,
        close,
        closed_seen,
        graceful,
    );
    server.join().unwrap();
}

// The same over HTTP/2: the server (hyper's) has served a request and its socket is then shut
// down under it, so that the client's socket holds an end of stream and nothing before it (no
// GOAWAY). The connection ends as hyper would end it, with an error: not a close in good order
// (the next connection meets the rest of the retry delay).
#[test]
fn an_idle_http2_connection_found_ended_by_the_probe_ends_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (close, close_asked) = std::sync::mpsc::channel::<()>();
    let (closed, closed_seen) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (socket, _) = listener.accept().unwrap();
        let handle = socket.try_clone().unwrap();
        socket.set_nonblocking(true).unwrap();
        let serving = runtime.spawn(async move {
            let socket = tokio::net::TcpStream::from_std(socket).unwrap();
            let service = hyper::service::service_fn(|_: http::Request<Incoming>| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
        // The server's connection runs meanwhile.
        runtime.block_on(async {
            tokio::task::spawn_blocking(move || close_asked.recv_timeout(LIMIT))
                .await
                .unwrap()
                .unwrap();
        });
        // The end of stream is in the client's socket once this returns.
        handle.shutdown(std::net::Shutdown::Both).unwrap();
        closed.send(()).unwrap();
        runtime.block_on(async { timeout(LIMIT, serving).await.unwrap().unwrap() });
    });
    // Without GOAWAY: not in good order, as hyper counts it (h2's broken pipe).
    let graceful = false;
    ended_by_the_probe_at_once(
        HttpConnector::http2(),
        address,
        close,
        closed_seen,
        graceful,
    );
    server.join().unwrap();
}

/// Connects with `connector` to `address`, gets `/` (`ok`), waits until the connection is idle
/// long enough to be probed, asks the server to close it (`close`) and waits until it has
/// (`closed`); then a request's `poll_ready` must find that end and the connection must end
/// while another task keeps the runtime's I/O driver from turning, `graceful` or not.
fn ended_by_the_probe_at_once(
    connector: HttpConnector<Empty<Bytes>>,
    address: SocketAddr,
    close: std::sync::mpsc::Sender<()>,
    closed: std::sync::mpsc::Receiver<()>,
    graceful: bool,
) {
    use std::task::Poll;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .event_interval(u32::MAX)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut conn = connector.oneshot(address).await.unwrap();
        let response = timeout(LIMIT, conn.ready().await.unwrap().call(get("/")))
            .await
            .unwrap()
            .unwrap();
        let body = http_body_util::BodyExt::collect(response.into_body());
        assert_eq!(
            timeout(LIMIT, body).await.unwrap().unwrap().to_bytes(),
            "ok"
        );
        // Idle long enough for a request's `poll_ready` to look at the socket first.
        tokio::time::sleep(Duration::from_millis(5)).await;
        close.send(()).unwrap();
        closed.recv_timeout(LIMIT).unwrap();
        assert!(!conn.is_closed());
        // Spins until it sees the connection closed, or `SPINS` times.
        const SPINS: u32 = 1_000_000;
        let watched = conn.clone();
        let mut spins = 0;
        let spinner = tokio::spawn(std::future::poll_fn(move |cx| {
            spins += 1;
            if watched.is_closed() || spins == SPINS {
                return Poll::Ready(spins);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }));
        // The look at the socket finds the end: nothing is sent, `poll_ready` waits.
        let polled = std::future::poll_fn(|cx| Poll::Ready(conn.poll_ready(cx))).await;
        assert!(polled.is_pending());
        let spins = timeout(LIMIT, spinner).await.unwrap().unwrap();
        assert!(
            spins < SPINS,
            "the connection ended only once the spinning stopped"
        );
        timeout(LIMIT, conn.close_finished()).await.unwrap();
        assert_eq!(conn.closed_gracefully(), graceful);
    });
}

/// Posts to `conn` a body sent in parts, sends its first part and reads the answer (`ok`),
/// which comes before the body's end: the body's sender, to go on with it.
async fn upload_answered(
    conn: &HttpConnection<http_body_util::channel::Channel<Bytes>>,
) -> http_body_util::channel::Sender<Bytes> {
    let (mut body, request_body) = http_body_util::channel::Channel::<Bytes>::new(1);
    let request = http::Request::post("/upload").body(request_body).unwrap();
    let sending = tokio::spawn(conn.clone().oneshot(request));
    body.send_data(Bytes::from_static(b"first part"))
        .await
        .unwrap();
    let response = timeout(LIMIT, sending).await.unwrap().unwrap().unwrap();
    let answer = http_body_util::BodyExt::collect(response.into_body());
    assert_eq!(
        timeout(LIMIT, answer).await.unwrap().unwrap().to_bytes(),
        "ok"
    );
    body
}

// HTTP/1.1: a request answered while its body is still being sent, whose server then ends the
// connection: judged as hyper judges it (not in good order: the request was cut short), whether
// or not another request's `poll_ready` looks at the socket first. The body still being sent
// keeps the connection from counting as idle, and from being looked at. (Before, the look
// found the end and counted it as a close in good order.)
#[tokio::test(flavor = "current_thread")]
async fn an_http1_upload_outliving_its_answer_is_judged_as_hyper_judges_it() {
    use http_body_util::channel::Channel;
    use std::io::Read;
    for look in [false, true] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (close, close_asked) = std::sync::mpsc::channel::<()>();
        let (closed, closed_seen) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let mut socket = accept_and_answer_ok(&listener);
            close_asked.recv_timeout(LIMIT).unwrap();
            // The end of stream is in the client's socket once this returns.
            socket.shutdown(std::net::Shutdown::Write).unwrap();
            closed.send(()).unwrap();
            // Reads on (the client's writes succeed) until the client's end.
            let mut buf = [0u8; 1024];
            while matches!(socket.read(&mut buf), Ok(n) if n > 0) {}
        });
        let conn = HttpConnector::<Channel<Bytes>>::http1()
            .oneshot(address)
            .await
            .unwrap();
        let body = upload_answered(&conn).await;
        // Idle long enough to be looked at, were it idle.
        tokio::time::sleep(Duration::from_millis(5)).await;
        close.send(()).unwrap();
        closed_seen.recv_timeout(LIMIT).unwrap();
        if look {
            let mut other = conn.clone();
            let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(other.poll_ready(cx)));
            let _ = polled.await;
        }
        // The body stays unfinished until the connection has ended.
        timeout(LIMIT, conn.close_finished())
            .await
            .expect("the connection did not end");
        drop(body);
        assert!(!conn.closed_gracefully(), "looked at first: {look}");
        server.join().unwrap();
    }
}

/// A raw HTTP/2 server on 127.0.0.1 for one connection: it greets with an empty SETTINGS
/// frame and reads (and drops) whatever the client sends; told to, it writes `last` and ends
/// its stream (`shutdown`), then says so. Returns its address, the command and the word back.
fn raw_http2_server(
    last: &'static [u8],
) -> (
    SocketAddr,
    std::sync::mpsc::Sender<()>,
    std::sync::mpsc::Receiver<()>,
    std::thread::JoinHandle<()>,
) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (end, end_asked) = std::sync::mpsc::channel::<()>();
    let (ended, ended_seen) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
        let mut reader = socket.try_clone().unwrap();
        reader.set_read_timeout(Some(LIMIT)).unwrap();
        let reading = std::thread::spawn(move || {
            let mut sink = [0u8; 1024];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        });
        end_asked.recv_timeout(LIMIT).unwrap();
        socket.write_all(last).unwrap();
        socket.shutdown(std::net::Shutdown::Write).unwrap();
        ended.send(()).unwrap();
        reading.join().unwrap();
    });
    (address, end, ended_seen, server)
}

// HTTP/2: an end of stream after a second or more idle is the server's idle timeout only when
// nothing comes before it: a GOAWAY that gives an error, or a frame cut short, make it a
// failure whatever the idleness (and a plain end of stream, the control, is one).
#[tokio::test(flavor = "current_thread")]
async fn an_http2_idle_end_after_a_goaway_error_or_a_frame_cut_short_is_not_in_good_order() {
    // GOAWAY, last stream 0, INTERNAL_ERROR.
    const GOAWAY: &[u8] = &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    // A PING frame's header and 3 of its 8 bytes.
    const CUT: &[u8] = &[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3];
    for (last, graceful) in [(GOAWAY, false), (CUT, false), (&[][..], true)] {
        let (address, end, ended, server) = raw_http2_server(last);
        let conn = timeout(
            LIMIT,
            HttpConnector::<Empty<Bytes>>::http2().oneshot(address),
        )
        .await
        .unwrap()
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        end.send(()).unwrap();
        ended.recv_timeout(LIMIT).unwrap();
        timeout(LIMIT, conn.close_finished()).await.unwrap();
        assert_eq!(conn.closed_gracefully(), graceful, "after {last:?}");
        drop(conn);
        server.join().unwrap();
    }
}

// HTTP/2: a request answered while its body is still being sent keeps the connection busy
// until the body ends: the server's end of stream (no GOAWAY) a second and more after the
// answer, the body still being sent, or 50 ms after the body ended, is not an idle timeout.
#[tokio::test(flavor = "current_thread")]
async fn an_http2_end_during_or_just_after_an_upload_is_not_an_idle_timeout() {
    use http_body_util::channel::Channel;
    for body_ended_first in [false, true] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (end, end_asked) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let socket = socket.into_std().unwrap();
            let handle = socket.try_clone().unwrap();
            let socket = tokio::net::TcpStream::from_std(socket).unwrap();
            // Answers at once, and reads the request's body on in a task of its own.
            let service = hyper::service::service_fn(|request: http::Request<Incoming>| async {
                tokio::spawn(http_body_util::BodyExt::collect(request.into_body()));
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let serving = tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service),
            );
            end_asked.await.unwrap();
            handle.shutdown(std::net::Shutdown::Both).unwrap();
            let _ = timeout(LIMIT, serving).await;
        });
        let conn = HttpConnector::<Channel<Bytes>>::http2()
            .oneshot(address)
            .await
            .unwrap();
        let mut body = upload_answered(&conn).await;
        // The body goes on for 1.2 s after the answer.
        for _ in 0..24 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            timeout(LIMIT, body.send_data(Bytes::from_static(b"more")))
                .await
                .unwrap()
                .unwrap();
        }
        if body_ended_first {
            drop(body);
            tokio::time::sleep(Duration::from_millis(50)).await;
            end.send(()).unwrap();
            timeout(LIMIT, conn.close_finished()).await.unwrap();
        } else {
            end.send(()).unwrap();
            timeout(LIMIT, conn.close_finished()).await.unwrap();
            drop(body);
        }
        assert!(
            !conn.closed_gracefully(),
            "the body ended first: {body_ended_first}"
        );
        timeout(LIMIT, server).await.unwrap().unwrap();
    }
}

// HTTP/1.1: a request answered while its body, one large frame that hyper has taken, is still
// being written behind a full socket: the connection is not idle, so another request's
// `poll_ready` does not look at its socket and end it, and the whole body reaches the server
// (which ended its side of the stream after its answer, and reads on). Before, the look found
// the end and the connection ended, the upload cut short.
#[tokio::test(flavor = "current_thread")]
async fn an_http1_large_frame_still_being_written_is_not_cut_short_by_a_look() {
    use std::io::Read;
    const SIZE: usize = 32 << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (closed, closed_seen) = std::sync::mpsc::channel::<()>();
    let (read_on, read_on_asked) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let mut socket = accept_and_answer_ok(&listener);
        socket.shutdown(std::net::Shutdown::Write).unwrap();
        closed.send(()).unwrap();
        // Reads nothing until told: the client's socket fills.
        read_on_asked.recv_timeout(LIMIT).unwrap();
        let mut body = 0;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = socket.read(&mut buf) {
            if n == 0 {
                break;
            }
            body += n;
        }
        body
    });
    let conn = HttpConnector::<Full<Bytes>>::http1()
        .oneshot(address)
        .await
        .unwrap();
    let request = http::Request::post("/upload")
        .body(Full::new(Bytes::from(vec![b'x'; SIZE])))
        .unwrap();
    let sending = tokio::spawn(conn.clone().oneshot(request));
    let response = timeout(LIMIT, sending).await.unwrap().unwrap().unwrap();
    let answer = http_body_util::BodyExt::collect(response.into_body());
    assert_eq!(
        timeout(LIMIT, answer).await.unwrap().unwrap().to_bytes(),
        "ok"
    );
    closed_seen.recv_timeout(LIMIT).unwrap();
    // Idle long enough to be looked at, were it idle.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut other = conn.clone();
    let _ = std::future::poll_fn(|cx| std::task::Poll::Ready(other.poll_ready(cx))).await;
    drop(other);
    read_on.send(()).unwrap();
    timeout(LIMIT, conn.close_finished()).await.unwrap();
    drop(conn);
    assert_eq!(server.join().unwrap(), SIZE);
}

// HTTP/2: a request answered at once whose body, one frame of 32 MiB, the server reads slowly
// (a millisecond per 16 KiB frame, more than two seconds in all), then ends the connection,
// without GOAWAY, as soon as it has read the last byte: the connection was busy until then (the
// bytes held back by a full socket count, and their going restarts the idle clock), not idle
// for a second, so not a close in good order. (Before, the idle clock ran from the moment
// hyper took the body's frame.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_upload_drained_slowly_then_ended_is_not_an_idle_timeout() {
    use std::io::{Read, Write};
    const SIZE: usize = 32 << 20;
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        // The server's pace: a millisecond per DATA frame, on a clock of its own.
        let slow = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (mut socket, _) = listener.accept().unwrap();
        socket.set_read_timeout(Some(LIMIT)).unwrap();
        socket.write_all(&frame(4, 0, 0, &[])).unwrap();
        let mut preface = [0u8; 24];
        socket.read_exact(&mut preface).unwrap();
        let mut data = 0;
        loop {
            let mut head = [0u8; 9];
            socket.read_exact(&mut head).unwrap();
            let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
            let mut payload = vec![0u8; len];
            socket.read_exact(&mut payload).unwrap();
            let answer = match kind {
                // DATA: read slowly; the end of stream once it has all come.
                0 => {
                    slow.block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
                    data += len;
                    if data >= SIZE {
                        socket.shutdown(std::net::Shutdown::Both).unwrap();
                        return data;
                    }
                    Vec::new()
                }
                // HEADERS: `:status 200` at once, and the windows opened wide.
                1 => {
                    let credit = (1u32 << 30).to_be_bytes();
                    let mut out = frame(1, 0x5, stream, &[0x88]);
                    out.extend(frame(8, 0, 0, &credit));
                    out.extend(frame(8, 0, stream, &credit));
                    out
                }
                4 if flags & 1 == 0 => frame(4, 1, 0, &[]),
                6 if flags & 1 == 0 => frame(6, 1, 0, &payload),
                _ => Vec::new(),
            };
            if !answer.is_empty() {
                socket.write_all(&answer).unwrap();
            }
        }
    });
    let conn = timeout(
        LIMIT,
        HttpConnector::<Full<Bytes>>::http2().oneshot(address),
    )
    .await
    .unwrap()
    .unwrap();
    let request = http::Request::post("/upload")
        .body(Full::new(Bytes::from(vec![b'x'; SIZE])))
        .unwrap();
    let response = timeout(LIMIT, conn.clone().oneshot(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let answer = http_body_util::BodyExt::collect(response.into_body());
    timeout(LIMIT, answer).await.unwrap().unwrap();
    timeout(LIMIT, conn.close_finished()).await.unwrap();
    assert!(!conn.closed_gracefully());
    assert_eq!(server.join().unwrap(), SIZE);
}

// A server that closes an HTTP/1.1 connection after serving, just as a request comes (on its
// idle timeout, say): its end of stream reaches the client, then the reset for the request it
// did not read, both before the client's tasks run again. The request fails (the server never
// answered it); the connection served and the server ended it: replaced at once, as when the
// end comes alone, not after the retry delay (an hour here). (Over TLS, where hyper then also
// closes its side, which fails on the reset socket: `interop/tests/tls.rs`.)
#[tokio::test]
async fn a_server_closing_as_a_request_comes_after_serving_is_replaced_at_once() {
    let (address, _server) = raw_server(|mut socket| async move {
        if !read_head(&mut socket).await
            || socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .is_err()
            || !read_head(&mut socket).await
        {
            return;
        }
        // The end of stream, then (a zero linger) a reset, in this one step of the task.
        let _ = socket.shutdown().await;
        #[allow(deprecated)]
        socket.set_linger(Some(Duration::ZERO)).unwrap();
    })
    .await;
    let (client, log) = client(address, HttpConnector::http1(), |l| {
        l.retry_delay(|| Duration::from_secs(3600))
    });
    let response = timeout(LIMIT, client.clone().oneshot(get("/served")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "ok");
    let mut events = client.events();
    let error = timeout(LIMIT, client.clone().oneshot(get("/raced")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        support::chain(&*error),
        "connection closed before message completed"
    );
    timeout(LIMIT, support::wait_event(&mut events, "obtained_address"))
        .await
        .expect("not replaced at once");
    // The second attempt's `attempting_to_connect` is in the log by then (events reach the
    // streams before the handler, which the driver awaits before the next one).
    assert_eq!(
        log.lines()[..5],
        [
            "attempting_to_connect",
            "obtained_address",
            "connected",
            "disconnected",
            "attempting_to_connect",
        ]
    );
    timeout(LIMIT, client.close()).await.unwrap();
}
