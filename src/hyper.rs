//! HTTP/1.1 and HTTP/2 connections over TCP with hyper 1.x (feature `hyper`, on by default).
//!
//! [`HttpConnector`] is a connector for [`PersistentLayer`](crate::PersistentLayer): a tower
//! `Service` from a [`SocketAddr`] to an [`HttpConnection`]. Each connection dials TCP (with
//! `TCP_NODELAY`), performs the HTTP handshake, and spawns hyper's connection task on the current
//! tokio runtime.
//!
//! - **Connect timeout** (default 10 s): one deadline for the TCP connect and the handshake. For
//!   HTTP/2 the handshake includes the server's connection preface (its first SETTINGS frame), so
//!   a server that accepts and never speaks is cut off and the attempt fails with an error that
//!   [`is_timeout`](HttpConnectError::is_timeout). HTTP/1.1 has no server greeting: there the
//!   timeout covers the TCP connect, and a server that hangs later is a matter for a request
//!   timeout (`tower::timeout`).
//! - **Closed when**: hyper's connection task ends for any reason (the peer closed the socket,
//!   sent GOAWAY, an I/O or protocol error, or our [`close`](Closable::close)).
//!   [`close_finished`](Closable::close_finished) resolves then, so the persistent connection
//!   notices and reconnects, even while idle.
//! - **Graceful close**: [`close`](Closable::close) stops new requests at once (`poll_ready`
//!   fails), lets the requests in flight finish, bodies included, for up to the
//!   [`close_timeout`](HttpConnector::close_timeout) (default 5 s), then closes the socket.
//!
//! # Sharing one HTTP/1.1 connection
//!
//! HTTP/1.1 carries one request at a time. All clones of an HTTP/1.1 [`HttpConnection`] share one
//! sender and one permit: `poll_ready` first takes the permit (waiting while another clone holds
//! it), then waits until hyper can take a request (the previous response is complete); `call`
//! sends and gives the permit back. So many clones, and many clones of a `Persistent` handle, can
//! use one connection without breaking the `poll_ready` contract: readiness is reserved by one
//! clone at a time, in turn, and a clone that is ready but never calls holds up the others (as
//! tower's `Buffer` slot would). HTTP/2 senders are cloned and multiplex requests.
//!
//! # Requests
//!
//! HTTP/2 requests whose URI has no scheme or authority get `http` and the peer address; HTTP/1.1
//! requests without a `Host` header get one from the URI's authority, or else the peer address.
//! Responses carry a [`ResponseBody`], which counts as in flight until it is read to its end or
//! dropped.
//!
//! # Examples
//!
//! ```
//! use std::net::SocketAddr;
//! use http_body_util::Empty;
//! use bytes::Bytes;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_persistent::PersistentLayer;
//! use tower_persistent::hyper::HttpConnector;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! # let address = listener.local_addr().unwrap();
//! # tokio::spawn(async move {
//! #     let (socket, _) = listener.accept().await.unwrap();
//! #     let service = hyper::service::service_fn(|_| async {
//! #         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from("hi"))))
//! #     });
//! #     hyper::server::conn::http1::Builder::new()
//! #         .serve_connection(hyper_util::rt::TokioIo::new(socket), service).await.unwrap();
//! # });
//! let get_address = service_fn(move |()| async move { Ok::<SocketAddr, std::io::Error>(address) });
//! let client = ServiceBuilder::new()
//!     .layer(PersistentLayer::new("web", get_address))
//!     .service(HttpConnector::http1());
//!
//! let request = http::Request::get("/").body(Empty::<Bytes>::new()).unwrap();
//! let response = client.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! // A response counts as in flight until its body is read or dropped; closing waits for it.
//! drop(response);
//! client.close().await;
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ::hyper::body::{Body, Incoming};
use ::hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use crate::Closable;
use crate::error::{BoxError, ConnectionClosed};
use crate::signal::Signal;

/// The HTTP version a connector speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http1,
    Http2,
}

/// Dials TCP and makes an HTTP/1.1 or HTTP/2 [`HttpConnection`]; a connector for
/// [`PersistentLayer`](crate::PersistentLayer).
///
/// `B` is the request body type.
pub struct HttpConnector<B> {
    version: Version,
    connect_timeout: Duration,
    close_timeout: Duration,
    keep_alive: Option<(Duration, Duration)>,
    _body: PhantomData<fn(B)>,
}

impl<B> Clone for HttpConnector<B> {
    fn clone(&self) -> Self {
        HttpConnector { ..*self }
    }
}

impl<B> fmt::Debug for HttpConnector<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConnector")
            .field("version", &self.version)
            .field("connect_timeout", &self.connect_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

/// The default deadline for the TCP connect and the handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a graceful close waits for requests in flight.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl<B> HttpConnector<B> {
    fn new(version: Version) -> Self {
        HttpConnector {
            version,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            keep_alive: None,
            _body: PhantomData,
        }
    }

    /// A connector for HTTP/1.1 (one request at a time per connection; see the module docs).
    pub fn http1() -> Self {
        Self::new(Version::Http1)
    }

    /// A connector for HTTP/2 with prior knowledge (cleartext `h2c`), as gRPC uses.
    pub fn http2() -> Self {
        Self::new(Version::Http2)
    }

    /// The deadline for the TCP connect and the handshake (for HTTP/2, until the server's first
    /// frame arrives). Default: [`DEFAULT_CONNECT_TIMEOUT`] (10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a graceful [`close`](Closable::close) waits for requests in flight before it
    /// closes the socket anyway. Default: [`DEFAULT_CLOSE_TIMEOUT`] (5 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// HTTP/2 only: send a PING every `interval` (even while idle) and close the connection if
    /// the answer takes longer than `timeout`, so that a server that stops answering is noticed
    /// and replaced. Default: off.
    pub fn http2_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }
}

/// Why an [`HttpConnector`] could not connect.
#[derive(Debug)]
pub struct HttpConnectError {
    kind: ConnectErrorKind,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectErrorKind {
    Tcp,
    Handshake,
    ClosedDuringHandshake,
    TimedOut(Duration),
}

impl HttpConnectError {
    fn new(kind: ConnectErrorKind, source: Option<BoxError>) -> Self {
        HttpConnectError { kind, source }
    }

    /// The connect timeout elapsed before the connection was ready.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ConnectErrorKind::TimedOut(_))
    }
}

impl fmt::Display for HttpConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ConnectErrorKind::Tcp => f.write_str("tcp connect failed"),
            ConnectErrorKind::Handshake => f.write_str("http handshake failed"),
            ConnectErrorKind::ClosedDuringHandshake => {
                f.write_str("server closed the connection during the http/2 handshake")
            }
            ConnectErrorKind::TimedOut(after) => {
                write!(f, "connect timed out after {after:?}")
            }
        }
    }
}

impl StdError for HttpConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl<B> Service<SocketAddr> for HttpConnector<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = HttpConnection<B>;
    type Error = HttpConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpConnection<B>, HttpConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HttpConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, address: SocketAddr) -> Self::Future {
        let config = self.clone();
        Box::pin(async move {
            let deadline = config.connect_timeout;
            match tokio::time::timeout(deadline, config.connect(address)).await {
                Ok(result) => result,
                Err(_) => Err(HttpConnectError::new(
                    ConnectErrorKind::TimedOut(deadline),
                    None,
                )),
            }
        })
    }
}

impl<B> HttpConnector<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn connect(self, address: SocketAddr) -> Result<HttpConnection<B>, HttpConnectError> {
        let tcp = |e: io::Error| HttpConnectError::new(ConnectErrorKind::Tcp, Some(e.into()));
        let stream = TcpStream::connect(address).await.map_err(tcp)?;
        stream.set_nodelay(true).map_err(tcp)?;
        let greeted = Signal::default();
        let io = TokioIo::new(FirstRead {
            inner: stream,
            greeted: Some(greeted.clone()),
        });
        let handshake =
            |e: ::hyper::Error| HttpConnectError::new(ConnectErrorKind::Handshake, Some(e.into()));

        let shared = Arc::new(ConnShared {
            peer: address,
            version: self.version,
            closing: Signal::default(),
            finished: Signal::default(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        let (sender, driver): (Sender<B>, ConnDriver) = match self.version {
            Version::Http1 => {
                let (send, conn) = http1::handshake(io).await.map_err(handshake)?;
                let permits = Arc::new(Semaphore::new(1));
                let sender = Sender::Http1 {
                    send: Arc::new(Mutex::new(send)),
                    permits: PollSemaphore::new(permits.clone()),
                    permit: None,
                };
                (
                    sender,
                    Box::pin(async move { conn.await.map_err(BoxError::from) }),
                )
            }
            Version::Http2 => {
                let mut builder = http2::Builder::new(TokioExecutor::new());
                if let Some((interval, timeout)) = self.keep_alive {
                    builder
                        .timer(TokioTimer::new())
                        .keep_alive_interval(interval)
                        .keep_alive_timeout(timeout)
                        .keep_alive_while_idle(true);
                }
                let (send, conn) = builder.handshake(io).await.map_err(handshake)?;
                (
                    Sender::Http2(send),
                    Box::pin(async move { conn.await.map_err(BoxError::from) }),
                )
            }
        };

        let task = tokio::spawn(drive(
            driver,
            shared.clone(),
            self.close_timeout,
            sender.semaphore(),
        ));
        // Until the connection is handed over, dropping this future (the connect timeout) or
        // failing ends the connection task.
        let mut guard = AbortOnDrop(Some(task.abort_handle()));
        if self.version == Version::Http2 {
            // The server's connection preface: its first frame.
            tokio::select! {
                _ = greeted.wait() => {}
                _ = shared.finished.wait() => {
                    return Err(HttpConnectError::new(ConnectErrorKind::ClosedDuringHandshake, None));
                }
            }
        }
        guard.0 = None;
        Ok(HttpConnection { shared, sender })
    }
}

/// Aborts a task when dropped, unless disarmed (set to `None`).
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

type ConnDriver = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// Drives hyper's connection until it ends, or until a graceful close finishes.
async fn drive(
    mut conn: ConnDriver,
    shared: Arc<ConnShared>,
    close_timeout: Duration,
    permits: Option<Arc<Semaphore>>,
) {
    let _finished = SetOnDrop(shared.finished.clone());
    // However it ends, clones waiting for the HTTP/1.1 permit learn that it is over.
    let _permits = CloseOnDrop(permits.clone());
    let ended = tokio::select! {
        result = &mut conn => Some(result),
        _ = shared.closing.wait() => None,
    };
    match ended {
        Some(Ok(())) => tracing::debug!(peer = %shared.peer, "http connection ended"),
        Some(Err(error)) => tracing::debug!(peer = %shared.peer, %error, "http connection failed"),
        None => {
            // Graceful close: no new requests (poll_ready fails from now on); let those in
            // flight finish, within the close timeout.
            if let Some(permits) = &permits {
                permits.close();
            }
            let drained = tokio::time::timeout(close_timeout, shared.wait_idle());
            tokio::select! {
                _ = &mut conn => {}
                _ = drained => {}
            }
            tracing::debug!(peer = %shared.peer, "http connection closed");
        }
    }
    // Dropping `conn` closes the socket.
}

struct CloseOnDrop(Option<Arc<Semaphore>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(permits) = &self.0 {
            permits.close();
        }
    }
}

struct SetOnDrop(Signal);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

struct ConnShared {
    peer: SocketAddr,
    version: Version,
    /// Set by `close`: no new requests.
    closing: Signal,
    /// Set when hyper's connection task has ended and the socket is closed.
    finished: Signal,
    /// Requests sent whose response (body included) is not finished.
    in_flight: AtomicUsize,
    idle: Notify,
}

impl ConnShared {
    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One request in flight; released when the response body ends or is dropped.
struct InFlight(Arc<ConnShared>);

impl InFlight {
    fn new(shared: &Arc<ConnShared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

enum Sender<B> {
    Http1 {
        send: Arc<Mutex<http1::SendRequest<B>>>,
        permits: PollSemaphore,
        /// This clone's turn to send, taken in `poll_ready`, given back in `call`.
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    Http2(http2::SendRequest<B>),
}

impl<B> Sender<B> {
    fn semaphore(&self) -> Option<Arc<Semaphore>> {
        match self {
            Sender::Http1 { permits, .. } => Some(permits.clone_inner()),
            Sender::Http2(_) => None,
        }
    }
}

impl<B> Clone for Sender<B> {
    fn clone(&self) -> Self {
        match self {
            Sender::Http1 { send, permits, .. } => Sender::Http1 {
                send: send.clone(),
                permits: permits.clone(),
                permit: None,
            },
            Sender::Http2(send) => Sender::Http2(send.clone()),
        }
    }
}

/// An HTTP/1.1 or HTTP/2 connection made by [`HttpConnector`]: a cloneable
/// `Service<http::Request<B>>` and [`Closable`].
///
/// Clones share the connection; readiness is per clone. See the [module docs](self).
pub struct HttpConnection<B> {
    shared: Arc<ConnShared>,
    sender: Sender<B>,
}

impl<B> Clone for HttpConnection<B> {
    fn clone(&self) -> Self {
        HttpConnection {
            shared: self.shared.clone(),
            sender: self.sender.clone(),
        }
    }
}

impl<B> fmt::Debug for HttpConnection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConnection")
            .field("peer", &self.shared.peer)
            .field("version", &self.shared.version)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<B> HttpConnection<B> {
    /// The address this connection is connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// Whether this is an HTTP/2 connection.
    pub fn is_http2(&self) -> bool {
        self.shared.version == Version::Http2
    }

    /// Requests sent on this connection whose responses are not finished yet.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }
}

impl<B> Closable for HttpConnection<B> {
    fn close(&self) -> impl Future<Output = ()> + Send {
        self.shared.closing.set();
        self.shared.finished.wait()
    }

    fn is_closed(&self) -> bool {
        self.shared.closing.is_set() || self.shared.finished.is_set()
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        self.shared.finished.wait()
    }
}

impl<B> Service<http::Request<B>> for HttpConnection<B>
where
    B: Body + Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.is_closed() {
            return Poll::Ready(Err(ConnectionClosed::new().into()));
        }
        match &mut self.sender {
            Sender::Http1 {
                send,
                permits,
                permit,
            } => {
                if permit.is_none() {
                    match ready!(permits.poll_acquire(cx)) {
                        Some(p) => *permit = Some(p),
                        None => return Poll::Ready(Err(ConnectionClosed::new().into())),
                    }
                }
                let polled = send
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .poll_ready(cx);
                if let Poll::Ready(Err(_)) = polled {
                    // The connection is gone: give the turn back.
                    *permit = None;
                }
                polled.map_err(Into::into)
            }
            Sender::Http2(send) => send.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, mut request: http::Request<B>) -> ResponseFuture {
        let peer = self.shared.peer;
        let in_flight = InFlight::new(&self.shared);
        let response: Pin<
            Box<dyn Future<Output = ::hyper::Result<http::Response<Incoming>>> + Send>,
        > = match &mut self.sender {
            Sender::Http1 { send, permit, .. } => {
                let turn = permit
                    .take()
                    .expect("HttpConnection::call was called before poll_ready returned Ready");
                if !request.headers().contains_key(http::header::HOST) {
                    let host = request
                        .uri()
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| peer.to_string());
                    if let Ok(value) = http::HeaderValue::from_str(&host) {
                        request.headers_mut().insert(http::header::HOST, value);
                    }
                }
                let sent = send
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .send_request(request);
                drop(turn);
                Box::pin(sent)
            }
            Sender::Http2(send) => {
                if request.uri().scheme().is_none() || request.uri().authority().is_none() {
                    let mut parts = request.uri().clone().into_parts();
                    parts.scheme.get_or_insert(http::uri::Scheme::HTTP);
                    if parts.authority.is_none() {
                        parts.authority = http::uri::Authority::try_from(peer.to_string()).ok();
                    }
                    if parts.path_and_query.is_none() {
                        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
                    }
                    if let Ok(uri) = http::Uri::from_parts(parts) {
                        *request.uri_mut() = uri;
                    }
                }
                Box::pin(send.send_request(request))
            }
        };
        ResponseFuture {
            response,
            in_flight: Some(in_flight),
        }
    }
}

/// The response future of [`HttpConnection`].
pub struct ResponseFuture {
    response: Pin<Box<dyn Future<Output = ::hyper::Result<http::Response<Incoming>>> + Send>>,
    in_flight: Option<InFlight>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<ResponseBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.response.as_mut().poll(cx));
        let in_flight = self.in_flight.take();
        Poll::Ready(match response {
            Ok(response) => Ok(response.map(|body| ResponseBody {
                inner: body,
                in_flight,
            })),
            Err(error) => Err(error.into()),
        })
    }
}

pin_project! {
    /// The body of a response of [`HttpConnection`]: hyper's body, counted as in flight until it
    /// ends or is dropped (a graceful close waits for it).
    pub struct ResponseBody {
        #[pin]
        inner: Incoming,
        in_flight: Option<InFlight>,
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = ::hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            // The end, or an error: the request is no longer in flight.
            this.in_flight.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// Signals when the first bytes arrive from the server.
    struct FirstRead {
        #[pin]
        inner: TcpStream,
        greeted: Option<Signal>,
    }
}

impl AsyncRead for FirstRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            if let Some(greeted) = this.greeted.take() {
                greeted.set();
            }
        }
        polled
    }
}

impl AsyncWrite for FirstRead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
