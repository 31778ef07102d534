//! The stream as hyper reads it, watched: the server's HTTP/2 preface until it is whole, and
//! the first byte of an HTTP/1.1 server.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ClosedInFlight;
use super::dial::BoxIo;
use super::shared::ConnShared;
use crate::signal::{Flag, waker_changed};

/// What the server's HTTP/2 connection preface turned out to be.
#[derive(Default)]
pub(super) struct Greeting {
    /// Set once the first frame has been read whole (or found not to be SETTINGS).
    pub(super) done: Flag,
    /// The type of a first frame that was not SETTINGS, plus one; zero if it was.
    not_settings: AtomicUsize,
}

impl Greeting {
    pub(super) fn not_settings(&self) -> Option<u8> {
        match self.not_settings.load(Ordering::Acquire) {
            0 => None,
            n => Some((n - 1) as u8),
        }
    }
}

/// Follows the bytes the server sends until its first HTTP/2 frame is whole. The server's
/// connection preface is a SETTINGS frame (type 4, on stream 0, without ACK) and must come first
/// (RFC 9113, 3.4); a byte or a frame header alone is not a greeting.
pub(super) struct Preface {
    greeting: Arc<Greeting>,
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes still to come, once the header is whole.
    payload_left: usize,
}

impl Preface {
    pub(super) fn new(greeting: Arc<Greeting>) -> Self {
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
    /// The stream (TCP, Unix, TLS or yours), watching the server's HTTP/2 preface until it is
    /// whole, or the first byte of an HTTP/1.1 server; and failing every read and write once a
    /// close has cut the connection off ([`ConnShared::cut`]).
    pub(super) struct Watched {
        pub(super) inner: BoxIo,
        pub(super) preface: Option<Preface>,
        // HTTP/1.1, until the server's first byte: it means the server served.
        pub(super) first_byte: bool,
        // HTTP/2: the stream fails once cut off, and a task waiting on it is registered, for
        // the cut to wake it. (Over HTTP/1.1 hyper's connection, which reads and writes the
        // stream, is dropped at once.)
        pub(super) cuttable: bool,
        pub(super) shared: ClosedOnDrop,
        // The waker registered with `shared.io_waker` (registered again only when it changes).
        pub(super) registered: Option<Waker>,
        // Once a poll of the stream panicked: what every poll fails with from then on (the
        // stream is not polled again).
        pub(super) panicked: Option<String>,
    }
}

/// Polls the stream with `io`, a panic of the stream's (a stream of yours, say) turned into an
/// error, which every later poll gives too, without polling the stream again. hyper then fails
/// the requests and the body being read with it, as with any failed read or write; without
/// this, a panic would end hyper's connection with nothing said to a body being read, which
/// would end early as if whole.
#[inline]
fn unless_panicked<T>(
    panicked: &mut Option<String>,
    what: &'static str,
    io: impl FnOnce() -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    if let Some(error) = panicked {
        return Poll::Ready(Err(io::Error::other(error.clone())));
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(io)) {
        Ok(polled) => polled,
        Err(payload) => {
            let error = format!(
                "the connection's stream panicked in {what}: {}",
                crate::error::panic_message(&*payload)
            );
            *panicked = Some(error.clone());
            Poll::Ready(Err(io::Error::other(error)))
        }
    }
}

/// The connection's shared state, held by its stream: dropped with it, it says that the
/// stream is closed (`ConnShared::stream_dropped`).
pub(super) struct ClosedOnDrop(pub(super) Arc<ConnShared>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.stream_dropped();
    }
}

/// What a read or write of a stream that was cut off fails with.
fn cut_off() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, ClosedInFlight::new())
}

/// A read or write of the stream, `io`. Over HTTP/2 (`cuttable`): failed once the stream was
/// cut off, and, if it waits, the waiting task registered to be woken by a cut (and a cut that
/// came meanwhile fails it at once).
#[inline]
fn cuttable_io<T>(
    cuttable: bool,
    shared: &ConnShared,
    registered: &mut Option<Waker>,
    cx: &mut Context<'_>,
    io: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    if !cuttable {
        return io(cx);
    }
    if shared.cut_off.load(Ordering::Acquire) {
        return Poll::Ready(Err(cut_off()));
    }
    let polled = io(cx);
    if polled.is_ready() {
        return polled;
    }
    if waker_changed(registered, cx.waker()) {
        shared.io_waker.register(cx.waker());
    }
    if shared.cut_off.load(Ordering::Acquire) {
        return Poll::Ready(Err(cut_off()));
    }
    Poll::Pending
}

impl Watched {
    /// A write (or flush) of the stream, `io`, as [`cuttable_io`] does it, a panic of the
    /// stream's made its error. One that fails means, over HTTP/1.1, that the connection did
    /// not end in good order ([`ConnShared::mark_failed`]): the peer closed or reset it while a
    /// request was written (hyper writes only requests), so the request fails, and a connection
    /// that had served before is not replaced at once as after a server's close in good order.
    /// Except a reset (or broken pipe) while a body is still being sent after its request's
    /// answer began to come (bytes read): the server's close after answering early, judged by
    /// that answer ([`ConnShared::reset_behind_answer`]).
    fn written<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        what: &'static str,
        io: impl FnOnce(&mut BoxIo, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        let (inner, panicked, shared) = (this.inner, this.panicked, &this.shared.0);
        cuttable_io(*this.cuttable, shared, this.registered, cx, |cx| {
            let polled = unless_panicked(panicked, what, || io(inner, cx));
            if let Poll::Ready(Err(error)) = &polled {
                // Unless it is the server's close after answering before it read the body.
                if panicked.is_some() || !shared.reset_behind_answer(error.kind()) {
                    shared.mark_failed();
                }
            }
            // Bytes held back by a full socket: a request still being written.
            shared.write_blocked(polled.is_pending());
            polled
        })
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let (inner, preface, first_byte, shared, panicked) = (
            this.inner,
            this.preface,
            this.first_byte,
            &this.shared.0,
            this.panicked,
        );
        if shared.given_up_in_flight.load(Ordering::Acquire) {
            // HTTP/1.1: a request given up in flight ends the connection (see
            // `connection::drive`, which sees it once hyper's connection waits): nothing more is
            // read for hyper, so that it waits now. (A server that sends informational
            // responses without end would keep it parsing them for as long as they come.)
            return Poll::Pending;
        }
        cuttable_io(*this.cuttable, shared, this.registered, cx, |cx| {
            let before = buf.filled().len();
            let polled =
                unless_panicked(panicked, "poll_read", || inner.as_mut().poll_read(cx, buf));
            if let Poll::Ready(Err(error)) = &polled {
                if panicked.is_none() {
                    shared.reset_behind_answer(error.kind());
                }
                if error.kind() == io::ErrorKind::UnexpectedEof
                    && shared.in_flight.load(Ordering::Acquire) != 0
                {
                    // The end below, with responses in flight: hyper gets the error (it
                    // fails a body that the close cuts short or delimits), and over HTTP/1.1
                    // its connection's end is judged by those responses, as TCP's would be.
                    shared.unclean_end_behind_responses();
                } else if error.kind() == io::ErrorKind::UnexpectedEof {
                    // The end of the stream without its transport's own goodbye (rustls: the
                    // peer closed without TLS's close_notify, as a server that drops its TLS
                    // stream on its idle timeout does), with no response in progress: the end
                    // of stream it is (RFC 9110 §9.8), given to hyper as TCP's, so that hyper
                    // and h2 judge it as they judge TCP's (an HTTP/1.1 request still being
                    // written fails; an HTTP/2 end without GOAWAY is not in good order). With
                    // a response in progress the error stays: a body that the close delimits
                    // could not be told from one cut short.
                    buf.set_filled(before);
                    shared.end_seen();
                    return Poll::Ready(Ok(()));
                }
            }
            if !matches!(polled, Poll::Ready(Ok(()))) {
                // Bytes a failed (or panicking) read left in the buffer: hyper never sees them.
                return polled;
            }
            let read = &buf.filled()[before..];
            if read.is_empty() && buf.remaining() > 0 {
                // The end of the stream.
                shared.end_seen();
            }
            if let Some(watching) = preface {
                if watching.feed(read) {
                    *preface = None;
                }
            }
            if !read.is_empty() {
                shared.read_while_sending();
            }
            if !read.is_empty() && *first_byte {
                *first_byte = false;
                shared.mark_served();
            }
            polled
        })
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written(cx, "poll_write", |inner, cx| {
            inner.as_mut().poll_write(cx, buf)
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.written(cx, "poll_flush", |inner, cx| inner.as_mut().poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let (inner, panicked, shared) = (this.inner, this.panicked, &this.shared.0);
        let polled = cuttable_io(*this.cuttable, shared, this.registered, cx, |cx| {
            unless_panicked(panicked, "poll_shutdown", || {
                inner.as_mut().poll_shutdown(cx)
            })
        });
        let polled = match polled {
            // The peer's end of stream was read (or found by the probe) before: the stream is
            // over from the peer's side, and a shutdown that fails now tells nothing of how it
            // ended. (A server that closes on its idle timeout as a request comes sends its
            // end, TLS's close_notify first, then a reset for the request it did not read:
            // close_notify cannot go then, nor TCP's end.) hyper's connection ends as after
            // the end of stream it read, not with an error of its shutdown (which would make
            // a connection that served and was closed in good order wait out the retry delay).
            Poll::Ready(Err(error)) if shared.end_was_seen() && panicked.is_none() => {
                tracing::debug!(
                    peer = %shared.peer,
                    %error,
                    "http connection's shutdown failed after the peer's end of stream",
                );
                Poll::Ready(Ok(()))
            }
            polled => polled,
        };
        if polled.is_pending() && !shared.shutdown_waits.load(Ordering::Relaxed) {
            // hyper is done with the connection, and the shutdown waits (for the peer, say):
            // the connection's task (`connection::drive`) does not wait for it unbounded. It
            // polls hyper's connection, and with it this shutdown, until hyper's connection
            // ends; over HTTP/2 hyper's I/O task may go on after that, and wakes it.
            shared.shutdown_waits.store(true, Ordering::Release);
            shared.task.wake();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.written(cx, "poll_write_vectored", |inner, cx| {
            inner.as_mut().poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A second handle on a TCP connection's socket, to look at an idle connection before a request
/// goes out on it: a server that closed it (or reset it) has left an end of stream (or an
/// error) in the socket, which hyper's task learns of only once the runtime's I/O driver has
/// delivered the readiness and the task has run. Browsers look at an idle socket the same way
/// before they reuse it. Unix only (elsewhere, no probe: hyper's task finds out as before).
pub(super) struct Probe {
    #[cfg(unix)]
    socket: std::net::TcpStream,
}

/// What a [`Probe`] finds in an idle connection's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peeked {
    /// Nothing to read, or bytes (hyper will read them): nothing known.
    Open,
    /// The end of the stream: the peer closed the connection.
    Ended,
    /// An error that says the connection is gone (a reset, an abort, a timeout of the
    /// peer).
    Failed,
}

impl Probe {
    /// A probe of `stream`'s socket (a duplicate of its descriptor); `None` if there is none.
    pub(super) fn of(stream: &tokio::net::TcpStream) -> Option<Probe> {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            let fd = stream.as_fd().try_clone_to_owned().ok()?;
            Some(Probe {
                socket: std::net::TcpStream::from(fd),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = stream;
            None
        }
    }

    /// Looks at the socket without taking anything from it (`MSG_PEEK`, without waiting: the
    /// socket is non-blocking, a flag its descriptors share).
    pub(super) fn peek(&self) -> Peeked {
        #[cfg(unix)]
        {
            let mut byte = [0u8; 1];
            match self.socket.peek(&mut byte) {
                Ok(0) => Peeked::Ended,
                Ok(_) => Peeked::Open,
                // Only errors that say the connection is gone: any other (no buffer space, a
                // soft ICMP error) tells nothing, and is left to hyper.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                            | io::ErrorKind::NotConnected
                            | io::ErrorKind::TimedOut
                    ) =>
                {
                    Peeked::Failed
                }
                Err(_) => Peeked::Open,
            }
        }
        #[cfg(not(unix))]
        {
            Peeked::Open
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncWriteExt, Interest};
    use tokio::net::{TcpListener, TcpStream};

    use super::{Peeked, Probe};

    /// A connected pair on 127.0.0.1: (client, server).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// Peeks until the answer is not `Open`, each time once the runtime reports `client`
    /// readable (the peer's FIN or reset makes it so), for 5 s at most.
    async fn peek_until_not_open(client: &TcpStream, probe: &Probe) -> Peeked {
        let wait = async {
            loop {
                client.readable().await.unwrap();
                match probe.peek() {
                    // Readable for an earlier reason: forget that readiness, wait again.
                    Peeked::Open => {
                        let _ = client.try_io(Interest::READABLE, || {
                            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                        });
                    }
                    other => return other,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or(Peeked::Open)
    }

    // An open socket, with or without bytes to read, is open; one the peer shut down has
    // ended; one the peer reset has failed. Peeking takes nothing from the stream.
    #[tokio::test]
    async fn the_probe_tells_an_open_socket_from_an_ended_or_reset_one() {
        let (client, mut server) = pair().await;
        let probe = Probe::of(&client).unwrap();
        assert_eq!(probe.peek(), Peeked::Open);
        server.write_all(b"x").await.unwrap();
        client.readable().await.unwrap();
        assert_eq!(probe.peek(), Peeked::Open);
        let mut byte = [0u8; 1];
        assert_eq!(
            client.try_read(&mut byte).unwrap(),
            1,
            "the byte is still there"
        );
        server.shutdown().await.unwrap();
        assert_eq!(peek_until_not_open(&client, &probe).await, Peeked::Ended);

        let (client, server) = pair().await;
        let probe = Probe::of(&client).unwrap();
        #[allow(deprecated)]
        server.set_linger(Some(Duration::ZERO)).unwrap();
        drop(server);
        assert_eq!(peek_until_not_open(&client, &probe).await, Peeked::Failed);
        drop(client);
    }
}
