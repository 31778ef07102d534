//! A persistent connection for tonic's generated clients (feature `tonic`).
//!
//! [`GrpcChannel`] wraps a [`Persistent`] handle. Requests go through unchanged; the errors made
//! on the way (no connection while failing fast, the persistent connection closed, the
//! connection lost mid-request, no ready connection within the
//! [`ready_timeout`](crate::PersistentLayer::ready_timeout)) reach the client as the gRPC status
//! a gRPC client gives for the same situation:
//!
//! | error | status |
//! |---|---|
//! | [`ReadyTimeout`] | `DEADLINE_EXCEEDED` |
//! | the request's `grpc-timeout` (tonic's `Request::set_timeout`) passed, counted from the call, before its response head came (the request is then given up: its stream reset) | `DEADLINE_EXCEEDED` (where tonic's `Channel` says `CANCELLED`, "Timeout expired"; other gRPC clients say `DEADLINE_EXCEEDED`) |
//! | a `tonic::Status` already in the error's chain | that status |
//! | the server reset the stream (`RST_STREAM`) | by its HTTP/2 error code, as gRPC maps them: `REFUSED_STREAM` `UNAVAILABLE`, `CANCEL` `CANCELLED`, `ENHANCE_YOUR_CALM` `RESOURCE_EXHAUSTED`, `INADEQUATE_SECURITY` `PERMISSION_DENIED`, `NO_ERROR`, `PROTOCOL_ERROR`, `INTERNAL_ERROR`, `FRAME_SIZE_ERROR` and the like `INTERNAL` (tonic's `Channel` gives `UNKNOWN` for `FRAME_SIZE_ERROR`), others (`STREAM_CLOSED`, `HTTP_1_1_REQUIRED`, which gRPC does not map) `UNKNOWN` |
//! | everything else the transport fails with ([`Closed`](crate::Closed), [`Unavailable`](crate::Unavailable), [`ConnectionClosed`](crate::ConnectionClosed), a connection reset or lost mid-request) | `UNAVAILABLE` |
//!
//! These are the errors of the call, up to the response head. A connection lost once a
//! streaming response has begun fails the response's body, which tonic reads itself: its
//! status then is tonic's, `UNKNOWN` ("error reading a body from connection"), as with tonic's
//! `Channel`.
//!
//! A response stream does not keep its persistent connection open: keep a handle (a clone of
//! the client, or of the channel) for as long as you read one. Dropping the last handle closes
//! the persistent connection (as [`close`](crate::Persistent::close) does), which gives the
//! streams still being read the connector's close timeout (5 s by default), then cuts them
//! off: their status is then tonic's `UNKNOWN`, "error reading a body from connection". (With
//! tonic's own `Channel`, a stream outlives the client it came from.) A stream read to its end
//! (its status in the trailers) is over, whether or not its `Streaming` is still held: it keeps
//! neither the connection's load nor a close waiting.
//!
//! A connection lost before the response head is `UNAVAILABLE`, as gRPC clients say, so that a
//! retry policy on `UNAVAILABLE` fires. (tonic's own `Channel` says `UNKNOWN`, "transport
//! error", for the same loss: here the two differ, as for the `grpc-timeout`.) Its error type,
//! [`Error`], is a concrete, opaque type (as tonic's `Channel` has).
//!
//! # Deadlines and the wait for a connection
//!
//! A request's own deadline (`grpc-timeout`) does **not** bound the wait for a connection.
//! tonic's generated clients wait for the channel's `poll_ready` before they call it, and by
//! default (wait-for-ready) the persistent connection's `poll_ready` waits as long as there is
//! no connection: during an outage, a call with `Request::set_timeout(500 ms)` waits for the
//! next connection, however long that takes, and only then has its 500 ms. (In gRPC the
//! deadline covers both.) To bound that wait, set one of the layer's:
//! - [`ready_timeout`](crate::PersistentLayer::ready_timeout): a request that has waited that
//!   long fails with `DEADLINE_EXCEEDED`;
//! - [`fail_fast`](crate::PersistentLayer::fail_fast): while the last attempt failed, requests
//!   fail at once with `UNAVAILABLE`, as gRPC's default (not wait-for-ready) calls do.
//!
//! (A `tower::timeout` layer above the channel would not do: its clock, too, starts at the
//! call, after `poll_ready`.)
//!
//! [`Balanced`] is tower's p2c balancer over one `GrpcChannel` per replica, with the same
//! concrete error: `HealthClient<Buffer<Balanced<..>>>` can be moved into `tokio::spawn`, where
//! `HealthClient<Buffer<Balance<..>>>` cannot (the balancer's boxed error trips a
//! "`From` is not general enough" in the compiler's check that the task is `Send`).
//!
//! # Examples
//!
//! A generated client takes the channel as it takes tonic's: `HealthClient::new(channel)`. Here,
//! with no server behind the address and fail-fast on, a request fails at once with
//! `UNAVAILABLE`:
//!
//! ```
//! use std::net::SocketAddr;
//! use tower::{Layer, ServiceExt};
//! use tower_persistent::PersistentLayer;
//! use tower_persistent::discovery::Fixed;
//! use tower_persistent::grpc::GrpcChannel;
//! use tower_persistent::transport::HttpConnector;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
//! let persistent = PersistentLayer::new("health", Fixed::new(nobody))
//!     .fail_fast(true)
//!     .layer(HttpConnector::<tonic::body::Body>::http2());
//! let channel = GrpcChannel::new(persistent.clone());
//! let request = http::Request::post("/grpc.health.v1.Health/Check")
//!     .body(tonic::body::Body::empty())
//!     .unwrap();
//! let error = channel.oneshot(request).await.unwrap_err();
//! assert_eq!(error.code(), tonic::Code::Unavailable);
//! assert_eq!(error.to_string(), "persistent connection is unavailable");
//! persistent.close().await;
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tonic::{Code, Status};
use tower_service::Service;

use crate::error::{BoxError, ReadyTimeout};
use crate::service::Persistent;

/// A [`Persistent`] handle whose errors carry their gRPC status; see the [module docs](self).
///
/// Cheap to clone, as the handle; readiness is per clone. Implements `tower::load::Load` when
/// the handle does.
pub struct GrpcChannel<A, C> {
    inner: Persistent<A, C>,
    /// `poll_ready` of the handle failed (it is closed): the next call fails with this, as
    /// tonic turns an error of `poll_ready` into `UNKNOWN`, whatever it says.
    failed: Option<Error>,
}

impl<A, C> GrpcChannel<A, C> {
    /// Wraps `persistent`.
    pub fn new(persistent: Persistent<A, C>) -> Self {
        GrpcChannel {
            inner: persistent,
            failed: None,
        }
    }

    /// The persistent connection underneath.
    pub fn get_ref(&self) -> &Persistent<A, C> {
        &self.inner
    }
}

impl<A, C: Clone> Clone for GrpcChannel<A, C> {
    fn clone(&self) -> Self {
        GrpcChannel {
            inner: self.inner.clone(),
            failed: None,
        }
    }
}

impl<A, C> fmt::Debug for GrpcChannel<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GrpcChannel").field(&self.inner).finish()
    }
}

impl<A, C, B> Service<http::Request<B>> for GrpcChannel<A, C>
where
    Persistent<A, C>: Service<http::Request<B>, Error = BoxError>,
{
    type Response = <Persistent<A, C> as Service<http::Request<B>>>::Response;
    type Error = Error;
    type Future = ResponseFuture<<Persistent<A, C> as Service<http::Request<B>>>::Future>;

    /// Ready when the handle is; once the handle's `poll_ready` fails (it is closed), ready
    /// too, and the call fails: tonic reports an error of `poll_ready` as `UNKNOWN`, and of a
    /// call with its status.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(error)) => {
                self.failed = Some(Error::new(error));
                Poll::Ready(Ok(()))
            }
            other => other.map_err(Error::new),
        }
    }

    /// A request with a `grpc-timeout` header (tonic's `Request::set_timeout`) fails with
    /// `DEADLINE_EXCEEDED` if its response head has not come within it, counted from here.
    ///
    /// # Panics
    ///
    /// With a `grpc-timeout`, outside a tokio runtime with timers (as tonic's `Channel`).
    #[inline]
    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(error) = self.failed.take() {
            return ResponseFuture::failed(error);
        }
        let deadline = grpc_timeout(request.headers())
            .map(|timeout| (timeout, Box::pin(tokio::time::sleep(timeout))));
        ResponseFuture::new(self.inner.call(request), deadline)
    }
}

impl<A, C> tower::load::Load for GrpcChannel<A, C>
where
    Persistent<A, C>: tower::load::Load,
{
    type Metric = <Persistent<A, C> as tower::load::Load>::Metric;

    fn load(&self) -> Self::Metric {
        self.inner.load()
    }
}

/// tower's p2c balancer over one [`GrpcChannel`] per replica, with a concrete error; see the
/// [module docs](self).
///
/// A replica with no connection, or failing fast, weighs more than any connected one, so that
/// of the two replicas p2c compares, the request goes to one that is up (with fail-fast on, a
/// replica that is down answers at once instead of holding up the balancer; when p2c's two
/// picks are both down, the request goes to one of them and fails at once with `UNAVAILABLE`:
/// with k of n replicas down, k(k−1)/(n(n−1)) of the requests). The balancer sits behind a
/// boxed service, so that none of its types (its boxed errors among them) reaches a task that
/// holds it: one allocation per request, next to which a buffer in front costs a channel and a
/// task switch.
pub struct Balanced<B> {
    inner: tower::util::BoxService<GrpcRequest, http::Response<B>, Error>,
}

type GrpcRequest = http::Request<tonic::body::Body>;

impl<B> Balanced<B> {
    /// A balancer over `replicas`.
    pub fn new<A, C>(replicas: impl IntoIterator<Item = GrpcChannel<A, C>>) -> Self
    where
        GrpcChannel<A, C>: Service<GrpcRequest, Response = http::Response<B>, Error = Error>
            + tower::load::Load
            + Send
            + 'static,
        <GrpcChannel<A, C> as Service<GrpcRequest>>::Future: Send + 'static,
        <GrpcChannel<A, C> as tower::load::Load>::Metric: fmt::Debug,
        B: 'static,
    {
        let list = tower::discover::ServiceList::new(replicas.into_iter().collect::<Vec<_>>());
        let balance = tower::balance::p2c::Balance::new(list);
        Balanced {
            inner: tower::util::BoxService::new(tower::util::MapErr::new(
                balance,
                Error::from_balancer,
            )),
        }
    }
}

impl<B> fmt::Debug for Balanced<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balanced").finish_non_exhaustive()
    }
}

impl<B> Service<GrpcRequest> for Balanced<B> {
    type Response = http::Response<B>;
    type Error = Error;
    type Future = BalancedFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        BalancedFuture(self.inner.call(request))
    }
}

/// The response future of [`Balanced`]: a named type, so that no trait object shows in the
/// types of a task that awaits it.
pub struct BalancedFuture<B>(
    Pin<Box<dyn Future<Output = Result<http::Response<B>, Error>> + Send>>,
);

impl<B> Future for BalancedFuture<B> {
    type Output = Result<http::Response<B>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<B> fmt::Debug for BalancedFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancedFuture").finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`GrpcChannel`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            inner: F,
            // The request's `grpc-timeout`, and its timer.
            deadline: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
        },
        Failed { error: Option<Error> },
    }
}

impl<F> ResponseFuture<F> {
    fn new(inner: F, deadline: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>) -> Self {
        ResponseFuture {
            state: State::Called { inner, deadline },
        }
    }

    fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { inner, deadline } => {
                if let Poll::Ready(result) = inner.poll(cx) {
                    return Poll::Ready(result.map_err(Error::new));
                }
                let Some((timeout, timer)) = deadline else {
                    return Poll::Pending;
                };
                match timer.as_mut().poll(cx) {
                    // The request (its stream) is given up as this future is dropped.
                    Poll::Ready(()) => Poll::Ready(Err(Error {
                        status: Status::deadline_exceeded(format!(
                            "no response within the request's grpc-timeout ({timeout:?})"
                        )),
                    })),
                    Poll::Pending => Poll::Pending,
                }
            }
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

/// An error of a [`GrpcChannel`]: the persistent connection's error, with the gRPC status it
/// amounts to as its source (where tonic looks for it).
///
/// Its message is the error's; [`status`](Self::status) tells the code.
pub struct Error {
    status: Status,
}

impl Error {
    fn new(error: BoxError) -> Self {
        let code = code_of(&*error);
        let mut status = Status::new(code, error.to_string());
        status.set_source(Arc::from(error));
        Error { status }
    }

    /// An error of the balancer: a replica's own as it is (p2c boxes it), or else the
    /// balancer's, made one.
    fn from_balancer(error: BoxError) -> Self {
        match error.downcast::<Error>() {
            Ok(error) => *error,
            Err(error) => Error::new(error),
        }
    }

    /// The gRPC status this error amounts to.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The code of that status.
    pub fn code(&self) -> Code {
        self.status.code()
    }
}

/// The request's `grpc-timeout` (gRPC over HTTP/2: at most 8 digits and a unit, `H`, `M`, `S`,
/// `m`, `u` or `n`), as tonic's `Channel` reads it; `None` if there is none, or if it is not
/// valid (as tonic does, which then sets none).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // At most 8 digits: no overflow below.
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 60 * 60),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC code of a transport error: see the module docs.
fn code_of(error: &(dyn StdError + 'static)) -> Code {
    let mut source = Some(error);
    // Bounded: a chain that loops ends here.
    for _ in 0..=crate::error::MAX_SOURCES {
        let Some(err) = source else { break };
        if let Some(ours) = err.downcast_ref::<Error>() {
            return ours.code();
        }
        if err.is::<ReadyTimeout>() {
            return Code::DeadlineExceeded;
        }
        if let Some(status) = err.downcast_ref::<Status>() {
            return status.code();
        }
        if let Some(code) = err.downcast_ref::<h2::Error>().and_then(reset_code) {
            return code;
        }
        source = err.source();
    }
    Code::Unavailable
}

/// The status of a stream reset (`RST_STREAM`) by its HTTP/2 error code, as gRPC maps them
/// (`doc/PROTOCOL-HTTP2.md`, "Errors"), and as tonic's `Channel` gives them. `None` for other
/// HTTP/2 errors: a GOAWAY leaves the streams past its last one unprocessed (`UNAVAILABLE`, as
/// for a connection lost).
fn reset_code(error: &h2::Error) -> Option<Code> {
    use h2::Reason;
    if !error.is_reset() {
        return None;
    }
    Some(match error.reason()? {
        Reason::REFUSED_STREAM => Code::Unavailable,
        Reason::CANCEL => Code::Cancelled,
        Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        Reason::NO_ERROR
        | Reason::PROTOCOL_ERROR
        | Reason::INTERNAL_ERROR
        | Reason::FLOW_CONTROL_ERROR
        | Reason::SETTINGS_TIMEOUT
        | Reason::FRAME_SIZE_ERROR
        | Reason::COMPRESSION_ERROR
        | Reason::CONNECT_ERROR => Code::Internal,
        _ => Code::Unknown,
    })
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.status.code())
            .field("message", &self.status.message())
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.status.message())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::grpc_timeout;

    fn parsed(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    // Every unit of gRPC over HTTP/2, up to 8 digits (the largest without overflow); anything
    // else is no timeout, as tonic reads it.
    #[test]
    fn grpc_timeouts_are_read_as_grpc_over_http2_writes_them() {
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
        assert_eq!(parsed("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(parsed("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parsed("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parsed("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parsed("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parsed("0n"), Some(Duration::ZERO));
        assert_eq!(
            parsed("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for invalid in [
            "",
            "S",
            "100",
            "123456789S",
            "-1S",
            "+1S",
            "1.5S",
            "10x",
            "1 S",
            "é",
        ] {
            let mut headers = http::HeaderMap::new();
            if let Ok(value) = http::HeaderValue::from_str(invalid) {
                headers.insert("grpc-timeout", value);
            } else {
                headers.insert(
                    "grpc-timeout",
                    http::HeaderValue::from_bytes(invalid.as_bytes()).unwrap(),
                );
            }
            assert_eq!(grpc_timeout(&headers), None, "{invalid:?}");
        }
    }
}
