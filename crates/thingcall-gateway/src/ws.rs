//! MQTT over WebSocket: the upgrade on path `/mqtt` with subprotocol
//! `mqtt`, and a byte stream over binary frames for the session.
//!
//! Incoming binary frames are read as one byte stream (a frame may carry
//! part of a packet or several, as MQTT over WebSocket allows). Outgoing
//! bytes are cut at packet boundaries: each MQTT packet goes out in a
//! binary frame of its own. A text frame ends the connection with close
//! code 1003; a frame larger than the packet limit ends it with 1009.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::DeviceStream;

/// The path MQTT over WebSocket is served on.
pub const PATH: &str = "/mqtt";

/// The subprotocols accepted, in order of preference: `mqtt` (MQTT 3.1.1,
/// what mqtt.js and paho ask for) and `mqttv3.1` (older clients).
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = status;
    r
}

/// Checks an upgrade request: the path must be `/mqtt` (any query is
/// ignored) and one offered subprotocol must be ours; the answer names it.
#[allow(clippy::result_large_err)]
pub(crate) fn check_upgrade(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() != PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "MQTT over WebSocket is served on /mqtt\n",
        ));
    }
    let offered = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let Some(chosen) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the WebSocket upgrade must offer the subprotocol \"mqtt\"\n",
        ));
    };
    resp.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
    Ok(resp)
}

/// The WebSocket settings for a gateway whose packets are at most
/// `max_packet` bytes: no frame or message may be larger than a packet
/// (with its fixed header).
pub(crate) fn config(max_packet: usize) -> WebSocketConfig {
    let limit = max_packet.saturating_add(8);
    WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .write_buffer_size(0)
}

/// The length of the first MQTT packet in `buf`, when it is all there.
fn packet_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let total = 1 + (i + 1) + remaining;
            return Ok((buf.len() >= total).then_some(total));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "an outgoing packet with a malformed length",
    ))
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// A device connection over a WebSocket, as a byte stream.
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary frame.
    rd: Bytes,
    /// Bytes written and not yet sent as a frame.
    wr: BytesMut,
    tls: bool,
}

impl<S> WsStream<S> {
    pub(crate) fn new(ws: WebSocketStream<S>, tls: bool) -> WsStream<S> {
        WsStream {
            ws,
            rd: Bytes::new(),
            wr: BytesMut::new(),
            tls,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Sends every complete packet written so far, each in its own frame.
    fn poll_frames(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(len) = packet_len(&self.wr)? {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(to_io)?;
            let packet = self.wr.split_to(len).freeze();
            Pin::new(&mut self.ws)
                .start_send(Message::Binary(packet))
                .map_err(to_io)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Starts a close handshake with `code` (best effort: the connection
    /// ends either way).
    fn start_close(&mut self, cx: &mut Context<'_>, code: CloseCode, reason: &'static str) {
        if let Poll::Ready(Ok(())) = Pin::new(&mut self.ws).poll_ready(cx) {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = Pin::new(&mut self.ws).start_send(Message::Close(Some(frame)));
            let _ = Pin::new(&mut self.ws).poll_flush(cx);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.rd.is_empty() {
                let n = this.rd.len().min(buf.remaining());
                buf.put_slice(&this.rd[..n]);
                this.rd.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => this.rd = data,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    this.start_close(cx, CloseCode::Unsupported, "MQTT needs binary frames");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text frame: MQTT travels in binary frames",
                    )));
                }
                Some(Err(WsError::Capacity(e))) => {
                    this.start_close(cx, CloseCode::Size, "frame larger than the packet limit");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a frame over the packet limit ({e})"),
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Frames already due go first: a peer that does not read holds the
        // writer here, as a full socket would.
        ready!(this.poll_frames(cx))?;
        this.wr.extend_from_slice(buf);
        if let Poll::Ready(Err(e)) = this.poll_frames(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_frames(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_frames(cx))?;
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}

impl<S: DeviceStream> DeviceStream for WsStream<S> {
    fn abort(self) {
        self.ws.into_inner().abort();
    }

    fn is_tls(&self) -> bool {
        self.tls
    }
}

#[cfg(test)]
mod tests {
    use super::packet_len;

    #[test]
    fn packet_lengths_are_read_from_the_fixed_header() {
        assert_eq!(packet_len(&[0xc0]).unwrap(), None);
        assert_eq!(packet_len(&[0xc0, 0x00]).unwrap(), Some(2));
        assert_eq!(packet_len(&[0x30, 0x02, 1]).unwrap(), None);
        assert_eq!(packet_len(&[0x30, 0x02, 1, 2, 9]).unwrap(), Some(4));
        let mut big = vec![0x30, 0x80, 0x01];
        big.extend(std::iter::repeat_n(0u8, 128));
        assert_eq!(packet_len(&big).unwrap(), Some(131));
        assert!(packet_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }
}
