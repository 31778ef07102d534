//! HTTP test servers on 127.0.0.1 (hyper, HTTP/1.1 and HTTP/2 on the same port), for the
//! integration tests and the failover example.
//!
//! A server answers `"<name> <path>"`. The path `/slow` answers after 300 ms, `/hang` never;
//! `/goaway-hang` begins the connection's graceful shutdown (HTTP/2: GOAWAY), then never
//! answers; `/goaway-gate` begins it too, then answers once the test opens the gate
//! ([`Stats::gate`]); `/drain` answers at once, and reads the request body in the background to its end;
//! paths starting with `/big` add a newline and 256 KiB of padding; `/host` answers
//! `"<name> host <Host header>"`; `/stall-body` sends the response head and the first bytes of
//! its body (`"<name> /stall-body"`), then never the rest.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Counters of a server.
#[derive(Default, Debug)]
pub struct Stats {
    pub accepted: AtomicUsize,
    pub requests: AtomicUsize,
    pub concurrent: AtomicUsize,
    pub max_concurrent: AtomicUsize,
    /// Connections served to their end (the client closed the socket, say).
    pub ended: AtomicUsize,
    /// Notified when a request arrives or a connection ends.
    pub changed: tokio::sync::Notify,
    /// Opened (`notify_one`) by a test: a `/goaway-gate` request is answered then.
    pub gate: tokio::sync::Notify,
}

impl Stats {
    /// Waits until `n` connections have ended; false if they have not within `limit`.
    pub async fn ended(&self, n: usize, limit: Duration) -> bool {
        self.reach(&self.ended, n, limit).await
    }

    /// Waits until `n` requests have arrived; false if they have not within `limit`.
    pub async fn requests(&self, n: usize, limit: Duration) -> bool {
        self.reach(&self.requests, n, limit).await
    }

    async fn reach(&self, count: &AtomicUsize, n: usize, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                let changed = self.changed.notified();
                if count.load(Ordering::SeqCst) >= n {
                    return;
                }
                changed.await;
            }
        })
        .await
        .is_ok()
    }
}

/// How a server treats its connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// HTTP/1.1: close the connection after each response.
    pub close_after_each: bool,
    /// HTTP/2: the most streams a client may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`);
    /// hyper's default (200) if `None`.
    pub max_streams: Option<u32>,
}

pub struct HttpServer {
    pub name: &'static str,
    pub address: SocketAddr,
    pub stats: Arc<Stats>,
    graceful: CancellationToken,
    tasks: JoinSet<()>,
}

impl HttpServer {
    pub async fn start(name: &'static str) -> std::io::Result<HttpServer> {
        Self::start_with(name, "127.0.0.1:0".parse().unwrap(), Options::default()).await
    }

    /// HTTP/1.1 connections are closed after each response.
    pub async fn start_closing_after_each(name: &'static str) -> std::io::Result<HttpServer> {
        let options = Options {
            close_after_each: true,
            ..Options::default()
        };
        Self::start_with(name, "127.0.0.1:0".parse().unwrap(), options).await
    }

    /// HTTP/2 clients may have `n` streams open at once (zero: none).
    pub async fn start_with_max_streams(name: &'static str, n: u32) -> std::io::Result<HttpServer> {
        let options = Options {
            max_streams: Some(n),
            ..Options::default()
        };
        Self::start_with(name, "127.0.0.1:0".parse().unwrap(), options).await
    }

    async fn start_with(
        name: &'static str,
        address: SocketAddr,
        options: Options,
    ) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let graceful = CancellationToken::new();
        let mut tasks = JoinSet::new();
        {
            let stats = stats.clone();
            let graceful = graceful.clone();
            tasks.spawn(async move {
                // Dropped with this task: aborts every connection.
                let mut connections = JoinSet::new();
                loop {
                    let (socket, _) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(_) => break,
                        },
                        _ = graceful.cancelled() => break,
                    };
                    stats.accepted.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve(
                        name,
                        socket,
                        stats.clone(),
                        options,
                        graceful.clone(),
                    ));
                }
                // Stopping gracefully: the connections finish what they do, then end.
                while connections.join_next().await.is_some() {}
            });
        }
        Ok(HttpServer {
            name,
            address,
            stats,
            graceful,
            tasks,
        })
    }

    pub fn accepted(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Stops at once: the listener and every connection are dropped.
    pub async fn kill(mut self) {
        self.tasks.shutdown().await;
    }

    /// Stops gracefully: no new connections, HTTP/2 connections get GOAWAY, requests in flight
    /// are answered.
    pub async fn stop(mut self) {
        self.graceful.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Serves one connection (TCP, Unix, in-memory or TLS) as a server named `name` with
/// `options` does, until `graceful` is cancelled: then it stops gracefully (HTTP/2: GOAWAY).
pub async fn serve_one_with<S>(
    name: &'static str,
    socket: S,
    options: Options,
    graceful: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    serve(name, socket, Arc::new(Stats::default()), options, graceful).await
}

/// Serves one connection (TCP, Unix, in-memory or TLS) as a server named `name` does.
pub async fn serve_one<S>(name: &'static str, socket: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stats = Arc::new(Stats::default());
    serve(
        name,
        socket,
        stats,
        Options::default(),
        CancellationToken::new(),
    )
    .await
}

async fn serve<S>(
    name: &'static str,
    socket: S,
    stats: Arc<Stats>,
    options: Options,
    graceful: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // This connection's graceful shutdown, begun by `/goaway-hang`.
    let goaway = CancellationToken::new();
    let service_stats = stats.clone();
    let service_goaway = goaway.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let stats = service_stats.clone();
        let goaway = service_goaway.clone();
        async move {
            let now = stats.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
            stats.max_concurrent.fetch_max(now, Ordering::SeqCst);
            stats.requests.fetch_add(1, Ordering::SeqCst);
            stats.changed.notify_waiters();
            let path = request.uri().path().to_owned();
            let host = request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if path == "/drain" {
                // Answers at once; the request body is read on, to its end.
                let mut body = request.into_body();
                tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
            } else {
                // Read the request body whole.
                let _ = request.into_body().collect().await;
            }
            match path.as_str() {
                "/slow" => tokio::time::sleep(Duration::from_millis(300)).await,
                "/hang" => std::future::pending::<()>().await,
                "/goaway-hang" => {
                    goaway.cancel();
                    std::future::pending::<()>().await
                }
                "/goaway-gate" => {
                    goaway.cancel();
                    stats.gate.notified().await;
                }
                // `/together/N/...`: answered once N requests are in the server at once (it
                // counts them all, this one included).
                together if together.starts_with("/together/") => {
                    let n: usize = together["/together/".len()..]
                        .split('/')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .expect("/together/N/...: N a number");
                    loop {
                        let changed = stats.changed.notified();
                        if stats.concurrent.load(Ordering::SeqCst) >= n
                            || stats.max_concurrent.load(Ordering::SeqCst) >= n
                        {
                            break;
                        }
                        changed.await;
                    }
                }
                _ => {}
            }
            stats.concurrent.fetch_sub(1, Ordering::SeqCst);
            if path == "/stall-body" {
                let first = Bytes::from(format!("{name} {path}"));
                return Ok::<_, Infallible>(hyper::Response::new(Either::Right(Stalling(Some(
                    first,
                )))));
            }
            let mut body = format!("{name} {path}");
            if path == "/host" {
                body = format!("{name} host {host}");
            }
            if path.starts_with("/big") {
                // Padding after a newline: 256 KiB read by the client in many chunks.
                body.push('\n');
                body.push_str(&".".repeat(256 * 1024));
            }
            Ok::<_, Infallible>(hyper::Response::new(Either::Left(Full::new(Bytes::from(
                body,
            )))))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if options.close_after_each {
        builder.http1().keep_alive(false);
    }
    if let Some(n) = options.max_streams {
        builder.http2().max_concurrent_streams(n);
    }
    let connection = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = async { tokio::select! {
            _ = graceful.cancelled() => {}
            _ = goaway.cancelled() => {}
        } } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
    stats.ended.fetch_add(1, Ordering::SeqCst);
    stats.changed.notify_waiters();
}

/// A response body that gives its first bytes, then never ends.
struct Stalling(Option<Bytes>);

impl hyper::body::Body for Stalling {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
            None => Poll::Pending,
        }
    }
}

/// A server that accepts connections and never sends a byte; it holds them until dropped.
pub struct SilentServer {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        SilentServer { address, task }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A GET request with an empty body.
pub fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path).body(Empty::new()).unwrap()
}

/// The whole body of a response, as text.
pub async fn text<B>(response: http::Response<B>) -> String
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}
