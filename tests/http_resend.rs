//! A request that hyper hands back unsent because its connection died, over real sockets on
//! 127.0.0.1: sent on the successor when the connection had served, failed at once otherwise.
//!
//! The client's TCP streams can be cut by the test: from then on they read the end of the
//! stream at once, as a socket that has the server's FIN does once the runtime has seen it.
//! The test cuts the stream, then queues a request on the connection, all without yielding (the
//! runtime is single-threaded: nothing else runs meanwhile); hyper's connection task then reads
//! the end first and hands the request back unsent. (With the FIN alone, whether hyper reads it
//! before taking the request depends on when the runtime polls the socket.) The server runs on
//! a thread of its own, and closes its side too.
#![cfg(feature = "hyper")]

mod support;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::web::text;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_persistent::discovery::Fixed;
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{Persistent, PersistentLayer};

/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);

type Conn = HttpConnection<Empty<Bytes>>;

/// What cuts a [`Cuttable`] stream.
#[derive(Default)]
struct Cut {
    done: AtomicBool,
    reader: AtomicWaker,
}

impl Cut {
    fn cut(&self) {
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
/// [`Cuttable`]; cuts every stream made so far when `Cuts::cut_all` is called.
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

    fn cut_all(&self) {
        for cut in self.0.lock().unwrap().iter() {
            cut.cut();
        }
    }
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

/// An HTTP server (HTTP/1.1 and HTTP/2) on a thread of its own, answering `conn <n> <path>` on
/// its n-th connection, and closing all its connections on command.
struct Server {
    address: SocketAddr,
    /// What it answered, in order.
    answered: Arc<Mutex<Vec<String>>>,
    commands: tokio::sync::mpsc::UnboundedSender<mpsc::Sender<()>>,
}

impl Server {
    fn start() -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let answered = Arc::new(Mutex::new(Vec::new()));
        let (commands, mut received) = tokio::sync::mpsc::unbounded_channel::<mpsc::Sender<()>>();
        let log = answered.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let mut open: Vec<(CancellationToken, tokio::task::JoinHandle<()>)> = Vec::new();
                let mut accepted = 0;
                loop {
                    tokio::select! {
                        socket = listener.accept() => {
                            let Ok((socket, _)) = socket else { return };
                            accepted += 1;
                            let stop = CancellationToken::new();
                            let task = tokio::spawn(serve(accepted, socket, log.clone(), stop.clone()));
                            open.push((stop, task));
                        }
                        command = received.recv() => {
                            // Closes every open connection; acknowledges once their sockets
                            // are closed. Ends with the test.
                            let Some(done) = command else { return };
                            for (stop, task) in open.drain(..) {
                                stop.cancel();
                                let _ = task.await;
                            }
                            let _ = done.send(());
                        }
                    }
                }
            });
        });
        Server {
            address,
            answered,
            commands,
        }
    }

    /// Closes every open connection, and returns once their sockets are closed. Blocks the
    /// thread: nothing else runs on a single-threaded runtime meanwhile.
    fn close_all_blocking(&self) {
        let (done, acknowledged) = mpsc::channel();
        self.commands.send(done).unwrap();
        acknowledged.recv_timeout(LIMIT).unwrap();
    }

    fn answered(&self) -> Vec<String> {
        self.answered.lock().unwrap().clone()
    }
}

async fn serve(
    n: usize,
    socket: tokio::net::TcpStream,
    log: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let answer = format!("conn {n} {}", request.uri().path());
        log.lock().unwrap().push(answer.clone());
        async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(answer)))) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(socket), service);
    // Dropping the connection closes the socket (with nothing unread: a FIN).
    tokio::select! {
        _ = connection => {}
        _ = stop.cancelled() => {}
    }
}

fn persistent<D>(
    address: SocketAddr,
    connector: HttpConnector<Empty<Bytes>, D>,
) -> Persistent<SocketAddr, Conn>
where
    HttpConnector<Empty<Bytes>, D>: Service<SocketAddr, Response = Conn> + Send + 'static,
    <HttpConnector<Empty<Bytes>, D> as Service<SocketAddr>>::Error:
        Into<tower_persistent::BoxError>,
    <HttpConnector<Empty<Bytes>, D> as Service<SocketAddr>>::Future: Send,
{
    let layer = PersistentLayer::new("web", Fixed::new(address))
        .retry_delay(|| Duration::from_millis(200))
        .jitter(0.0);
    ServiceBuilder::new().layer(layer).service(connector)
}

// A connection that served is closed by the server while idle; a request queued on it before
// the client noticed is handed back unsent by hyper, and sent on the connection that replaces
// it, once: the caller sees no error.
#[tokio::test]
async fn a_request_handed_back_by_a_connection_that_served_goes_to_its_successor() {
    for connector in [HttpConnector::http1(), HttpConnector::http2()] {
        let server = Server::start();
        let cuts = Cuts::default();
        let client = persistent(server.address, cuts.connector(connector.clone()));
        let first = client
            .clone()
            .oneshot(get(server.address, "/1"))
            .await
            .unwrap();
        assert_eq!(text(first).await, "conn 1 /1");
        let old = client.current_connection().unwrap();

        server.close_all_blocking();
        cuts.cut_all();
        let request = client.clone().oneshot(get(server.address, "/2"));
        tokio::pin!(request);
        assert!(poll_once(request.as_mut()).await.is_pending());
        // Called on the dead connection, which does not know it yet.
        assert_eq!(old.in_flight(), 1, "{connector:?}");

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

// A connection that never served may belong to a server that accepts and closes: a request it
// hands back fails at once with hyper's error, instead of waiting for the next connection (here
// 200 ms later).
#[tokio::test]
async fn a_request_handed_back_by_a_connection_that_never_served_fails_at_once() {
    for connector in [HttpConnector::http1(), HttpConnector::http2()] {
        let server = Server::start();
        let cuts = Cuts::default();
        let client = persistent(server.address, cuts.connector(connector.clone()));
        let old = client.connected().await.unwrap();

        cuts.cut_all();
        let started = tokio::time::Instant::now();
        let request = client.clone().oneshot(get(server.address, "/2"));
        tokio::pin!(request);
        assert!(poll_once(request.as_mut()).await.is_pending());
        assert_eq!(old.in_flight(), 1, "{connector:?}");

        let error = timeout(LIMIT, request).await.unwrap().unwrap_err();
        assert!(
            error.to_string().contains("canceled"),
            "{connector:?}: {error}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{connector:?}"
        );
        assert!(server.answered().is_empty());
        // The next connection serves.
        let response = client
            .clone()
            .oneshot(get(server.address, "/3"))
            .await
            .unwrap();
        assert_eq!(text(response).await, "conn 2 /3", "{connector:?}");
        client.close().await;
    }
}

// An `HttpConnection` of its own, outside any persistent connection, has no successor: a
// request it hands back fails at once.
#[tokio::test]
async fn a_connection_of_its_own_has_no_successor() {
    for connector in [HttpConnector::http1(), HttpConnector::http2()] {
        let server = Server::start();
        let cuts = Cuts::default();
        let conn: Conn = cuts
            .connector(connector.clone())
            .call(server.address)
            .await
            .unwrap();
        let first = conn
            .clone()
            .oneshot(get(server.address, "/1"))
            .await
            .unwrap();
        assert_eq!(text(first).await, "conn 1 /1");

        server.close_all_blocking();
        cuts.cut_all();
        let request = conn.clone().oneshot(get(server.address, "/2"));
        tokio::pin!(request);
        assert!(poll_once(request.as_mut()).await.is_pending());
        assert_eq!(conn.in_flight(), 1, "{connector:?}");
        let error = timeout(LIMIT, request).await.unwrap().unwrap_err();
        assert!(
            error.to_string().contains("canceled"),
            "{connector:?}: {error}"
        );
        assert_eq!(server.answered(), ["conn 1 /1"]);
    }
}
