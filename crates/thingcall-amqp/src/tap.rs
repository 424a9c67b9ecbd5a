//! Reads the client's Open frame as it passes, without changing the
//! stream: the AMQP acceptor does not tell what idle-time-out the client
//! asked for, and Alibaba refuses a client that asks for none.
//!
//! The tap follows the byte stream: protocol headers (8 bytes), SASL
//! frames (type 1, skipped), the AMQP header, then the first AMQP frame,
//! which is the Open. It stops looking after that (or after 64 KiB).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use fe2o3_amqp::types::performatives::Open;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes looked at before the Open.
const LIMIT: usize = 64 * 1024;

/// What the tap saw of the client's Open, shared with the connection task.
#[derive(Clone, Debug, Default)]
pub(crate) struct RemoteOpen(Arc<OnceLock<Option<u32>>>);

impl RemoteOpen {
    /// The Open's idle-time-out (`None`: absent, zero, or no Open seen).
    pub(crate) fn idle_time_out(&self) -> Option<u32> {
        self.0.get().copied().flatten().filter(|ms| *ms > 0)
    }
}

/// A stream that hands every byte through and watches for the Open.
#[derive(Debug)]
pub(crate) struct OpenTap<S> {
    inner: S,
    seen: Vec<u8>,
    /// Bytes of `seen` already parsed.
    at: usize,
    done: bool,
    out: RemoteOpen,
}

impl<S> OpenTap<S> {
    pub(crate) fn new(inner: S, out: RemoteOpen) -> OpenTap<S> {
        OpenTap {
            inner,
            seen: Vec::new(),
            at: 0,
            done: false,
            out,
        }
    }

    fn finish(&mut self, idle: Option<u32>) {
        self.done = true;
        let _ = self.out.0.set(idle);
        self.seen = Vec::new();
    }

    /// Parses what can be parsed of `seen`.
    fn scan(&mut self) {
        while !self.done {
            let rest = &self.seen[self.at..];
            if rest.len() >= 4 && &rest[..4] == b"AMQP" {
                if rest.len() < 8 {
                    return;
                }
                self.at += 8;
                continue;
            }
            if rest.len() < 8 {
                return;
            }
            let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let doff = usize::from(rest[4]) * 4;
            let kind = rest[5];
            if size < 8 || doff < 8 || doff > size || size > LIMIT {
                self.finish(None);
                return;
            }
            if rest.len() < size {
                return;
            }
            if kind == 0 {
                let body = &rest[doff..size];
                let idle = serde_amqp::from_slice::<Open>(body)
                    .ok()
                    .and_then(|open| open.idle_time_out);
                self.finish(idle);
                return;
            }
            self.at += size;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for OpenTap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.done && matches!(polled, Poll::Ready(Ok(()))) {
            let new = &buf.filled()[before..];
            // End of stream, or more bytes than an Open can follow.
            if new.is_empty() || self.seen.len() + new.len() > LIMIT {
                self.finish(None);
            } else {
                let this = &mut *self;
                this.seen.extend_from_slice(new);
                this.scan();
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for OpenTap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
