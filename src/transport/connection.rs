//! [`HttpConnection`]: the cloneable, closable handle on one HTTP connection, and the task that
//! drives hyper's side of it.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::client::conn::{TrySendError, http1, http2};
use pin_project_lite::pin_project;
use tokio::sync::Semaphore;
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use super::body::{Guarded, ResponseBody, ResponseFuture, respond};
use super::dial::Peer;
use super::shared::{ConnShared, InFlight, Version};
use crate::closable::WeakSuccessor;
use crate::error::{BoxError, ConnectionClosed};
use crate::handover;
use crate::shared::deadline_after;
use crate::{Closable, Successor};
use tokio::time::Instant;

/// An HTTP/1.1 or HTTP/2 connection made by [`HttpConnector`](super::HttpConnector): a cloneable
/// `Service<http::Request<B>>` and [`Closable`].
///
/// Clones share the connection; readiness is per clone. See the [module docs](super).
pub struct HttpConnection<B> {
    shared: Arc<ConnShared>,
    // Each request's body is guarded: a panic of its is an error of the body (see `Guarded`).
    sender: Sender<Guarded<B>>,
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
            .field(
                "closed",
                &(self.shared.closing.is_set() || self.shared.finished.is_set()),
            )
            .finish()
    }
}

impl<B> HttpConnection<B> {
    /// Who this connection reaches: a TCP address, a Unix domain socket's path, or a stream of
    /// yours ([`Peer::Stream`]).
    pub fn peer(&self) -> &Peer {
        &self.shared.peer
    }

    /// The TCP address this connection is connected to; for a connection that is not TCP (a
    /// Unix domain socket, a stream of yours), the unspecified address `0.0.0.0:0`: see
    /// [`peer`](Self::peer).
    pub fn peer_addr(&self) -> SocketAddr {
        match self.shared.peer {
            Peer::Tcp(address) => address,
            _ => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// Whether this connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.shared.secure
    }

    /// Whether this is an HTTP/2 connection.
    pub fn is_http2(&self) -> bool {
        self.shared.version == Version::Http2
    }

    /// Requests sent on this connection whose responses are not finished yet: a response counts
    /// until its body has given its end (its last frame: trailers, or the last data frame of a
    /// body whose length hyper knows over HTTP/1.1) or is dropped. A request body still being
    /// sent after its response finished is not counted (a close waits for it over HTTP/2, and
    /// drops it over HTTP/1.1: see the [module docs](super)).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }
}

/// Requests in flight on the connection (a response counts until its body ends or is dropped).
impl<B> tower::load::Load for HttpConnection<B> {
    type Metric = usize;

    fn load(&self) -> usize {
        self.in_flight()
    }
}

impl<B: Send + 'static> Closable for HttpConnection<B> {
    /// Resolves once the socket is closed: after the requests in flight, bounded by the
    /// connector's close timeout (see the [module docs](super)). After the server ended the
    /// connection in good order by itself (an HTTP/2 GOAWAY), once that end is known: the
    /// requests the server goes on with are left to it (`abort` cuts them off).
    fn close(&self) -> impl Future<Output = ()> + Send {
        self.shared.close_asked.store(true, Ordering::Release);
        self.shared.closing.set();
        self.shared.task.wake();
        let shared = self.shared.clone();
        async move {
            shared.finished.wait().await;
            // Finished before this close (hyper's connection ended by itself), the stream may
            // still be open over HTTP/2, in hyper's own task, or finishing a shutdown that
            // waits: it is cut off at the close timeout. Bounded here too, should that task be
            // gone. (Over HTTP/1.1 a stream still open otherwise is an upgrade's, the caller's.)
            // Unless the server had ended the connection in good order before this close was
            // asked for: the requests it goes on with (a GOAWAY's) are left to it.
            let shutting = shared.shutdown_waits.load(Ordering::Acquire);
            let ours = shutting || shared.close_ours();
            if (shared.version == Version::Http2 || shutting) && ours && !shared.is_stream_closed()
            {
                let bound = shared.close_timeout.saturating_add(CUT_GRACE);
                let _ = tokio::time::timeout(bound, shared.stream_closed()).await;
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.shared.closing.is_set() || self.shared.finished.is_set()
    }

    /// Closes the connection (if no close began yet) and cuts off at once what is still open
    /// on it, without waiting for the connector's close timeout: requests in flight fail with
    /// [`ClosedInFlight`], and the socket closes. A stream handed over by an upgrade is the
    /// caller's and is not cut off. A persistent connection calls it when the
    /// connection's close outlasts its own close timeout (shorter than the connector's, or the
    /// connector's `Duration::MAX`).
    fn abort(&self) {
        self.shared.aborted.set();
        self.shared.close_asked.store(true, Ordering::Release);
        self.shared.closing.set();
        self.shared.task.wake();
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        self.shared.finished.wait()
    }

    /// True when hyper's connection ended without error before any close of ours (the server
    /// closed it in good order: `Connection: close`, GOAWAY, a keep-alive limit, an idle
    /// timeout) after the connection served at least one response (or, over HTTP/2, with a
    /// GOAWAY that left requests in flight, which the server goes on serving), or after it had
    /// been idle, nothing in flight, for a second or more: a server's idle timeout. (With
    /// requests rarer than that timeout, the connection made at once to replace one that
    /// served meets it before any request, and must not make the next request wait for the
    /// retry delay.) A server that accepts and closes sooner without serving meets the delay.
    /// Not over HTTP/1.1 when a response failed (a head that is not HTTP, a body cut short):
    /// hyper ends its connection without an error of its own then, having given the error to
    /// the request.
    ///
    /// Over HTTP/1.1, a caller that gives up a request hyper has taken (its response future
    /// dropped before the response head came: a `tower::timeout`, say), or whose request fails
    /// for the caller's own reason (its body's stream failed, before the response head or
    /// after it), ends the connection (a request given up, at once: hyper would close it once
    /// it noticed, which it does not while it writes the request's body to a server that
    /// stopped reading; a body's error, by hyper), which is the caller's doing, not the
    /// server's. Such a connection counts as closed in good order if it answered before (a
    /// response head, not an informational one: a working server, whose slow answer a short
    /// timeout did not wait for), or if it is the first in a row of its connector's to end so
    /// without having answered (one that answered, or that ends otherwise, ends the row): a
    /// slow answer and a short timeout cost no retry delay, however often, while a server that
    /// takes requests and never answers them still meets it from the second connection on.
    fn closed_gracefully(&self) -> bool {
        let shared = &self.shared;
        let fine =
            !shared.reset_by_peer.load(Ordering::Acquire) && !shared.failed.load(Ordering::Acquire);
        if shared.abandoned.load(Ordering::Acquire) {
            // hyper ended it (which reads as an end in good order): the caller's doing. A
            // response cut short by that end (its body being read as the request's body failed)
            // is the caller's doing too.
            let fine = fine
                || (!shared.reset_by_peer.load(Ordering::Acquire)
                    && shared.caller_failed.load(Ordering::Acquire));
            if shared.answered.load(Ordering::Acquire) {
                // The server answered on it (a response head, not an informational one): a
                // working server, whose answer a caller did not wait for (a slow answer under a
                // short timeout, now and then). It ends the row, as a connection that ends
                // otherwise does.
                shared.given_up_row_ended();
                return fine;
            }
            return fine && shared.given_up_first();
        }
        shared.given_up_row_ended();
        fine && shared.ended_by_peer.load(Ordering::Acquire)
            && (shared.served.load(Ordering::Acquire) || shared.idle_closed.load(Ordering::Acquire))
    }

    /// Kept as a weak reference (it keeps no later connection alive): a request that hyper
    /// hands back unsent because the connection ended is sent on the successor, if one is
    /// announced. See the [module docs](super).
    fn set_successor(&self, successor: Successor<Self>) {
        let _ = self.shared.successor.set(Box::new(successor.downgrade()));
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
        if self.shared.found_gone() {
            // The peer closed it (or reset it): no request is queued on it. The runtime wakes
            // hyper's task with that end of stream, and the task ends; until then this waits,
            // then fails (a persistent connection, which watches the task's end, replaces the
            // connection meanwhile).
            if self.shared.wake_at_end(cx.waker()) {
                return Poll::Pending;
            }
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
                let polled = match lock(send).as_mut() {
                    Some(send) => send.poll_ready(cx).map_err(closed),
                    // hyper's connection is gone (see `Release`).
                    None => Poll::Ready(Err(ConnectionClosed::new().into())),
                };
                if let Poll::Ready(Err(_)) = polled {
                    // The connection is gone: give the turn back.
                    *permit = None;
                }
                polled
            }
            Sender::Http2(send) => match lock(send).as_mut() {
                Some(send) => send.poll_ready(cx).map_err(closed),
                // hyper's connection is gone (see `Release`).
                None => Poll::Ready(Err(ConnectionClosed::new().into())),
            },
        }
    }

    fn call(&mut self, request: http::Request<B>) -> ResponseFuture {
        self.send(request.map(Guarded::new), true)
    }
}

/// hyper's `poll_ready` fails only once its connection is gone (which `is_closed` says only
/// once the connection's task has ended): the same error as `is_closed` gives.
fn closed(error: hyper::Error) -> BoxError {
    if error.is_closed() {
        ConnectionClosed::new().into()
    } else {
        error.into()
    }
}

impl<B> HttpConnection<B>
where
    B: Body + Send + 'static,
{
    /// Sends `request`; with `resend`, a request that hyper hands back unsent may go to the
    /// successor (see [`resend_on_successor`]), once: a resent request is sent without it.
    fn send(&mut self, mut request: http::Request<Guarded<B>>, resend: bool) -> ResponseFuture {
        let shared = &self.shared;
        let authority = || shared.authority();
        let in_flight = InFlight::new(shared);
        request.body_mut().sent_on(shared);
        match &mut self.sender {
            Sender::Http1 { send, permit, .. } => {
                let turn = permit
                    .take()
                    .expect("HttpConnection::call was called before poll_ready returned Ready");
                let added = Added::host(&mut request, authority);
                let upgrade = asks_for_upgrade(&request);
                ResponseFuture::new(Box::pin(Http1Sending {
                    state: Http1State::Unsent {
                        request: Some(request),
                    },
                    start: |send: &mut http1::SendRequest<Guarded<B>>, request| {
                        send.try_send_request(request)
                    },
                    turn: Some(turn),
                    send: send.clone(),
                    in_flight: Some(in_flight),
                    resend: resend.then_some(added),
                    upgrade,
                }))
            }
            Sender::Http2(send) => {
                let added = Added::scheme_and_authority(&mut request, authority, shared.secure);
                let resend = resend.then_some(added);
                // The probe found the connection's end (a request admitted before): sent
                // nowhere, as once hyper's connection is gone.
                if shared.found_dead() {
                    return ResponseFuture::new(gone(request, resend, in_flight));
                }
                // The lock is held while hyper writes the request into its queue, not longer.
                let sent = match lock(send).as_mut() {
                    Some(send) => send.try_send_request(request),
                    None => return ResponseFuture::new(gone(request, resend, in_flight)),
                };
                ResponseFuture::new(Box::pin(Http2Sending {
                    sent,
                    in_flight: Some(in_flight),
                    resend,
                    resending: None,
                }))
            }
        }
    }
}

/// What a request's future gives: the response, or why there is none.
type Sent = Result<http::Response<ResponseBody>, BoxError>;

pin_project! {
    /// An HTTP/2 request on its way: hyper's future, then the response with its body counted
    /// in flight. Written out rather than as an async block, whose state kept hyper's future
    /// twice (as captured, and as awaited) beside the locals of the hand-back path: 984 bytes
    /// made on the stack and moved into the box at every request, where this takes 280.
    struct Http2Sending<F> {
        #[pin]
        sent: F,
        // Taken when `sent` is done.
        in_flight: Option<InFlight>,
        resend: Option<Added>,
        // A request handed back unsent, on its way to the successor.
        resending: Option<Pin<Box<dyn Future<Output = Sent> + Send>>>,
    }
}

impl<F, B> Future for Http2Sending<F>
where
    F: Future<Output = Result<http::Response<Incoming>, TrySendError<http::Request<Guarded<B>>>>>,
    B: Body + Send + 'static,
{
    type Output = Sent;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        let this = self.project();
        if let Some(resending) = this.resending {
            return resending.as_mut().poll(cx);
        }
        let sent = ready!(this.sent.poll(cx));
        let in_flight = this
            .in_flight
            .take()
            .expect("HttpConnection's response future polled after completion");
        match sent {
            Ok(response) => Poll::Ready(Ok(respond(response, in_flight, false))),
            Err(error) => match handed_back(error, this.resend.take(), in_flight) {
                Ok(mut resending) => {
                    let polled = resending.as_mut().poll(cx);
                    *this.resending = Some(resending);
                    polled
                }
                Err(error) => Poll::Ready(Err(error)),
            },
        }
    }
}

/// An HTTP/2 request that hyper handed back unsent (its connection does so only once it is
/// gone: its queue was dropped, or closed before the request came): on its way to the
/// successor if it may go there (`resend`), else the error it fails with.
#[cold]
#[inline(never)]
fn handed_back<B>(
    mut error: TrySendError<http::Request<Guarded<B>>>,
    resend: Option<Added>,
    in_flight: InFlight,
) -> Result<Pin<Box<dyn Future<Output = Sent> + Send>>, BoxError>
where
    B: Body + Send + 'static,
{
    match (error.take_message(), resend) {
        (Some(request), Some(added)) => Ok(Box::pin(resend_on_successor(
            request,
            added,
            error.into_error().into(),
            in_flight,
        ))),
        _ => Err(failed(in_flight.connection(), error.into_error())),
    }
}

/// A request called for after hyper's connection ended and its queue was released (see
/// [`Release`]; after `poll_ready` admitted it): sent nowhere, as a request hyper hands back
/// unsent, so it goes to the successor if it may (`resend`), or fails with
/// [`ConnectionClosed`] (a request already on its way to a successor fails with the first
/// connection's error instead: see [`resend_on_successor`]).
#[cold]
#[inline(never)]
fn gone<B>(
    request: http::Request<Guarded<B>>,
    resend: Option<Added>,
    in_flight: InFlight,
) -> Pin<Box<dyn Future<Output = Sent> + Send>>
where
    B: Body + Send + 'static,
{
    let error: BoxError = ConnectionClosed::new().into();
    match resend {
        Some(added) => Box::pin(resend_on_successor(request, added, error, in_flight)),
        None => Box::pin(std::future::ready(Err(error))),
    }
}

/// What `send` added to a request for its connection: taken off again before the request goes
/// to the successor, which adds its own.
#[derive(Debug)]
enum Added {
    Nothing,
    /// The `Host` header (HTTP/1.1).
    Host,
    /// The scheme and authority, over the request's own URI (HTTP/2). Boxed: the response
    /// future holds this, and one that grew past 1 KiB would cost every request a slower
    /// allocation.
    Uri(Box<http::Uri>),
}

impl Added {
    /// HTTP/1.1: a request without a `Host` header gets one, from its URI's authority or else
    /// the connection's `authority` (asked for only then).
    fn host<'a, B>(request: &mut http::Request<B>, authority: impl FnOnce() -> &'a str) -> Added {
        if request.headers().contains_key(http::header::HOST) {
            return Added::Nothing;
        }
        let host = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| authority().to_owned());
        match http::HeaderValue::from_str(&host) {
            Ok(value) => {
                request.headers_mut().insert(http::header::HOST, value);
                Added::Host
            }
            Err(_) => Added::Nothing,
        }
    }

    /// HTTP/2: a request whose URI has no scheme or authority gets `http` (`https` if `secure`)
    /// and the connection's `authority` (asked for only then; and the path `/` if it has none).
    fn scheme_and_authority<'a, B>(
        request: &mut http::Request<B>,
        authority: impl FnOnce() -> &'a str,
        secure: bool,
    ) -> Added {
        if request.uri().scheme().is_some() && request.uri().authority().is_some() {
            return Added::Nothing;
        }
        let original = std::mem::take(request.uri_mut());
        let mut parts = original.clone().into_parts();
        parts.scheme.get_or_insert(if secure {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        if parts.authority.is_none() {
            parts.authority = http::uri::Authority::try_from(authority()).ok();
        }
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        match http::Uri::from_parts(parts) {
            Ok(uri) => {
                *request.uri_mut() = uri;
                Added::Uri(Box::new(original))
            }
            Err(_) => {
                *request.uri_mut() = original;
                Added::Nothing
            }
        }
    }

    /// Takes off what was added.
    fn take_off<B>(self, request: &mut http::Request<B>) {
        match self {
            Added::Nothing => {}
            Added::Host => {
                request.headers_mut().remove(http::header::HOST);
            }
            Added::Uri(uri) => *request.uri_mut() = *uri,
        }
    }
}

/// A request that hyper handed back unsent because its connection ended (so it never reached
/// the server): sent on the connection's successor if the persistent connection announces one
/// (it replaces the connection at once, as hyper-util's pooled client sends such a request
/// again on a new connection), within the connector's connect timeout. Otherwise (the next
/// round must wait out its retry delay; the attempt failed; closing began; the connection is
/// one of your own; the request was made by an `on_event` handler, which the persistent
/// connection awaits before it can replace the connection) fails with `error`.
async fn resend_on_successor<B>(
    mut request: http::Request<Guarded<B>>,
    added: Added,
    error: BoxError,
    in_flight: InFlight,
) -> Result<http::Response<ResponseBody>, BoxError>
where
    B: Body + Send + 'static,
{
    // The successor is kept alive by the persistent connection until it is announced, and
    // then until it dies.
    let connection = in_flight.connection();
    let successor = connection
        .successor::<WeakSuccessor<HttpConnection<B>>>()
        .and_then(WeakSuccessor::upgrade);
    let limit = connection.resend_limit;
    // No longer in flight on the dead connection.
    drop(in_flight);
    let Some(successor) = successor.filter(|_| !crate::driver::in_a_handler()) else {
        return Err(error);
    };
    let Ok(Some(mut next)) = tokio::time::timeout(limit, successor.get()).await else {
        return Err(error);
    };
    drop(successor);
    added.take_off(&mut request);
    tracing::debug!(
        peer = %next.shared.peer,
        "sending a request handed back unsent by a dead connection on its successor",
    );
    // A successor that closed meanwhile (a GOAWAY of its own, closing begun): the request was
    // sent nowhere, which hyper's error says (`is_canceled`), where the successor's would not.
    if std::future::poll_fn(|cx| next.poll_ready(cx))
        .await
        .is_err()
    {
        return Err(error);
    }
    match next.send(request, false).await {
        // The successor's hyper connection ended between its `poll_ready` and the send (see
        // `gone`): sent nowhere, as above.
        Err(e) if e.is::<ConnectionClosed>() => Err(error),
        sent => sent,
    }
}

pin_project! {
    #[project = Http1StateProj]
    enum Http1State<F, B> {
        // Not polled yet. hyper gets the request at the first poll, not in `call`: a request
        // given to hyper and then given up (its future dropped unpolled) makes hyper close the
        // connection, where a future dropped before its first poll must cost nothing.
        Unsent { request: Option<http::Request<B>> },
        Sent { #[pin] sent: F },
        // Handed back unsent: offered again, or sent on the successor.
        Resending { resending: Pin<Box<dyn Future<Output = Sent> + Send>> },
    }
}

pin_project! {
    /// An HTTP/1.1 request on its way: hyper's future (made at the first poll by `start`,
    /// which names its type), holding this clone's turn until the response head arrives (the
    /// next clone cannot take the turn while hyper has yet to take this request from its
    /// queue: hyper withdraws its ready flag when it does), then the response with its body
    /// counted in flight. Written out, as [`Http2Sending`] is (296 bytes, where the async
    /// function's state took 1,048); what follows a request handed back unsent is
    /// [`http1_handed_back`]'s.
    struct Http1Sending<F: Future, S, B> {
        #[pin]
        state: Http1State<F, Guarded<B>>,
        start: S,
        // Dropped when the request is done with (answered, handed to the successor, failed).
        turn: Option<tokio::sync::OwnedSemaphorePermit>,
        send: SendSlot<http1::SendRequest<Guarded<B>>>,
        // Taken when `sent` is done.
        in_flight: Option<InFlight>,
        resend: Option<Added>,
        // The request asks for an upgrade (see `respond`).
        upgrade: bool,
    }

    // Dropped while hyper has the request and no response head came: the caller gave it up,
    // and the connection's task ends hyper's connection, as hyper does once it notices (see
    // `ConnShared::abandoned` and `given_up_in_flight`). A head that has come while the future
    // was not polled is there to take: then hyper keeps the connection (the response, dropped
    // here, goes as a body dropped early does).
    impl<F: Future, S, B> PinnedDrop for Http1Sending<F, S, B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let (Http1StateProj::Sent { sent }, Some(in_flight)) =
                (this.state.project(), this.in_flight.as_ref())
            else {
                return;
            };
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if sent.poll(&mut cx).is_pending() {
                let shared = in_flight.connection();
                shared.abandoned.store(true, Ordering::Release);
                shared.given_up_in_flight.store(true, Ordering::Release);
                shared.task.wake();
            }
        }
    }
}

impl<F, S, B> Future for Http1Sending<F, S, B>
where
    F: Future<Output = Result<http::Response<Incoming>, TrySendError<http::Request<Guarded<B>>>>>,
    S: Fn(&mut http1::SendRequest<Guarded<B>>, http::Request<Guarded<B>>) -> F,
    B: Body + Send + 'static,
{
    type Output = Sent;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                Http1StateProj::Unsent { request } => {
                    let request = request
                        .take()
                        .expect("HttpConnection's response future polled after a panic");
                    let mut send = lock(this.send);
                    let found_dead = this
                        .in_flight
                        .as_ref()
                        .is_some_and(|in_flight| in_flight.connection().found_dead());
                    let Some(send) = send.as_mut().filter(|_| !found_dead) else {
                        // hyper's connection ended since `poll_ready` (see `Release`), or the
                        // probe of another request found its end: sent nowhere.
                        drop(send);
                        drop(this.turn.take());
                        let in_flight = this
                            .in_flight
                            .take()
                            .expect("HttpConnection's response future polled after completion");
                        let resending = gone(request, this.resend.take(), in_flight);
                        this.state.set(Http1State::Resending { resending });
                        continue;
                    };
                    let sent = (this.start)(send, request);
                    this.state.set(Http1State::Sent { sent });
                }
                Http1StateProj::Sent { sent } => {
                    let sent = ready!(sent.poll(cx));
                    let in_flight = this
                        .in_flight
                        .take()
                        .expect("HttpConnection's response future polled after completion");
                    let turn = this.turn.take();
                    let error = match sent {
                        Ok(response) => {
                            return Poll::Ready(Ok(respond(response, in_flight, *this.upgrade)));
                        }
                        Err(error) => error,
                    };
                    let resending = Box::pin(http1_handed_back(
                        this.send.clone(),
                        turn,
                        error,
                        in_flight,
                        this.resend.take(),
                        *this.upgrade,
                    ));
                    this.state.set(Http1State::Resending { resending });
                }
                Http1StateProj::Resending { resending } => return resending.as_mut().poll(cx),
            }
        }
    }
}

/// Whether an HTTP/1.1 request asks for an upgrade: an `Upgrade` header (a `101 Switching
/// Protocols` answer then hands the connection over), or `CONNECT` (whose `2xx` does).
fn asks_for_upgrade<B>(request: &http::Request<B>) -> bool {
    request.method() == http::Method::CONNECT
        || request.headers().contains_key(http::header::UPGRADE)
}

/// How many times a request that hyper handed back unsent is offered again (each time after
/// the connection said it was ready again).
const HTTP1_RESENDS: usize = 8;

/// An HTTP/1.1 request that hyper handed back unsent (`error`). If it was not ready all the
/// same, waits until it is and sends again (at most [`HTTP1_RESENDS`] times), holding this
/// clone's `turn`; so a request that `poll_ready` admitted never fails for a readiness race.
/// If the connection is gone, see [`resend_on_successor`] (with `resend`: what was added to the
/// request).
async fn http1_handed_back<B>(
    send: SendSlot<http1::SendRequest<Guarded<B>>>,
    turn: Option<tokio::sync::OwnedSemaphorePermit>,
    mut error: TrySendError<http::Request<Guarded<B>>>,
    in_flight: InFlight,
    resend: Option<Added>,
    upgrade: bool,
) -> Sent
where
    B: Body + Send + 'static,
{
    let mut resends = 0;
    loop {
        // Before `in_flight` goes: the connection's end waits for it to tell how it ended.
        in_flight.connection().head_failed(error.error());
        let request = match error.take_message() {
            Some(unsent) if resends < HTTP1_RESENDS => unsent,
            _ => return Err(failed(in_flight.connection(), error.into_error())),
        };
        resends += 1;
        // Ready again, or closed (or its queue released: see `Release`): then the connection
        // is gone.
        let ready = std::future::poll_fn(|cx| match lock(&send).as_mut() {
            Some(send) => send.poll_ready(cx).map_err(drop),
            None => Poll::Ready(Err(())),
        })
        .await;
        let mut request = Some(request);
        let sent = match (ready, lock(&send).as_mut()) {
            (Ok(()), Some(send)) => request.take().map(|request| send.try_send_request(request)),
            _ => None,
        };
        let Some(sent) = sent else {
            let request = request.expect("a request not sent is still here");
            let Some(added) = resend else {
                return Err(error.into_error().into());
            };
            drop(turn);
            return Box::pin(resend_on_successor(
                request,
                added,
                error.into_error().into(),
                in_flight,
            ))
            .await;
        };
        error = match sent.await {
            Ok(response) => return Ok(respond(response, in_flight, upgrade)),
            Err(error) => error,
        };
    }
}

/// The error a request failed with: hyper's, or [`ClosedInFlight`] if a close of ours cut it
/// off (hyper's error then speaks of a dispatch task dropped by its runtime).
fn failed(shared: &ConnShared, error: hyper::Error) -> BoxError {
    if shared.cut_off.load(Ordering::Acquire) {
        ClosedInFlight::new().into()
    } else {
        error.into()
    }
}

/// A request was in flight on an [`HttpConnection`] whose graceful
/// [`close`](crate::Closable::close) waited the connector's
/// [`close_timeout`](super::HttpConnector::close_timeout) for it (at once, with a zero close
/// timeout), then closed the socket; or that was [`abort`](crate::Closable::abort)ed, which
/// does not wait. The server may have received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedInFlight(());

impl ClosedInFlight {
    pub(super) fn new() -> Self {
        ClosedInFlight(())
    }
}

impl fmt::Display for ClosedInFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "connection closed with the request in flight: its close timed out or was aborted",
        )
    }
}

impl std::error::Error for ClosedInFlight {}

pub(super) enum Sender<B> {
    Http1 {
        /// The connection's one hyper `SendRequest`, shared by the clones (see [`Release`]).
        send: SendSlot<http1::SendRequest<B>>,
        permits: PollSemaphore,
        /// This clone's turn to send, taken in `poll_ready`, given back in `call`.
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// The connection's one hyper `SendRequest`, shared by the clones (see [`Release`]).
    Http2(SendSlot<http2::SendRequest<B>>),
}

/// A connection's hyper `SendRequest`, shared by its clones; `None` once hyper's connection is
/// gone.
pub(super) type SendSlot<T> = Arc<Mutex<Option<T>>>;

/// Locks `send`, whatever a panic left in it.
fn lock<T>(send: &SendSlot<T>) -> std::sync::MutexGuard<'_, Option<T>> {
    send.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops the connection's hyper `SendRequest` (see [`SendSlot`]) when dropped, if a clone of
/// the connection still holds it: held by the future that drives hyper's connection, with it,
/// and dropped after it. (Weak: once every clone is gone, so is the `SendRequest`, and hyper
/// ends its connection, as it does when its last `SendRequest` goes.)
///
/// hyper's queue of requests is a tokio unbounded channel, and hyper answers a request still
/// in it when its connection ends (handed back unsent) only by draining it as its receiver is
/// dropped. That drain stops at the first slot that a sender has claimed and not yet written:
/// a request sent just as the connection ends (a GOAWAY, a close) is left in the queue with the
/// requests behind it, and is answered only once the channel itself goes, with the last
/// `SendRequest`. A clone of the connection kept by a caller awaiting that very request (a
/// persistent connection's handle keeps its connection between calls) would keep it pending
/// for good. Dropping the one `SendRequest` as hyper's connection ends drops the channel, and
/// with it every request left in it: each is handed back unsent (`operation was canceled`),
/// as the drain would have done.
pub(super) struct Release<T>(std::sync::Weak<Mutex<Option<T>>>);

impl<T> Release<T> {
    /// The connection's slot for `send`, and its release.
    pub(super) fn slot(send: T) -> (SendSlot<T>, Release<T>) {
        let slot = Arc::new(Mutex::new(Some(send)));
        let release = Release(Arc::downgrade(&slot));
        (slot, release)
    }
}

impl<T> Drop for Release<T> {
    fn drop(&mut self) {
        if let Some(send) = self.0.upgrade() {
            // Taken under the lock (a request being written into the queue is written first),
            // dropped outside it.
            let taken = lock(&send).take();
            drop(taken);
        }
    }
}

impl<B> Sender<B> {
    pub(super) fn http1(send: SendSlot<http1::SendRequest<B>>) -> Self {
        Sender::Http1 {
            send,
            permits: PollSemaphore::new(Arc::new(Semaphore::new(1))),
            permit: None,
        }
    }

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

pub(super) type ConnDriver = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

impl<B: 'static> HttpConnection<B> {
    /// Spawns the task that drives hyper's connection `conn` on the current runtime, and
    /// returns the handle on it and the task (to abort while the connect is not finished).
    pub(super) async fn start(
        shared: Arc<ConnShared>,
        sender: Sender<Guarded<B>>,
        conn: ConnDriver,
        close_timeout: Duration,
    ) -> (Self, Option<tokio::task::AbortHandle>) {
        // The guards are made here, not in the task: a task dropped before it first ran (its
        // runtime shut down) still finishes the connection and closes its turn.
        let task = Box::pin(drive(
            FinishOnDrop(shared.clone()),
            CloseOnDrop(sender.semaphore()),
            conn,
            shared.clone(),
            close_timeout,
        ));
        // Over HTTP/1.1 a persistent connection's driver polling the connect may take the task
        // over (see `handover`). (Over HTTP/2 the connector still waits for the server's
        // SETTINGS, and for the task's end should the server close first, once it is made.)
        let task = match shared.version {
            Version::Http1 => {
                let owner = Arc::as_ptr(&shared) as usize;
                handover::spawn_or_hand_over(task, owner, identity::<B>).await
            }
            Version::Http2 => Some(tokio::spawn(task).abort_handle()),
        };
        (HttpConnection { shared, sender }, task)
    }
}

/// The identity of `conn` if it is an `HttpConnection<B>`: the address of its shared state.
fn identity<B: 'static>(conn: &dyn std::any::Any) -> Option<usize> {
    conn.downcast_ref::<HttpConnection<B>>()
        .map(|conn| Arc::as_ptr(&conn.shared) as usize)
}

/// Drives hyper's connection until it ends, or until a graceful close finishes.
///
/// However it ends, `permits` is closed (clones waiting for the HTTP/1.1 turn learn that it is
/// over), and then `finished` releases the probe and finishes the connection: they are the
/// first parameters, dropped last (or earlier, see [`outlive`]).
async fn drive(
    finished: FinishOnDrop,
    permits: CloseOnDrop,
    mut conn: ConnDriver,
    shared: Arc<ConnShared>,
    close_timeout: Duration,
) {
    // hyper's connection first, and the close of ours checked only when it has nothing to do:
    // `close` wakes this task through `task` (cheaper, per wake-up, than a `Notify` waiter),
    // registered again only when the waker changes (only `close` takes it out).
    let mut registered: Option<std::task::Waker> = None;
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        if crate::signal::waker_changed(&mut registered, cx.waker()) {
            shared.task.register(cx.waker());
        }
        if shared.closing.is_set() {
            return Poll::Ready(None);
        }
        // A request given up in flight (HTTP/1.1): hyper's connection is over, as hyper ends
        // it in good order once it notices, which it may never do while it writes the
        // request's body to a server that stopped reading.
        if shared.given_up_in_flight.load(Ordering::Acquire) {
            return Poll::Ready(Some(Ok(())));
        }
        // hyper is done with its connection and shuts the stream down, which waits (a TLS
        // close_notify behind a full socket, a stream of yours whose shutdown waits for its
        // peer): hyper's connection has ended. The shutdown goes on within the close timeout
        // (see below), and the connection does not wait for it.
        if shared.shutdown_waits.load(Ordering::Acquire) {
            return Poll::Ready(Some(Ok(())));
        }
        // The probe found the server's end in the idle connection's socket (and woke
        // this task): hyper's connection is over.
        if shared.ended_while_idle() {
            return Poll::Ready(Some(shared.end_while_idle()));
        }
        if shared.found_dead() {
            // The probe's wake took the waker (a request in flight kept the connection from
            // ending then): registered again, for `close` and the rest.
            shared.task.register(cx.waker());
        }
        Poll::Pending
    })
    .await;
    // hyper ends an HTTP/1.1 connection that never had a request with an incomplete message
    // when the server closes it (it waits for a first response from the start): an end in good
    // order all the same.
    let ended = match ended {
        Some(Err(error)) if shared.never_used() && is_incomplete_message(&error) => Some(Ok(())),
        // HTTP/1.1: the server's end without its transport's goodbye (TLS's close_notify) right
        // behind responses that the caller has yet to read: hyper, having delivered them, ends
        // its connection with that error, where over TCP it ends in good order. Judged as over
        // TCP: by those responses, below (a body cut short by the end fails, and with it the
        // verdict).
        Some(Err(error)) if shared.ended_unclean_behind_responses(&error) => Some(Ok(())),
        // HTTP/1.1: the server's close after an answer it gave before reading the request's
        // body, a reset (its unread bytes) that the rest of the body met: judged as an end of
        // stream behind that answer.
        Some(Err(error)) if shared.ended_reset_behind_answer(&error) => Some(Ok(())),
        // That reset, with a request still waiting for its head (hyper gives it the error and
        // ends without one): the bytes were no answer (`100 Continue`, a head cut short).
        Some(Ok(())) if shared.reset_was_behind_answer() => {
            shared.mark_failed();
            Some(Ok(()))
        }
        ended => ended,
    };
    let ended_by_peer = matches!(ended, Some(Ok(())));
    // Ended so before any close of ours: a close asked for from now on (a persistent
    // connection's, whose caller met this connection closing; or yours) finds the server
    // closing it already, and leaves it what it goes on with (see `close`).
    if ended_by_peer && !shared.close_asked.load(Ordering::Acquire) {
        shared.peer_ended_first.store(true, Ordering::Release);
    }
    // When a close of ours must be over: what is still open on the stream then is cut off.
    let mut deadline = None;
    match ended {
        Some(Ok(())) if shared.reset_by_peer.load(Ordering::Acquire) => {
            // The probe took the reset's error; hyper read the end of stream that followed.
            tracing::debug!(peer = %shared.peer, "http connection reset by the peer");
        }
        Some(Ok(())) => {
            // The peer ended it in good order (EOF between responses, Connection: close,
            // GOAWAY, an idle timeout), before any close of ours.
            shared.ended_in_good_order();
            tracing::debug!(peer = %shared.peer, "http connection ended");
        }
        Some(Err(error)) if shared.ended_idle(&error) => {
            // HTTP/2: the server's end of stream, without GOAWAY, on a connection idle for a
            // second or more: its idle timeout, in good order.
            tracing::debug!(peer = %shared.peer, %error, "http connection ended while idle");
            shared.ended_in_good_order();
        }
        Some(Err(error)) => {
            tracing::debug!(peer = %shared.peer, %error, "http connection failed");
            // The caller's own error (a request body that failed after its response head came):
            // the caller's doing, as a request given up is.
            if let Some(error) = error.downcast_ref::<hyper::Error>() {
                shared.caller_error(error);
            }
            shared.keep_end_error(error);
        }
        None => {
            // Graceful close: no new requests (poll_ready fails from now on); let those in
            // flight finish, within the close timeout.
            let at = deadline_after(Instant::now(), close_timeout);
            deadline = Some(at);
            if let Some(permits) = &permits.0 {
                permits.close();
            }
            tokio::select! {
                _ = &mut conn => {}
                _ = until(&shared, at, shared.wait_idle()) => {
                    // Requests still in flight: cut off (they fail with `ClosedInFlight`).
                    if shared.in_flight.load(Ordering::Acquire) != 0 {
                        shared.cut();
                    }
                }
            }
            tracing::debug!(peer = %shared.peer, "http connection closed");
        }
    }
    // A shutdown of the stream that waits goes on in a task of its own over HTTP/1.1 (over
    // HTTP/2 hyper's I/O task goes on with it, below), until it finishes, the close timeout
    // passes, or the connection is given up (`Closable::abort`); the connection counts as
    // ended now.
    let conn = if shared.version == Version::Http1 && shared.shutdown_waits.load(Ordering::Acquire)
    {
        let at = deadline_after(Instant::now(), close_timeout);
        let shutting = shared.clone();
        crate::handover::spawn(Box::pin(async move {
            let _ = until(&shutting, at, conn).await;
        }));
        None
    } else {
        Some(conn)
    };
    // Closes the socket (over HTTP/1.1), and hands back the requests still queued, before the
    // connection counts as finished.
    drop(conn);
    // Over HTTP/2 the verdict on a connection that has answered already is known (a close in
    // good order after serving: its responses in flight fail nothing of it), and the
    // connection finishes now, so that a persistent connection replaces it at once; the
    // requests the server goes on with are answered on it all the same.
    let verdict_known = shared.version == Version::Http2 && shared.served.load(Ordering::Acquire);
    if ended_by_peer && shared.in_flight.load(Ordering::Acquire) != 0 && !verdict_known {
        // hyper's connection also ends without an error of its own when a response failed (an
        // HTTP/1.1 head that is not HTTP, a body cut short: it gives the error to the request),
        // and before the caller has seen the responses it delivered. Whether the server ended
        // it in good order after serving is told by those responses: the connection is closed
        // at once (no new request), and finishes once they are read or dropped, or after
        // `VERDICT_GRACE` (the close timeout, if shorter), whichever comes first.
        shared.closing.set();
        if let Some(permits) = &permits.0 {
            permits.close();
        }
        shared.release_probe();
        shared.end();
        let grace = close_timeout.min(VERDICT_GRACE);
        let idle = tokio::time::timeout(grace, shared.wait_idle())
            .await
            .is_ok();
        if !idle && shared.version == Version::Http2 {
            // Over HTTP/2 hyper's connection ends in good order on a GOAWAY, which lets the
            // requests the server took go on (those it refused come back at once, unsent): it
            // serves them, in good order, however long their answers take.
            shared.mark_served();
        }
    }
    // Over HTTP/1.1 the stream went with hyper's connection (or finishes its shutdown, above),
    // unless an upgrade took it: then it is the caller's, and nothing of the connection's waits
    // for it.
    if shared.is_stream_closed() || shared.version == Version::Http1 {
        return;
    }
    // Over HTTP/2 hyper's own task drives the stream, for as long as a stream is open on it.
    // A close of ours asked for as hyper's connection ended (its end seen first, a GOAWAY, say,
    // found as the close woke it) is a close of ours all the same: finished once the stream is
    // closed. One asked for after the server had ended it in good order is not: the requests
    // the server goes on with are its own to finish (see `outlive`).
    if deadline.is_none() && shared.close_ours() {
        deadline = Some(deadline_after(Instant::now(), close_timeout));
    }
    let deadline = match deadline {
        Some(at) => at,
        None => {
            // Ended without a close of ours: finished now, so that a persistent connection
            // replaces it at once; the streams still open (those that a server's GOAWAY lets
            // finish) go on until they end, or until it is given up (`abort`). (A close of ours
            // asked for before the end, which hyper's end of stream, say, met first, gives
            // them its close timeout.)
            drop(permits);
            drop(finished);
            if !outlive(&shared).await {
                return;
            }
            deadline_after(Instant::now(), close_timeout)
        }
    };
    if !until(&shared, deadline, shared.stream_closed()).await {
        shared.cut();
        if tokio::time::timeout(CUT_GRACE, shared.stream_closed())
            .await
            .is_err()
        {
            tracing::warn!(peer = %shared.peer, "http connection cut off, its stream still open");
        }
    }
}

/// Waits for `what` until `deadline`, or until the connection is given up
/// (`Closable::abort`): true if `what` finished.
async fn until(shared: &ConnShared, deadline: Instant, what: impl Future) -> bool {
    tokio::select! {
        biased;
        finished = tokio::time::timeout_at(deadline, what) => finished.is_ok(),
        () = shared.aborted.wait() => false,
    }
}

/// Waits, once hyper's connection has ended by itself, until its stream is closed (false), or
/// the stream's shutdown waits, the connection is given up (`abort`), or a close of ours that
/// was asked for before the server ended the connection in good order is seen (true): what is
/// left on the stream then has the close timeout. (A shutdown, hyper's last step, comes once
/// nothing is open on the stream: it waits for no caller, and no close of ours may ever come.)
/// A close asked for after the server's end in good order leaves the stream to the server:
/// the requests a GOAWAY lets go on are answered, or not, as without it.
async fn outlive(shared: &ConnShared) -> bool {
    std::future::poll_fn(|cx| {
        if shared.poll_stream_closed(cx).is_ready() {
            return Poll::Ready(false);
        }
        shared.task.register(cx.waker());
        if shared.close_ours() || shared.shutdown_waits.load(Ordering::Acquire) {
            return Poll::Ready(true);
        }
        Poll::Pending
    })
    .await
}

/// How long a stream cut off is given to close: the task that drives it is woken, and fails
/// at its next read or write.
const CUT_GRACE: Duration = Duration::from_millis(100);

/// How long a connection that the server ended with responses still to be read waits for
/// them before it finishes (see `drive`): callers that read what they asked for do so within
/// microseconds; a response held unread longer no longer holds the connection's verdict.
const VERDICT_GRACE: Duration = Duration::from_millis(50);

struct CloseOnDrop(Option<Arc<Semaphore>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(permits) = &self.0 {
            permits.close();
        }
    }
}

/// Whether hyper's connection ended with its error for a message cut short.
fn is_incomplete_message(error: &BoxError) -> bool {
    error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_incomplete_message)
}

/// Finishes the connection when dropped, the probe released first (it keeps the socket open).
struct FinishOnDrop(Arc<ConnShared>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.release_probe();
        self.0.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower::ServiceExt;
    use tower_service::Service;

    use super::{Added, Sender, lock};
    use crate::Closable;
    use crate::transport::HttpConnector;

    // hyper's queue of requests goes with the connection's one `SendRequest`, which goes as
    // hyper's connection ends (here on the server's graceful stop: GOAWAY, or an HTTP/1.1
    // close), though a clone of the connection is kept (as a persistent connection's handle
    // keeps its own): a request that hyper's drain of the queue left in it (see `Release`) is
    // then handed back unsent, instead of waiting for every clone to go.
    #[tokio::test]
    async fn hyper_s_queue_goes_as_its_connection_ends() {
        for http2 in [false, true] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(async move {
                let (socket, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(socket), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stopped => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
            let connector = if http2 {
                HttpConnector::<Empty<Bytes>>::http2()
            } else {
                HttpConnector::http1()
            };
            let conn = connector.oneshot(address).await.unwrap();
            let kept = conn.clone();
            let get = || {
                http::Request::get(format!("http://{address}/"))
                    .body(Empty::new())
                    .unwrap()
            };
            let response = conn.clone().oneshot(get()).await.unwrap();
            assert_eq!(response.status(), http::StatusCode::OK);
            drop(response);
            let send = match &kept.sender {
                Sender::Http1 { send, .. } => lock(send).is_some(),
                Sender::Http2(send) => lock(send).is_some(),
            };
            assert!(send, "http2: {http2}");
            // Made ready before the end, called after it.
            let mut ready = conn.clone();
            ready.ready().await.unwrap();

            stop.send(()).unwrap();
            tokio::time::timeout(Duration::from_secs(10), kept.close_finished())
                .await
                .expect("hyper's connection did not end on the server's stop");
            let send = match &kept.sender {
                Sender::Http1 { send, .. } => lock(send).is_some(),
                Sender::Http2(send) => lock(send).is_some(),
            };
            assert!(
                !send,
                "http2: {http2}: hyper's queue outlived its connection"
            );
            assert!(kept.is_closed());
            // Sent nowhere, and no successor to take it (a connection of its own).
            let error = ready.call(get()).await.unwrap_err();
            assert!(
                error.is::<crate::ConnectionClosed>(),
                "http2: {http2}: {error}"
            );
            assert_eq!(error.to_string(), "connection is closed");
            server.await.unwrap();
        }
    }

    fn request(uri: &str, host: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::get(uri);
        if let Some(host) = host {
            builder = builder.header(http::header::HOST, host);
        }
        builder.body(()).unwrap()
    }

    fn parts(request: &http::Request<()>) -> (String, Vec<String>) {
        let hosts = request
            .headers()
            .get_all(http::header::HOST)
            .iter()
            .map(|h| h.to_str().unwrap().to_owned())
            .collect();
        (request.uri().to_string(), hosts)
    }

    // What a connection adds to a request for itself is taken off exactly, so that a request
    // resent on the successor is addressed by the successor alone.
    #[test]
    fn what_is_added_is_taken_off() {
        let cases = [
            ("/a?b", None),
            ("/a", Some("given:1")),
            ("http://named:2/a", None),
            ("http://named:2/a", Some("given:1")),
            ("*", None),
        ];
        for (uri, host) in cases {
            for http2 in [false, true] {
                let original = request(uri, host);
                let mut sent = request(uri, host);
                let added = if http2 {
                    Added::scheme_and_authority(&mut sent, || "old:3", false)
                } else {
                    Added::host(&mut sent, || "old:3")
                };
                let (original_uri, original_hosts) = parts(&original);
                let expected_sent = if http2 {
                    let uri = match original.uri().authority() {
                        Some(_) => original_uri,
                        None => format!("http://old:3{uri}"),
                    };
                    (uri, original_hosts)
                } else {
                    let hosts = match (host, original.uri().authority()) {
                        (Some(_), _) => original_hosts,
                        (None, Some(authority)) => vec![authority.to_string()],
                        (None, None) => vec!["old:3".to_owned()],
                    };
                    (original_uri, hosts)
                };
                // ("*" has no HTTP/2 form: it is sent as it is.)
                if !(http2 && uri == "*") {
                    assert_eq!(parts(&sent), expected_sent, "{uri} {host:?} http2={http2}");
                }
                added.take_off(&mut sent);
                assert_eq!(
                    parts(&sent),
                    parts(&original),
                    "{uri} {host:?} http2={http2}"
                );
            }
        }
    }
}
