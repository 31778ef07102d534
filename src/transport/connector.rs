//! [`HttpConnector`]: dials TCP, performs the HTTP handshake and makes an
//! [`HttpConnection`](super::HttpConnection).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Body;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use super::connection::{ConnDriver, HttpConnection, Sender};
use super::io::{Greeting, Preface, Watched};
use super::shared::{ConnShared, Version};
use crate::error::{BoxError, KindError};

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

/// The default deadline of one connection's TCP connect and HTTP handshake (for HTTP/2, up to
/// the server's SETTINGS frame).
///
/// It nests inside the persistent connection's attempt deadline,
/// [`PersistentLayer::connect_timeout`](crate::PersistentLayer::connect_timeout) (20 s by
/// default), which also covers the address lookup: the sooner of the two ends an attempt.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
            connect_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
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
    /// SETTINGS frame arrives). Default: [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s), within the layer's
    /// [`connect_timeout`](crate::PersistentLayer::connect_timeout). Every value is
    /// accepted: zero fails every connect that does not finish at once, `Duration::MAX` is no
    /// deadline.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a graceful [`close`](crate::Closable::close) waits for requests in flight before it
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

/// Why an [`HttpConnector`] could not connect. Cheap to clone (the cause is shared).
#[derive(Clone)]
pub struct HttpConnectError(KindError<ConnectErrorKind>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectErrorKind {
    Resolve,
    Tcp,
    Handshake,
    ClosedDuringHandshake,
    NotSettings(u8),
    TimedOut(Duration),
}

impl HttpConnectError {
    fn new(kind: ConnectErrorKind, source: Option<BoxError>) -> Self {
        HttpConnectError(KindError::new(kind, source))
    }

    /// The connect timeout elapsed before the connection was ready.
    pub fn is_timeout(&self) -> bool {
        matches!(self.0.kind, ConnectErrorKind::TimedOut(_))
    }
}

impl fmt::Debug for HttpConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug("HttpConnectError", f)
    }
}

impl fmt::Display for HttpConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ConnectErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConnectErrorKind::Resolve => f.write_str("cannot resolve the address"),
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
        self.0.source()
    }
}

/// What an [`HttpConnector`] dials: a [`SocketAddr`]; a `host:port` name (`String` or
/// `&'static str`, such as `"replica-3.orders.internal:8080"`), resolved at connect time, each of
/// its addresses tried in turn; or an [`http::Uri`] (`http://host:port`, port 80 by default).
///
/// A name is also what requests name as their authority (the HTTP/1.1 `Host` header, the
/// HTTP/2 `:authority`) when they do not name one themselves. Sealed: implemented here only.
pub trait Address: sealed::Sealed + Send + 'static {
    /// The addresses to try in turn and the authority, resolved.
    #[doc(hidden)]
    fn resolve(self) -> impl Future<Output = Result<Resolved, HttpConnectError>> + Send;
}

/// An [`Address`] resolved: the socket addresses to try, in turn, and the authority.
#[doc(hidden)]
#[derive(Debug)]
pub struct Resolved {
    addresses: Vec<SocketAddr>,
    authority: Option<String>,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::net::SocketAddr {}
    impl Sealed for String {}
    impl Sealed for &'static str {}
    impl Sealed for http::Uri {}
}

impl Address for SocketAddr {
    async fn resolve(self) -> Result<Resolved, HttpConnectError> {
        Ok(Resolved {
            addresses: vec![self],
            authority: None,
        })
    }
}

impl Address for String {
    async fn resolve(self) -> Result<Resolved, HttpConnectError> {
        resolve_name(self).await
    }
}

impl Address for &'static str {
    async fn resolve(self) -> Result<Resolved, HttpConnectError> {
        resolve_name(self.to_owned()).await
    }
}

impl Address for http::Uri {
    async fn resolve(self) -> Result<Resolved, HttpConnectError> {
        let unsupported =
            |why: String| HttpConnectError::new(ConnectErrorKind::Resolve, Some(why.into()));
        match self.scheme_str() {
            None | Some("http") => {}
            Some(other) => {
                return Err(unsupported(format!(
                    "scheme {other} is not supported: {self}"
                )));
            }
        }
        let Some(authority) = self.authority() else {
            return Err(unsupported(format!("no host in {self}")));
        };
        let port = authority.port_u16().unwrap_or(80);
        resolve_name(format!("{}:{port}", authority.host())).await
    }
}

/// Resolves `host_port`, keeping the resolver's order (its preference) to try them in.
async fn resolve_name(host_port: String) -> Result<Resolved, HttpConnectError> {
    let resolve = |e: io::Error| HttpConnectError::new(ConnectErrorKind::Resolve, Some(e.into()));
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(&host_port)
        .await
        .map_err(resolve)?
        .collect();
    if addresses.is_empty() {
        return Err(resolve(io::Error::other(format!(
            "{host_port} resolved to no address"
        ))));
    }
    Ok(Resolved {
        addresses,
        authority: Some(host_port),
    })
}

impl<B, A> Service<A> for HttpConnector<B>
where
    A: Address,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = HttpConnection<B>;
    type Error = HttpConnectError;
    type Future = Connecting<B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HttpConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, address: A) -> Self::Future {
        let config = self.clone();
        Connecting(Box::pin(async move {
            let deadline = config.connect_timeout;
            let connecting = async move {
                let resolved = address.resolve().await?;
                config.connect(resolved).await
            };
            match tokio::time::timeout(deadline, connecting).await {
                Ok(result) => result,
                Err(_) => Err(HttpConnectError::new(
                    ConnectErrorKind::TimedOut(deadline),
                    None,
                )),
            }
        }))
    }
}

impl<B> HttpConnector<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn connect(self, resolved: Resolved) -> Result<HttpConnection<B>, HttpConnectError> {
        let tcp = |e: io::Error| HttpConnectError::new(ConnectErrorKind::Tcp, Some(e.into()));
        // Each address in turn; the last one's error if none answers.
        let mut last = None;
        let mut connected = None;
        for address in &resolved.addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    connected = Some((stream, *address));
                    break;
                }
                Err(error) => last = Some(error),
            }
        }
        let Some((stream, address)) = connected else {
            return Err(tcp(
                last.unwrap_or_else(|| io::Error::other("no address to dial"))
            ));
        };
        stream.set_nodelay(true).map_err(tcp)?;
        let handshake =
            |e: hyper::Error| HttpConnectError::new(ConnectErrorKind::Handshake, Some(e.into()));
        let shared = Arc::new(ConnShared::new(address, resolved.authority, self.version));
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
                (
                    Sender::http1(send),
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

        let (connection, task) =
            HttpConnection::start(shared.clone(), sender, driver, self.close_timeout);
        // Until the connection is handed over, dropping this future (the connect timeout) or
        // failing ends the connection task.
        let mut guard = AbortOnDrop(Some(task));
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
        Ok(connection)
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

/// The future of [`HttpConnector`]'s `call`: a connection being made.
pub struct Connecting<B>(
    Pin<Box<dyn Future<Output = Result<HttpConnection<B>, HttpConnectError>> + Send>>,
);

impl<B> Future for Connecting<B> {
    type Output = Result<HttpConnection<B>, HttpConnectError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<B> fmt::Debug for Connecting<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connecting").finish_non_exhaustive()
    }
}
