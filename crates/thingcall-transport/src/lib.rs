//! The device transport: how the invocation engine reaches devices.
//!
//! [`Transport`] is the whole contract: deliver an Alink request with a
//! topic form and a QoS, say whether a device is online, disconnect a
//! device, and stream [`TransportEvent`]s (device replies and presence
//! changes) to every subscriber. Event streams are bounded and lossless: a
//! slow subscriber slows the transport down instead of losing events.
//!
//! [`MemoryTransport`] implements it in memory for tests.

mod memory;

use std::fmt;
use std::net::SocketAddr;

use async_trait::async_trait;
use thingcall_core::{
    AlinkReply, DeviceName, Identifier, MessageId, ProductKey, Qos, Topic, UnixMillis,
};
use tokio::sync::mpsc;

pub use memory::MemoryTransport;

/// How many events an event stream buffers before the transport waits.
pub const EVENT_BUFFER: usize = 4096;

/// A device, by product and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey {
    /// The product.
    pub product_key: ProductKey,
    /// The device.
    pub device_name: DeviceName,
}

impl DeviceKey {
    /// A device key.
    pub fn new(product_key: ProductKey, device_name: DeviceName) -> DeviceKey {
        DeviceKey {
            product_key,
            device_name,
        }
    }
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.product_key, self.device_name)
    }
}

/// Which RRPC topic form a sync call uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RrpcForm {
    /// Chosen from the device's client id: `ext` bit 0 set means extended.
    #[default]
    Auto,
    /// `/sys/{pk}/{dn}/rrpc/request/{messageId}`.
    System,
    /// `/ext/rrpc/{messageId}/sys/{pk}/{dn}/thing/service/{identifier}`.
    Extended,
}

/// What kind of delivery, which decides the topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    /// An async service: `/sys/{pk}/{dn}/thing/service/{identifier}` (the
    /// built-in `set`/`get` go to `thing/service/property/set|get`).
    Async {
        /// The service.
        identifier: Identifier,
    },
    /// A sync service over RRPC.
    Rrpc {
        /// The service.
        identifier: Identifier,
        /// The topic form.
        form: RrpcForm,
    },
}

impl DeliveryKind {
    /// The service identifier.
    pub fn identifier(&self) -> &Identifier {
        match self {
            DeliveryKind::Async { identifier } | DeliveryKind::Rrpc { identifier, .. } => {
                identifier
            }
        }
    }
}

/// The topic a delivery goes to, given whether the device asked for
/// extended RRPC.
pub fn delivery_topic(
    device: &DeviceKey,
    message_id: MessageId,
    kind: &DeliveryKind,
    ext_rrpc: bool,
) -> Topic {
    let (product_key, device_name) = (device.product_key.clone(), device.device_name.clone());
    match kind {
        DeliveryKind::Async { identifier } => match identifier.as_str() {
            "set" => Topic::PropertySet {
                product_key,
                device_name,
            },
            "get" => Topic::PropertyGet {
                product_key,
                device_name,
            },
            _ => Topic::ServiceRequest {
                product_key,
                device_name,
                identifier: identifier.clone(),
            },
        },
        DeliveryKind::Rrpc { identifier, form } => {
            let extended = match form {
                RrpcForm::Auto => ext_rrpc,
                RrpcForm::System => false,
                RrpcForm::Extended => true,
            };
            if extended {
                Topic::ExtRrpc {
                    message_id,
                    product_key,
                    device_name,
                    identifier: identifier.clone(),
                }
            } else {
                Topic::RrpcRequest {
                    product_key,
                    device_name,
                    message_id,
                }
            }
        }
    }
}

/// One downstream message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The device.
    pub device: DeviceKey,
    /// The platform's message id (the Alink `id`, the RRPC `{messageId}`).
    pub message_id: MessageId,
    /// Async or RRPC, which decides the topic.
    pub kind: DeliveryKind,
    /// MQTT QoS.
    pub qos: Qos,
    /// The Alink request JSON.
    pub payload: Vec<u8>,
}

/// What happened to a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Handed to the device's connection.
    Sent,
    /// The device is offline with a persistent session; the QoS 1 message is
    /// kept and delivered when it reconnects.
    Queued,
    /// The device is online but subscribes to nothing that matches the topic,
    /// so it will never see the message.
    NoSubscriber,
}

/// A delivery that was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The topic used.
    pub topic: String,
    /// Sent, queued, or not subscribed.
    pub outcome: DeliveryOutcome,
}

/// Why a delivery was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The device is not connected (and nothing can be kept for it).
    Offline,
    /// The device's queue is full (a slow device); the message was refused,
    /// not dropped silently.
    QueueFull,
    /// The transport is shutting down.
    Closed,
    /// Whoever holds the device did not answer in time (a node of a
    /// cluster that hangs): the device may or may not have the message.
    TimedOut,
    /// Anything else, with a reason.
    Failed(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Offline => f.write_str("the device is offline"),
            TransportError::QueueFull => f.write_str("the device's message queue is full"),
            TransportError::Closed => f.write_str("the transport is shut down"),
            TransportError::TimedOut => f.write_str("the device's node did not answer in time"),
            TransportError::Failed(why) => write!(f, "delivery failed: {why}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// How a reply arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyVia {
    /// On an RRPC response topic; correlated by the message id in the topic.
    Rrpc,
    /// On `..._reply`; correlated by the Alink `id`.
    Async {
        /// The service the reply is for (`set`/`get` for property replies).
        identifier: String,
    },
}

/// A device's reply to a delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceReply {
    /// The device.
    pub device: DeviceKey,
    /// The message id the reply answers, when it can be told (from the RRPC
    /// topic, else from a decimal Alink `id`).
    pub message_id: Option<MessageId>,
    /// How it arrived.
    pub via: ReplyVia,
    /// The parsed reply.
    pub reply: AlinkReply,
    /// When the transport received it.
    pub received_at: UnixMillis,
}

/// A device came online or went offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEvent {
    /// The device.
    pub device: DeviceKey,
    /// Online now?
    pub online: bool,
    /// When.
    pub at: UnixMillis,
    /// The device's address, when known.
    pub client_addr: Option<SocketAddr>,
    /// Why (e.g. `connect`, `disconnect`, `keepalive timeout`, `kicked by a new login`).
    pub reason: String,
}

/// A property or event report that a device posted and the published
/// thing model accepted (answered 200).
#[derive(Clone, Debug, PartialEq)]
pub struct PostEvent {
    /// The device.
    pub device: DeviceKey,
    /// `None` for a property report, the event's identifier for an event.
    pub event: Option<String>,
    /// The Alink `id`, as text.
    pub request_id: String,
    /// The Alink `params`.
    pub params: serde_json::Value,
    /// When the transport received it.
    pub received_at: UnixMillis,
}

/// What a transport reports.
#[derive(Clone, Debug, PartialEq)]
pub enum TransportEvent {
    /// A device replied.
    Reply(DeviceReply),
    /// A device's presence changed.
    Presence(PresenceEvent),
    /// A device posted properties or an event.
    Post(PostEvent),
}

/// A subscription to a transport's events.
pub type EventStream = mpsc::Receiver<TransportEvent>;

/// The engine's view of the devices.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Delivers one message.
    async fn deliver(&self, delivery: Delivery) -> Result<Delivered, TransportError>;

    /// Whether the device is connected now, as this process knows it.
    fn is_online(&self, device: &DeviceKey) -> bool;

    /// Whether the device can be reached now, asking whoever holds it when
    /// this process does not know (a cluster's other nodes). A sync call
    /// to an unreachable device is refused as offline before it is made.
    async fn reachable(&self, device: &DeviceKey) -> bool {
        self.is_online(device)
    }

    /// Closes the device's connection, if any (used when a device is
    /// disabled or deleted). Returns whether a connection was closed.
    async fn disconnect(&self, device: &DeviceKey, reason: &str) -> bool;

    /// A new stream of every event from now on.
    fn subscribe(&self) -> EventStream;
}

/// Fans events out to every live subscriber, waiting for room (so nothing
/// is lost) and forgetting subscribers that went away.
#[derive(Debug, Default)]
pub struct EventHub {
    subscribers: std::sync::Mutex<Vec<mpsc::Sender<TransportEvent>>>,
}

impl EventHub {
    /// An empty hub.
    pub fn new() -> EventHub {
        EventHub::default()
    }

    /// A new subscriber.
    pub fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        lock(&self.subscribers).push(tx);
        rx
    }

    /// Sends an event to every subscriber.
    pub async fn publish(&self, event: TransportEvent) {
        let senders: Vec<mpsc::Sender<TransportEvent>> = lock(&self.subscribers).clone();
        let mut closed = false;
        for tx in &senders {
            closed |= tx.send(event.clone()).await.is_err();
        }
        if closed {
            lock(&self.subscribers).retain(|tx| !tx.is_closed());
        }
    }
}

/// Locks a mutex, taking the data back if a panicking thread poisoned it:
/// each critical section here leaves its data consistent.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The README example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
