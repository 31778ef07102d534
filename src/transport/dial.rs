//! Where an [`HttpConnector`](super::HttpConnector) gets its byte stream: its own dialer
//! ([`Dialer`]: TCP and Unix domain sockets, from an [`Address`]) or a tower `Service` of yours
//! ([`Over`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tower_service::Service;

use super::connector::{ConnectErrorKind, HttpConnectError};
use super::io::Probe;
use crate::error::BoxError;

/// A byte stream the HTTP handshake can run over.
pub(super) trait Io: AsyncRead + AsyncWrite + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + 'static> Io for T {}

/// A stream of any kind, boxed: one reads or writes costs a virtual call, small beside the
/// system call under it, and hyper's connection is compiled once for all kinds of stream.
pub(super) type BoxIo = Pin<Box<dyn Io>>;

/// Who a connection reaches: what [`HttpConnection::peer`](super::HttpConnection::peer) says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Peer {
    /// A TCP peer, at this address.
    Tcp(SocketAddr),
    /// A Unix domain socket, at this path.
    Unix(PathBuf),
    /// A stream from a service of yours ([`Over`]): the crate cannot tell where it leads.
    Stream,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(address) => address.fmt(f),
            Peer::Unix(path) => write!(f, "unix:{}", path.display()),
            Peer::Stream => f.write_str("stream"),
        }
    }
}

/// A stream dialed, and who it reaches.
#[doc(hidden)]
pub struct Dialed {
    pub(super) io: BoxIo,
    pub(super) peer: Peer,
    /// The `host:port` the connection was asked for, when it was a name.
    pub(super) name: Option<String>,
    /// For a TCP connection of the connector's own: a probe of its socket.
    pub(super) probe: Option<Probe>,
}

impl fmt::Debug for Dialed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialed")
            .field("peer", &self.peer)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// How an [`HttpConnector`](super::HttpConnector) opens a byte stream to an address of type
/// `A`: its own [`Dialer`], or [`Over`] a service of yours. Sealed: implemented here only.
pub trait Dial<A>: sealed::SealedDial + Clone + Send + 'static {
    /// Opens the stream.
    #[doc(hidden)]
    fn dial(self, address: A) -> impl Future<Output = Result<Dialed, HttpConnectError>> + Send;
}

/// The crate's own dialer, [`HttpConnector`](super::HttpConnector)'s default: TCP (with
/// `TCP_NODELAY`) to an [`Address`] that is a socket address, a name or a URI, and Unix domain
/// sockets to one that is a path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dialer;

/// Your own byte stream: a tower `Service` from an address of yours to any
/// `AsyncRead + AsyncWrite` stream (a proxy tunnel, an in-memory duplex, a socket set up your
/// way), for [`HttpConnector::over`](super::HttpConnector::over).
///
/// The service is cloned for each connection, waited on until ready, then called once; its
/// error fails the attempt (an [`HttpConnectError`] whose source it is), within the
/// connector's connect timeout. The crate does not know where such a stream leads: the
/// connection's [`peer`](super::HttpConnection::peer) is [`Peer::Stream`], requests that name no
/// authority are sent with `localhost` (or the TLS server name, when there is one), and TLS
/// needs its server name set (`TlsConfig::server_name`).
#[derive(Debug, Clone)]
pub struct Over<S>(pub(super) S);

mod sealed {
    pub trait SealedDial {}
    impl SealedDial for super::Dialer {}
    impl<S> SealedDial for super::Over<S> {}
    impl<S> SealedDial for super::OverHyper<S> {}

    pub trait Sealed {}
    impl Sealed for std::net::SocketAddr {}
    impl Sealed for String {}
    impl Sealed for &'static str {}
    impl Sealed for http::Uri {}
    impl Sealed for std::path::PathBuf {}
    impl Sealed for &'static std::path::Path {}
}

impl<A: Address> Dial<A> for Dialer {
    async fn dial(self, address: A) -> Result<Dialed, HttpConnectError> {
        match address.resolve().await? {
            Resolved::Tcp { addresses, name } => {
                let (stream, address) = dial_tcp(&addresses).await?;
                Ok(Dialed {
                    probe: Probe::of(&stream),
                    io: Box::pin(stream),
                    peer: Peer::Tcp(address),
                    name,
                })
            }
            Resolved::Unix(path) => dial_unix(path).await,
        }
    }
}

/// Connects to `address` as tokio's `TcpStream::connect` does, but for a connection that the
/// kernel has made by the time its `connect` call returns (over loopback, as a rule: a local
/// proxy, a sidecar, a server on the same host), which is used at once. tokio waits for the
/// socket to be reported writable first: a yield of the task that connects, one turn of the
/// runtime's I/O driver and whatever tasks run before it, before the connection can be used.
#[cfg(unix)]
async fn connect(address: &SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    let socket = Socket::new(
        Domain::for_address(*address),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let socket = {
        let socket = Socket::new(
            Domain::for_address(*address),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        socket
    };
    match socket.connect(&(*address).into()) {
        Ok(()) => {}
        // Under way: made already if it has a peer; otherwise, as tokio does, writable once
        // it is made or has failed, and its error (if any) then in `SO_ERROR`.
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            if socket.peer_addr().is_err() {
                let stream = TcpStream::from_std(socket.into())?;
                stream.writable().await?;
                if let Some(e) = stream.take_error()? {
                    return Err(e);
                }
                return Ok(stream);
            }
        }
        Err(e) => return Err(e),
    }
    TcpStream::from_std(socket.into())
}

#[cfg(not(unix))]
async fn connect(address: &SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect(address).await
}

/// Each address in turn; the last one's error if none answers.
async fn dial_tcp(addresses: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), HttpConnectError> {
    let tcp = |e: io::Error| HttpConnectError::new(ConnectErrorKind::Tcp, Some(e.into()));
    // The error says which address, keeping its kind; the cause is its source.
    let at = |address: &SocketAddr, e: io::Error| At::io(address.to_string(), e);
    let mut last = None;
    for address in addresses {
        match connect(address).await {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(|e| tcp(at(address, e)))?;
                return Ok((stream, *address));
            }
            Err(error) => last = Some(at(address, error)),
        }
    }
    Err(tcp(
        last.unwrap_or_else(|| io::Error::other("no address to dial"))
    ))
}

#[cfg(unix)]
async fn dial_unix(path: PathBuf) -> Result<Dialed, HttpConnectError> {
    match tokio::net::UnixStream::connect(&path).await {
        Ok(stream) => Ok(Dialed {
            io: Box::pin(stream),
            peer: Peer::Unix(path),
            name: None,
            probe: None,
        }),
        Err(error) => {
            // Refused by a path that is no socket at all (a regular file, a directory): the
            // same error as a dead server's socket left behind, which it is not; said so.
            let not_a_socket = error.kind() == io::ErrorKind::ConnectionRefused
                && tokio::fs::metadata(&path).await.is_ok_and(|metadata| {
                    use std::os::unix::fs::FileTypeExt;
                    !metadata.file_type().is_socket()
                });
            let what = if not_a_socket {
                format!("{} (not a socket)", path.display())
            } else {
                path.display().to_string()
            };
            Err(HttpConnectError::new(
                ConnectErrorKind::Unix,
                Some(At::io(what, error).into()),
            ))
        }
    }
}

#[cfg(not(unix))]
async fn dial_unix(path: PathBuf) -> Result<Dialed, HttpConnectError> {
    Err(HttpConnectError::new(
        ConnectErrorKind::Unix,
        Some(
            format!(
                "{}: unix domain sockets are not supported here",
                path.display()
            )
            .into(),
        ),
    ))
}

impl<S, A> Dial<A> for Over<S>
where
    S: Service<A> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: AsyncRead + AsyncWrite + Send + 'static,
    S::Error: Into<BoxError>,
    A: Send + 'static,
{
    async fn dial(self, address: A) -> Result<Dialed, HttpConnectError> {
        let stream = open(self.0, address).await?;
        Ok(Dialed {
            io: Box::pin(stream),
            peer: Peer::Stream,
            name: None,
            probe: None,
        })
    }
}

/// Waits until `service` is ready, and calls it with `address`: a stream of yours.
async fn open<S, A>(mut service: S, address: A) -> Result<S::Response, HttpConnectError>
where
    S: Service<A>,
    S::Error: Into<BoxError>,
{
    let failed = |e: S::Error| HttpConnectError::new(ConnectErrorKind::Stream, Some(e.into()));
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(failed)?;
    service.call(address).await.map_err(failed)
}

/// A connector of hyper's kind: a tower `Service` whose streams implement hyper's
/// `rt::Read + rt::Write` rather than tokio's I/O traits, such as hyper-util's
/// `client::legacy::connect::HttpConnector`, for
/// [`HttpConnector::over_hyper`](super::HttpConnector::over_hyper). Each stream is adapted with
/// hyper-util's `TokioIo`; otherwise as [`Over`].
#[derive(Debug, Clone)]
pub struct OverHyper<S>(pub(super) S);

impl<S, A> Dial<A> for OverHyper<S>
where
    S: Service<A> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S::Error: Into<BoxError>,
    A: Send + 'static,
{
    async fn dial(self, address: A) -> Result<Dialed, HttpConnectError> {
        let stream = open(self.0, address).await?;
        Ok(Dialed {
            io: Box::pin(hyper_util::rt::TokioIo::new(stream)),
            peer: Peer::Stream,
            name: None,
            probe: None,
        })
    }
}

/// What the crate's own [`Dialer`] dials:
///
/// - a [`SocketAddr`];
/// - a `host:port` name (`String` or `&'static str`, such as
///   `"replica-3.orders.internal:8080"`, or `"[::1]:8080"`: an IPv6 address without its
///   brackets is refused), resolved at connect time, each of its addresses tried in turn
///   (whitespace around a string, the end of a line read from a file, is no part of it);
/// - an [`http::Uri`] (`http://host:port`, port 80 by default; `https://host`, port 443 by
///   default, which does not by itself turn TLS on: see [`HttpConnector::tls`][tls]), or a
///   string that holds one (`"https://replica-3.orders.internal:8443"`: any string with
///   `://` is read as a URI); its host and port alone count (a path, a query, user
///   information are not used), and a port that is there must be one (`:99999` is refused);
/// - the path of a Unix domain socket: a [`PathBuf`], a `&'static Path`, or a string that
///   starts with `unix:` (`"unix:/run/orders.sock"`), so that a lookup answering strings
///   (`Fixed`, `RoundRobin`, `Watch`, etcd's values) can give one as text. (`Dns` and `Catalog`
///   answer socket addresses.) What follows `unix:` is the path as it is (`unix:/run/x.sock`,
///   not a URL's `unix:///run/x.sock`, whose extra slashes only happen to name the same file);
///   a path in the file system: Linux's abstract socket names (`@name`) are not supported.
///
/// A name is also what requests name as their authority (the HTTP/1.1 `Host` header, the
/// HTTP/2 `:authority`) when they do not name one themselves, and what a TLS server's
/// certificate is checked against, unless the connector names a server itself. Sealed:
/// implemented here only.
///
#[cfg_attr(feature = "tls", doc = "[tls]: super::HttpConnector::tls")]
#[cfg_attr(
    not(feature = "tls"),
    doc = "[tls]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/struct.HttpConnector.html#method.tls"
)]
pub trait Address: sealed::Sealed + Send + 'static {
    /// The addresses to try in turn and the name, resolved.
    #[doc(hidden)]
    fn resolve(self) -> impl Future<Output = Result<Resolved, HttpConnectError>> + Send;
}

/// An [`Address`] resolved.
#[doc(hidden)]
#[derive(Debug)]
pub enum Resolved {
    /// The socket addresses to try, in turn, and the name they were looked up by.
    Tcp {
        addresses: Vec<SocketAddr>,
        name: Option<String>,
    },
    Unix(PathBuf),
}

impl Address for SocketAddr {
    async fn resolve(self) -> Result<Resolved, HttpConnectError> {
        Ok(Resolved::Tcp {
            addresses: vec![self],
            name: None,
        })
    }
}

impl Address for String {
    async fn resolve(self) -> Result<Resolved, HttpConnectError> {
        // Whitespace around it (the end of a line read from a file) is no part of an address.
        let trimmed = self.trim();
        let this = if trimmed.len() == self.len() {
            self
        } else {
            trimmed.to_owned()
        };
        resolve_text(this).await
    }
}

/// Resolves an address given as text, without whitespace around it.
async fn resolve_text(text: String) -> Result<Resolved, HttpConnectError> {
    match text.strip_prefix("unix:") {
        Some("") => Err(HttpConnectError::new(
            ConnectErrorKind::Resolve,
            Some(format!("no path in {text:?}").into()),
        )),
        Some(path) => Ok(Resolved::Unix(PathBuf::from(path))),
        // A URL as text (`"https://replica-3:8443"`): as the `http::Uri` it is.
        None if text.contains("://") => match text.parse::<http::Uri>() {
            Ok(uri) => uri.resolve().await,
            Err(error) => Err(HttpConnectError::new(
                ConnectErrorKind::Resolve,
                Some(At::new(text, error).into()),
            )),
        },
        // An IPv6 address without its brackets (`"::1:8080"`): the resolver would split
        // it at its last colon, but it names no port for sure (`::1:8080` is an IPv6
        // address too), and the authority sent with it would not be one.
        None if crate::discovery::ipv6_without_brackets(&text) => Err(HttpConnectError::new(
            ConnectErrorKind::Resolve,
            Some(
                format!(
                    "an IPv6 address takes brackets before its port: [host]:port, \
                             not {text}"
                )
                .into(),
            ),
        )),
        None => resolve_name(text).await,
    }
}

impl Address for &'static str {
    async fn resolve(self) -> Result<Resolved, HttpConnectError> {
        self.to_owned().resolve().await
    }
}

impl Address for PathBuf {
    async fn resolve(self) -> Result<Resolved, HttpConnectError> {
        Ok(Resolved::Unix(self))
    }
}

impl Address for &'static Path {
    async fn resolve(self) -> Result<Resolved, HttpConnectError> {
        Ok(Resolved::Unix(self.to_path_buf()))
    }
}

impl Address for http::Uri {
    async fn resolve(self) -> Result<Resolved, HttpConnectError> {
        let unsupported =
            |why: String| HttpConnectError::new(ConnectErrorKind::Resolve, Some(why.into()));
        let default_port = match self.scheme_str() {
            None | Some("http") => 80,
            Some("https") => 443,
            Some(other) => {
                return Err(unsupported(format!(
                    "scheme {other} is not supported: {self}"
                )));
            }
        };
        let Some(authority) = self.authority() else {
            return Err(unsupported(format!("no host in {self}")));
        };
        // A port that is there but not a port (`:99999`, `:`) is refused, not taken for the
        // scheme's default: `port_u16` says `None` for both.
        let host_port = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, host_port)| host_port);
        let has_port = host_port
            .rfind(':')
            .is_some_and(|colon| !host_port[colon..].contains(']'));
        let port = match authority.port_u16() {
            Some(port) => port,
            None if has_port => {
                return Err(unsupported(format!(
                    "the port is not a number from 0 to 65535: {self}"
                )));
            }
            None => default_port,
        };
        resolve_name(format!("{}:{port}", authority.host())).await
    }
}

/// Resolves `host_port`, keeping the resolver's order (its preference) to try them in.
async fn resolve_name(host_port: String) -> Result<Resolved, HttpConnectError> {
    let resolve = |e: io::Error| HttpConnectError::new(ConnectErrorKind::Resolve, Some(e.into()));
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(&host_port)
        .await
        .map_err(|e| resolve(At::io(host_port.clone(), e)))?
        .collect();
    if addresses.is_empty() {
        return Err(resolve(io::Error::other(format!(
            "{host_port} resolved to no address"
        ))));
    }
    Ok(Resolved::Tcp {
        addresses,
        name: Some(host_port),
    })
}

/// The host of a `host:port` name (an IPv6 host without its brackets).
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(super) fn host_of(name: &str) -> &str {
    let host = match name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => name,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// What a connecting error was about (an address, a path, a name), with the cause as its
/// source, so that the message does not repeat the cause.
#[derive(Debug)]
pub(super) struct At {
    what: String,
    source: crate::BoxError,
}

impl At {
    /// `source`, about `what`.
    pub(super) fn new(what: impl Into<String>, source: impl Into<crate::BoxError>) -> At {
        At {
            what: what.into(),
            source: source.into(),
        }
    }

    /// An I/O error of `source`'s kind, about `what`.
    pub(super) fn io(what: impl Into<String>, source: io::Error) -> io::Error {
        io::Error::new(source.kind(), At::new(what, source))
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for At {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::{Address, Resolved, host_of};

    /// The socket addresses `uri` resolves to, or the text of its error.
    async fn dialed(uri: &'static str) -> Result<Vec<std::net::SocketAddr>, String> {
        match uri.resolve().await {
            Ok(Resolved::Tcp { addresses, .. }) => Ok(addresses),
            Ok(Resolved::Unix(path)) => Err(format!("a path: {}", path.display())),
            Err(error) => {
                let mut text = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                Err(text)
            }
        }
    }

    // A URI as text: its host and port; the scheme's port without one, through user
    // information and IPv6 brackets too; a port that is not one is refused.
    #[tokio::test]
    async fn the_port_of_a_uri() {
        let at = |address: &str| Ok(vec![address.parse().unwrap()]);
        assert_eq!(
            dialed("http://127.0.0.1:8080/path?q").await,
            at("127.0.0.1:8080")
        );
        assert_eq!(
            dialed("http://user:secret@127.0.0.1").await,
            at("127.0.0.1:80")
        );
        assert_eq!(
            dialed("https://user:secret@127.0.0.1:8443").await,
            at("127.0.0.1:8443")
        );
        assert_eq!(dialed("https://[::1]").await, at("[::1]:443"));
        assert_eq!(dialed("HTTP://[::1]:8080").await, at("[::1]:8080"));
        assert_eq!(
            dialed("http://[::1]:99999").await,
            Err(
                "cannot resolve the address: the port is not a number from 0 to 65535: \
                 http://[::1]:99999/"
                    .to_owned()
            )
        );
        assert_eq!(
            dialed("http://user:secret@127.0.0.1:").await,
            Err(
                "cannot resolve the address: the port is not a number from 0 to 65535: \
                 http://user:secret@127.0.0.1:/"
                    .to_owned()
            )
        );
    }

    // The host of an authority: a name without its port, an IPv6 literal without its
    // brackets, a name without a port as it is.
    #[test]
    fn host_of_a_name() {
        assert_eq!(
            host_of("replica-3.orders.internal:8443"),
            "replica-3.orders.internal"
        );
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}

#[cfg(all(test, unix))]
mod connect_tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpSocket};

    use super::connect;

    /// A connection over loopback is made by the time the kernel's `connect` returns: usable
    /// at the first poll, without waiting for the runtime's I/O driver (tokio's own connect
    /// is pending at its first poll). Made at once in most tries: the kernel may defer the
    /// handshake's packets under load.
    #[tokio::test]
    async fn a_loopback_connection_is_usable_at_the_first_poll() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut at_once = 0;
        for _ in 0..10 {
            let mut connecting = pin!(connect(&address));
            let first = connecting
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
            let stream = match first {
                Poll::Ready(stream) => {
                    at_once += 1;
                    stream.unwrap()
                }
                Poll::Pending => connecting.await.unwrap(),
            };
            let (accepted, _) = listener.accept().await.unwrap();
            assert_eq!(stream.peer_addr().unwrap(), address);
            assert_eq!(accepted.peer_addr().unwrap(), stream.local_addr().unwrap());
        }
        assert!(
            at_once >= 5,
            "made at the first poll in {at_once} tries of 10"
        );
    }

    /// A connection still under way when `connect` returns (its SYN dropped: the listener's
    /// queue is full) is waited for, and made once the listener has room (the SYN sent again,
    /// a second later).
    #[tokio::test]
    async fn a_connection_under_way_is_waited_for() {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // A queue of one: the first connection fills it.
        let listener = socket.listen(0).unwrap();
        let address = listener.local_addr().unwrap();
        let _queued = connect(&address).await.unwrap();
        let mut connecting = pin!(connect(&address));
        let mut under_way = false;
        for _ in 0..3 {
            if tokio::time::timeout(Duration::from_millis(100), connecting.as_mut())
                .await
                .is_err()
            {
                under_way = true;
                break;
            }
        }
        assert!(under_way, "the connect should wait while the queue is full");
        let _first = listener.accept().await.unwrap();
        let stream = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .expect("made once the queue has room")
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), address);
    }

    /// A refused connection fails with the kernel's error.
    #[tokio::test]
    async fn a_refused_connection_fails_with_the_kernel_error() {
        // Bound, not listening, for the test's length: no other test is given the port.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = socket.local_addr().unwrap();
        let error = connect(&address).await.unwrap_err();
        drop(socket);
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
