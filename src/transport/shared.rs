//! The state one HTTP connection shares between its clones and its task: the bottom of the
//! transport, depending on nothing else in it.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::dial::Peer;
use super::io::{Peeked, Probe};
use crate::error::BoxError;
use crate::signal::{Flag, Signal, wait_until};

/// The HTTP version a connector speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    Http1,
    Http2,
}

pub(super) struct ConnShared {
    pub(super) peer: Peer,
    /// What requests that name none are sent with as their authority (`Host`, `:authority`):
    /// given, or else made from the TCP peer when first asked for (see [`Self::authority`]).
    authority: OnceLock<String>,
    pub(super) version: Version,
    /// Over TLS: requests without a scheme are `https`.
    pub(super) secure: bool,
    /// Set by `close`, or once hyper's connection has ended while responses are still being
    /// read: no new requests.
    pub(super) closing: Signal,
    /// The connection's task, woken by `close`.
    pub(super) task: AtomicWaker,
    /// Set when hyper's connection task has ended and the socket is closed (except over
    /// HTTP/2 after the server ended the connection: see `stream_closed`).
    pub(super) finished: Flag,
    /// Set once the stream is dropped, which closes the socket: with hyper's connection, or
    /// over HTTP/2 with hyper's own task, which drives the streams still open on it.
    stream_closed: AtomicBool,
    /// The connection's task, while it waits for `stream_closed`.
    stream_waiter: AtomicWaker,
    /// A close of ours was asked for (`close`).
    pub(super) close_asked: AtomicBool,
    /// hyper's connection ended in good order (the server's GOAWAY, say) before any close of
    /// ours was asked for: what the server lets go on on the stream (over HTTP/2, the requests
    /// a GOAWAY leaves) is the server's to finish, and a later close of ours leaves it be (see
    /// `connection::drive`); `abort` still cuts it off.
    pub(super) peer_ended_first: AtomicBool,
    /// The connection was given up (`Closable::abort`): whatever a close of ours waits for is
    /// cut off at once, instead of at its close timeout.
    pub(super) aborted: Flag,
    /// Requests sent whose response (body included) is not finished.
    pub(super) in_flight: AtomicUsize,
    pub(super) idle: Notify,
    /// The server answered on this connection: for HTTP/2 a response head arrived, for
    /// HTTP/1.1 any byte (which hyper may take in before the caller sees the response).
    pub(super) served: AtomicBool,
    /// A response head that is an answer (not informational) came to a caller on this
    /// connection: what a caller's give-up is judged by (see `closed_gracefully`).
    pub(super) answered: AtomicBool,
    /// HTTP/1.1: a response failed (a head that is not HTTP, an informational status where a
    /// response was due, a body cut short), or a write of the stream failed (a server that
    /// closed or reset the connection while a request was written to it, which then fails
    /// with `error writing a body to connection`, whether or not the connection had served;
    /// except a reset that a body still being sent meets once its answer began to come, see
    /// [`Self::reset_behind_answer`]): whatever followed, not a close in good order.
    pub(super) failed: AtomicBool,
    /// HTTP/1.1: a caller gave up a request that hyper had taken (its response future was
    /// dropped before the response head came: a `tower::timeout`, say), or the request failed
    /// for the caller's own reason (its body's error, before the response head or after it),
    /// which makes hyper close the connection. Its end is the caller's doing, not the server's.
    pub(super) abandoned: AtomicBool,
    /// HTTP/1.1: a request failed for the caller's own reason (its body's error or panic): a
    /// response cut short with the connection that hyper then closed is the caller's doing too,
    /// not a failure of the server's ([`Self::failed`] then does not count).
    pub(super) caller_failed: AtomicBool,
    /// HTTP/1.1: a caller gave up a request that hyper had taken (see [`Self::abandoned`]):
    /// the connection's task ends hyper's connection at once, as hyper does once it notices
    /// (which it does not while it writes a request body to a server that stopped reading).
    pub(super) given_up_in_flight: AtomicBool,
    /// hyper began to shut the stream down (it is done with the connection) and the stream's
    /// shutdown waits (a stream of yours that waits for its peer, say): hyper's connection
    /// counts as ended from then on, its stream given the close timeout to finish (see
    /// `connection::drive`).
    pub(super) shutdown_waits: AtomicBool,
    /// The connector's count of connections in a row that a caller's give-up ended before
    /// they answered (see [`Self::given_up_first`]); set to zero when one that answered ends,
    /// or one ends otherwise.
    given_up: Arc<AtomicU32>,
    /// Whether this connection, ended by a give-up, was the first in a row: 0 until asked
    /// (once), then 1 (the first) or 2.
    given_up_first: AtomicU8,
    /// hyper's connection ended without error before any close of ours.
    pub(super) ended_by_peer: AtomicBool,
    /// It so ended after the connection had been idle (nothing in flight) for
    /// [`IDLE_CLOSE_AFTER`] or more: the server's idle timeout (see [`Self::ended_in_good_order`]).
    pub(super) idle_closed: AtomicBool,
    /// A close of ours waited its close timeout for requests in flight, then cut them off: the
    /// stream fails every read and write from then on (see [`Self::cut`]).
    pub(super) cut_off: AtomicBool,
    /// The task that reads and writes the stream, registered when it waits on it: woken by
    /// [`Self::cut`].
    pub(super) io_waker: AtomicWaker,
    /// The probe found the connection reset. (On Linux, even a peek takes a socket's pending
    /// error: hyper may then read a plain end of stream, which must not count as a close in
    /// good order.)
    pub(super) reset_by_peer: AtomicBool,
    /// The probe found the server's end of stream, with nothing unread before it (see
    /// [`Self::ended_while_idle`]).
    found_ended: AtomicBool,
    /// Whether the connection was idle for [`IDLE_CLOSE_AFTER`] or more, nothing in flight,
    /// when its end was first seen, by the probe or by a read of the stream: 0 until then,
    /// then [`IDLE_AT_END`] or [`BUSY_AT_END`] (see [`Self::ended_idle`]).
    at_end: AtomicU8,
    /// The stream's last write (or flush) was held back by a full socket: a request is still
    /// being written (see [`Self::nothing_in_flight`]).
    write_blocked: AtomicBool,
    /// Request bodies still being sent (see [`SendingBody`]): a request whose response has
    /// ended while its body is still being sent keeps the connection from being idle.
    sending_bodies: AtomicUsize,
    /// HTTP/1.1: the stream ended without its transport's own goodbye (rustls: no TLS
    /// close_notify) while responses were still in flight and no request body was being sent
    /// (see [`Self::unclean_end_behind_responses`]).
    unclean_end_behind_responses: AtomicBool,
    /// HTTP/1.1: a response's bytes came while the request's body was still being sent (a
    /// server that answers before it has read the body); cleared once no body is being sent.
    answered_while_sending: AtomicBool,
    /// HTTP/1.1: the peer reset the connection (or the pipe broke) after such an answer, while
    /// the body was still being sent (see [`Self::reset_behind_answer`]).
    reset_behind_answer: AtomicBool,
    /// Where the persistent connection will announce this connection's successor: a
    /// `WeakSuccessor<HttpConnection<B>>`, which keeps nothing alive (a strong one would keep
    /// every later connection alive with this one).
    pub(super) successor: OnceLock<Box<dyn Any + Send + Sync>>,
    /// How long a request handed back unsent waits for the successor at most: the
    /// connector's connect timeout.
    pub(super) resend_limit: Duration,
    /// How long a close of ours waits for what is open on the stream: the connector's close
    /// timeout.
    pub(super) close_timeout: Duration,
    /// The error hyper's connection ended with, if it failed: kept for the connect, which
    /// reports it as the cause when the connection ends before the server's HTTP/2 preface (a
    /// TLS alert that the server sends once the client has finished its side of the
    /// handshake, say).
    end_error: Mutex<Option<BoxError>>,
    /// A probe of the socket (TCP connections of the connector's own), released as soon as
    /// hyper's connection is dropped (so that it keeps no socket open).
    probe: Mutex<Option<Probe>>,
    /// Clones whose `poll_ready` waits for a connection found gone to end; `None` once hyper's
    /// connection has ended.
    waiting_for_end: Mutex<Option<Vec<std::task::Waker>>>,
    /// When the connection was made, and when it last had nothing in flight (nanoseconds
    /// since `born`).
    born: Instant,
    idle_since: AtomicU64,
}

/// A duration in nanoseconds, saturated.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How long a connection must have been idle before a request looks at its socket
/// ([`ConnShared::found_gone`]): requests that follow one another closely pay no system call.
pub(super) const PROBE_AFTER_IDLE: Duration = Duration::from_millis(1);

/// How long a connection must have been idle when the server ends it in good order for that
/// end to count as the server's idle timeout, served or not (see
/// [`ConnShared::ended_in_good_order`]): a server that accepts and closes sooner, without
/// serving, meets the retry delay; one that closes idle connections gets at most one new
/// connection per second from an idle client.
pub(super) const IDLE_CLOSE_AFTER: Duration = Duration::from_secs(1);

impl ConnShared {
    // One per field that the connector sets; called in one place.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        peer: Peer,
        authority: Option<String>,
        version: Version,
        secure: bool,
        resend_limit: Duration,
        close_timeout: Duration,
        probe: Option<Probe>,
        given_up: Arc<AtomicU32>,
    ) -> Self {
        ConnShared {
            peer,
            authority: authority.map(OnceLock::from).unwrap_or_default(),
            version,
            secure,
            closing: Signal::default(),
            task: AtomicWaker::new(),
            finished: Flag::default(),
            stream_closed: AtomicBool::new(false),
            stream_waiter: AtomicWaker::new(),
            close_asked: AtomicBool::new(false),
            peer_ended_first: AtomicBool::new(false),
            aborted: Flag::default(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            served: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            caller_failed: AtomicBool::new(false),
            given_up_in_flight: AtomicBool::new(false),
            shutdown_waits: AtomicBool::new(false),
            given_up,
            given_up_first: AtomicU8::new(0),
            ended_by_peer: AtomicBool::new(false),
            idle_closed: AtomicBool::new(false),
            cut_off: AtomicBool::new(false),
            io_waker: AtomicWaker::new(),
            reset_by_peer: AtomicBool::new(false),
            found_ended: AtomicBool::new(false),
            at_end: AtomicU8::new(0),
            write_blocked: AtomicBool::new(false),
            sending_bodies: AtomicUsize::new(0),
            answered_while_sending: AtomicBool::new(false),
            reset_behind_answer: AtomicBool::new(false),
            unclean_end_behind_responses: AtomicBool::new(false),
            successor: OnceLock::new(),
            resend_limit,
            close_timeout,
            end_error: Mutex::new(None),
            probe: Mutex::new(probe),
            waiting_for_end: Mutex::new(Some(Vec::new())),
            born: Instant::now(),
            idle_since: AtomicU64::new(0),
        }
    }

    /// What requests that name none are sent with as their authority: the one given, or else
    /// the TCP peer's address (`localhost` for a peer that is not TCP), made when first asked
    /// for: most requests name their own, and formatting an address costs a reconnect more
    /// than the rest of the connection's set-up.
    pub(super) fn authority(&self) -> &str {
        self.authority.get_or_init(|| match &self.peer {
            Peer::Tcp(address) => address.to_string(),
            _ => "localhost".to_owned(),
        })
    }

    /// Whether this connection, idle for [`PROBE_AFTER_IDLE`] or more, is found closed or
    /// reset by the peer in its socket, before hyper's task knows. An end of stream counts as
    /// the peer's close in good order (as hyper counts it on an idle connection), a reset as a
    /// failure. False when something is in flight, when it was idle less long, when there is
    /// no probe, or when nothing is known; once found, true until the connection is dropped
    /// (no second look).
    pub(super) fn found_gone(&self) -> bool {
        // Found already (or hyper's task has just seen the peer's end: it is about to finish).
        if self.ended_by_peer.load(Ordering::Acquire)
            || self.reset_by_peer.load(Ordering::Acquire)
            || self.found_ended.load(Ordering::Acquire)
        {
            return true;
        }
        if !self.nothing_in_flight() {
            return false;
        }
        if self.idle_for() < PROBE_AFTER_IDLE {
            return false;
        }
        self.found_gone_now()
    }

    /// How long since the connection was ready or its last request ended (whether something
    /// is in flight now is the caller's to check).
    #[inline]
    fn idle_for(&self) -> Duration {
        let now = nanos(self.born.elapsed());
        let idle_since = self.idle_since.load(Ordering::Relaxed);
        Duration::from_nanos(now.saturating_sub(idle_since))
    }

    #[cold]
    fn found_gone_now(&self) -> bool {
        let peeked = self
            .probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Probe::peek);
        match peeked {
            None | Some(Peeked::Open) => false,
            Some(Peeked::Ended) => {
                // Over HTTP/1.1 an end in good order, as hyper counts an end of stream between
                // responses; over HTTP/2 not, as hyper counts an end without GOAWAY (h2: a
                // broken pipe): see `ended_while_idle`.
                if self.version == Version::Http1 {
                    self.ended_by_peer.store(true, Ordering::Release);
                }
                self.end_seen();
                self.found_ended.store(true, Ordering::Release);
                // The connection's task ends hyper's connection now (see `ended_while_idle`),
                // rather than once the runtime's I/O driver has told hyper's read of the
                // socket's end.
                self.task.wake();
                true
            }
            Some(Peeked::Failed) => {
                self.reset_by_peer.store(true, Ordering::Release);
                true
            }
        }
    }

    /// The probe found the server's end of stream in the socket of the idle connection (no
    /// request in flight, nothing unread before the end: over HTTP/2, no GOAWAY either):
    /// hyper's connection is over, as hyper would find when it reads that end, which it does
    /// only once the runtime's I/O driver has delivered the socket's readiness to its task
    /// (later by a turn of the driver, when the one who probed, a request about to be sent, is
    /// still running). A request sent meanwhile (by a clone made ready before the end) is in
    /// flight: then hyper reads the end itself. Over HTTP/1.1 it is over in good order; over
    /// HTTP/2 it ends as hyper would end it, with an error (see [`EndedWithoutGoaway`]).
    pub(super) fn ended_while_idle(&self) -> bool {
        self.found_ended.load(Ordering::Acquire) && self.nothing_in_flight()
    }

    /// No request in flight, no request body still being sent, and nothing held back by a
    /// full socket (a body's last frame, which hyper has taken, still being written).
    fn nothing_in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.sending_bodies.load(Ordering::Acquire) == 0
            && !self.write_blocked.load(Ordering::Acquire)
    }

    /// Whether the stream's last write was held back (`blocked`) or not. Bytes held back that
    /// have gone, with nothing else in flight: idle from now.
    #[inline]
    pub(super) fn write_blocked(&self, blocked: bool) {
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Release);
            if !blocked {
                self.forget_early_answer_if_sent();
            }
            if !blocked && self.nothing_in_flight() {
                self.now_idle();
            }
        }
    }

    /// Whether the probe found this connection's end of stream, or a reset: nothing may be sent
    /// on it (a request admitted before is sent nowhere, see `connection::gone`).
    #[inline]
    pub(super) fn found_dead(&self) -> bool {
        self.found_ended.load(Ordering::Acquire) || self.reset_by_peer.load(Ordering::Acquire)
    }

    /// The connection's end is seen, by the probe or by a read of the stream that returns it
    /// (the first time counts): notes whether it had been idle, nothing in flight, for
    /// [`IDLE_CLOSE_AFTER`] or more then. (Decided now: what follows, a request body's pipe
    /// dropped as hyper fails its stream, a request admitted before and sent nowhere, must not
    /// make a busy connection look idle, nor an idle one busy.)
    pub(super) fn end_seen(&self) {
        let at_end = if self.nothing_in_flight() && self.idle_for() >= IDLE_CLOSE_AFTER {
            IDLE_AT_END
        } else {
            BUSY_AT_END
        };
        let _ = self
            .at_end
            .compare_exchange(0, at_end, Ordering::AcqRel, Ordering::Acquire);
    }

    /// A read found the stream's end without its transport's own goodbye (rustls: the peer
    /// closed without TLS's close_notify) with responses in flight: the error goes to hyper,
    /// which gives it to a response still being read (a body that the close delimits could
    /// not be told from one cut short). Over HTTP/1.1, with no request body being sent, the
    /// end of hyper's connection with that error is judged as TCP's end of stream there (see
    /// [`Self::ended_unclean_behind_responses`]): by those responses, complete or not.
    pub(super) fn unclean_end_behind_responses(&self) {
        if self.version != Version::Http1 {
            return;
        }
        // The peer's end was read: a shutdown of the stream that fails after it tells nothing
        // (see `Watched::poll_shutdown`).
        self.end_seen();
        if self.sending_bodies.load(Ordering::Acquire) == 0 {
            self.unclean_end_behind_responses
                .store(true, Ordering::Release);
        }
    }

    /// Whether hyper's connection ended with `error` because of the end that
    /// [`Self::unclean_end_behind_responses`] noted: an end of stream behind responses still
    /// in flight, as TCP's end of stream there, which hyper meets without an error of its own
    /// when the responses it read were complete (a failed one is told by the response itself).
    /// (A request called after that read, a body and all, does not change it: hyper takes no
    /// request once its read has failed.)
    pub(super) fn ended_unclean_behind_responses(&self, error: &BoxError) -> bool {
        self.unclean_end_behind_responses.load(Ordering::Acquire) && is_unexpected_end(error)
    }

    /// HTTP/1.1: bytes of a response were read; if a request's body is still being sent, the
    /// server answers before it has read the body. (One request at a time: the body being sent
    /// is that request's.)
    #[inline]
    pub(super) fn read_while_sending(&self) {
        if self.version == Version::Http1 && self.body_being_sent() {
            self.answered_while_sending.store(true, Ordering::Release);
        }
    }

    /// No body left to send (none to take, nothing held back by a full socket): an early
    /// answer (see [`Self::read_while_sending`]) is behind it.
    fn forget_early_answer_if_sent(&self) {
        if !self.body_being_sent() {
            self.answered_while_sending.store(false, Ordering::Release);
        }
    }

    /// HTTP/1.1: a request body is still being sent: hyper still has frames of it to take, or
    /// its last ones, taken, are still being written (a socket that is full; a body of one
    /// frame is taken whole at once).
    fn body_being_sent(&self) -> bool {
        self.sending_bodies.load(Ordering::Acquire) != 0
            || self.write_blocked.load(Ordering::Acquire)
    }

    /// Whether the I/O error `kind`, met while a request's body was still being sent after its
    /// answer began to come (HTTP/1.1), is the server's close after that answer: it did not read the
    /// rest of the body, and its socket's unread bytes make its close a reset (a write then
    /// fails with a broken pipe). Noted for the verdict (see
    /// [`Self::ended_reset_behind_answer`]); the end was seen, for the shutdown that follows.
    pub(super) fn reset_behind_answer(&self, kind: std::io::ErrorKind) -> bool {
        let behind_answer = is_reset(kind)
            && self.answered_while_sending.load(Ordering::Acquire)
            && self.body_being_sent();
        if behind_answer {
            self.reset_behind_answer.store(true, Ordering::Release);
            self.end_seen();
        }
        behind_answer
    }

    /// Whether [`Self::reset_behind_answer`] noted a reset. If hyper's connection then ended
    /// without an error, a request still waited for its head (hyper gives that request the
    /// error and ends its connection in good order): the bytes read were no answer (an
    /// informational head, `100 Continue`, or a head cut short).
    pub(super) fn reset_was_behind_answer(&self) -> bool {
        self.reset_behind_answer.load(Ordering::Acquire)
    }

    /// Whether hyper's connection ended with `error` because of the reset that
    /// [`Self::reset_behind_answer`] noted: the server's close after an answer given before it
    /// read the request's body (RFC 9112 §9.6 asks it to linger instead), judged as an end of
    /// stream there: by the responses (the answer complete, the connection served).
    pub(super) fn ended_reset_behind_answer(&self, error: &BoxError) -> bool {
        self.reset_behind_answer.load(Ordering::Acquire) && io_kind(error).is_some_and(is_reset)
    }

    /// Whether the connection's end of stream was seen (see [`Self::end_seen`]).
    pub(super) fn end_was_seen(&self) -> bool {
        self.at_end.load(Ordering::Acquire) != 0
    }

    /// HTTP/2: hyper's connection ended with `error` at the server's end of stream, without
    /// GOAWAY or anything else before it (h2's broken pipe, or [`EndedWithoutGoaway`] when the
    /// probe found it), without a reset, after sitting idle, nothing in flight, for
    /// [`IDLE_CLOSE_AFTER`] or more: the server's idle timeout, which counts as a close in good
    /// order, as over HTTP/1.1 (see [`Self::ended_in_good_order`]). A server that ends
    /// connections so sooner (or while they are busy, or with a GOAWAY that gives an error, or
    /// in the middle of a frame) still fails them.
    pub(super) fn ended_idle(&self, error: &BoxError) -> bool {
        self.version == Version::Http2
            && self.at_end.load(Ordering::Acquire) == IDLE_AT_END
            && !self.reset_by_peer.load(Ordering::Acquire)
            && is_end_of_stream(error)
    }

    /// How hyper's connection ends when [`Self::ended_while_idle`] ends it: as hyper would
    /// end it on that end of stream.
    pub(super) fn end_while_idle(&self) -> Result<(), BoxError> {
        match self.version {
            Version::Http1 => Ok(()),
            Version::Http2 => Err(EndedWithoutGoaway.into()),
        }
    }

    /// Wakes `waker` when hyper's connection has ended; false if it has already.
    pub(super) fn wake_at_end(&self, waker: &std::task::Waker) -> bool {
        let mut waiting = self
            .waiting_for_end
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(waiting) = waiting.as_mut() else {
            return false;
        };
        if !waiting.iter().any(|w| w.will_wake(waker)) {
            waiting.push(waker.clone());
        }
        true
    }

    /// hyper's connection has ended: wakes the clones waiting for that (once).
    pub(super) fn end(&self) {
        let waiting = self
            .waiting_for_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        for waker in waiting.into_iter().flatten() {
            waker.wake();
        }
    }

    /// The connection's task has ended: sets `finished` and wakes the clones waiting for the
    /// end.
    pub(super) fn finish(&self) {
        self.end();
        self.finished.set();
    }

    /// Drops the probe: hyper's connection is gone, and the socket must close with it.
    pub(super) fn release_probe(&self) {
        drop(self.probe.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// hyper's connection has ended without error before any close of ours: the peer ended it
    /// in good order. Also notes whether the connection was idle (nothing in flight) for
    /// [`IDLE_CLOSE_AFTER`] or more then, since it was ready (see [`Self::ready_now`]) or since
    /// its last request ended:
    /// a server's idle timeout ended it, and a connection closed so is replaced at once even
    /// if it never served (the replacement of a connection that served, made at once, meets
    /// the server's idle timeout before any request when requests are rare).
    pub(super) fn ended_in_good_order(&self) {
        // Idle when its end was seen (see `end_seen`), or now.
        if self.at_end.load(Ordering::Acquire) == IDLE_AT_END
            || (self.in_flight.load(Ordering::Acquire) == 0 && self.idle_for() >= IDLE_CLOSE_AFTER)
        {
            self.idle_closed.store(true, Ordering::Release);
        }
        self.ended_by_peer.store(true, Ordering::Release);
    }

    /// Whether a close of ours was asked for, and not only after the server had ended the
    /// connection in good order (see [`Self::peer_ended_first`]), or the connection was given
    /// up (`abort`): what is left on the stream is cut off at the close timeout, or at once.
    pub(super) fn close_ours(&self) -> bool {
        self.close_asked.load(Ordering::Acquire)
            && (!self.peer_ended_first.load(Ordering::Acquire) || self.aborted.is_set())
    }

    /// Keeps the error hyper's connection ended with (see `end_error`).
    pub(super) fn keep_end_error(&self, error: BoxError) {
        *self.end_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// The error hyper's connection ended with, if it failed (taken: asked once).
    pub(super) fn take_end_error(&self) -> Option<BoxError> {
        self.end_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The connection is ready, over HTTP/2 once the server's preface has come: its idle
    /// time counts from now (see [`Self::ended_in_good_order`]), not from its making.
    pub(super) fn ready_now(&self) {
        self.now_idle();
    }

    /// No request has been sent on this connection: nothing in flight, and none ended. (Over
    /// HTTP/1.1 only, which marks no readiness with [`Self::ready_now`].)
    pub(super) fn never_used(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.idle_since.load(Ordering::Relaxed) == 0
    }

    /// Nothing is in flight from now on. (The clock is read here, at the end of the requests,
    /// rather than taken from a request's start: requests that follow slow ones closely, as
    /// on a network whose round trip is longer than `PROBE_AFTER_IDLE`, pay no system call.)
    fn now_idle(&self) {
        self.idle_since
            .store(nanos(self.born.elapsed()), Ordering::Relaxed);
    }

    /// Resolves once no request is in flight. Only a connection that is closing waits so
    /// (see `InFlight`'s drop, which wakes the waiter only then).
    pub(super) async fn wait_idle(&self) {
        debug_assert!(self.closing.is_set());
        wait_until(&self.idle, || {
            (self.in_flight.load(Ordering::SeqCst) == 0).then_some(())
        })
        .await
    }

    /// Where this connection's successor will be announced, if a persistent connection said
    /// so (see `Closable::set_successor`).
    pub(super) fn successor<T: 'static>(&self) -> Option<&T> {
        self.successor.get()?.downcast_ref::<T>()
    }

    /// The stream is dropped: the socket is closed.
    pub(super) fn stream_dropped(&self) {
        self.stream_closed.store(true, Ordering::Release);
        self.stream_waiter.wake();
    }

    pub(super) fn is_stream_closed(&self) -> bool {
        self.stream_closed.load(Ordering::Acquire)
    }

    /// Ready once the stream is dropped.
    pub(super) fn poll_stream_closed(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.is_stream_closed() {
            return Poll::Ready(());
        }
        self.stream_waiter.register(cx.waker());
        if self.is_stream_closed() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Resolves once the stream is dropped.
    pub(super) fn stream_closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_stream_closed(cx))
    }

    /// Cuts off the requests in flight, once a close of ours has waited its close timeout for
    /// them: the stream fails every read and write from now on, and the task that waits on it
    /// is woken. Over HTTP/1.1 hyper's connection, dropped next, ends them anyway; over HTTP/2
    /// hyper's own task drives the stream, and would keep it open for as long as a stream is
    /// open on it (a request the server never answers, a request body the server never reads:
    /// for good).
    pub(super) fn cut(&self) {
        self.cut_off.store(true, Ordering::Release);
        self.io_waker.wake();
    }

    /// A response head that answers (not an informational one) came to a caller.
    pub(super) fn mark_answered(&self) {
        self.answered.store(true, Ordering::Release);
    }

    /// The server answered on this connection.
    pub(super) fn mark_served(&self) {
        // Stored once: every response after the first leaves the line unwritten.
        if !self.served.load(Ordering::Relaxed) {
            self.served.store(true, Ordering::Release);
        }
    }

    /// This connection answered, or ended otherwise than by a caller's give-up: its
    /// connector's row of connections that give-ups ended before they answered is over.
    pub(super) fn given_up_row_ended(&self) {
        self.given_up.store(0, Ordering::Release);
    }

    /// For a connection that a caller's give-up ended before it answered: whether it is the
    /// first such connection in a row of its connector's (each asks once; a connection that
    /// answered, or that ends otherwise, ends the row). Only the first is replaced at once: a
    /// server that takes requests and never answers them still meets the retry delay from the
    /// second on.
    pub(super) fn given_up_first(&self) -> bool {
        match self.given_up_first.load(Ordering::Acquire) {
            0 => {
                let first = self.given_up.fetch_add(1, Ordering::AcqRel) == 0;
                // Asked by the driver alone; a second answer repeats the first.
                let verdict = if first { 1 } else { 2 };
                match self.given_up_first.compare_exchange(
                    0,
                    verdict,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => first,
                    Err(earlier) => earlier == 1,
                }
            }
            verdict => verdict == 1,
        }
    }

    /// An HTTP/1.1 response's head could not be read because of `error`: if it was not HTTP
    /// (a parse error), the connection does not count as closed in good order. (A server's
    /// close or reset before the response began is the race of an idle close, which does.) If
    /// it was the caller's own (its request body failed, say), hyper closes the connection: the
    /// caller's doing, as a request given up is ([`Self::abandoned`]).
    pub(super) fn head_failed(&self, error: &hyper::Error) {
        if error.is_parse() {
            self.mark_failed();
        } else {
            self.caller_error(error);
        }
    }

    /// If `error` is the caller's own (its request body's, say), the connection that hyper
    /// closes for it ends by the caller's doing ([`Self::abandoned`]).
    pub(super) fn caller_error(&self, error: &hyper::Error) {
        if error.is_user() {
            self.caller_failed.store(true, Ordering::Release);
            self.abandoned.store(true, Ordering::Release);
        }
    }

    /// An HTTP/1.1 response failed (its body cut short, say): the connection does not count
    /// as closed in good order.
    pub(super) fn mark_failed(&self) {
        if self.version == Version::Http1 {
            self.failed.store(true, Ordering::Release);
        }
    }
}

/// [`ConnShared::at_end`]: idle at the end, or not.
const IDLE_AT_END: u8 = 1;
const BUSY_AT_END: u8 = 2;

/// Whether hyper's HTTP/2 connection ended with `error` at a plain end of the stream: the
/// probe's [`EndedWithoutGoaway`], or h2's broken pipe, which h2 makes for an end of stream
/// (an I/O error of kind `BrokenPipe`, hyper's I/O error's source). A GOAWAY with an error, a
/// frame cut short (`bytes remaining on stream`), a protocol error are other errors. (h2 keeps
/// an I/O error's kind, not its system error code: a write that failed with `EPIPE` is taken
/// the same way, which it can only be on a connection whose end was seen while it was idle,
/// without a reset, as `ended_idle` asks.)
fn is_end_of_stream(error: &BoxError) -> bool {
    error.is::<EndedWithoutGoaway>() || io_kind(error) == Some(std::io::ErrorKind::BrokenPipe)
}

/// Whether `error` comes from a stream's end without its transport's own goodbye: an I/O
/// error of kind `UnexpectedEof` in its chain (rustls: the peer closed without close_notify).
fn is_unexpected_end(error: &BoxError) -> bool {
    io_kind(error) == Some(std::io::ErrorKind::UnexpectedEof)
}

/// Whether an I/O error of `kind` is the peer's reset as a write or read meets it (a broken
/// pipe: a write after the reset).
fn is_reset(kind: std::io::ErrorKind) -> bool {
    matches!(
        kind,
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
}

/// The kind of the first I/O error in `error`'s chain of sources, itself included.
fn io_kind(error: &BoxError) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = error.source();
    }
    None
}

/// A request body being sent on a connection; released when the body ends, fails or is
/// dropped.
pub(super) struct SendingBody(Arc<ConnShared>);

impl SendingBody {
    pub(super) fn new(shared: &Arc<ConnShared>) -> Self {
        shared.sending_bodies.fetch_add(1, Ordering::AcqRel);
        SendingBody(shared.clone())
    }
}

impl Drop for SendingBody {
    fn drop(&mut self) {
        if self.0.sending_bodies.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.forget_early_answer_if_sent();
            // The last body sent, nothing in flight: idle from now.
            if self.0.in_flight.load(Ordering::Acquire) == 0 {
                self.0.now_idle();
            }
        }
    }
}

/// An idle HTTP/2 connection's end of stream, found by the probe, without GOAWAY before it:
/// how hyper's connection ends then (hyper itself ends it with h2's broken pipe), which is not
/// a close in good order unless the connection had sat idle a second or more (see
/// [`ConnShared::ended_idle`]).
#[derive(Debug)]
pub(super) struct EndedWithoutGoaway;

impl std::fmt::Display for EndedWithoutGoaway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server closed the http/2 connection without goaway")
    }
}

impl std::error::Error for EndedWithoutGoaway {}

/// One request in flight; released when the response body ends or is dropped.
pub(super) struct InFlight(Arc<ConnShared>);

impl InFlight {
    pub(super) fn new(shared: &Arc<ConnShared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(shared.clone())
    }
}

impl InFlight {
    pub(super) fn connection(&self) -> &Arc<ConnShared> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.now_idle();
            // Only a closing connection waits for its requests (`wait_idle`, after `closing`
            // is set): other requests take no lock here. Sequentially consistent with the
            // closing side (sets `closing`, then reads `in_flight`), so that one of the two
            // sees the other: the waiter finds nothing in flight, or is woken.
            if self.0.closing.is_set_seqcst() {
                self.0.idle.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::{ConnShared, Peer, Version};
    use crate::testing::counting;

    // Waiters for the end of the connection's task are woken once when it ends, each task once
    // however often it asked; asking after the end is refused.
    #[test]
    fn waiters_for_the_end_are_woken_by_it_or_refused_after_it() {
        let shared = ConnShared::new(
            Peer::Stream,
            None,
            Version::Http1,
            false,
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
            Default::default(),
        );
        let ((a, wa), (b, wb)) = (counting(), counting());
        assert!(shared.wake_at_end(&wa));
        assert!(shared.wake_at_end(&wa));
        assert!(shared.wake_at_end(&wb));
        assert_eq!(a.0.load(Ordering::SeqCst), 0);
        shared.finish();
        assert!(shared.finished.is_set());
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert!(!shared.wake_at_end(&wa), "the task has ended");
        shared.finish();
        assert_eq!(a.0.load(Ordering::SeqCst), 1, "woken once");
    }
}
