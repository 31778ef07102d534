//! The HTTP connector over other streams than TCP: Unix domain sockets (by path and by a
//! `unix:` name), and the streams of a service of the user's (an in-memory duplex, hyper-util's
//! own connector), including a service that fails and a stream that never answers.
#![cfg(all(feature = "hyper", unix))]

mod support;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use support::temp::TempDir;
use support::web::{HttpServer, get, serve_one, text};
use support::yield_until;
use tokio::io::DuplexStream;
use tokio::net::UnixListener;
use tokio::time::{Instant, timeout};
use tower::{Layer, ServiceExt, service_fn};
use tower_persistent::discovery::Fixed;
use tower_persistent::transport::{HttpConnector, Peer};
use tower_persistent::{Closable, ConnectionClosed, PersistentLayer};

/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);

type Body = Empty<Bytes>;

/// A server named `name` on a Unix domain socket at `path`, serving until dropped.
fn unix_server(name: &'static str, path: &std::path::Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((socket, _)) = listener.accept().await {
            connections.spawn(serve_one(name, socket));
        }
    })
}

// A Unix domain socket is reached by its path and by a `unix:` name, over HTTP/1.1 and HTTP/2.
#[tokio::test]
async fn unix_domain_sockets_by_path_and_by_name() {
    let dir = TempDir::new("unix").unwrap();
    let path = dir.path().join("web.sock");
    let server = unix_server("u", &path);

    // A path: HTTP/1.1, whose requests name `localhost` as their host.
    let by_path =
        PersistentLayer::new("web", Fixed::new(path.clone())).layer(HttpConnector::<Body>::http1());
    let response = timeout(LIMIT, by_path.clone().oneshot(get("/host")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "u host localhost");
    let connection = by_path.current_connection().unwrap();
    assert_eq!(connection.peer(), &Peer::Unix(path.clone()));
    assert_eq!(
        connection.peer().to_string(),
        format!("unix:{}", path.display())
    );
    assert!(!connection.is_tls());
    by_path.close().await;

    // A name, as discovery would publish it as text: HTTP/2.
    let name = format!("unix:{}", path.display());
    let by_name =
        PersistentLayer::new("web", Fixed::new(name)).layer(HttpConnector::<Body>::http2());
    let response = timeout(LIMIT, by_name.clone().oneshot(get("/x")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "u /x");
    assert!(by_name.current_connection().unwrap().is_http2());
    by_name.close().await;

    // A socket that is not there: the attempt fails and says which path.
    let missing = dir.path().join("missing.sock");
    // The text of the first attempt's error with the socket at `path`.
    let failure = async |path: &std::path::Path| {
        let client = PersistentLayer::new("web", Fixed::new(path.to_path_buf()))
            .retry_delay(|| Duration::from_secs(60))
            .layer(HttpConnector::<Body>::http1());
        let error = timeout(LIMIT, client.connected_or_failed_to_connect())
            .await
            .unwrap()
            .unwrap_err();
        client.close().await;
        error.text()
    };
    assert_eq!(
        failure(&missing).await,
        format!(
            "connect failed: unix socket connect failed: {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    // A path that is no socket (a regular file): refused, as by a dead server's socket left
    // behind, and said so.
    let plain = dir.path().join("plain-file");
    std::fs::write(&plain, "not a socket").unwrap();
    // (The system's own text of the refusal.)
    let refused = std::os::unix::net::UnixStream::connect(&plain).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(
        failure(&plain).await,
        format!(
            "connect failed: unix socket connect failed: {} (not a socket): {refused}",
            plain.display()
        )
    );

    // `unix:` and no path: refused before any connect.
    let no_path = PersistentLayer::new("web", Fixed::new("unix:"))
        .retry_delay(|| Duration::from_secs(60))
        .layer(HttpConnector::<Body>::http1());
    let error = timeout(LIMIT, no_path.connected_or_failed_to_connect())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        error.text(),
        "connect failed: cannot resolve the address: no path in \"unix:\""
    );
    no_path.close().await;
    server.abort();
}

/// A service of the user's that makes in-memory streams, each served by a test server named
/// after the address it was called with; it counts its calls.
#[derive(Clone, Default)]
struct Memory {
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl tower::Service<&'static str> for Memory {
    type Response = DuplexStream;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<DuplexStream>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: &'static str) -> Self::Future {
        self.calls.lock().unwrap().push(name);
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve_one(name, server));
        std::future::ready(Ok(client))
    }
}

// A service of in-memory streams carries HTTP/1.1 and HTTP/2 as a dialed socket would.
#[tokio::test(start_paused = true)]
async fn over_a_service_of_in_memory_streams() {
    let memory = Memory::default();
    for connector in [
        HttpConnector::<Body>::http1().over(memory.clone()),
        HttpConnector::<Body>::http2().over(memory.clone()),
    ] {
        let client = PersistentLayer::new("mem", Fixed::new("memory")).layer(connector);
        let response = timeout(LIMIT, client.clone().oneshot(get("/a")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(text(response).await, "memory /a");
        let response = timeout(LIMIT, client.clone().oneshot(get("/host")))
            .await
            .unwrap()
            .unwrap();
        let host = text(response).await;
        let connection = client.current_connection().unwrap();
        assert_eq!(connection.peer(), &Peer::Stream);
        assert_eq!(connection.peer_addr().port(), 0);
        if connection.is_http2() {
            // HTTP/2 sends the authority as `:authority`, not as a `Host` header.
            assert_eq!(host, "memory host ");
        } else {
            assert_eq!(host, "memory host localhost");
        }
        client.close().await;
    }
    // One stream per connection, asked for with the discovered address.
    assert_eq!(*memory.calls.lock().unwrap(), ["memory", "memory"]);

    // The connector can name the authority such streams lead to.
    let named = HttpConnector::<Body>::http1()
        .authority("orders.internal:8080".parse().unwrap())
        .over(memory.clone());
    let client = PersistentLayer::new("mem", Fixed::new("memory")).layer(named);
    let response = timeout(LIMIT, client.clone().oneshot(get("/host")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "memory host orders.internal:8080");
    client.close().await;
}

// An HTTP/1.1 stream whose far end is gone before the connection is made: the connect
// succeeds (HTTP/1.1 has no handshake to fail), and the connection, found ended when the
// connector polled it, fails `poll_ready` at once and counts as closed, not gracefully.
#[tokio::test(flavor = "current_thread")]
async fn an_http1_stream_ended_before_the_connect_makes_a_dead_connection() {
    let ended = service_fn(|_: ()| {
        let (client, server) = tokio::io::duplex(1024);
        drop(server);
        async { Ok::<_, io::Error>(client) }
    });
    let conn = timeout(
        LIMIT,
        HttpConnector::<Body>::http1().over(ended).oneshot(()),
    )
    .await
    .unwrap()
    .unwrap();
    // Before the connection's task has run.
    let mut handle = tower_test::mock::Spawn::new(conn.clone());
    match handle.poll_ready() {
        std::task::Poll::Ready(Err(error)) => {
            assert!(error.is::<ConnectionClosed>(), "{error}");
        }
        other => panic!("expected the connection closed, got {other:?}"),
    }
    timeout(LIMIT, conn.close_finished())
        .await
        .expect("the connection's task did not end");
    assert!(conn.is_closed());
    assert!(!conn.closed_gracefully());
}

// A stream service that fails, or a stream that never answers, fails the attempt with a clear error.
#[tokio::test(start_paused = true)]
async fn a_failing_service_or_a_silent_stream_fails_the_attempt() {
    // The service's error is the attempt's, in its text.
    let refusing =
        service_fn(|_: ()| async { Err::<DuplexStream, _>(io::Error::other("tunnel refused")) });
    let client = PersistentLayer::new("mem", Fixed::new(()))
        .retry_delay(|| Duration::from_secs(60))
        .layer(HttpConnector::<Body>::http1().over(refusing));
    let error = client.connected_or_failed_to_connect().await.unwrap_err();
    assert_eq!(
        error.text(),
        "connect failed: could not open the stream: tunnel refused"
    );
    client.close().await;

    // An HTTP/2 stream whose far end never speaks: cut off at the connect timeout.
    let held = Arc::new(Mutex::new(Vec::new()));
    let silent = {
        let held = held.clone();
        service_fn(move |_: ()| {
            let (client, server) = tokio::io::duplex(1024);
            held.lock().unwrap().push(server);
            async { Ok::<_, io::Error>(client) }
        })
    };
    let start = Instant::now();
    let client = PersistentLayer::new("mem", Fixed::new(()))
        .retry_delay(|| Duration::from_secs(60))
        .layer(
            HttpConnector::<Body>::http2()
                .connect_timeout(Duration::from_secs(3))
                .over(silent),
        );
    let error = client.connected_or_failed_to_connect().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(error.text(), "connect failed: connect timed out after 3s");
    assert_eq!(held.lock().unwrap().len(), 1);
    client.close().await;
}

// hyper-util's connector, as it is, dials for the HTTP connector; its error is the attempt's.
#[tokio::test]
async fn over_hyper_utils_connector_as_it_is() {
    let server = HttpServer::start("s").await.unwrap();
    let uri: http::Uri = format!("http://{}", server.address).parse().unwrap();
    let dialer = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = PersistentLayer::new("web", Fixed::new(uri))
        .layer(HttpConnector::<Body>::http1().over_hyper(dialer));
    let response = timeout(LIMIT, client.clone().oneshot(get("/y")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "s /y");
    assert_eq!(client.current_connection().unwrap().peer(), &Peer::Stream);
    client.close().await;
    // Nobody there: the connector's error is the attempt's.
    let nobody: http::Uri = format!("http://{}", support::line::closed_port().await)
        .parse()
        .unwrap();
    let client = PersistentLayer::new("web", Fixed::new(nobody))
        .retry_delay(|| Duration::from_secs(60))
        .layer(
            HttpConnector::<Body>::http1()
                .over_hyper(hyper_util::client::legacy::connect::HttpConnector::new()),
        );
    let error = timeout(LIMIT, client.connected_or_failed_to_connect())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        error
            .text()
            .starts_with("connect failed: could not open the stream: tcp connect error"),
        "{}",
        error.text()
    );
    client.close().await;
}

// hyper-util's connector, its I/O unwrapped to tokio's stream, dials for HTTP/2.
#[tokio::test]
async fn over_hyper_utils_connector() {
    let server = HttpServer::start("s").await.unwrap();
    let uri: http::Uri = format!("http://{}", server.address).parse().unwrap();
    // hyper-util's connector yields hyper's I/O wrapper; its inner stream is tokio's.
    let dialer =
        hyper_util::client::legacy::connect::HttpConnector::new().map_response(TokioIo::into_inner);
    let client = PersistentLayer::new("web", Fixed::new(uri))
        .layer(HttpConnector::<Body>::http2().over(dialer));
    let response = timeout(LIMIT, client.clone().oneshot(get("/x")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "s /x");
    assert_eq!(server.accepted(), 1);
    client.close().await;
}

// A connection that the server ends (`Connection: close`) with its response still unread is
// closed at once and finishes once the response is read: at once when the caller reads it,
// and 50 ms after the end, exactly, when the caller holds it unread (the response is not lost:
// it is still read whole afterwards). Both count as closed in good order.
#[tokio::test(start_paused = true)]
async fn a_response_held_unread_holds_its_ended_connection_50_ms_at_most() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answering = service_fn(|()| async {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = server.read(&mut request).await;
            let answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
            let _ = server.write_all(answer).await;
            // Dropped: the end of the stream.
        });
        Ok::<_, io::Error>(client)
    });
    let connector = HttpConnector::<Body>::http1().over(answering);
    for hold in [false, true] {
        let conn = connector.clone().oneshot(()).await.unwrap();
        let response = timeout(LIMIT, conn.clone().oneshot(get("/")))
            .await
            .unwrap()
            .unwrap();
        assert!(
            yield_until(|| conn.is_closed()).await,
            "the connection did not close"
        );
        let ended = Instant::now();
        if !hold {
            assert_eq!(text(response).await, "ok");
            conn.close_finished().await;
            assert_eq!(ended.elapsed(), Duration::ZERO);
        } else {
            conn.close_finished().await;
            assert_eq!(ended.elapsed(), Duration::from_millis(50));
            assert_eq!(text(response).await, "ok");
        }
        assert!(conn.closed_gracefully(), "hold: {hold}");
    }
}

/// A stream of the user's whose reads panic once `limit` bytes have been read.
struct PanicsAfter {
    inner: DuplexStream,
    read: usize,
    limit: usize,
}

impl tokio::io::AsyncRead for PanicsAfter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.read >= self.limit {
            panic!("a read of the stream panics");
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += buf.filled().len() - before;
        polled
    }
}

impl tokio::io::AsyncWrite for PanicsAfter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, bytes)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// A stream of the user's whose read panics in the middle of a response body: the body fails
// with an error that says so (it does not end early as if whole), over HTTP/1.1 and HTTP/2, and
// the next connection serves.
#[tokio::test]
async fn a_stream_that_panics_mid_body_fails_the_body() {
    for connector in [HttpConnector::<Body>::http1(), HttpConnector::http2()] {
        let dials = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = dials.clone();
        let streams = service_fn(move |()| {
            // The first connection's reads panic after 4 KiB; the next ones' never do.
            let first = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                let (near, far) = tokio::io::duplex(64 * 1024);
                tokio::spawn(serve_one("p", far));
                let limit = if first { 4096 } else { usize::MAX };
                Ok::<_, io::Error>(PanicsAfter {
                    inner: near,
                    read: 0,
                    limit,
                })
            }
        });
        let client = PersistentLayer::new("web", Fixed::new(()))
            .retry_delay(|| Duration::from_millis(10))
            .layer(connector.over(streams));
        let response = timeout(LIMIT, client.clone().oneshot(get("/big")))
            .await
            .unwrap()
            .unwrap();
        let error = timeout(
            LIMIT,
            http_body_util::BodyExt::collect(response.into_body()),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(
            support::chain(&error),
            "error reading a body from connection: the connection's stream panicked in \
             poll_read: a read of the stream panics"
        );
        let response = timeout(LIMIT, client.clone().oneshot(get("/x")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(text(response).await, "p /x");
        assert_eq!(dials.load(std::sync::atomic::Ordering::SeqCst), 2);
        timeout(LIMIT, client.close()).await.unwrap();
    }
}

/// A stream of the user's whose first read puts a whole HTTP/2 SETTINGS frame into the buffer,
/// then panics.
struct GreetsThenPanics;

impl tokio::io::AsyncRead for GreetsThenPanics {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        buf.put_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        panic!("a read of the stream panics after filling the buffer");
    }
}

impl tokio::io::AsyncWrite for GreetsThenPanics {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

// What a read that fails (here, panics) left in the buffer is not taken for the server's
// greeting: the HTTP/2 connect fails, saying why, and nothing is `Connected`.
#[tokio::test]
async fn bytes_of_a_failed_read_are_no_greeting() {
    let streams = service_fn(|()| async { Ok::<_, io::Error>(GreetsThenPanics) });
    let client = PersistentLayer::new("web", Fixed::new(()))
        .layer(HttpConnector::<Body>::http2().over(streams));
    let error = timeout(LIMIT, client.connected_or_failed_to_connect())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        error.text(),
        "connect failed: the connection ended during the http/2 handshake: connection error: \
         the connection's stream panicked in poll_read: a read of the stream panics \
         after filling the buffer"
    );
    timeout(LIMIT, client.close()).await.unwrap();
}

/// A stream of the user's whose shutdown waits: `Pending` `waits` times (woken at once) before
/// it goes through, or for good with `u32::MAX` (a tunnel that waits for its peer's
/// acknowledgement, say); served by a test server. `dropped` counts the streams dropped,
/// `shut` the shutdowns that went through.
struct ShutdownWaits {
    inner: DuplexStream,
    waits: u32,
    dropped: Arc<tokio::sync::watch::Sender<usize>>,
    shut: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Drop for ShutdownWaits {
    fn drop(&mut self) {
        self.dropped.send_modify(|n| *n += 1);
    }
}

impl tokio::io::AsyncRead for ShutdownWaits {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ShutdownWaits {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.waits == u32::MAX {
            return std::task::Poll::Pending;
        }
        if self.waits > 0 {
            self.waits -= 1;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let shut = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        if shut.is_ready() {
            self.shut.send_modify(|n| *n += 1);
        }
        shut
    }
}

/// The servers of a service of streams: one token per stream made, which stops its server
/// gracefully (HTTP/2: GOAWAY) once cancelled.
type Servers = Arc<Mutex<Vec<tokio_util::sync::CancellationToken>>>;

/// Counts of the streams of a service of `ShutdownWaits`.
struct Counts {
    dropped: tokio::sync::watch::Receiver<usize>,
    shut: tokio::sync::watch::Receiver<usize>,
}

/// A service of `ShutdownWaits` streams whose shutdowns wait `waits` times, each served by a
/// test server with `options` (its token pushed onto `servers`); and their counts.
#[allow(clippy::type_complexity)]
fn shutdown_waits(
    waits: u32,
    options: support::web::Options,
    servers: Servers,
) -> (
    impl tower::Service<
        &'static str,
        Response = ShutdownWaits,
        Error = io::Error,
        Future = std::future::Ready<io::Result<ShutdownWaits>>,
    > + Clone
    + Send
    + 'static,
    Counts,
) {
    let dropped = Arc::new(tokio::sync::watch::Sender::new(0));
    let shut = Arc::new(tokio::sync::watch::Sender::new(0));
    let counts = Counts {
        dropped: dropped.subscribe(),
        shut: shut.subscribe(),
    };
    let streams = service_fn(move |name: &'static str| {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let stop = tokio_util::sync::CancellationToken::new();
        servers.lock().unwrap().push(stop.clone());
        tokio::spawn(support::web::serve_one_with(name, server, options, stop));
        std::future::ready(Ok(ShutdownWaits {
            inner: client,
            waits,
            dropped: dropped.clone(),
            shut: shut.clone(),
        }))
    });
    (streams, counts)
}

/// Waits until `count` reaches `n`.
async fn counted(count: &mut tokio::sync::watch::Receiver<usize>, n: usize) {
    timeout(LIMIT, count.wait_for(|&counted| counted >= n))
        .await
        .expect("counted")
        .unwrap();
}

// A stream whose shutdown waits does not hold up what hyper is done with. Over HTTP/1.1 a
// server that closes after each response (`Connection: close`): the connection ends as hyper
// begins the shutdown, and the next request goes on a connection made at once (with a
// shutdown that never finishes, it used to wait for good on the old one). A shutdown that
// waits a little goes through (a TLS close_notify behind a full socket is sent), one that
// never finishes is cut off at the connector's close timeout, the stream dropped.
#[tokio::test(start_paused = true)]
async fn an_http1_stream_whose_shutdown_waits_ends_with_hyper_s_connection() {
    const CLOSE: Duration = Duration::from_secs(1);
    let options = support::web::Options {
        close_after_each: true,
        ..Default::default()
    };
    for waits in [3, u32::MAX] {
        let (streams, mut counts) = shutdown_waits(waits, options, Servers::default());
        let client = PersistentLayer::new("mem", Fixed::new("memory"))
            .retry_delay(|| Duration::from_secs(1))
            .layer(
                HttpConnector::<Body>::http1()
                    .close_timeout(CLOSE)
                    .over(streams),
            );
        let start = Instant::now();
        for n in 1..=3 {
            let response = timeout(LIMIT, client.clone().oneshot(get("/a")))
                .await
                .expect("answered")
                .unwrap();
            assert_eq!(text(response).await, "memory /a");
            assert_eq!(
                start.elapsed(),
                Duration::ZERO,
                "shutdown waits {waits}: request {n}: no retry delay"
            );
        }
        counted(&mut counts.dropped, 3).await;
        if waits == u32::MAX {
            // Cut off at the close timeout, never shut.
            assert_eq!(start.elapsed(), CLOSE);
            assert_eq!(*counts.shut.borrow(), 0);
        } else {
            assert_eq!(start.elapsed(), Duration::ZERO);
            assert_eq!(*counts.shut.borrow(), 3, "every shutdown went through");
        }
        client.close().await;
    }
}

// Over HTTP/2 the shutdown of such a stream is cut off at the connector's close timeout: a
// server's GOAWAY ends the connection as hyper begins the shutdown, replaced at once, the old
// stream cut off at the close timeout of its close (it used to stay open for good); and
// `close()` resolves at that timeout, the stream dropped (it used to take the persistent
// connection's own close timeout, the stream left open).
#[tokio::test(start_paused = true)]
async fn an_http2_stream_whose_shutdown_never_finishes_is_cut_off_at_the_close_timeout() {
    const CLOSE: Duration = Duration::from_secs(1);
    let servers = Servers::default();
    let (streams, mut counts) = shutdown_waits(u32::MAX, Default::default(), servers.clone());
    let client = PersistentLayer::new("mem", Fixed::new("memory"))
        .retry_delay(|| Duration::from_secs(1))
        .layer(
            HttpConnector::<Body>::http2()
                .close_timeout(CLOSE)
                .over(streams),
        );
    let response = timeout(LIMIT, client.clone().oneshot(get("/a")))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(text(response).await, "memory /a");
    let first = client.current_connection().unwrap();

    // The server sends GOAWAY: the next request goes on a new connection, at once.
    let start = Instant::now();
    servers.lock().unwrap()[0].cancel();
    assert!(yield_until(|| first.is_closed()).await);
    let response = timeout(LIMIT, client.clone().oneshot(get("/b")))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(text(response).await, "memory /b");
    assert_eq!(start.elapsed(), Duration::ZERO, "no retry delay");
    // The old stream, whose shutdown waits, is cut off at the close timeout of its close.
    counted(&mut counts.dropped, 1).await;
    assert_eq!(start.elapsed(), CLOSE);

    // A close of ours: over at the connector's close timeout, the stream dropped.
    let start = Instant::now();
    timeout(LIMIT, client.close()).await.unwrap();
    assert_eq!(start.elapsed(), CLOSE);
    assert_eq!(*counts.dropped.borrow(), 2);
}

// An HTTP/2 connect whose server closes before its preface fails with the connection's end
// and its cause (here the client's write that found the stream closed), without blaming the
// server for a failure that may be the stream's own (see `bytes_of_a_failed_read_are_no_greeting`).
#[tokio::test(start_paused = true)]
async fn an_http2_connect_whose_server_closes_before_its_preface_says_why() {
    // The server reads the client's preface, then closes without a word.
    let ends = service_fn(|()| async {
        let (client, mut server) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            // Everything the client sends until it waits for the server.
            let mut sent = [0; 1024];
            while let Ok(Ok(1..)) = timeout(
                Duration::from_millis(10),
                tokio::io::AsyncReadExt::read(&mut server, &mut sent),
            )
            .await
            {}
        });
        Ok::<_, io::Error>(client)
    });
    let client = PersistentLayer::new("web", Fixed::new(()))
        .layer(HttpConnector::<Body>::http2().over(ends));
    let error = timeout(LIMIT, client.connected_or_failed_to_connect())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        error.text(),
        "connect failed: the connection ended during the http/2 handshake: connection error: \
         connection closed because of a broken pipe"
    );
    timeout(LIMIT, client.close()).await.unwrap();
}

// Over HTTP/2 a shutdown that waits a little goes through, after a server's GOAWAY as after a
// close of ours, at once.
#[tokio::test(start_paused = true)]
async fn an_http2_stream_whose_shutdown_waits_a_little_is_shut() {
    let servers = Servers::default();
    let (streams, mut counts) = shutdown_waits(3, Default::default(), servers.clone());
    let client = PersistentLayer::new("mem", Fixed::new("memory"))
        .retry_delay(|| Duration::from_secs(1))
        .layer(HttpConnector::<Body>::http2().over(streams));
    let start = Instant::now();
    let response = timeout(LIMIT, client.clone().oneshot(get("/a")))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(text(response).await, "memory /a");
    servers.lock().unwrap()[0].cancel();
    counted(&mut counts.shut, 1).await;
    let response = timeout(LIMIT, client.clone().oneshot(get("/b")))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(text(response).await, "memory /b");
    timeout(LIMIT, client.close()).await.unwrap();
    assert_eq!(*counts.shut.borrow(), 2);
    assert_eq!(*counts.dropped.borrow(), 2);
    assert_eq!(start.elapsed(), Duration::ZERO);
}
