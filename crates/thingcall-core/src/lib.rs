//! The thingcall domain: the types every other crate shares.
//!
//! This crate does no IO. It never reads a clock, opens a socket or draws a
//! random number; the callers pass time and ids in. That keeps every rule here
//! testable with plain values.
//!
//! * [`ids`]: validated identifiers (product keys, device names, ...).
//! * [`device`]: [`DeviceRef`], how an API call names a device.
//! * [`error`]: the Alibaba error catalogue and [`ApiError`].
//! * [`alink`]: Alink JSON service requests and replies.
//! * [`topic`]: MQTT topic builders and parsers.
//! * [`time`]: epoch milliseconds and the timestamp formats on the wire.
//! * [`clock`]: the injected [`Clock`].
//! * [`encoding`]: RFC 3986 percent-encoding as Alibaba's signers use it.
//! * [`secret`]: [`Secret`], a string that never prints.

pub mod alink;
pub mod clock;
pub mod device;
pub mod encoding;
pub mod error;
pub mod ids;
pub mod secret;
pub mod time;
pub mod topic;

pub use alink::{AlinkId, AlinkReply, AlinkRequest};
pub use clock::{Clock, ManualClock};
pub use device::{CallType, DeviceRef, Qos};
pub use error::{ApiError, ErrorCode, ErrorShape};
pub use ids::{
    AccessKeyId, DeviceName, IdError, IdKind, Identifier, IotId, MessageId, ProductKey, RequestId,
};
pub use secret::Secret;
pub use time::UnixMillis;
pub use topic::{Topic, TopicError};

/// The only OpenAPI version thingcall serves (`Version=2018-01-20`).
pub const API_VERSION: &str = "2018-01-20";

/// The README example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
