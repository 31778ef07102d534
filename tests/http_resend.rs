//! A request that hyper hands back unsent because its connection ended, over real sockets on
//! 127.0.0.1: sent on the successor when the persistent connection replaces the connection at
//! once, failed at once otherwise.
//!
//! The client's TCP streams can be cut by the test: from then on they read the end of the
//! stream at once, as a socket that has the server's FIN does once the runtime has seen it.
//! The test cuts the stream, then queues a request on the connection, all without yielding (the
//! runtime is single-threaded: nothing else runs meanwhile); hyper's connection task then reads
//! the end first and hands the request back unsent. (With the FIN alone, whether hyper reads it
//! before taking the request depends on when the runtime polls the socket.) A stream can also
//! be cut with an error, as a connection reset.
#![cfg(feature = "hyper")]

mod support;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::task::AtomicWaker;
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::web::text;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_persistent::transport::{HttpConnection, HttpConnector, ResponseBody};
use tower_persistent::{Event, Persistent, PersistentLayer};

/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);

type Conn = HttpConnection<Empty<Bytes>>;

/// What cuts a [`Cuttable`] stream.
#[derive(Default)]
struct Cut {
    done: AtomicBool,
    /// Reads fail with a reset instead of reading the end.
    reset: AtomicBool,
    reader: AtomicWaker,
}

impl Cut {
    fn cut(&self, reset: bool) {
        self.reset.store(reset, Ordering::SeqCst);
        self.done.store(true, Ordering::SeqCst);
        self.reader.wake();
    }
}

/// A client's TCP stream that the test can cut.
struct Cuttable {
    inner: TcpStream,
    cut: Arc<Cut>,
}

impl AsyncRead for Cuttable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.cut.reader.register(cx.waker());
        if self.cut.done.load(Ordering::SeqCst) {
            if self.cut.reset.load(Ordering::SeqCst) {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            // The end of the stream.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.cut.done.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connector of `version` (an `HttpConnector` of either version) whose TCP streams are
/// [`Cuttable`]; `Cuts::cut_all` cuts every stream made so far.
#[derive(Clone, Default)]
struct Cuts(Arc<Mutex<Vec<Arc<Cut>>>>);

impl Cuts {
    fn connector(
        &self,
        version: HttpConnector<Empty<Bytes>>,
    ) -> HttpConnector<
        Empty<Bytes>,
        tower_persistent::transport::Over<
            impl Service<
                SocketAddr,
                Response = Cuttable,
                Error = io::Error,
                Future = impl Future<Output = io::Result<Cuttable>> + Send,
            > + Clone
            + Send
            + 'static,
        >,
    > {
        let cuts = self.0.clone();
        version.over(service_fn(move |address: SocketAddr| {
            let cuts = cuts.clone();
            async move {
                let inner = TcpStream::connect(address).await?;
                inner.set_nodelay(true)?;
                let cut = Arc::new(Cut::default());
                cuts.lock().unwrap().push(cut.clone());
                Ok::<_, io::Error>(Cuttable { inner, cut })
            }
        }))
    }

    /// The end of every stream made so far; with `reset`, a reset instead.
    fn cut_all(&self, reset: bool) {
        for cut in self.0.lock().unwrap().iter() {
            cut.cut(reset);
        }
    }
}

/// Sends `GET path` on `service` and returns the response's text.
async fn answer<S>(service: &S, address: SocketAddr, path: &str) -> String
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<ResponseBody>> + Clone,
    S::Error: std::fmt::Debug,
{
    text(service.clone().oneshot(get(address, path)).await.unwrap()).await
}

/// Cuts every stream (with a reset if `reset`), then sends `GET /2` on `service` and polls it
/// once, without yielding: the request is queued on `old`, which does not know yet that its
/// stream ended. Returns the request, to await.
async fn cut_and_queue<S>(
    cuts: &Cuts,
    reset: bool,
    service: &S,
    old: &Conn,
    address: SocketAddr,
) -> Pin<Box<tower::util::Oneshot<S, http::Request<Empty<Bytes>>>>>
where
    S: Service<http::Request<Empty<Bytes>>> + Clone,
{
    cuts.cut_all(reset);
    let mut request = Box::pin(service.clone().oneshot(get(address, "/2")));
    assert!(poll_once(request.as_mut()).await.is_pending());
    assert_eq!(
        old.in_flight(),
        1,
        "the request was not queued on the old connection"
    );
    request
}

/// Polls `future` once, in the calling task.
async fn poll_once<F: Future>(mut future: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx))).await
}

/// `GET path` with an authority, as both HTTP versions take it.
fn get(address: SocketAddr, path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{address}{path}"))
        .body(Empty::new())
        .unwrap()
}

/// An HTTP server (HTTP/1.1 and HTTP/2), answering `conn <n> <path>` on its n-th connection.
struct Server {
    address: SocketAddr,
    /// What it answered, in order.
    answered: Arc<Mutex<Vec<String>>>,
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let answered = Arc::new(Mutex::new(Vec::new()));
        let log = answered.clone();
        let task = tokio::spawn(async move {
            // Dropped with this task: aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            let mut accepted = 0;
            while let Ok((socket, _)) = listener.accept().await {
                accepted += 1;
                connections.spawn(serve(accepted, socket, log.clone()));
            }
        });
        Server {
            address,
            answered,
            _task: AbortOnDrop(task),
        }
    }

    fn answered(&self) -> Vec<String> {
        self.answered.lock().unwrap().clone()
    }
}

async fn serve(n: usize, socket: tokio::net::TcpStream, log: Arc<Mutex<Vec<String>>>) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let path = request.uri().path();
        let answer = if path == "/host" {
            let host = request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .or_else(|| request.uri().authority().map(|a| a.to_string()));
            format!("conn {n} host {}", host.unwrap_or_default())
        } else {
            format!("conn {n} {path}")
        };
        log.lock().unwrap().push(answer.clone());
        async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(answer)))) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let _ = builder
        .serve_connection(TokioIo::new(socket), service)
        .await;
}

fn persistent<D>(
    address: SocketAddr,
    connector: HttpConnector<Empty<Bytes>, D>,
    retry_delay: Duration,
) -> Persistent<SocketAddr, Conn>
where
    HttpConnector<Empty<Bytes>, D>: Service<SocketAddr, Response = Conn> + Send + 'static,
    <HttpConnector<Empty<Bytes>, D> as Service<SocketAddr>>::Error:
        Into<tower_persistent::BoxError>,
    <HttpConnector<Empty<Bytes>, D> as Service<SocketAddr>>::Future: Send,
{
    persistent_over(&[address], connector, retry_delay)
}

/// As [`persistent`], the n-th lookup answering `addresses[n]` (the last one from then on).
fn persistent_over<D>(
    addresses: &[SocketAddr],
    connector: HttpConnector<Empty<Bytes>, D>,
    retry_delay: Duration,
) -> Persistent<SocketAddr, Conn>
where
    HttpConnector<Empty<Bytes>, D>: Service<SocketAddr, Response = Conn> + Send + 'static,
    <HttpConnector<Empty<Bytes>, D> as Service<SocketAddr>>::Error:
        Into<tower_persistent::BoxError>,
    <HttpConnector<Empty<Bytes>, D> as Service<SocketAddr>>::Future: Send,
{
    let addresses = addresses.to_vec();
    let lookups = Arc::new(AtomicUsize::new(0));
    let lookup = service_fn(move |()| {
        let n = lookups.fetch_add(1, Ordering::SeqCst);
        let address = addresses[n.min(addresses.len() - 1)];
        std::future::ready(Ok::<_, Infallible>(address))
    });
    let layer = PersistentLayer::new("web", lookup)
        .retry_delay(move || retry_delay)
        .jitter(0.0);
    ServiceBuilder::new().layer(layer).service(connector)
}

// A connection that served and outlived its retry delay is closed by the server while idle; a
// request queued on it before the client noticed is handed back unsent by hyper, and sent on
// the connection that replaces it at once: the caller sees no error.
#[tokio::test]
async fn a_request_handed_back_by_a_connection_replaced_at_once_goes_to_its_successor() {
    for connector in [HttpConnector::http1(), HttpConnector::http2()] {
        let (server, cuts, client, old) = served_and_old(&connector).await;
        let request = cut_and_queue(&cuts, false, &client, &old, server.address).await;

        let response = timeout(LIMIT, request).await.unwrap();
        let response = response.unwrap_or_else(|e| panic!("{connector:?}: {e}"));
        assert_eq!(text(response).await, "conn 2 /2", "{connector:?}");
        assert_eq!(
            server.answered(),
            ["conn 1 /1", "conn 2 /2"],
            "{connector:?}"
        );
        assert_eq!(old.in_flight(), 0);
        client.close().await;
    }
}

/// A persistent connection to a new server over `connector`, whose first connection served
/// and is older than its retry delay (50 ms): replaced at once when it dies, whatever HTTP/2
/// makes of the end of its stream (an error: no GOAWAY came). Returns the server, the cuts of
/// the connections' streams, the client and that first connection.
async fn served_and_old(
    connector: &HttpConnector<Empty<Bytes>>,
) -> (Server, Cuts, Persistent<SocketAddr, Conn>, Conn) {
    let server = Server::start().await;
    let cuts = Cuts::default();
    let delay = Duration::from_millis(50);
    let client = persistent(server.address, cuts.connector(connector.clone()), delay);
    assert_eq!(answer(&client, server.address, "/1").await, "conn 1 /1");
    let old = client.current_connection().unwrap();
    tokio::time::sleep(2 * delay).await;
    (server, cuts, client, old)
}

/// Queues a request on a young connection of a persistent connection whose retry delay is an
/// hour (the connection served a request first if `served`) as its stream is cut (with a reset
/// if `reset`), and returns the error the request fails with: a request that waited for the
/// next connection would time out. Then checks that the next connection serves.
async fn handed_back_and_failed(
    connector: HttpConnector<Empty<Bytes>>,
    served: bool,
    reset: bool,
) -> String {
    let server = Server::start().await;
    let cuts = Cuts::default();
    let hour = Duration::from_secs(3600);
    let client = persistent(server.address, cuts.connector(connector.clone()), hour);
    let mut answered = Vec::new();
    if served {
        assert_eq!(answer(&client, server.address, "/1").await, "conn 1 /1");
        answered.push("conn 1 /1");
    }
    let old = client.connected().await.unwrap();

    let request = cut_and_queue(&cuts, reset, &client, &old, server.address).await;
    let error = timeout(LIMIT, request)
        .await
        .expect("the request waited for the next connection")
        .unwrap_err();
    assert_eq!(server.answered(), answered);

    // The next connection serves.
    client.reconnect_now();
    assert_eq!(
        answer(&client, server.address, "/3").await,
        "conn 2 /3",
        "{connector:?}"
    );
    client.close().await;
    support::chain(&*error)
}

// A young connection that never served is not replaced before the retry delay (it may belong
// to a server that accepts and closes): a request it hands back fails at once with hyper's
// error, instead of waiting for the next connection.
#[tokio::test]
async fn a_request_handed_back_by_a_connection_not_replaced_at_once_fails_at_once() {
    for (connector, http2) in [
        (HttpConnector::http1(), false),
        (HttpConnector::http2(), true),
    ] {
        let error = handed_back_and_failed(connector.clone(), false, false).await;
        assert_eq!(error, never_served(http2), "{connector:?}");
    }
}

/// The error of a request handed back unsent by a connection that never served: over HTTP/1.1
/// hyper says the connection closed before the message (of the request) completed.
fn never_served(http2: bool) -> &'static str {
    if http2 {
        "operation was canceled: connection closed"
    } else {
        "operation was canceled: connection closed before message completed"
    }
}

// A young HTTP/2 connection that served and then failed (a reset) is replaced only after the
// retry delay: a request it hands back fails at once with hyper's error. (hyper ends an idle
// HTTP/1.1 connection without error on a reset as on the end of the stream: one that served is
// replaced at once, as after a graceful close.)
#[tokio::test]
async fn a_request_handed_back_by_a_connection_that_failed_fails_at_once() {
    let error = handed_back_and_failed(HttpConnector::http2(), true, true).await;
    assert_eq!(error, "operation was canceled: connection closed");
}

// An `HttpConnection` of its own, outside any persistent connection, has no successor: a
// request it hands back fails at once.
#[tokio::test]
async fn a_connection_of_its_own_has_no_successor() {
    for connector in [HttpConnector::http1(), HttpConnector::http2()] {
        let server = Server::start().await;
        let cuts = Cuts::default();
        let conn: Conn = cuts
            .connector(connector.clone())
            .call(server.address)
            .await
            .unwrap();
        assert_eq!(answer(&conn, server.address, "/1").await, "conn 1 /1");

        let request = cut_and_queue(&cuts, false, &conn, &conn, server.address).await;
        let error = timeout(LIMIT, request).await.unwrap().unwrap_err();
        // It served: over HTTP/1.1 too, hyper says only that the connection closed.
        assert_eq!(
            support::chain(&*error),
            "operation was canceled: connection closed",
            "{connector:?}"
        );
        assert_eq!(server.answered(), ["conn 1 /1"]);
    }
}

/// A persistent connection to a new server over `connector`, whose first connection served and
/// outlived its retry delay; a request queued on it as its stream was cut, not polled again
/// until its successor is current (its `Connected` event has come). Returns the server, the
/// client and the request, to await.
async fn handed_back_unpolled(
    connector: &HttpConnector<Empty<Bytes>>,
) -> (
    Server,
    Persistent<SocketAddr, Conn>,
    impl Future<Output = Result<http::Response<ResponseBody>, tower_persistent::BoxError>>,
) {
    let (server, cuts, client, old) = served_and_old(connector).await;
    let mut events = client.events();

    let request = cut_and_queue(&cuts, false, &client, &old, server.address).await;
    timeout(LIMIT, async {
        let mut dead = false;
        while let Some(event) = events.next().await {
            match event {
                Event::Disconnected => dead = true,
                Event::Connected(_) if dead => return,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    (server, client, request)
}

// A request handed back unsent that its task sees only once the next connection is current
// (here: its future is not polled until then) still goes to that connection: the persistent
// connection keeps the successor until the successor dies.
#[tokio::test]
async fn a_request_handed_back_late_still_finds_its_successor() {
    for connector in [HttpConnector::http1(), HttpConnector::http2()] {
        let (_server, client, request) = handed_back_unpolled(&connector).await;
        let response = timeout(LIMIT, request).await.unwrap();
        let response = response.unwrap_or_else(|e| panic!("{connector:?}: {e}"));
        assert_eq!(text(response).await, "conn 2 /2", "{connector:?}");
        client.close().await;
    }
}

// A request handed back unsent whose successor has begun closing by the time it gets there (a
// GOAWAY of the successor's own, say) was sent nowhere: it fails with hyper's error, which says
// so (`is_canceled`, what a retry policy looks for), not with the successor's.
#[tokio::test]
async fn a_request_handed_back_to_a_closing_successor_fails_with_hyper_error() {
    for connector in [HttpConnector::http1(), HttpConnector::http2()] {
        let (server, client, request) = handed_back_unpolled(&connector).await;
        // The successor begins closing before the request, not yet polled again, gets there.
        let successor = client.current_connection().unwrap();
        drop(tower_persistent::Closable::close(&successor));
        assert!(tower_persistent::Closable::is_closed(&successor));

        let error = timeout(LIMIT, request)
            .await
            .unwrap()
            .expect_err("the request was sent on a closing connection");
        let hyper_error = error
            .downcast_ref::<hyper::Error>()
            .unwrap_or_else(|| panic!("{connector:?}: not hyper's error: {error}"));
        assert!(hyper_error.is_canceled(), "{connector:?}: {error}");
        assert_eq!(
            server.answered(),
            ["conn 1 /1"],
            "{connector:?}: the request reached the server"
        );
        client.close().await;
    }
}

// A request made by an `on_event` handler and handed back unsent fails at once: the persistent
// connection awaits the handler before it can replace the connection, so waiting for the
// successor would only wait out the limit (here an hour: the connector's connect timeout).
#[tokio::test]
async fn a_request_handed_back_to_an_event_handler_fails_at_once() {
    for (connector, http2) in [
        (HttpConnector::http1(), false),
        (HttpConnector::http2(), true),
    ] {
        let server = Server::start().await;
        let cuts = Cuts::default();
        let hour = Duration::from_secs(3600);
        let connector = cuts.connector(connector.connect_timeout(hour));
        let (outcome, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
        let address = server.address;
        let handler_cuts = cuts.clone();
        let layer = PersistentLayer::new("web", tower_persistent::discovery::Fixed::new(address))
            .retry_delay(move || hour)
            .on_event(move |event: Event<SocketAddr, Conn>| {
                let (cuts, outcome) = (handler_cuts.clone(), outcome.clone());
                async move {
                    let Event::Connected(mut conn) = event else {
                        return;
                    };
                    conn.ready().await.unwrap();
                    cuts.cut_all(false);
                    let result = conn.call(get(address, "/warm")).await;
                    let _ = outcome.send(result.map(|_| ()).map_err(|e| support::chain(&*e)));
                }
            });
        let client = ServiceBuilder::new().layer(layer).service(connector);
        let result = timeout(LIMIT, outcomes.recv()).await.unwrap().unwrap();
        let error = result.unwrap_err();
        assert_eq!(error, never_served(http2), "http2: {http2}");
        assert!(server.answered().is_empty());
        client.close().await;
    }
}
