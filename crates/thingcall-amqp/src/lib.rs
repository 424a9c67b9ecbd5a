//! AMQP 1.0 server-side subscription, as Alibaba's IoT platform offers it:
//! applications attach a receiver to a consumer group and get the device
//! messages the group subscribed to, at least once.
//!
//! * [`message`]: the forwarded topics and JSON bodies (pure, no IO).
//! * [`broker`]: consumer groups and the dispatcher that hands a stored
//!   backlog out to attached consumers, with redelivery and bounded memory.
//! * [`listener`]: the endpoint (TLS, SASL PLAIN with Alibaba's signature,
//!   one receiver link per connection) on the `fe2o3-amqp` engine.
//!
//! The server crate supplies the store (a [`broker::Backlog`]) and the
//! credentials (a [`listener::Directory`]).

pub mod broker;
pub mod listener;
pub mod message;
mod tap;

pub use broker::{Backlog, Broker, BrokerConfig, GroupStatus, Queued};
pub use listener::{Directory, EndpointConfig, serve_connection};
