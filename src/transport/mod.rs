//! Transports: HTTP/1.1 and HTTP/2 connections with hyper 1.x (feature `hyper`, on by default),
//! over TCP, Unix domain sockets or a stream of yours, with TLS (feature `tls`) or without.
//!
//! [`HttpConnector`] is a connector for [`PersistentLayer`](crate::PersistentLayer): a tower
//! `Service` from an address to an [`HttpConnection`]. Each connection opens a byte stream,
//! speaks TLS over it if asked, performs the HTTP handshake, and spawns hyper's connection task
//! on the current tokio runtime (see **Under a persistent connection** below for the one
//! exception). The stream comes from:
//!
//! - the crate's own [`Dialer`], for an [`Address`]: a [`SocketAddr`](std::net::SocketAddr), a
//!   `host:port` string resolved at connect time, an `http::Uri` (TCP, with `TCP_NODELAY`), or
//!   the path of a Unix domain socket (a `PathBuf`, or a string `unix:/run/orders.sock`). On
//!   Unix a TCP connection that the kernel has made by the time its `connect` call returns (over
//!   loopback, as a rule: a local proxy or sidecar) is used at once, where tokio's
//!   `TcpStream::connect` would first wait for the runtime's I/O driver to report the socket
//!   writable (a yield of the connecting task, and whatever tasks run before that report);
//! - or a tower `Service` of yours, [`HttpConnector::over`]: any address type, any
//!   `AsyncRead + AsyncWrite` stream (a proxy tunnel, an in-memory duplex); or
//!   [`HttpConnector::over_hyper`] for a connector of hyper's kind (hyper-util's
//!   `HttpConnector`).
//!
//! **TLS** ([`HttpConnector::tls`], feature `tls`): rustls with the `ring` provider, ALPN for the
//! connector's version, the server's certificate checked against the roots and name of a
//! `TlsConfig` (the name set there, else the host of the address's name, else the
//! IP dialed).
//!
//! - **Connect timeout** (default 10 s): one deadline for the lookup, the connect, the TLS
//!   handshake and the HTTP handshake. For
//!   HTTP/2 the handshake includes the server's connection preface, a whole SETTINGS frame: a
//!   server that accepts and never speaks, or sends a byte or a frame header and goes silent, is
//!   cut off and the attempt fails with an error that [`is_timeout`](HttpConnectError::is_timeout);
//!   a first frame that is not SETTINGS fails the attempt at once, with an error that says so.
//!   HTTP/1.1 has no server greeting: there the timeout covers the TCP connect (and the TLS
//!   handshake, over TLS), and a server that hangs later is a matter for a request timeout
//!   (`tower::timeout`).
//! - **Under a persistent connection** made by
//!   [`PersistentLayer::layer`](tower_layer::Layer::layer) (whose driver is a task of the
//!   runtime's; a driver from [`pair`](crate::PersistentLayer::pair), which you poll, takes
//!   nothing over) and whose driver polls the connector itself, an HTTP/1.1 connection's task
//!   is not spawned: the driver takes it and runs it itself, while the
//!   connect is under way (a connector of yours that wraps this one may use the connections it
//!   makes before it returns one) and then, without an
//!   [`on_event`](crate::PersistentLayer::on_event) handler, while the connection is current.
//!   It spawns it when the connection stops being current before the task has ended (closing,
//!   a connection reported dead), and spawns the tasks of the connections it does not keep
//!   once the attempt is over. With its runtime gone the task is dropped, which finishes the
//!   connection. The connection's end then reaches the driver without a hop between tasks,
//!   and a request's wake-up of the connection pushes no other task aside (on tokio's
//!   multi-threaded runtime each such hop or push can cost a wake-up of another thread). (A
//!   handler is awaited by the driver while the connection is current, and could wait on the
//!   connection: with one, the task is spawned once the connect is over. HTTP/2 connections,
//!   whose connector waits for the server's SETTINGS, are spawned too.)
//! - **An HTTP/2 connection is one task.** hyper runs an HTTP/2 connection as several futures
//!   given to an executor: the connection's I/O, one future per request awaiting its response,
//!   one per request body still being sent. The connector's executor runs them all inside the
//!   connection's own task, not as tasks of their own (as tokio's executor would): a request
//!   and its response cross the caller's task and that one, not four, each crossing a
//!   wake-up of a task that on tokio's multi-threaded runtime often wakes a parked thread.
//!   Their wake-ups of one another are answered inside the same poll; a wake-up from outside
//!   (a request sent, the socket ready) goes through the runtime, so that requests that come
//!   meanwhile are written together. Under load (more than 32 of the connection's futures in
//!   flight) requests just taken also wait one pass of the runtime's queue before they are
//!   written, so that those other tasks send meanwhile go out in the same write. A future
//!   that panics ends alone, as a task would, and the connection goes on. (A request body that panics as it is sent does not get there: its
//!   panic is the body's error, and hyper resets its stream, which fails the request at once.) Once hyper's connection has ended, its futures still running (the I/O finishing a
//!   graceful close, responses and bodies still on their way) are spawned, and finish as they
//!   would have as tasks.
//!   Likewise the connect timeout is kept by the driver's own timer for the attempt (which it
//!   arms anyway, for its own deadline) rather than by a second timer of the connector's: a
//!   timer armed anew with no sooner one pending wakes the runtime's timer thread. Each connect
//!   of an attempt has its deadline kept (a retry inside your connector, say): the driver polls
//!   it again then, and it ends with its own timeout error, at the same instant as with a timer
//!   of its own. This holds only for a connector that the driver polls itself, with its own
//!   waker: polled under another waker (connects raced in a `FuturesUnordered`, an executor of
//!   your own such as `Handle::block_on` under `block_in_place`, a task of its own), the
//!   connector spawns its connection's task and keeps its deadline itself, as it does used
//!   alone. No timer of the driver's stays armed once the attempt is over. Measured in
//!   `benches/reconnect.rs` (BENCHMARKS.md).
//! - **Readiness over HTTP/2** is the connection's: `poll_ready` is ready while it is open,
//!   whatever the server's limit of concurrent streams (`SETTINGS_MAX_CONCURRENT_STREAMS`). A
//!   request beyond that limit (a server that allows none, or whose streams are all held by
//!   requests it has not answered) waits in hyper, inside the request's future, until a stream
//!   is free, and then goes out on the same connection; it counts in
//!   [`in_flight`](HttpConnection::in_flight) meanwhile. A ready timeout does not bound that
//!   wait (it is not one for readiness); a request timeout (`tower::timeout`) does, as for a
//!   server that never answers.
//! - **Upgrades** (HTTP/1.1): a request that asks for one (an `Upgrade` header, or `CONNECT`)
//!   and is answered `101 Switching Protocols` (or `2xx`) gets its stream from
//!   `hyper::upgrade::on(response)`, as with hyper's own client. The connection then ends in
//!   good order, having served: a persistent connection replaces it at once. The upgraded
//!   stream is the caller's for as long as it keeps it. A `101` that no request asked for is
//!   not an answer: the connection does not count as closed in good order.
//! - **Closed when**: hyper's connection task ends for any reason (the peer closed the socket,
//!   sent GOAWAY, an I/O or protocol error, or our [`close`](crate::Closable::close)).
//!   [`close_finished`](crate::Closable::close_finished) resolves then, so the persistent connection
//!   notices and reconnects, even while idle.
//! - **An idle connection is looked at before a request goes out on it**: when a TCP
//!   connection the connector dialed itself has had nothing in flight for 1 ms or more,
//!   `poll_ready` first peeks at its socket (one `recv` with `MSG_PEEK` on a duplicate of its
//!   descriptor, so each such connection holds two; on Unix). A server that closed or reset the
//!   connection has left an end of stream or a reset there (other errors of the peek tell
//!   nothing and are left to hyper), which hyper's task learns of only once the runtime has
//!   delivered it and the task has run. Then no request goes out on the connection:
//!   `poll_ready` waits (`Pending`) until the connection has ended, and then fails with
//!   [`ConnectionClosed`](crate::ConnectionClosed). An end of stream with nothing in flight
//!   ends the connection at once: the peek wakes the connection's task, which ends hyper's
//!   connection as hyper would on reading that end (over HTTP/1.1 in good order; over HTTP/2,
//!   an end without GOAWAY, not in good order), without waiting for the runtime to deliver
//!   it. A reset is left to hyper's task, which the runtime wakes with it. Until the
//!   connection has ended, [`is_closed`](crate::Closable::is_closed) is still false; a request
//!   that another clone made ready before the find, and calls after it, is sent nowhere (as a
//!   request called for once hyper's connection is gone: it goes to the connection that
//!   replaces this one, under a persistent connection, or fails with
//!   [`ConnectionClosed`](crate::ConnectionClosed)). A request body still being sent (its
//!   response over) counts as something in flight: the socket is not looked at then. A
//!   persistent connection replaces the connection as it ends (at once if it lived longer
//!   than the retry delay, or if it served and the server ended it in good order, as above)
//!   and the request waits for the new one, instead of going to the dead connection and
//!   coming back. (Failing `poll_ready` at once
//!   and closing the connection from the caller's task was measured slower: the reconnect then
//!   ran on the caller's thread while the runtime's I/O thread was waking up for the same end
//!   of stream.) Browsers look at an idle socket the same way before they reuse it. The peek
//!   takes no bytes (on Linux it does take a reset's error; the connection remembers the
//!   reset). Requests that follow one another within 1 ms pay no system call; bytes waiting in
//!   the socket tell nothing and are left to hyper, so an HTTP/2 server's GOAWAY or a TLS
//!   `close_notify` sent before the end of stream is found by hyper's task, as before. Streams
//!   of your own ([`over`](HttpConnector::over)) and Unix domain sockets are not looked at.
//! - **Closed gracefully** ([`closed_gracefully`](crate::Closable::closed_gracefully)): the server
//!   answered on the connection and then ended it in good order (`Connection: close`, GOAWAY, a
//!   keep-alive limit, an idle timeout), before any close of ours; or it so ended the
//!   connection after it had sat idle, nothing in flight, for a second or more (since it was
//!   ready, over HTTP/2 once the server's greeting came, or since its last request), served or
//!   not: a server's idle timeout. (Over HTTP/2 that includes a plain end of stream without
//!   GOAWAY then, which hyper counts as a failure, h2's broken pipe, and which is not in good
//!   order otherwise; a GOAWAY that gives an error, or a frame cut short, before the end is a
//!   failure however idle. Idleness is judged when the end is first seen, by a request's look
//!   at the socket or by hyper's read: a request body still being sent, its response over,
//!   or bytes held back by a full socket keep a connection from being idle, and an upload's
//!   end, or those bytes' going, counts as its last activity. A body's last frame that hyper
//!   has taken and h2 holds until the server gives flow-control credit is not seen: a server
//!   that gives none, answers, and ends the connection a second later is taken for an idle
//!   timeout.) (With requests
//!   rarer than that timeout, the connection made at once to replace one that served meets it
//!   before any request.) The persistent connection replaces such a connection at once,
//!   instead of waiting out the retry delay; a server that accepts and closes sooner, without
//!   serving, meets the delay, and one that closes idle connections gets one new connection
//!   per idle timeout from an idle client. (hyper ends an HTTP/1.1 connection that never had a
//!   request with an incomplete-message error when the server closes it: that counts as an
//!   end in good order.) hyper ends its
//!   connection without an error of its own also when an HTTP/1.1 response failed (a head that
//!   is not HTTP, an unasked `101`, a body cut short: it gives the error to the request), and
//!   before the caller has seen the responses it delivered: so a connection that the server
//!   ends while responses are still to be read is closed at once (no new request goes to it)
//!   but finishes only once they are read or dropped, or after 50 ms, and a response that
//!   failed makes it not graceful. (Over HTTP/2 a connection that has answered before
//!   finishes at once: nothing of its responses changes its verdict.) (A body cut short that
//!   is dropped unread before the client has seen the cut looks like the caller's own early
//!   drop, after which hyper closes the connection itself: that connection counts as closed
//!   in good order.) Over HTTP/1.1 a
//!   caller that gives up a request hyper has taken (its response future dropped before the
//!   response head: a `tower::timeout`, say) ends the connection at once (hyper closes it once
//!   it notices, which it does not while it writes the request's body to a server that
//!   stopped reading: the connection's task ends it then), which is the caller's doing: such
//!   a connection counts as closed in good order if the server answered on it before (a
//!   response head, not a `100 Continue`: a working server whose slow answer a short timeout
//!   did not wait for, however often that happens), or if it is the first in a row of the
//!   connector's to end so without an answer; the next ones in that row do not (a server that
//!   takes requests and never answers them meets the retry delay). A connection that
//!   answered, or that ends otherwise, ends the row. Each connector counts its own row (a
//!   clone starts a new one). Over TLS, a server
//!   that closes without sending `close_notify` first (rustls reports an unexpected end, as a
//!   server that drops its TLS stream on its idle timeout causes) with no response in progress
//!   (RFC 9110 §9.8: an incomplete close with no message in progress is a close) ends the
//!   connection as TCP's end of stream does: hyper and h2 are given that end of stream, and
//!   judge it as they judge TCP's (over HTTP/1.1, after complete responses or idle, in good
//!   order, also when the end comes right behind a response that the caller has yet to read:
//!   hyper then ends its connection with rustls's error, and the connection is judged by that
//!   response, as above for TCP; a request whose body is still being sent fails; over HTTP/2
//!   an end without GOAWAY is not in good order, unless idle a second or more, as above).
//!   With a response in progress the error stays, for hyper to give to that response: a body
//!   cut short fails with rustls's error as its cause (a body that the close delimits could
//!   not be told from one cut short), and then the connection did not close in good order. (A stream of yours, [`over`](HttpConnector::over), that
//!   reports its end as `UnexpectedEof` is taken the same way.)
//! - **Graceful close**: [`close`](crate::Closable::close) stops new requests at once (`poll_ready`
//!   fails), lets the requests in flight finish, bodies included, for up to the
//!   [`close_timeout`](HttpConnector::close_timeout) (default 5 s), then cuts off those still
//!   in flight and closes the socket: they fail with [`ClosedInFlight`] (they may have reached
//!   the server), and a body still being read fails; `close` resolves once the socket is
//!   closed. Over HTTP/2 hyper drives the stream in a task of its own, for as long as a stream
//!   is open on it, even once its connection has ended (the last handle dropped, say): a
//!   request the server never answered, or a request body still being sent after its response
//!   came, would keep the socket open for good. So whatever is open on the stream at the close
//!   timeout is cut off: the stream fails every read and write. (Over HTTP/1.1 the close drops
//!   hyper's connection, and the stream with it, once nothing is in flight: a request body
//!   still being sent after its response came is dropped then.) A connection whose hyper
//!   connection ended by itself (after the server's GOAWAY, say) counts as closed then, while
//!   the requests the server took may still be answered: they go on, without a bound of ours
//!   (a persistent connection's close does not reach them: bound them with your request
//!   timeout), until they end or the connection is given up
//!   ([`abort`](crate::Closable::abort)). A `close` that comes after that end (a persistent
//!   connection's, whose caller met the connection closing, or yours) finds the server closing
//!   the connection already: it resolves once the end is known, and leaves the server those
//!   requests; one asked for before hyper's connection ended (whose wake-up, say, found the
//!   GOAWAY) is a close of ours, as above. Under a persistent connection whose own
//!   [`close_timeout`](crate::PersistentLayer::close_timeout) runs out first (it is shorter, or
//!   the connector's is `Duration::MAX`), the connection is given up
//!   ([`abort`](crate::Closable::abort)): what is still open is cut off then, in the same way,
//!   though a handle may still hold a clone of the connection.
//! - **Requests handed back unsent**: a request that reached hyper just as the connection ended
//!   (a server closing an idle connection, the client not yet aware) is handed back by hyper
//!   unsent: it never reached the server. If the connection belongs to a persistent connection
//!   that replaces it at once (it outlived its attempt's retry delay, or the server closed it
//!   in good order after it served), the request waits for that replacement (the connection's
//!   [`Successor`](crate::Successor)) and is sent there, once, with what the dead connection
//!   added to it for itself (a `Host` header, an HTTP/2 authority) taken off; the caller sees
//!   no error. This is what hyper-util's pooled client does with such a request. The wait is
//!   one attempt (see [`Successor`](crate::Successor)), and never more than the connector's
//!   [`connect_timeout`](HttpConnector::connect_timeout). Otherwise the request fails with
//!   hyper's error (such as `operation was canceled: connection closed`): at once when the next
//!   attempt must first wait out the retry delay (a young connection, say of a server that
//!   accepts and closes), when the persistent connection is closing, for a connection of your
//!   own outside any persistent connection, and for a request made inside an `on_event`
//!   handler (the persistent connection awaits the handler before it can replace the
//!   connection); after the wait when that attempt fails. A request that hyper had begun to
//!   send is never sent again: its error is returned.
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
//! tower's `Buffer` slot would). So does a clone whose wait for its turn was abandoned (a
//! `ready()` future of yours dropped by a timeout) while the clone itself is kept: its place in
//! the queue stays until the clone is polled again or dropped. A `Persistent` handle whose
//! [`ready_timeout`](crate::PersistentLayer::ready_timeout) ran out gives its place up itself.
//! The turns are in order on one connection only: when it dies, the `Persistent` handles that
//! waited for a turn wait for the next connection, and take its turns in the order they are
//! woken and polled, whatever the order they waited in. (The persistent connection wakes them
//! in the order they waited, but on tokio's multi-threaded runtime a task woken by another
//! task often runs before the tasks woken earlier, tokio's LIFO slot: the handle that waited
//! last then often takes the new connection's first turn, an outside review found, and the
//! others follow in the order they waited.) Under a server that drops every
//! connection after one response, a handle can wait many connections for a turn (bound its
//! wait with [`ready_timeout`](crate::PersistentLayer::ready_timeout) or `tower::timeout`).
//! HTTP/2 senders are cloned and multiplex requests.
//!
//! # Requests
//!
//! HTTP/2 requests whose URI has no scheme or authority get `http` (`https` over TLS) and the
//! connection's authority; HTTP/1.1 requests without a `Host` header get one from the URI's
//! authority, or else the connection's authority: the name it was asked for (`host:port`, see
//! [`Address`]), or else the TLS server name, or else the TCP peer address, or else `localhost`
//! (a Unix socket, a stream of yours).
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
//! use tower_persistent::transport::HttpConnector;
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
//!
//! Over a Unix domain socket, and over an in-memory stream of a service of yours:
//!
//! ```
//! # #[cfg(unix)]
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use tower::{Layer, ServiceExt, service_fn};
//! use tower_persistent::PersistentLayer;
//! use tower_persistent::discovery::Fixed;
//! use tower_persistent::transport::{HttpConnector, Peer};
//!
//! # fn serve(io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static) {
//! #     let service = hyper::service::service_fn(|_| async {
//! #         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from("hi"))))
//! #     });
//! #     tokio::spawn(hyper::server::conn::http1::Builder::new()
//! #         .serve_connection(hyper_util::rt::TokioIo::new(io), service));
//! # }
//! # let dir = std::env::temp_dir().join(format!("tower-persistent-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("web.sock");
//! # let _ = std::fs::remove_file(&path);
//! # let listener = tokio::net::UnixListener::bind(&path).unwrap();
//! # tokio::spawn(async move { while let Ok((s, _)) = listener.accept().await { serve(s) } });
//! let client = PersistentLayer::new("web", Fixed::new(path.clone()))
//!     .layer(HttpConnector::<Empty<Bytes>>::http1());
//! let request = http::Request::get("/").body(Empty::new()).unwrap();
//! assert_eq!(client.clone().oneshot(request).await.unwrap().status(), 200);
//! assert_eq!(client.current_connection().unwrap().peer(), &Peer::Unix(path));
//! client.close().await;
//!
//! // Your own streams: here each connection is an in-memory duplex, its far end served.
//! let streams = service_fn(|()| async {
//!     let (near, far) = tokio::io::duplex(64 * 1024);
//!     serve(far);
//!     Ok::<_, std::io::Error>(near)
//! });
//! let client = PersistentLayer::new("memory", Fixed::new(()))
//!     .layer(HttpConnector::<Empty<Bytes>>::http1().over(streams));
//! let request = http::Request::get("/").body(Empty::new()).unwrap();
//! assert_eq!(client.clone().oneshot(request).await.unwrap().status(), 200);
//! client.close().await;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # }
//! # #[cfg(not(unix))] fn main() {}
//! ```
//!
//! # Layout
//!
//! [`HttpConnector`] (`connector.rs`) gets a stream from a [`Dial`] (`dial.rs`: [`Address`],
//! [`Dialer`], [`Over`]), shakes hands (TLS in `tls.rs`, then HTTP), and hands over an
//! [`HttpConnection`] (`connection.rs`, with the task that drives hyper's side), whose responses
//! are [`ResponseFuture`] and [`ResponseBody`] (`body.rs`); under them, the watched stream
//! (`io.rs`) and the state a connection's clones and task share (`shared.rs`).
//!
#![cfg_attr(
    not(feature = "tls"),
    doc = "[`HttpConnector::tls`]: https://docs.rs/tower-persistent/latest/tower_persistent/transport/struct.HttpConnector.html#method.tls"
)]

mod body;
mod connection;
mod connector;
mod dial;
mod exec;
mod io;
mod shared;
#[cfg(feature = "tls")]
mod tls;

pub use body::{ResponseBody, ResponseFuture};
pub use connection::{ClosedInFlight, HttpConnection};
pub use connector::{
    Connecting, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, HttpConnectError, HttpConnector,
    MAX_HTTP2_WINDOW, MAX_KEEP_ALIVE, MIN_HTTP2_WINDOW, MIN_KEEP_ALIVE, MIN_KEEP_ALIVE_TIMEOUT,
};
pub use dial::{Address, Dial, Dialer, Over, OverHyper, Peer};
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsConfigError};
