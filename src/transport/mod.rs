//! Transports: HTTP/1.1 and HTTP/2 connections over TCP with hyper 1.x (feature `hyper`, on by
//! default).
//!
//! [`HttpConnector`] is a connector for [`PersistentLayer`](crate::PersistentLayer): a tower
//! `Service` from an [`Address`] (a [`SocketAddr`](std::net::SocketAddr), a `host:port` string
//! resolved at connect time, or an `http::Uri`) to an [`HttpConnection`]. Each connection dials TCP (with
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
//!   sent GOAWAY, an I/O or protocol error, or our [`close`](crate::Closable::close)).
//!   [`close_finished`](crate::Closable::close_finished) resolves then, so the persistent connection
//!   notices and reconnects, even while idle.
//! - **Closed gracefully** ([`closed_gracefully`](crate::Closable::closed_gracefully)): the server
//!   answered on the connection and then ended it in good order (`Connection: close`, GOAWAY, a
//!   keep-alive limit, an idle timeout), before any close of ours. The persistent connection
//!   replaces such a connection at once, instead of waiting out the retry delay.
//! - **Graceful close**: [`close`](crate::Closable::close) stops new requests at once (`poll_ready`
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
//! HTTP/2 requests whose URI has no scheme or authority get `http` and the connection's authority;
//! HTTP/1.1 requests without a `Host` header get one from the URI's authority, or else the
//! connection's authority: the name it was asked for (`host:port`, see [`Address`]), or else the
//! peer address.
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
//! # Layout
//!
//! [`HttpConnector`] (`connector.rs`) dials and shakes hands, and hands over an
//! [`HttpConnection`] (`connection.rs`, with the task that drives hyper's side), whose responses
//! are [`ResponseFuture`] and [`ResponseBody`] (`body.rs`); under them, the watched TCP stream
//! (`io.rs`) and the state a connection's clones and task share (`shared.rs`).

mod body;
mod connection;
mod connector;
mod dial;
mod io;
mod shared;
#[cfg(feature = "tls")]
mod tls;

pub use body::{ResponseBody, ResponseFuture};
pub use connection::HttpConnection;
pub use connector::{
    Connecting, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, HttpConnectError, HttpConnector,
    MAX_KEEP_ALIVE, MIN_KEEP_ALIVE,
};
pub use dial::{Address, Dial, Dialer, Over, Peer};
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsConfigError};
