//! The stream as hyper reads it, watched: the server's HTTP/2 preface until it is whole, and
//! the first byte of an HTTP/1.1 server.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::dial::BoxIo;
use super::shared::ConnShared;
use crate::signal::Signal;

/// What the server's HTTP/2 connection preface turned out to be.
#[derive(Default)]
pub(super) struct Greeting {
    /// Set once the first frame has been read whole (or found not to be SETTINGS).
    pub(super) done: Signal,
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
    /// The stream (TCP, Unix, TLS or yours), watching the server's HTTP/2 preface until it is whole, or the first
    /// byte of an HTTP/1.1 server.
    pub(super) struct Watched {
        pub(super) inner: BoxIo,
        pub(super) preface: Option<Preface>,
        pub(super) first_byte: Option<Arc<ConnShared>>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.as_mut().poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if let Some(preface) = this.preface {
            if preface.feed(read) {
                *this.preface = None;
            }
        }
        if !read.is_empty() {
            if let Some(shared) = this.first_byte.take() {
                shared.mark_served();
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.as_mut().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
