//! thingcall's MQTT device gateway.
//!
//! An MQTT 3.1.1 server on tokio, built on the `rumqttc::mqttbytes::v4`
//! codec, with the semantics of Alibaba's device endpoint rather than a
//! general broker's:
//!
//! * CONNECT is authenticated with one-device-one-secret credentials
//!   (client id extension block, `deviceName&productKey`, HMAC password)
//!   against a [`DeviceRegistry`]. CONNACK 2 for a malformed client id or an
//!   out-of-range keepalive, 4 for bad credentials, 5 for a disabled or
//!   deleted device.
//! * A device may only publish and subscribe inside its own namespaces
//!   ([`acl`]). Devices never see each other's messages: the gateway routes
//!   cloud→device deliveries and device→cloud replies, nothing else.
//! * `_ss=1` devices receive their system topics without subscribing.
//! * Sync calls go out by RRPC in the form the device asked for (`ext` bit
//!   0), replies are correlated by the message id in the topic.
//! * A second login kicks the first; QoS 1 messages are kept for a
//!   `clean_session=false` device while it is offline.
//!
//! [`Gateway`] implements [`thingcall_transport::Transport`], which is all
//! the invocation engine sees. [`simulator`] is a device that answers from
//! a thing model, built on the same codec.

pub mod acl;
pub mod client;
pub mod listen;
pub mod metrics;
pub mod registry;
mod session;
pub mod simulator;
pub mod ws;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::mqttbytes::{QoS, matches};
use thingcall_core::{Clock, Qos};
use thingcall_transport::{
    Delivered, Delivery, DeliveryOutcome, DeviceKey, EventHub, EventStream, Transport,
    TransportError, delivery_topic,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

pub use metrics::GatewayMetrics;
pub use registry::{DeviceLookup, DeviceRegistry, MapRegistry, RegistryError};
/// The MQTT 3.1.1 codec the gateway, its client and the simulator share.
pub use rumqttc::mqttbytes;

/// Gateway settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Largest MQTT packet accepted, in bytes (256 KiB by default).
    pub max_packet: usize,
    /// Smallest keepalive accepted, in seconds (30).
    pub min_keepalive: u16,
    /// Largest keepalive accepted, in seconds (1200).
    pub max_keepalive: u16,
    /// How long a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Messages waiting for a connected device's socket; beyond this,
    /// deliveries are refused with [`TransportError::QueueFull`].
    pub outbound_queue: usize,
    /// QoS 1 messages sent and not yet acknowledged, per connection.
    pub max_inflight: usize,
    /// QoS 1 messages kept for an offline persistent session; beyond this,
    /// deliveries are refused with [`TransportError::QueueFull`].
    pub offline_queue: usize,
    /// How long a write to a device may make no progress before the
    /// connection is closed (the device stopped reading its socket).
    pub write_stall_timeout: Duration,
    /// When set, a CONNECT's signed `timestamp` must be within this much of
    /// the gateway's clock (seconds or milliseconds since the epoch), so a
    /// captured CONNECT cannot be replayed later. Alibaba checks no window
    /// (and the C SDK signs a constant), so this is off by default.
    pub timestamp_window: Option<Duration>,
    /// Device connections open at once, over all listeners, counting those
    /// still in their TLS handshake or WebSocket upgrade; a connection
    /// beyond this is closed at once.
    pub max_connections: usize,
    /// How long a TLS handshake or WebSocket upgrade may take.
    pub handshake_timeout: Duration,
    /// Refuse every CONNECT that did not come over TLS (CONNACK 5).
    pub require_tls: bool,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            max_packet: 256 * 1024,
            min_keepalive: 30,
            max_keepalive: 1200,
            connect_timeout: Duration::from_secs(10),
            outbound_queue: 1024,
            max_inflight: 128,
            offline_queue: 1000,
            write_stall_timeout: Duration::from_secs(20),
            timestamp_window: None,
            max_connections: 100_000,
            handshake_timeout: Duration::from_secs(10),
            require_tls: false,
        }
    }
}

/// A byte stream a device is connected over: TCP, TLS or a WebSocket. The
/// session reads and writes it; `abort` ends it at once.
pub trait DeviceStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Ends the connection without waiting for the device to read what is
    /// still queued (TCP: a reset through `SO_LINGER` 0). The default drops
    /// the stream.
    fn abort(self)
    where
        Self: Sized,
    {
    }

    /// Whether the bytes travel encrypted (TLS underneath).
    fn is_tls(&self) -> bool {
        false
    }
}

impl DeviceStream for TcpStream {
    fn abort(self) {
        if let Err(e) = self.set_zero_linger() {
            tracing::debug!(error = %e, "cannot set SO_LINGER 0; the close may linger");
        }
    }
}

/// An in-memory pipe: for tests and the fuzz targets.
impl DeviceStream for tokio::io::DuplexStream {}

/// A message on its way to a device.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) dup: bool,
}

/// A subscription filter and its granted QoS.
pub(crate) type Filters = Arc<Mutex<Vec<(String, QoS)>>>;

/// A connected device, as the rest of the gateway sees it.
#[derive(Clone)]
pub(crate) struct SessionHandle {
    pub(crate) generation: u64,
    /// Boxed: the channel allocates its slots in blocks of 32 at creation,
    /// and an idle connection should not hold 32 whole messages' room.
    pub(crate) outbound: mpsc::Sender<Box<Outgoing>>,
    pub(crate) kick: watch::Sender<Option<String>>,
    pub(crate) ext_rrpc: bool,
    pub(crate) filters: Filters,
}

/// What is kept for an offline `clean_session=false` device.
#[derive(Debug, Default)]
pub(crate) struct StoredSession {
    pub(crate) ext_rrpc: bool,
    pub(crate) filters: Vec<(String, QoS)>,
    pub(crate) queued: VecDeque<Outgoing>,
}

pub(crate) struct Inner {
    pub(crate) config: GatewayConfig,
    pub(crate) registry: Arc<dyn DeviceRegistry>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sessions: Mutex<HashMap<DeviceKey, SessionHandle>>,
    pub(crate) stored: Mutex<HashMap<DeviceKey, StoredSession>>,
    pub(crate) hub: EventHub,
    pub(crate) metrics: GatewayMetrics,
    /// One permit per open connection (see `max_connections`).
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    next_generation: AtomicU64,
}

impl Inner {
    pub(crate) fn generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent; a panic elsewhere
    // must not take the gateway down with it.
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The highest QoS among the filters that match a topic.
pub(crate) fn matching_qos(filters: &[(String, QoS)], topic: &str) -> Option<QoS> {
    filters
        .iter()
        .filter(|(f, _)| matches(topic, f))
        .map(|(_, q)| *q)
        .max_by_key(|q| match q {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => 1,
            QoS::ExactlyOnce => 2,
        })
}

/// The MQTT device gateway. Cheap to clone; clones share one gateway.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway that authenticates against `registry` and stamps events
    /// with `clock`.
    pub fn new(
        config: GatewayConfig,
        registry: Arc<dyn DeviceRegistry>,
        clock: Arc<dyn Clock>,
    ) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                registry,
                clock,
                sessions: Mutex::new(HashMap::new()),
                stored: Mutex::new(HashMap::new()),
                hub: EventHub::new(),
                metrics: GatewayMetrics::default(),
                slots: Arc::new(tokio::sync::Semaphore::new(
                    config
                        .max_connections
                        .min(tokio::sync::Semaphore::MAX_PERMITS),
                )),
                config,
                next_generation: AtomicU64::new(1),
            }),
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    /// How many devices are connected now.
    pub fn online_count(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// Accepts devices on `listener` until `shutdown` completes, then closes
    /// every connection.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.accept(listener, shutdown).await?;
        self.close_sessions("gateway shutting down");
        Ok(())
    }

    /// Accepts device connections until `stop` completes, then stops
    /// accepting and returns; the sessions already open stay open (a
    /// draining server finishes its calls on them, then closes them with
    /// [`Gateway::close_sessions`]).
    pub async fn accept(
        &self,
        listener: TcpListener,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.accept_on(listener, listen::Listen::Mqtt { tls: None }, stop)
            .await
    }

    /// Closes every open device session with `reason` (the devices see
    /// their connection end, and reconnect wherever they reconnect).
    pub fn close_sessions(&self, reason: &str) {
        let handles: Vec<SessionHandle> = lock(&self.inner.sessions).values().cloned().collect();
        for h in handles {
            let _ = h.kick.send(Some(reason.to_owned()));
        }
    }

    /// Runs one device connection that was accepted elsewhere (a TLS or
    /// WebSocket listener, a test's in-memory pipe) until it ends.
    pub async fn serve_connection<S: DeviceStream>(&self, stream: S, addr: SocketAddr) {
        GatewayMetrics::inc(&self.inner.metrics.connections_accepted);
        session::run(Arc::clone(&self.inner), stream, addr).await;
    }

    /// Closes the device's session because the device logged in elsewhere
    /// (another node of a cluster): like a second login here, the closed
    /// session reports no offline event, and a kept persistent session is
    /// dropped. Returns whether there was anything to close.
    pub fn replace(&self, device: &DeviceKey) -> bool {
        let handle = lock(&self.inner.sessions).get(device).cloned();
        let stored = lock(&self.inner.stored).remove(device).is_some();
        let kicked = handle.is_some_and(|h| {
            GatewayMetrics::inc(&self.inner.metrics.sessions_kicked);
            h.kick
                .send(Some(session::REPLACED_BY_NEW_LOGIN.to_owned()))
                .is_ok()
        });
        kicked || stored
    }

    /// Whether a persistent session of the device is kept while it is
    /// offline (its QoS 1 messages are queued here).
    pub fn has_stored_session(&self, device: &DeviceKey) -> bool {
        lock(&self.inner.stored).contains_key(device)
    }

    /// The devices connected now.
    pub fn connected(&self) -> Vec<DeviceKey> {
        lock(&self.inner.sessions).keys().cloned().collect()
    }

    /// Whether the device has a live connection.
    pub fn is_connected(&self, device: &DeviceKey) -> bool {
        lock(&self.inner.sessions).contains_key(device)
    }
}

fn to_mqtt_qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if a == QoS::AtMostOnce || b == QoS::AtMostOnce {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

#[async_trait]
impl Transport for Gateway {
    async fn deliver(&self, delivery: Delivery) -> Result<Delivered, TransportError> {
        let inner = &self.inner;
        let session = lock(&inner.sessions).get(&delivery.device).cloned();
        let wanted = to_mqtt_qos(delivery.qos);
        match session {
            Some(handle) => {
                let topic = delivery_topic(
                    &delivery.device,
                    delivery.message_id,
                    &delivery.kind,
                    handle.ext_rrpc,
                )
                .to_string();
                let Some(granted) = matching_qos(&lock(&handle.filters), &topic) else {
                    tracing::debug!(device = %delivery.device, %topic, "no subscription matches; not sent");
                    return Ok(Delivered {
                        topic,
                        outcome: DeliveryOutcome::NoSubscriber,
                    });
                };
                let out = Outgoing {
                    topic: topic.clone(),
                    payload: Bytes::from(delivery.payload),
                    qos: min_qos(wanted, granted),
                    dup: false,
                };
                match handle.outbound.try_send(Box::new(out)) {
                    Ok(()) => Ok(Delivered {
                        topic,
                        outcome: DeliveryOutcome::Sent,
                    }),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        GatewayMetrics::inc(&inner.metrics.queue_overflows);
                        tracing::warn!(device = %delivery.device, "outbound queue full; delivery refused");
                        Err(TransportError::QueueFull)
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(TransportError::Offline),
                }
            }
            None => {
                let mut stored = lock(&inner.stored);
                let Some(session) = stored.get_mut(&delivery.device) else {
                    return Err(TransportError::Offline);
                };
                let topic = delivery_topic(
                    &delivery.device,
                    delivery.message_id,
                    &delivery.kind,
                    session.ext_rrpc,
                )
                .to_string();
                let granted = matching_qos(&session.filters, &topic);
                if wanted != QoS::AtLeastOnce || granted.is_none_or(|g| g == QoS::AtMostOnce) {
                    return Err(TransportError::Offline);
                }
                if session.queued.len() >= inner.config.offline_queue {
                    GatewayMetrics::inc(&inner.metrics.queue_overflows);
                    tracing::warn!(device = %delivery.device, "offline queue full; delivery refused");
                    return Err(TransportError::QueueFull);
                }
                session.queued.push_back(Outgoing {
                    topic: topic.clone(),
                    payload: Bytes::from(delivery.payload),
                    qos: QoS::AtLeastOnce,
                    dup: false,
                });
                Ok(Delivered {
                    topic,
                    outcome: DeliveryOutcome::Queued,
                })
            }
        }
    }

    fn is_online(&self, device: &DeviceKey) -> bool {
        self.is_connected(device)
    }

    async fn disconnect(&self, device: &DeviceKey, reason: &str) -> bool {
        let handle = lock(&self.inner.sessions).get(device).cloned();
        lock(&self.inner.stored).remove(device);
        match handle {
            Some(h) => h.kick.send(Some(reason.to_owned())).is_ok(),
            None => false,
        }
    }

    fn subscribe(&self) -> EventStream {
        self.inner.hub.subscribe()
    }
}

/// The README example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
