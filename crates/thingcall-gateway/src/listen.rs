//! The gateway's listeners: MQTT over TCP (which also takes TLS handshakes
//! when a certificate is configured), MQTT over TLS, and MQTT over
//! WebSocket, plain or over TLS.
//!
//! Every connection takes one of the gateway's connection slots from the
//! moment it is accepted, through its TLS handshake and WebSocket upgrade,
//! to its end; a connection that finds none left is closed at once. A
//! handshake or upgrade that is not done within
//! [`GatewayConfig::handshake_timeout`](crate::GatewayConfig) is closed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::metrics::GatewayMetrics;
use crate::ws::{self, WsStream};
use crate::{DeviceStream, Gateway};

/// The first byte of a TLS handshake record (a ClientHello); an MQTT
/// CONNECT starts with 0x10.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// What a device listener speaks.
#[derive(Clone)]
pub enum Listen {
    /// MQTT over TCP. With an acceptor, a connection whose first byte opens
    /// a TLS handshake is served over TLS, as on Alibaba's port 1883.
    Mqtt {
        /// The TLS configuration for connections that start a handshake.
        tls: Option<TlsAcceptor>,
    },
    /// MQTT over TLS only.
    Mqtts(TlsAcceptor),
    /// MQTT over WebSocket on path `/mqtt`, over TLS with an acceptor.
    WebSocket {
        /// The TLS configuration (`wss://`), or none (`ws://`).
        tls: Option<TlsAcceptor>,
    },
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Listen::Mqtt { tls: None } => "mqtt",
            Listen::Mqtt { tls: Some(_) } => "mqtt (and TLS by first byte)",
            Listen::Mqtts(_) => "mqtts",
            Listen::WebSocket { tls: None } => "mqtt-ws",
            Listen::WebSocket { tls: Some(_) } => "mqtt-wss",
        })
    }
}

/// A boxed stream: a TLS or WebSocket stream is large (rustls keeps its
/// connection state inline, about 1.2 KiB), and the session's future and
/// its split halves would otherwise each reserve room for it.
impl<S: DeviceStream> DeviceStream for Box<S> {
    fn abort(self) {
        (*self).abort();
    }

    fn is_tls(&self) -> bool {
        (**self).is_tls()
    }
}

impl<S: DeviceStream> DeviceStream for TlsStream<S> {
    fn abort(self) {
        let (io, _) = self.into_inner();
        io.abort();
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// Why a connection never reached the MQTT session.
enum Refused {
    Tls(std::io::Error),
    Upgrade(String),
    TimedOut(&'static str),
    Closed,
}

/// A connection's place under the gateway's connection limit.
type Slot = tokio::sync::OwnedSemaphorePermit;

async fn tls_accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, Refused> {
    acceptor.accept(stream).await.map_err(Refused::Tls)
}

async fn upgrade<S: DeviceStream>(
    stream: S,
    max_packet: usize,
    tls: bool,
) -> Result<WsStream<S>, Refused> {
    tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        ws::check_upgrade,
        Some(ws::config(max_packet)),
    )
    .await
    .map(|w| WsStream::new(w, tls))
    .map_err(|e| Refused::Upgrade(e.to_string()))
}

/// Whether a connection's first byte opens a TLS handshake (None: the peer
/// closed before sending anything).
async fn starts_tls(stream: &TcpStream) -> Result<bool, Refused> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => Err(Refused::Closed),
        Ok(_) => Ok(first[0] == TLS_HANDSHAKE_BYTE),
        Err(e) => Err(Refused::Tls(e)),
    }
}

impl Gateway {
    /// Accepts devices on `listener`, speaking `kind`, until `stop`
    /// completes; the sessions already open stay open (see
    /// [`Gateway::accept`]).
    pub async fn accept_on(
        &self,
        listener: tokio::net::TcpListener,
        kind: Listen,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => {
                    let (stream, addr) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Running out of file descriptors and the like:
                            // keep serving the devices already connected.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = std::sync::Arc::clone(&self.inner.slots).try_acquire_owned() else {
                        GatewayMetrics::inc(&self.inner.metrics.connections_over_limit);
                        tracing::warn!(%addr, limit = self.inner.config.max_connections, "connection limit reached; closing a new connection");
                        stream.abort();
                        continue;
                    };
                    // Without TCP_NODELAY every QoS 1 round trip stalls
                    // ~40 ms on delayed ACKs.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::warn!(%addr, error = %e, "cannot set TCP_NODELAY");
                    }
                    let gateway = self.clone();
                    if let Listen::Mqtt { tls: None } = kind {
                        gateway.spawn_session(stream, addr, slot);
                    } else {
                        // The handshake runs in a task of its own, which
                        // ends when the session's task starts: an idle
                        // session carries no handshake state.
                        let kind = kind.clone();
                        tokio::spawn(async move {
                            gateway.handshake(stream, addr, kind, slot).await;
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Upgrades a connection accepted elsewhere (and already decrypted, if
    /// `tls`) to MQTT over WebSocket, within the handshake limit, and runs
    /// its session until it ends. For tests and fuzzing; listeners use
    /// [`Gateway::accept_on`].
    pub async fn serve_websocket<S: DeviceStream>(&self, stream: S, addr: SocketAddr, tls: bool) {
        let limit = self.inner.config.handshake_timeout;
        match tokio::time::timeout(limit, upgrade(stream, self.inner.config.max_packet, tls)).await
        {
            Ok(Ok(ws)) => self.serve_connection(ws, addr).await,
            Ok(Err(_)) | Err(_) => {
                GatewayMetrics::inc(&self.inner.metrics.websocket_upgrades_failed);
            }
        }
    }

    /// Runs a session in a task of its own, holding its connection slot.
    fn spawn_session<S: DeviceStream>(&self, stream: S, addr: SocketAddr, slot: Slot) {
        let gateway = self.clone();
        tokio::spawn(async move {
            gateway.serve_connection(stream, addr).await;
            drop(slot);
        });
    }

    /// Finishes a connection's TLS handshake and WebSocket upgrade within
    /// the handshake limit, then hands it to a session task.
    async fn handshake(&self, stream: TcpStream, addr: SocketAddr, kind: Listen, slot: Slot) {
        let deadline = tokio::time::Instant::now() + self.inner.config.handshake_timeout;
        let max_packet = self.inner.config.max_packet;
        let metrics = &self.inner.metrics;
        let within = |what: &'static str| move |_| Refused::TimedOut(what);
        let outcome = match kind {
            Listen::Mqtt { tls: None } => {
                self.spawn_session(stream, addr, slot);
                Ok(())
            }
            Listen::Mqtt {
                tls: Some(acceptor),
            } => {
                match tokio::time::timeout_at(deadline, starts_tls(&stream)).await {
                    // Plain MQTT: the session reads what was peeked.
                    Ok(Ok(false)) => {
                        self.spawn_session(stream, addr, slot);
                        Ok(())
                    }
                    Ok(Ok(true)) => {
                        tokio::time::timeout_at(deadline, tls_accept(&acceptor, stream))
                            .await
                            .map_err(within("TLS handshake"))
                            .and_then(|r| r)
                            .map(|tls| self.spawn_session(Box::new(tls), addr, slot))
                    }
                    Ok(Err(e)) => Err(e),
                    // Silent for the whole limit: as a plain connection that
                    // sends no CONNECT in time.
                    Err(_) => {
                        tracing::info!(%addr, "nothing received in time; closing");
                        Err(Refused::Closed)
                    }
                }
            }
            Listen::Mqtts(acceptor) => {
                tokio::time::timeout_at(deadline, tls_accept(&acceptor, stream))
                    .await
                    .map_err(within("TLS handshake"))
                    .and_then(|r| r)
                    .map(|tls| self.spawn_session(Box::new(tls), addr, slot))
            }
            Listen::WebSocket { tls: None } => {
                tokio::time::timeout_at(deadline, upgrade(stream, max_packet, false))
                    .await
                    .map_err(within("WebSocket upgrade"))
                    .and_then(|r| r)
                    .map(|ws| self.spawn_session(Box::new(ws), addr, slot))
            }
            Listen::WebSocket {
                tls: Some(acceptor),
            } => tokio::time::timeout_at(deadline, async {
                let tls = tls_accept(&acceptor, stream).await?;
                upgrade(tls, max_packet, true).await
            })
            .await
            .map_err(within("TLS handshake and WebSocket upgrade"))
            .and_then(|r| r)
            .map(|ws| self.spawn_session(Box::new(ws), addr, slot)),
        };
        match outcome {
            Ok(()) | Err(Refused::Closed) => {}
            Err(Refused::Tls(e)) => {
                GatewayMetrics::inc(&metrics.tls_handshakes_failed);
                tracing::info!(%addr, error = %e, "TLS handshake failed; closing");
            }
            Err(Refused::TimedOut(what)) if what.starts_with("TLS") => {
                GatewayMetrics::inc(&metrics.tls_handshakes_failed);
                tracing::info!(%addr, "{what} not finished in time; closing");
            }
            Err(Refused::TimedOut(what)) => {
                GatewayMetrics::inc(&metrics.websocket_upgrades_failed);
                tracing::info!(%addr, "{what} not finished in time; closing");
            }
            Err(Refused::Upgrade(e)) => {
                GatewayMetrics::inc(&metrics.websocket_upgrades_failed);
                tracing::info!(%addr, error = %e, "WebSocket upgrade refused; closing");
            }
        }
    }
}
