//! AMQP 1.0 server-side subscription, as Alibaba's IoT platform offers it:
//! applications attach a receiver to a consumer group and get the device
//! messages the group subscribed to, at least once.
//!
//! * [`message`]: the forwarded topics and JSON bodies (pure, no IO).
//! * [`broker`]: consumer groups and the dispatcher that hands a stored
//!   backlog out to attached consumers, with redelivery and bounded memory.
//! * [`client`]: a consumer (`thingcall subscribe`, the benchmarks).
//! * [`listener`]: the endpoint (TLS, SASL PLAIN with Alibaba's signature,
//!   one receiver link per connection) on the `fe2o3-amqp` engine.
//!
//! The server crate supplies the store (a [`broker::Backlog`]) and the
//! credentials (a [`listener::Directory`]).

pub mod broker;
pub mod client;
pub mod listener;
pub mod message;
mod tap;

pub use broker::{Backlog, Broker, BrokerConfig, GroupStatus, Queued};

/// Everything server-side subscription can be tuned by.
#[derive(Clone, Debug, Default)]
pub struct AmqpConfig {
    /// Delivery: ack timeout, windows, order, retention, limits.
    pub broker: BrokerConfig,
    /// The endpoint: sign-in and link deadlines, idle-time-out range.
    pub endpoint: EndpointConfig,
}
pub use listener::{Directory, EndpointConfig, serve_connection};
