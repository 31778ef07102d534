//! The stream as hyper reads it, watched: the server's HTTP/2 preface until it is whole, and
//! the first byte of an HTTP/1.1 server.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker, ready};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

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

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let (inner, preface, first_byte, shared) =
            (this.inner, this.preface, this.first_byte, &this.shared.0);
        cuttable_io(*this.cuttable, shared, this.registered, cx, |cx| {
            let before = buf.filled().len();
            let polled = inner.as_mut().poll_read(cx, buf);
            let read = &buf.filled()[before..];
            if let Some(watching) = preface {
                if watching.feed(read) {
                    *preface = None;
                }
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
        let this = self.project();
        let inner = this.inner;
        cuttable_io(*this.cuttable, &this.shared.0, this.registered, cx, |cx| {
            inner.as_mut().poll_write(cx, buf)
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let inner = this.inner;
        cuttable_io(*this.cuttable, &this.shared.0, this.registered, cx, |cx| {
            inner.as_mut().poll_flush(cx)
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.as_mut().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let inner = this.inner;
        cuttable_io(*this.cuttable, &this.shared.0, this.registered, cx, |cx| {
            inner.as_mut().poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Whether a read or write that moved fewer bytes than asked for shows that the socket has
/// no more to give or take (edge-triggered readiness: epoll, kqueue), so that its readiness
/// can be cleared at once, as tokio's own `TcpStream` does, instead of by one more system call
/// that would find nothing.
const SHORT_IO_CLEARS: bool = cfg!(any(
    target_os = "android",
    target_os = "illumos",
    target_os = "linux",
    target_os = "redox",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "ios",
    target_os = "macos",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "tvos",
    target_os = "visionos",
    target_os = "watchos",
));

/// A TCP connection of the connector's own, as hyper reads and writes it, shared with the
/// connection's [`Probe`]: one socket, one descriptor. It reads and writes through tokio's
/// `&TcpStream` calls (the readiness, then a read or write that does not wait), the calls
/// tokio's own `AsyncRead` and `AsyncWrite` make; the probe holds it weakly, so the socket
/// closes when hyper drops its stream.
pub(super) struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    /// `stream`, as hyper's stream and as a probe of its socket.
    pub(super) fn new(stream: TcpStream) -> (SharedTcp, Probe) {
        let stream = Arc::new(stream);
        let probe = Probe {
            socket: Arc::downgrade(&stream),
        };
        (SharedTcp(stream), probe)
    }

    /// One read or write, `io`, of `interest`, once the socket is ready for it. A would-block
    /// clears the readiness it was tried on, and the socket is polled again (a readiness that
    /// came meanwhile is kept); so does a short move (`short` says which is), on platforms
    /// where that shows the socket drained ([`SHORT_IO_CLEARS`]). Each turn of the loop
    /// either ends it or consumes a readiness the runtime reported.
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut io: impl FnMut(&TcpStream) -> io::Result<T>,
        short: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        let stream = &*self.0;
        loop {
            ready!(match interest {
                Interest::WRITABLE => stream.poll_write_ready(cx),
                _ => stream.poll_read_ready(cx),
            })?;
            let mut done = None;
            // Within `try_io`, whose would-block clears the readiness seen before the call.
            let tried = stream.try_io(interest, || {
                let moved = io(stream)?;
                let clear = SHORT_IO_CLEARS && short(&moved);
                done = Some(moved);
                if clear {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            match (done, tried) {
                (Some(moved), _) => return Poll::Ready(Ok(moved)),
                (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                (None, Err(e)) => return Poll::Ready(Err(e)),
                (None, Ok(())) => unreachable!("a call that succeeded gave what it moved"),
            }
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let wanted = buf.remaining();
        self.poll_io(
            cx,
            Interest::READABLE,
            |stream| stream.try_read_buf(buf),
            |&n| 0 < n && n < wanted,
        )
        .map_ok(drop)
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(
            cx,
            Interest::WRITABLE,
            |stream| stream.try_write(buf),
            |&n| 0 < n && n < buf.len(),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // As tokio's: no short write taken for a full socket here.
        self.poll_io(
            cx,
            Interest::WRITABLE,
            |stream| stream.try_write_vectored(bufs),
            |_| false,
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// A look at an idle TCP connection's socket before a request goes out on it: a server that closed it (or reset it) has left an end of stream (or an error) in
/// the socket, which hyper's task learns of only once the runtime's I/O driver has delivered
/// the readiness and the task has run. Browsers look at an idle socket the same way before
/// they reuse it. It holds the stream weakly (see [`SharedTcp`]).
pub(super) struct Probe {
    socket: Weak<TcpStream>,
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
    /// Looks at the socket without taking anything from it (`MSG_PEEK`, without waiting: the
    /// socket is non-blocking). `Open` once hyper has dropped the stream (its connection is
    /// over, as its task will say).
    pub(super) fn peek(&self) -> Peeked {
        let Some(stream) = self.socket.upgrade() else {
            return Peeked::Open;
        };
        let mut byte = [MaybeUninit::<u8>::uninit()];
        match socket2::SockRef::from(&*stream).peek(&mut byte) {
            Ok(0) => Peeked::Ended,
            Ok(_) => Peeked::Open,
            // Only errors that say the connection is gone: any other (no buffer space, a
            // soft ICMP error, nothing to read yet) tells nothing, and is left to hyper.
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
    use tokio::net::{TcpListener, TcpStream};

    use super::{Peeked, Probe, SharedTcp};

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
    // ended; one the peer reset has failed; once the stream is dropped, nothing is known (and
    // the probe has not kept the socket open: the peer reads its end). Peeking takes nothing
    // from the stream.
    #[tokio::test]
    async fn the_probe_tells_an_open_socket_from_an_ended_or_reset_one() {
        let (client, mut server) = pair().await;
        let (io, probe) = SharedTcp::new(client);
        let client = &*io.0;
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
        assert_eq!(peek_until_not_open(client, &probe).await, Peeked::Ended);

        let (client, server) = pair().await;
        let (io, probe) = SharedTcp::new(client);
        #[allow(deprecated)]
        server.set_linger(Some(Duration::ZERO)).unwrap();
        drop(server);
        assert_eq!(peek_until_not_open(&io.0, &probe).await, Peeked::Failed);

        let (client, mut server) = pair().await;
        let (io, probe) = SharedTcp::new(client);
        drop(io);
        assert_eq!(probe.peek(), Peeked::Open);
        let read = tokio::time::timeout(Duration::from_secs(5), server.read(&mut byte));
        assert_eq!(read.await.unwrap().unwrap(), 0, "the socket is closed");
    }

    // Bytes go both ways whole and in order through the shared stream, in writes and reads of
    // every size (short reads and writes among them, the socket's buffers filling and
    // draining); a read that waits is woken by bytes that come later; a shutdown is the end of
    // the stream for the peer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shared_stream_carries_every_byte_and_its_end() {
        let (client, server) = pair().await;
        let (mut io, _probe) = SharedTcp::new(client);
        let sent: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut server_read, mut server_write) = server.into_split();
        let echo = tokio::spawn(async move {
            // Echoes in small, uneven pieces, slowly at first.
            let mut buf = vec![0u8; 7_919];
            let mut total = 0;
            loop {
                let n = server_read.read(&mut buf).await.unwrap();
                if n == 0 {
                    server_write.shutdown().await.unwrap();
                    return total;
                }
                if total < 100_000 {
                    tokio::task::yield_now().await;
                }
                server_write.write_all(&buf[..n]).await.unwrap();
                total += n;
            }
        });
        let (mut read, mut write) = tokio::io::split(&mut io);
        let writing = async {
            let mut at = 0;
            for size in (1..).map(|i| [1, 100, 65_536, 1_000_000][i % 4]) {
                let end = (at + size).min(sent.len());
                write.write_all(&sent[at..end]).await.unwrap();
                at = end;
                if at == sent.len() {
                    break;
                }
            }
            // A vectored write, then whatever it left.
            let parts = [std::io::IoSlice::new(b"ab"), std::io::IoSlice::new(b"cd")];
            let n = write.write_vectored(&parts).await.unwrap();
            write.write_all(&b"abcd"[n..]).await.unwrap();
            write.shutdown().await.unwrap();
        };
        let reading = async {
            let mut got = Vec::new();
            read.read_to_end(&mut got).await.unwrap();
            got
        };
        let work = async { tokio::join!(writing, reading).1 };
        let got = tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .expect("every byte within 60 s");
        assert_eq!(got.len(), sent.len() + 4);
        assert!(got[..sent.len()] == sent[..], "the bytes, in order");
        assert_eq!(&got[sent.len()..], b"abcd");
        assert_eq!(echo.await.unwrap(), sent.len() + 4);
    }
}
