//! Alibaba Cloud signatures and device credentials, as pure functions.
//!
//! * [`v1`]: the RPC signature (`SignatureMethod=HMAC-SHA1`,
//!   `SignatureVersion=1.0`, spec digest §2.3-2.4).
//! * [`v3`]: `ACS3-HMAC-SHA256` (spec digest §2.9).
//! * [`policy`]: server-side verification in the documented check order,
//!   with a nonce store (spec digest §2.5-2.7).
//! * [`amqp`]: the SASL PLAIN username and password of AMQP server-side
//!   subscription (`amqp-subscription.md` §1.3).
//! * [`device`]: MQTT client ids, usernames and passwords for
//!   one-device-one-secret authentication (spec digest §5.2).
//!
//! Time, nonces and secrets are arguments; the crate does no IO and reads no
//! clock.

pub mod amqp;
pub mod device;
mod digest;
pub mod policy;
pub mod v1;
pub mod v3;

pub use device::{ClientIdError, MqttClientId, SignMethod};
pub use policy::{
    InMemoryNonceStore, KeyState, KeyStore, NonceStore, V3Request, Verified, VerifyPolicy,
    verify_v1, verify_v3,
};
pub use thingcall_core::Secret;
pub use thingcall_core::secret::constant_time_eq;

/// The README example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
