//! [`HttpConnector`]: opens a byte stream (its own [`Dialer`] or [`Over`] a service of yours),
//! shakes hands (TLS when asked, then HTTP) and makes an [`HttpConnection`](super::HttpConnection).

use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Body;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::time::Instant;
use tower_service::Service;

use super::body::Guarded;
use super::connection::{ConnDriver, HttpConnection, Release, Sender};
use super::dial::{Dial, Dialed, Dialer, Over, OverHyper, Peer};
use super::exec;
use super::io::{ClosedOnDrop, Greeting, Preface, Watched};
use super::shared::{ConnShared, Version};
use crate::error::{BoxError, KindError};

/// Opens a byte stream and makes an HTTP/1.1 or HTTP/2 [`HttpConnection`] over it; a
/// connector for [`PersistentLayer`](crate::PersistentLayer).
///
/// `B` is the request body type; `D` where the stream comes from: the crate's own [`Dialer`]
/// (TCP and Unix domain sockets, from an [`Address`](super::Address)) unless
/// [`over`](Self::over) names a service of yours.
pub struct HttpConnector<B, D = Dialer> {
    version: Version,
    connect_timeout: Duration,
    close_timeout: Duration,
    keep_alive: Option<(Duration, Duration)>,
    flow: Flow,
    authority: Option<http::uri::Authority>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<super::tls::Tls>>,
    dialer: D,
    /// HTTP/1.1: how many connections in a row a caller's give-up ended before they answered
    /// (see `ConnShared::abandoned`). A clone starts a row of its own (a connector cloned for
    /// several persistent connections counts each one's apart).
    given_up: Arc<AtomicU32>,
    _body: PhantomData<fn(B)>,
}

impl<B, D: Clone> Clone for HttpConnector<B, D> {
    fn clone(&self) -> Self {
        HttpConnector {
            given_up: Arc::default(),
            ..self.same()
        }
    }
}

impl<B, D: Clone> HttpConnector<B, D> {
    /// A copy that counts in this connector's row of connections given up before serving.
    fn same(&self) -> Self {
        HttpConnector {
            version: self.version,
            connect_timeout: self.connect_timeout,
            close_timeout: self.close_timeout,
            keep_alive: self.keep_alive,
            flow: self.flow,
            authority: self.authority.clone(),
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
            dialer: self.dialer.clone(),
            given_up: self.given_up.clone(),
            _body: PhantomData,
        }
    }
}

impl<B, D: fmt::Debug> fmt::Debug for HttpConnector<B, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("HttpConnector");
        d.field("version", &self.version)
            .field("connect_timeout", &self.connect_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("flow", &self.flow)
            .field("authority", &self.authority);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls);
        d.field("dialer", &self.dialer).finish()
    }
}

/// The default deadline of one connection's lookup, connect, TLS handshake and HTTP handshake
/// (for HTTP/2, up to the server's SETTINGS frame).
///
/// It nests inside the persistent connection's attempt deadline,
/// [`PersistentLayer::connect_timeout`](crate::PersistentLayer::connect_timeout) (20 s by
/// default), which also covers the address lookup: the sooner of the two ends an attempt.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a graceful close waits for requests in flight.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest HTTP/2 keep-alive interval; shorter ones are held to it. A PING goes an interval
/// after the answer to the last: at 1 ms, an idle connection sent over 400 a second on
/// loopback, and a process holding it and its server spent about a tenth of a core on them
/// (under 1 % at 100 ms); servers also take PINGs that frequent for abuse (gRPC servers close
/// such a connection with `ENHANCE_YOUR_CALM`).
pub const MIN_KEEP_ALIVE: Duration = Duration::from_millis(100);

/// The shortest HTTP/2 keep-alive timeout; shorter ones are held to it. A healthy server's
/// answer to a PING can take a few milliseconds on a busy machine: a shorter timeout would close
/// its connection again and again.
pub const MIN_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_millis(100);

/// The longest HTTP/2 keep-alive interval and timeout; longer ones are held to it.
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(365 * 86_400);

/// The smallest HTTP/2 flow-control window (65,535 bytes, HTTP/2's initial window); smaller
/// ones are held to it, so that a window of zero cannot stall every response body for good.
pub const MIN_HTTP2_WINDOW: u32 = 65_535;

/// The largest HTTP/2 flow-control window (2^31 − 1 bytes, HTTP/2's limit); larger ones are
/// held to it.
pub const MAX_HTTP2_WINDOW: u32 = (1 << 31) - 1;

/// HTTP/2 flow control: hyper's defaults unless set.
#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    /// The stream's and the connection's windows.
    windows: Option<(u32, u32)>,
    adaptive: bool,
}

impl<B> HttpConnector<B> {
    fn new(version: Version) -> Self {
        HttpConnector {
            version,
            connect_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            keep_alive: None,
            flow: Flow::default(),
            authority: None,
            #[cfg(feature = "tls")]
            tls: None,
            dialer: Dialer,
            given_up: Arc::default(),
            _body: PhantomData,
        }
    }

    /// A connector for HTTP/1.1 (one request at a time per connection; see the module docs).
    pub fn http1() -> Self {
        Self::new(Version::Http1)
    }

    /// A connector for HTTP/2 with prior knowledge (cleartext `h2c`, as gRPC uses), or, with
    /// [`tls`][tls], HTTP/2 over TLS (ALPN `h2`).
    ///
    #[cfg_attr(feature = "tls", doc = "[tls]: Self::tls")]
    #[cfg_attr(
        not(feature = "tls"),
        doc = "[tls]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/struct.HttpConnector.html#method.tls"
    )]
    pub fn http2() -> Self {
        Self::new(Version::Http2)
    }
}

impl<B, D> HttpConnector<B, D> {
    /// Speaks HTTP over the streams that `service` makes, instead of dialing them itself: any
    /// tower `Service<A>` whose response is an `AsyncRead + AsyncWrite` stream (a proxy
    /// tunnel, an in-memory duplex, a socket set up your way). The persistent connection's
    /// addresses are then that service's requests, of whatever type it takes. See [`Over`].
    ///
    /// The settings stay as they are, TLS included: TLS runs over the stream.
    ///
    /// A stream whose read, write, flush or shutdown panics fails that poll, and every later
    /// one, with an error that says so (`the connection's stream panicked in poll_read: …`),
    /// and is not polled again: hyper fails the requests in flight and the body being read with
    /// it, as with any I/O error (the panic's message is also printed by the panic hook).
    ///
    /// A connector whose streams are hyper's I/O types rather than tokio's (hyper-util's
    /// `HttpConnector`) goes through [`over_hyper`](Self::over_hyper).
    pub fn over<S>(self, service: S) -> HttpConnector<B, Over<S>> {
        self.with_dialer(Over(service))
    }

    /// The authority (`host` or `host:port`) that requests naming none are sent with (the
    /// HTTP/1.1 `Host` header, the HTTP/2 `:authority`), whatever the address; and, over TLS
    /// without a [`server_name`][server_name] and with an address that is not
    /// a name (a stream of yours, a Unix socket), the name the certificate is checked against.
    /// For a stream of yours ([`over`](Self::over)), whose destination the crate cannot know.
    /// Default: none (the address's name, else the TLS server name, else the TCP peer, else
    /// `localhost`).
    ///
    #[cfg_attr(feature = "tls", doc = "[server_name]: super::TlsConfig::server_name")]
    #[cfg_attr(
        not(feature = "tls"),
        doc = "[server_name]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/struct.TlsConfig.html#method.server_name"
    )]
    pub fn authority(mut self, authority: http::uri::Authority) -> Self {
        self.authority = Some(authority);
        self
    }

    /// As [`over`](Self::over), for a connector whose streams implement hyper's
    /// `rt::Read + rt::Write` (hyper-util's `client::legacy::connect::HttpConnector`, whose
    /// addresses are `http::Uri`s): see [`OverHyper`](super::OverHyper).
    pub fn over_hyper<S>(self, service: S) -> HttpConnector<B, OverHyper<S>> {
        self.with_dialer(OverHyper(service))
    }

    /// The same settings, with streams from `dialer`.
    fn with_dialer<E>(self, dialer: E) -> HttpConnector<B, E> {
        HttpConnector {
            version: self.version,
            connect_timeout: self.connect_timeout,
            close_timeout: self.close_timeout,
            keep_alive: self.keep_alive,
            flow: self.flow,
            authority: self.authority,
            #[cfg(feature = "tls")]
            tls: self.tls,
            dialer,
            given_up: self.given_up,
            _body: PhantomData,
        }
    }

    /// Speaks TLS over each stream before HTTP (feature `tls`): rustls with the `ring`
    /// provider, the server's certificate checked against the roots and the name that `tls`
    /// gives (see [`TlsConfig`](super::TlsConfig)), ALPN offering only this connector's
    /// version (`http/1.1` or `h2`; a server that speaks neither by ALPN fails the handshake,
    /// one that does not use ALPN is spoken to in the connector's version). The TLS
    /// handshake counts within the [`connect_timeout`](Self::connect_timeout), and its failure
    /// (an unknown issuer, a certificate for another name, a server that is not speaking TLS)
    /// is an [`HttpConnectError`] whose text says why. By default there is no TLS: the
    /// connector speaks HTTP in clear.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: super::TlsConfig) -> Self {
        self.tls = Some(Arc::new(tls.for_version(self.version)));
        self
    }

    /// The deadline for the address lookup, the connect, the TLS handshake and the HTTP
    /// handshake (for HTTP/2, until the server's SETTINGS frame arrives). Default: [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s), within the layer's
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
    /// waits for every request (the persistent connection's close timeout still applies: when
    /// it runs out, the persistent connection gives the connection up, and what is still in
    /// flight is cut off then, see [`Closable::abort`](crate::Closable::abort)).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// HTTP/2 only: send a PING every `interval` (even while idle) and close the connection if
    /// the answer takes longer than `timeout`, so that a server that stops answering is noticed
    /// and replaced. Default: off.
    ///
    /// Every value is accepted. The interval is held within [`MIN_KEEP_ALIVE`] (100 ms, so that
    /// zero is not a stream of PINGs that costs an idle connection a tenth of a core) and
    /// [`MAX_KEEP_ALIVE`] (one year, beyond which hyper's
    /// timer could not represent the deadline); the timeout within [`MIN_KEEP_ALIVE_TIMEOUT`]
    /// (100 ms, so that a healthy server's connection is not closed for a PING answered a few
    /// milliseconds late) and [`MAX_KEEP_ALIVE`].
    pub fn http2_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((
            interval.clamp(MIN_KEEP_ALIVE, MAX_KEEP_ALIVE),
            timeout.clamp(MIN_KEEP_ALIVE_TIMEOUT, MAX_KEEP_ALIVE),
        ));
        self
    }

    /// HTTP/2 only: the flow-control windows this client grants the server, in bytes: `stream`
    /// for each response body, `connection` for all of them together. Default: hyper's (2 MiB
    /// per stream, 5 MiB per connection).
    ///
    /// A response body's bytes count against both windows until the caller reads them: response
    /// bodies held unread (kept for later, or leaked) take up the connection's window, and once
    /// it is full the server can send no body on the connection, not even a small one to
    /// another clone. The connection is live and stays current, so nothing replaces it:
    /// requests on it wait until those bodies are read or dropped. (hyper's own client does
    /// the same; a pool would open another connection.) Read or drop every response body, or
    /// give the connection a window larger than what may be held unread at once.
    ///
    /// Every value is accepted, held within [`MIN_HTTP2_WINDOW`] and [`MAX_HTTP2_WINDOW`].
    /// [`http2_adaptive_window`](Self::http2_adaptive_window) overrides these.
    pub fn http2_windows(mut self, stream: u32, connection: u32) -> Self {
        self.flow.windows = Some((
            stream.clamp(MIN_HTTP2_WINDOW, MAX_HTTP2_WINDOW),
            connection.clamp(MIN_HTTP2_WINDOW, MAX_HTTP2_WINDOW),
        ));
        self
    }

    /// HTTP/2 only: let hyper size the flow-control windows from the bandwidth-delay product it
    /// measures with PINGs (as tonic's `http2_adaptive_window` does), instead of fixed windows.
    /// It overrides [`http2_windows`](Self::http2_windows). Default: off.
    ///
    /// The windows then begin at 65,535 bytes and grow only as bodies are read: response bodies
    /// held unread fill the connection's window far sooner than with hyper's fixed 5 MiB (see
    /// [`http2_windows`](Self::http2_windows)).
    pub fn http2_adaptive_window(mut self, enabled: bool) -> Self {
        self.flow.adaptive = enabled;
        self
    }
}

/// Why an [`HttpConnector`] could not connect. Cheap to clone (the cause is shared).
#[derive(Clone)]
pub struct HttpConnectError(KindError<ConnectErrorKind>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnectErrorKind {
    Resolve,
    Tcp,
    Unix,
    Stream,
    #[cfg(feature = "tls")]
    Tls,
    #[cfg(feature = "tls")]
    NoServerName,
    #[cfg(feature = "tls")]
    InvalidServerName,
    Handshake,
    /// hyper's connection ended without an error before the server's preface.
    ClosedDuringHandshake,
    /// hyper's connection failed before the server's preface (a read or write of the stream,
    /// a TLS alert, bytes that are not HTTP/2): the error is the cause.
    FailedDuringHandshake,
    NotSettings(u8),
    TimedOut(Duration),
}

impl HttpConnectError {
    pub(super) fn new(kind: ConnectErrorKind, source: Option<BoxError>) -> Self {
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
            ConnectErrorKind::Unix => f.write_str("unix socket connect failed"),
            ConnectErrorKind::Stream => f.write_str("could not open the stream"),
            #[cfg(feature = "tls")]
            ConnectErrorKind::Tls => f.write_str("tls handshake failed"),
            #[cfg(feature = "tls")]
            ConnectErrorKind::InvalidServerName => {
                f.write_str("the address's host is not a valid tls server name")
            }
            #[cfg(feature = "tls")]
            ConnectErrorKind::NoServerName => f.write_str(
                "no server name to check the certificate against (give one with TlsConfig::server_name or HttpConnector::authority)",
            ),
            ConnectErrorKind::Handshake => f.write_str("http handshake failed"),
            ConnectErrorKind::ClosedDuringHandshake => {
                f.write_str("server closed the connection during the http/2 handshake")
            }
            ConnectErrorKind::FailedDuringHandshake => {
                f.write_str("the connection ended during the http/2 handshake")
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

impl<B, D, A> Service<A> for HttpConnector<B, D>
where
    D: Dial<A>,
    A: Send + 'static,
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
        let config = self.same();
        Connecting(Box::pin(async move {
            let limit = config.connect_timeout;
            let deadline = crate::shared::deadline_after(Instant::now(), limit);
            let connecting = std::pin::pin!(async move {
                let dialed = config.dialer.clone().dial(address).await?;
                config.connect(dialed).await
            });
            within_deadline(connecting, deadline, limit).await
        }))
    }
}

impl<B, D> HttpConnector<B, D>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn connect(self, mut dialed: Dialed) -> Result<HttpConnection<B>, HttpConnectError> {
        if dialed.name.is_none() {
            dialed.name = self.authority.as_ref().map(|a| a.to_string());
        }
        #[cfg(feature = "tls")]
        let (dialed, server_name, secure) = match &self.tls {
            Some(tls) => {
                let (dialed, name) = tls.handshake(dialed).await?;
                (dialed, Some(name), true)
            }
            None => (dialed, None, false),
        };
        #[cfg(not(feature = "tls"))]
        let (server_name, secure): (Option<String>, bool) = (None, false);
        let Dialed {
            io,
            peer,
            name,
            probe,
        } = dialed;
        // What requests name as their authority when they name none: the configured one, else
        // the name asked for, else the TLS server name, else (made when first needed) the TCP
        // peer, else `localhost`.
        let configured = self.authority.as_ref().map(|a| a.to_string());
        let tls_name = server_name.map(|name| tls_authority(name, &peer));
        let authority = configured.or(name).or(tls_name);
        let handshake =
            |e: hyper::Error| HttpConnectError::new(ConnectErrorKind::Handshake, Some(e.into()));
        let shared = Arc::new(ConnShared::new(
            peer,
            authority,
            self.version,
            secure,
            self.connect_timeout,
            self.close_timeout,
            probe,
            self.given_up.clone(),
        ));
        // HTTP/2 only: the server's preface, watched.
        let greeted = (self.version == Version::Http2).then(|| Arc::new(Greeting::default()));
        let io = TokioIo::new(Watched {
            inner: io,
            preface: greeted.clone().map(Preface::new),
            // An HTTP/1.1 server sends nothing but responses: its first byte means it served,
            // unless a response turns out not to be one (`ConnShared::failed`). (HTTP/2 servers
            // send frames of their own; there a response head counts.)
            first_byte: self.version == Version::Http1,
            cuttable: self.version == Version::Http2,
            shared: ClosedOnDrop(shared.clone()),
            registered: None,
            panicked: None,
        });
        let (sender, driver): (Sender<Guarded<B>>, ConnDriver) = match self.version {
            Version::Http1 => {
                let (send, conn) = http1::handshake(io).await.map_err(handshake)?;
                // Upgrades (`hyper::upgrade::on` a `101` asked for, or a `CONNECT`'s `2xx`)
                // take the stream over: the connection then ends in good order.
                let conn = conn.with_upgrades();
                // The connection's one `SendRequest`, dropped once hyper's connection is gone
                // (see `Release`).
                let (send, release) = Release::slot(send);
                let mut conn: ConnDriver = Box::pin(async move {
                    let ended = conn.await.map_err(BoxError::from);
                    drop(release);
                    ended
                });
                // hyper's connection polled once here, before its task first runs: it says it
                // wants a request (or ends, if the server already closed), so that the first
                // request's `poll_ready` is answered at once rather than after a hop to that
                // task and back. The task polls it again as it starts.
                let first = std::future::poll_fn(|cx| Poll::Ready(conn.as_mut().poll(cx))).await;
                if let Poll::Ready(ended) = first {
                    conn = Box::pin(std::future::ready(ended));
                }
                (Sender::http1(send), conn)
            }
            Version::Http2 => {
                // hyper's futures for the connection run in the connection's task (see `exec`).
                let keep_alive = self.keep_alive;
                let flow = self.flow;
                let (send, conn) = exec::with_local(|exec| {
                    let mut builder = http2::Builder::new(exec);
                    if let Some((stream, connection)) = flow.windows {
                        builder
                            .initial_stream_window_size(stream)
                            .initial_connection_window_size(connection);
                    }
                    if flow.adaptive {
                        builder.adaptive_window(true);
                    }
                    if let Some((interval, timeout)) = keep_alive {
                        builder
                            .timer(TokioTimer::new())
                            .keep_alive_interval(interval)
                            .keep_alive_timeout(timeout)
                            .keep_alive_while_idle(true);
                    }
                    async move {
                        let (send, conn) = builder.handshake(io).await?;
                        Ok((send, Box::pin(conn) as exec::ConnFuture))
                    }
                })
                .await
                .map_err(handshake)?;
                // The connection's one `SendRequest`, dropped once hyper's connection is
                // gone (see `Release`): hyper's connection first (the future awaited is
                // dropped at the end of its statement), then the `SendRequest`. Dropped
                // unfinished, both go at once.
                let (send, release) = Release::slot(send);
                let conn: ConnDriver = Box::pin(async move {
                    let ended = conn.await;
                    drop(release);
                    ended
                });
                (Sender::Http2(send), conn)
            }
        };

        let (connection, task) =
            HttpConnection::start(shared.clone(), sender, driver, self.close_timeout).await;
        // Until the connection is handed over, dropping this future (the connect timeout) or
        // failing ends the connection task.
        let mut guard = AbortOnDrop(task);
        if let Some(greeted) = greeted {
            // The server's connection preface: a whole SETTINGS frame.
            // The greeting first: hyper ends its connection on a first frame that is not
            // SETTINGS, which the stream has seen (and said) before hyper reads it.
            tokio::select! {
                biased;
                _ = greeted.done.wait() => {
                    if let Some(frame_type) = greeted.not_settings() {
                        return Err(HttpConnectError::new(
                            ConnectErrorKind::NotSettings(frame_type),
                            None,
                        ));
                    }
                }
                _ = shared.finished.wait() => {
                    // Why, if hyper's connection failed (a TLS alert, a failed read, bytes
                    // that are not HTTP/2): not the server's close then.
                    let error = shared.take_end_error();
                    let kind = match error {
                        Some(_) => ConnectErrorKind::FailedDuringHandshake,
                        None => ConnectErrorKind::ClosedDuringHandshake,
                    };
                    return Err(HttpConnectError::new(kind, error));
                }
            }
            // Idle from now: the wait for the greeting is not idleness (a server that greets
            // late and then closes at once did not close an idle connection).
            shared.ready_now();
        }
        guard.0 = None;
        Ok(connection)
    }
}

/// Runs `connecting` until `deadline` (`limit` after its start). A persistent connection's
/// driver polling it keeps the deadline for it, if asked (see `handover`): then there is no
/// timer here, and the deadline is checked at each poll.
async fn within_deadline<B>(
    mut connecting: Pin<&mut impl Future<Output = Result<HttpConnection<B>, HttpConnectError>>>,
    deadline: Instant,
    limit: Duration,
) -> Result<HttpConnection<B>, HttpConnectError> {
    let timed_out = || HttpConnectError::new(ConnectErrorKind::TimedOut(limit), None);
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = connecting.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if timer.is_none() {
            if Instant::now() >= deadline {
                return Poll::Ready(Err(timed_out()));
            }
            if crate::handover::keep_deadline(deadline, cx.waker()) {
                return Poll::Pending;
            }
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The authority that a TLS server name stands for: a DNS name with the port dialed, unless it
/// is HTTPS's own (443); for an IP address, the address dialed (`[::1]:8443`), or the IP alone
/// (an IPv6 one in brackets) when the stream is not TCP.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
fn tls_authority(name: String, peer: &Peer) -> String {
    match (name.parse::<std::net::IpAddr>(), peer) {
        (Ok(_), Peer::Tcp(address)) => address.to_string(),
        (Ok(std::net::IpAddr::V6(ip)), _) => format!("[{ip}]"),
        (Ok(_), _) => name,
        (Err(_), Peer::Tcp(address)) if address.port() != 443 => {
            format!("{name}:{}", address.port())
        }
        (Err(_), _) => name,
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
