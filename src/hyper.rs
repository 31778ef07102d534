//! HTTP/1.1 and HTTP/2 connections over TCP with hyper 1.x (feature `hyper`, on by default).
//!
//! [`HttpConnector`] is a connector for [`PersistentLayer`](crate::PersistentLayer): a tower
//! `Service` from a [`SocketAddr`] to an [`HttpConnection`]. Each connection dials TCP (with
//! `TCP_NODELAY`), performs the HTTP handshake, and spawns hyper's connection task on the current
//! tokio runtime.
//!
//! - **Connect timeout** (default 10 s): one deadline for the TCP connect and the handshake. For
//!   HTTP/2 the handshake includes the server's connection preface, a whole SETTINGS frame: a
//!   server that accepts and never speaks, or sends a byte or a frame header and goes silent, is
//!   cut off and the attempt fails with an error that [`is_timeout`](HttpConnectError::is_timeout);
//!   a first frame that is not SETTINGS fails the attempt at once, with an error that says so.
//!   HTTP/1.1 has no server greeting: there the timeout covers the TCP connect, and a server
//!   that hangs later is a matter for a request timeout (`tower::timeout`).
//! - **Closed when**: hyper's connection task ends for any reason (the peer closed the socket,
//!   sent GOAWAY, an I/O or protocol error, or our [`close`](Closable::close)).
//!   [`close_finished`](Closable::close_finished) resolves then, so the persistent connection
//!   notices and reconnects, even while idle.
//! - **Closed gracefully** ([`closed_gracefully`](Closable::closed_gracefully)): the server
//!   answered on the connection and then ended it in good order (`Connection: close`, GOAWAY, a
//!   keep-alive limit, an idle timeout), before any close of ours. The persistent connection
//!   replaces such a connection at once, instead of waiting out the retry delay.
//! - **Graceful close**: [`close`](Closable::close) stops new requests at once (`poll_ready`
//!   fails), lets the requests in flight finish, bodies included, for up to the
//!   [`close_timeout`](HttpConnector::close_timeout) (default 5 s), then closes the socket.
//!
//! # Sharing one HTTP/1.1 connection
//!
//! HTTP/1.1 carries one request at a time. All clones of an HTTP/1.1 [`HttpConnection`] share one
//! sender and one permit: `poll_ready` first takes the permit (waiting while another clone holds
//! it), then waits until hyper can take a request (the previous response is complete); `call`
//! sends, and the permit is given back when the response head arrives (or the response future
//! is dropped). Holding it until then means the next clone never sees hyper ready while hyper
//! has yet to take this request from its queue; should hyper hand a request back unsent all the
//! same, it is sent again once hyper is ready, so a request that `poll_ready` admitted never
//! fails for a readiness race. So many clones, and many clones of a `Persistent` handle, can use
//! one connection without breaking the `poll_ready` contract: readiness is reserved by one clone
//! at a time, in turn, and a clone that is ready but never calls holds up the others (as
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// The shortest HTTP/2 keep-alive interval and timeout; shorter ones are held to it.
pub const MIN_KEEP_ALIVE: Duration = Duration::from_millis(1);

/// The longest HTTP/2 keep-alive interval and timeout; longer ones are held to it.
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(365 * 86_400);

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

    /// The deadline for the TCP connect and the handshake (for HTTP/2, until the server's
    /// SETTINGS frame arrives). Default: [`DEFAULT_CONNECT_TIMEOUT`] (10 s). Every value is
    /// accepted: zero fails every connect that does not finish at once, `Duration::MAX` is no
    /// deadline.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a graceful [`close`](Closable::close) waits for requests in flight before it
    /// closes the socket anyway. Default: [`DEFAULT_CLOSE_TIMEOUT`] (5 s), within the persistent
    /// connection's own [`close_timeout`](crate::PersistentLayer::close_timeout) (10 s), which
    /// bounds the whole close. Every value is accepted: zero closes at once, `Duration::MAX`
    /// waits for every request (the persistent connection's close timeout still applies).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// HTTP/2 only: send a PING every `interval` (even while idle) and close the connection if
    /// the answer takes longer than `timeout`, so that a server that stops answering is noticed
    /// and replaced. Default: off.
    ///
    /// Every value is accepted: both are held within [`MIN_KEEP_ALIVE`] (1 ms, so that zero
    /// cannot become a flood of PINGs) and [`MAX_KEEP_ALIVE`] (one year, beyond which hyper's
    /// timer could not represent the deadline).
    pub fn http2_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        let bound = |d: Duration| d.clamp(MIN_KEEP_ALIVE, MAX_KEEP_ALIVE);
        self.keep_alive = Some((bound(interval), bound(timeout)));
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
    NotSettings(u8),
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
            ConnectErrorKind::NotSettings(frame_type) => write!(
                f,
                "server's first http/2 frame was not SETTINGS (frame type {frame_type:#04x})"
            ),
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
        let handshake =
            |e: ::hyper::Error| HttpConnectError::new(ConnectErrorKind::Handshake, Some(e.into()));
        let shared = Arc::new(ConnShared {
            peer: address,
            version: self.version,
            closing: Signal::default(),
            finished: Signal::default(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            served: AtomicBool::new(false),
            ended_by_peer: AtomicBool::new(false),
        });
        let greeted = Arc::new(Greeting::default());
        let io = TokioIo::new(Watched {
            inner: stream,
            preface: (self.version == Version::Http2).then(|| Preface::new(greeted.clone())),
            // An HTTP/1.1 server sends nothing but responses: its first byte means it served.
            // (HTTP/2 servers send frames of their own; there a response head counts.)
            first_byte: (self.version == Version::Http1).then(|| shared.clone()),
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
            // The server's connection preface: a whole SETTINGS frame.
            tokio::select! {
                _ = greeted.done.wait() => {
                    if let Some(frame_type) = greeted.not_settings() {
                        return Err(HttpConnectError::new(
                            ConnectErrorKind::NotSettings(frame_type),
                            None,
                        ));
                    }
                }
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
        Some(Ok(())) => {
            // The peer ended it in good order (EOF between responses, Connection: close,
            // GOAWAY), before any close of ours.
            shared.ended_by_peer.store(true, Ordering::Release);
            tracing::debug!(peer = %shared.peer, "http connection ended");
        }
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
    /// The server answered on this connection: for HTTP/2 a response head arrived, for
    /// HTTP/1.1 any byte (which hyper may take in before the caller sees the response).
    served: AtomicBool,
    /// hyper's connection ended without error before any close of ours.
    ended_by_peer: AtomicBool,
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

    /// True when the connection served at least one response and hyper's connection then
    /// ended without error before any close of ours: the server closed it in good order
    /// (`Connection: close`, GOAWAY, a keep-alive limit, an idle timeout).
    fn closed_gracefully(&self) -> bool {
        self.shared.served.load(Ordering::Acquire)
            && self.shared.ended_by_peer.load(Ordering::Acquire)
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
                Box::pin(send_http1(send.clone(), turn, request))
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

/// How many times a request that hyper handed back unsent is offered again (each time after
/// the connection said it was ready again).
const HTTP1_RESENDS: usize = 8;

/// Sends `request` on an HTTP/1.1 connection, holding this clone's turn until the response head
/// arrives: the next clone cannot take the turn while hyper has yet to take this request from
/// its queue (hyper withdraws its ready flag when it does). If hyper hands the request back
/// unsent all the same (it was not ready), waits until it is and sends again; so a request that
/// `poll_ready` admitted never fails for a readiness race.
async fn send_http1<B: Body + 'static>(
    send: Arc<Mutex<http1::SendRequest<B>>>,
    turn: tokio::sync::OwnedSemaphorePermit,
    mut request: http::Request<B>,
) -> ::hyper::Result<http::Response<Incoming>> {
    let _turn = turn;
    let lock = || send.lock().unwrap_or_else(|e| e.into_inner());
    let mut resends = 0;
    loop {
        let sent = lock().try_send_request(request);
        let mut error = match sent.await {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        match error.take_message() {
            Some(unsent) if resends < HTTP1_RESENDS => {
                resends += 1;
                request = unsent;
                // Ready again, or closed: then the request fails with the connection's error.
                std::future::poll_fn(|cx| lock().poll_ready(cx)).await?;
            }
            _ => return Err(error.into_error()),
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
            Ok(response) => {
                if let Some(in_flight) = &in_flight {
                    in_flight.0.served.store(true, Ordering::Release);
                }
                Ok(response.map(|body| ResponseBody {
                    inner: body,
                    in_flight,
                }))
            }
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

/// What the server's HTTP/2 connection preface turned out to be.
#[derive(Default)]
struct Greeting {
    /// Set once the first frame has been read whole (or found not to be SETTINGS).
    done: Signal,
    /// The type of a first frame that was not SETTINGS, plus one; zero if it was.
    not_settings: AtomicUsize,
}

impl Greeting {
    fn not_settings(&self) -> Option<u8> {
        match self.not_settings.load(Ordering::Acquire) {
            0 => None,
            n => Some((n - 1) as u8),
        }
    }
}

/// Follows the bytes the server sends until its first HTTP/2 frame is whole. The server's
/// connection preface is a SETTINGS frame (type 4, on stream 0, without ACK) and must come first
/// (RFC 9113, 3.4); a byte or a frame header alone is not a greeting.
struct Preface {
    greeting: Arc<Greeting>,
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes still to come, once the header is whole.
    payload_left: usize,
}

impl Preface {
    fn new(greeting: Arc<Greeting>) -> Self {
        Preface {
            greeting,
            header: [0; 9],
            header_len: 0,
            payload_left: 0,
        }
    }

    /// Takes in `bytes` read from the server; true once the first frame is accounted for.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.header_len < self.header.len() {
            let n = bytes.len().min(self.header.len() - self.header_len);
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len < self.header.len() {
                return false;
            }
            let [l0, l1, l2, frame_type, flags, s0, s1, s2, s3] = self.header;
            let stream = u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]);
            if frame_type != 0x4 || flags & 0x1 != 0 || stream != 0 {
                self.greeting
                    .not_settings
                    .store(usize::from(frame_type) + 1, Ordering::Release);
                self.greeting.done.set();
                return true;
            }
            self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        }
        self.payload_left = self.payload_left.saturating_sub(bytes.len());
        if self.payload_left == 0 {
            self.greeting.done.set();
            return true;
        }
        false
    }
}

pin_project! {
    /// The TCP stream, watching the server's HTTP/2 preface until it is whole, or the first
    /// byte of an HTTP/1.1 server.
    struct Watched {
        #[pin]
        inner: TcpStream,
        preface: Option<Preface>,
        first_byte: Option<Arc<ConnShared>>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if let Some(preface) = this.preface {
            if preface.feed(read) {
                *this.preface = None;
            }
        }
        if !read.is_empty() {
            if let Some(shared) = this.first_byte.take() {
                shared.served.store(true, Ordering::Release);
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
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
