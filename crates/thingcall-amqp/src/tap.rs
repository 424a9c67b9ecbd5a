//! A guard between the client's socket and the AMQP engine. It reads
//! whole protocol headers and frames, checks them, and hands the engine
//! only what passed:
//!
//! * every frame header: size at least 8 and at most the frame limit, data
//!   offset at least 2 words and inside the frame (the engine's decoder
//!   panics on a frame shorter than its header);
//! * every frame body's AMQP encoding, shallowly: each declared length and
//!   element count fits in the bytes that follow, constructors are known,
//!   nesting is at most 32 deep (the decoder allocates what a length
//!   declares before reading it: a 30-byte frame declaring a 2.7 GB string
//!   made it allocate that, before or after sign-in);
//! * and it reads the client's Open (the engine does not tell what
//!   idle-time-out the client asked for, and Alibaba refuses a client that
//!   asks for none).
//!
//! The first bad byte fails the stream, so the engine ends the connection.
//! Both defects were found by the `amqp_session` fuzz target.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use fe2o3_amqp::types::performatives::Open;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Deepest nesting of lists, maps, arrays and described values accepted.
const MAX_DEPTH: usize = 32;

/// What the guard saw of the client's Open, shared with the connection task.
#[derive(Clone, Debug, Default)]
pub(crate) struct RemoteOpen(Arc<OnceLock<Option<u32>>>);

impl RemoteOpen {
    /// The Open's idle-time-out (`None`: absent, zero, or no Open seen).
    pub(crate) fn idle_time_out(&self) -> Option<u32> {
        self.0.get().copied().flatten().filter(|ms| *ms > 0)
    }
}

/// The stream the engine reads.
#[derive(Debug)]
pub(crate) struct OpenTap<S> {
    inner: S,
    /// Bytes read, not yet checked.
    raw: Vec<u8>,
    /// Checked bytes not yet handed out, from `ready_at`.
    ready: Vec<u8>,
    ready_at: usize,
    /// An AMQP (not SASL) header was seen: the next frame is the Open.
    amqp: bool,
    eof: bool,
    max_frame: usize,
    out: RemoteOpen,
}

impl<S> OpenTap<S> {
    pub(crate) fn new(inner: S, out: RemoteOpen, max_frame: u32) -> OpenTap<S> {
        OpenTap {
            inner,
            raw: Vec::new(),
            ready: Vec::new(),
            ready_at: 0,
            amqp: false,
            eof: false,
            max_frame: max_frame as usize,
            out,
        }
    }

    /// Takes the next whole header or frame off `raw`, checked; `None` when
    /// more bytes are needed.
    fn next_unit(&mut self) -> Result<Option<Vec<u8>>, String> {
        let raw = &self.raw;
        if raw.len() < 4 {
            return Ok(None);
        }
        if &raw[..4] == b"AMQP" {
            if raw.len() < 8 {
                return Ok(None);
            }
            // A protocol header: id 0 is AMQP, 3 is SASL.
            self.amqp = raw[4] == 0;
            return Ok(Some(self.raw.drain(..8).collect()));
        }
        let size = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        if size < 8 || size > self.max_frame {
            return Err(format!("a malformed frame header (size {size})"));
        }
        if let Some(&d) = raw.get(4) {
            let doff = usize::from(d) * 4;
            if doff < 8 || doff > size {
                return Err(format!(
                    "a malformed frame header (data offset {doff} in {size})"
                ));
            }
        }
        if raw.len() < size {
            return Ok(None);
        }
        let frame: Vec<u8> = self.raw.drain(..size).collect();
        let doff = usize::from(frame[4]) * 4;
        let body = &frame[doff..];
        if !body.is_empty() {
            // The performative (and, in a transfer, the payload after it,
            // which the engine reads as its own sections).
            let mut at = 0;
            while at < body.len() {
                at += encoded_len(&body[at..], 0)?;
            }
        }
        if self.amqp && frame[5] == 0 && self.out.0.get().is_none() {
            let idle = serde_amqp::from_slice::<Open>(body)
                .ok()
                .and_then(|open| open.idle_time_out);
            let _ = self.out.0.set(idle);
        }
        Ok(Some(frame))
    }
}

/// The length of the AMQP-encoded value at the start of `b`, checking that
/// every length and count it declares fits in `b`.
fn encoded_len(b: &[u8], depth: usize) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err("AMQP values nested too deep".into());
    }
    let short = || "an AMQP value longer than its frame".to_owned();
    let constructor = *b.first().ok_or_else(short)?;
    let fixed = |n: usize| if b.len() > n { Ok(1 + n) } else { Err(short()) };
    let u32_at = |i: usize| -> Result<usize, String> {
        b.get(i..i + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
            .ok_or_else(short)
    };
    match constructor {
        0x00 => {
            let d = encoded_len(&b[1..], depth + 1)?;
            let v = encoded_len(b.get(1 + d..).ok_or_else(short)?, depth + 1)?;
            Ok(1 + d + v)
        }
        0x40..=0x45 => Ok(1),
        0x50..=0x56 => fixed(1),
        0x60 | 0x61 => fixed(2),
        0x70..=0x74 => fixed(4),
        0x80..=0x84 => fixed(8),
        0x94 | 0x98 => fixed(16),
        0xa0 | 0xa1 | 0xa3 => {
            let n = usize::from(*b.get(1).ok_or_else(short)?);
            fixed(1 + n)
        }
        0xb0 | 0xb1 | 0xb3 => {
            let n = u32_at(1)?;
            if b.len() - 5 < n {
                return Err(short());
            }
            Ok(5 + n)
        }
        0xc0 | 0xc1 | 0xd0 | 0xd1 => {
            let wide = constructor >= 0xd0;
            let (size, count, head) = if wide {
                (u32_at(1)?, u32_at(5)?, 9)
            } else {
                let s = usize::from(*b.get(1).ok_or_else(short)?);
                let c = usize::from(*b.get(2).ok_or_else(short)?);
                (s, c, 3)
            };
            let width = if wide { 4 } else { 1 };
            let end = 1 + width + size;
            if size < width || b.len() < end || count > size {
                return Err(short());
            }
            let mut at = head;
            for _ in 0..count {
                at += encoded_len(b.get(at..end).ok_or_else(short)?, depth + 1)?;
                if at > end {
                    return Err(short());
                }
            }
            Ok(end)
        }
        0xe0 | 0xf0 => {
            let wide = constructor == 0xf0;
            let (size, count) = if wide {
                (u32_at(1)?, u32_at(5)?)
            } else {
                (
                    usize::from(*b.get(1).ok_or_else(short)?),
                    usize::from(*b.get(2).ok_or_else(short)?),
                )
            };
            let width = if wide { 4 } else { 1 };
            let end = 1 + width + size;
            // Each element takes at least a byte, but for the zero-width
            // types (null, true, false, and the empty forms).
            let element = b.get(1 + 2 * width).copied();
            let zero_width = matches!(element, Some(0x40..=0x45));
            if size < width
                || b.len() < end
                || (!zero_width && count > size)
                || (zero_width && count > 65_536)
            {
                return Err(short());
            }
            Ok(end)
        }
        other => Err(format!("an unknown AMQP constructor 0x{other:02x}")),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for OpenTap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready_at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_at);
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                return Poll::Ready(Ok(()));
            }
            match this.next_unit() {
                Ok(Some(unit)) => {
                    this.ready = unit;
                    this.ready_at = 0;
                    continue;
                }
                Ok(None) => {}
                Err(why) => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        why,
                    )));
                }
            }
            if this.eof {
                // Whatever Open was coming did not; a partial unit is
                // dropped with the connection.
                let _ = this.out.0.set(None);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            } else {
                this.raw.extend_from_slice(read.filled());
            }
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use tokio::io::AsyncReadExt;

    use super::*;

    fn open_frame(idle: Option<u32>) -> Vec<u8> {
        let open = Open {
            container_id: "c".into(),
            hostname: None,
            max_frame_size: Default::default(),
            channel_max: Default::default(),
            idle_time_out: idle,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        let body = serde_amqp::to_vec(&open).unwrap();
        let mut f = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        f.extend([2, 0, 0, 0]);
        f.extend(body);
        f
    }

    async fn through(bytes: Vec<u8>) -> (std::io::Result<Vec<u8>>, RemoteOpen) {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let out = RemoteOpen::default();
        let mut tap = OpenTap::new(b, out.clone(), 64 * 1024);
        tokio::io::AsyncWriteExt::write_all(&mut a, &bytes)
            .await
            .unwrap();
        drop(a);
        let mut got = Vec::new();
        let r = tap.read_to_end(&mut got).await.map(|_| got);
        (r, out)
    }

    #[tokio::test]
    async fn good_streams_pass_unchanged_and_the_open_is_read() {
        let mut stream = b"AMQP\x03\x01\x00\x00".to_vec();
        // A SASL init-like frame: a described list holding a symbol.
        stream.extend([
            0, 0, 0, 17, 2, 1, 0, 0, 0x00, 0x53, 0x41, 0xc0, 0x04, 0x01, 0xa3, 0x01, b'P',
        ]);
        stream.extend(b"AMQP\x00\x01\x00\x00");
        stream.extend(open_frame(Some(30_000)));
        stream.extend([0, 0, 0, 8, 2, 0, 0, 0]);
        let (r, out) = through(stream.clone()).await;
        assert_eq!(r.unwrap(), stream);
        assert_eq!(out.idle_time_out(), Some(30_000));
    }

    #[tokio::test]
    async fn bad_headers_and_lying_lengths_fail_the_stream() {
        let long_string = [
            0, 0, 0, 0x17, 2, 0, 0, 0, 0, 0, 0xb3, 0xa1, 0x04, 0x74, 0x68, 0x10, 0xc1, 0x0a, 0x02,
            0xa1, 0x04, 0x74, 0x68,
        ];
        let nested: Vec<u8> = {
            let mut body = Vec::new();
            for _ in 0..40 {
                body.extend([0xc0, 0x02, 0x01]);
            }
            body.push(0x40);
            let mut f = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            f.extend([2, 0, 0, 0]);
            f.extend(body);
            f
        };
        for bad in [
            vec![0u8, 0, 0, 7, 2, 0, 0],
            vec![0, 0, 0, 8, 1, 0, 0, 0],
            vec![0, 0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 0],
            vec![0x7f, 0, 0, 0],
            long_string.to_vec(),
            vec![0, 0, 0, 11, 2, 0, 0, 0, 0xf0, 0, 0],
            vec![0, 0, 0, 10, 2, 0, 0, 0, 0xe0, 0x01],
            vec![0, 0, 0, 9, 2, 0, 0, 0, 0x99],
            nested,
        ] {
            let mut stream = b"AMQP\x00\x01\x00\x00".to_vec();
            stream.extend(&bad);
            let (r, _) = through(stream).await;
            assert!(r.is_err(), "{bad:?}");
        }
    }
}
