//! Counters for everything the gateway refuses, drops or redelivers.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        /// The gateway's counters. Every refusal and drop is counted here
        /// (and logged where it happens).
        #[derive(Debug, Default)]
        pub struct GatewayMetrics {
            $( $(#[$m])* pub $name: AtomicU64, )*
        }

        impl GatewayMetrics {
            /// Every counter by name, for `/metrics` and tests.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name.load(Ordering::Relaxed)), )*]
            }
        }
    };
}

counters!(
    /// Connections accepted (TCP, TLS or WebSocket), counted once the
    /// TLS handshake or WebSocket upgrade, if any, is done.
    connections_accepted,
    /// Connections closed at once because the gateway holds its connection
    /// limit (counting handshakes and upgrades in progress).
    connections_over_limit,
    /// TLS handshakes that failed or did not finish in time.
    tls_handshakes_failed,
    /// WebSocket upgrades refused (wrong path, no `mqtt` subprotocol, not a
    /// WebSocket request) or not finished in time.
    websocket_upgrades_failed,
    /// CONNECTs over plaintext refused because TLS is required.
    plaintext_logins_refused,
    /// CONNECTs answered with a non-zero CONNACK.
    connects_refused,
    /// Sessions closed because the same device logged in again.
    sessions_kicked,
    /// Connections dropped after 1.5x their keepalive without a packet.
    keepalive_timeouts,
    /// Connections closed because a write made no progress for the
    /// configured bound (the device stopped reading its socket).
    write_stalls,
    /// SUBSCRIBE filters refused by the topic ACL (SUBACK 0x80).
    acl_denied_subscribes,
    /// PUBLISHes outside the device's namespace (dropped, connection closed).
    acl_denied_publishes,
    /// Frames that could not be parsed, or broke the protocol.
    malformed_frames,
    /// Frames over the payload limit.
    oversized_frames,
    /// Reply payloads that are not Alink JSON.
    bad_payloads,
    /// Device messages on topics the gateway does not act on.
    uplinks_ignored,
    /// Deliveries refused because the device's queue was full.
    queue_overflows,
    /// Messages written to devices.
    messages_sent,
    /// QoS 1 messages sent again after a reconnect.
    messages_redelivered,
    /// Replies received from devices.
    replies_received,
    /// Property and event posts that the thing model accepts.
    posts_accepted,
    /// Property and event posts answered with a 63xx code.
    posts_refused,
);

impl GatewayMetrics {
    /// Adds one to a counter.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One counter's value.
    pub fn get(&self, name: &str) -> u64 {
        self.snapshot()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| v)
    }
}
