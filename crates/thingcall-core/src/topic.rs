//! MQTT topics for service invocation (spec digest §5.3, §1.8).
//!
//! [`Topic`] builds every topic by `Display` and parses it back with
//! [`Topic::parse`]; `parse(t.to_string()) == t` for every value.
//!
//! One ambiguity is inherited from Alibaba: a service whose identifier ends
//! in `_reply` has a request topic that reads like another service's reply.
//! The parser reads such a topic as a reply.

use std::fmt;

use crate::ids::{DeviceName, Identifier, MessageId, ProductKey};

/// A topic thingcall builds or recognises.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Topic {
    /// `/sys/{pk}/{dn}/thing/service/{identifier}`: async service request.
    ServiceRequest {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
        /// Service identifier.
        identifier: Identifier,
    },
    /// `/sys/{pk}/{dn}/thing/service/{identifier}_reply`: async service reply.
    ServiceReply {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
        /// Service identifier.
        identifier: Identifier,
    },
    /// `/sys/{pk}/{dn}/thing/service/property/set`.
    PropertySet {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
    },
    /// `/sys/{pk}/{dn}/thing/service/property/set_reply`.
    PropertySetReply {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
    },
    /// `/sys/{pk}/{dn}/thing/service/property/get`.
    PropertyGet {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
    },
    /// `/sys/{pk}/{dn}/thing/service/property/get_reply`.
    PropertyGetReply {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
    },
    /// `/sys/{pk}/{dn}/rrpc/request/{messageId}`: sync request, system form.
    RrpcRequest {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
        /// The call's message id.
        message_id: MessageId,
    },
    /// `/sys/{pk}/{dn}/rrpc/response/{messageId}`: sync reply, system form.
    RrpcResponse {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
        /// The call's message id.
        message_id: MessageId,
    },
    /// `/ext/rrpc/{messageId}/sys/{pk}/{dn}/thing/service/{identifier}`:
    /// sync request and reply (same topic), extended form for `ext=1` clients.
    ExtRrpc {
        /// The call's message id.
        message_id: MessageId,
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
        /// Service identifier.
        identifier: Identifier,
    },
    /// `/ext/rrpc/{messageId}{topic}`: RRPC on a custom topic (`topic`
    /// starts with `/` and is not a `/sys/.../thing/service/...` topic).
    ExtRrpcCustom {
        /// The call's message id.
        message_id: MessageId,
        /// The custom topic, starting with `/`.
        topic: String,
    },
    /// `/sys/{pk}/{dn}/thing/model/down_raw`: pass-through downstream data.
    DownRaw {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
    },
    /// `/sys/{pk}/{dn}/thing/model/down_raw_reply`.
    DownRawReply {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
    },
    /// `/sys/{pk}/{dn}/thing/downlink/reply/message`: forwarded async results.
    DownlinkReply {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
    },
    /// `/as/mqtt/status/{pk}/{dn}`: online/offline notifications.
    Status {
        /// Product.
        product_key: ProductKey,
        /// Device.
        device_name: DeviceName,
    },
}

/// Why a topic string was not recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicError {
    topic: String,
    reason: &'static str,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic {:?}: {}", self.topic, self.reason)
    }
}

impl std::error::Error for TopicError {}

impl Topic {
    /// Parses a topic string.
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let err = |reason| TopicError {
            topic: topic.to_owned(),
            reason,
        };
        let rest = topic
            .strip_prefix('/')
            .ok_or_else(|| err("does not start with '/'"))?;
        if let Some(rest) = rest.strip_prefix("ext/rrpc/") {
            let (mid, inner) = rest
                .split_once('/')
                .ok_or_else(|| err("missing topic after the message id"))?;
            let message_id: MessageId = mid.parse().map_err(|_| err("bad RRPC message id"))?;
            let inner_topic = &rest[mid.len()..];
            if let Ok(Topic::ServiceRequest {
                product_key,
                device_name,
                identifier,
            }) = Topic::parse(inner_topic)
            {
                return Ok(Topic::ExtRrpc {
                    message_id,
                    product_key,
                    device_name,
                    identifier,
                });
            }
            if inner.is_empty() || inner.split('/').any(str::is_empty) {
                return Err(err("empty segment in the custom RRPC topic"));
            }
            if inner.contains(['+', '#']) {
                return Err(err("wildcards are not allowed in a topic name"));
            }
            return Ok(Topic::ExtRrpcCustom {
                message_id,
                topic: inner_topic.to_owned(),
            });
        }
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["as", "mqtt", "status", pk, dn] => {
                let (product_key, device_name) = device(pk, dn).ok_or_else(|| err("bad device"))?;
                Ok(Topic::Status {
                    product_key,
                    device_name,
                })
            }
            ["sys", pk, dn, tail @ ..] => {
                let (product_key, device_name) = device(pk, dn).ok_or_else(|| err("bad device"))?;
                sys_topic(product_key, device_name, tail).ok_or_else(|| err("unknown /sys topic"))
            }
            _ => Err(err("not a thingcall topic")),
        }
    }

    /// The device a topic belongs to (none for custom RRPC topics).
    pub fn device(&self) -> Option<(&ProductKey, &DeviceName)> {
        match self {
            Topic::ServiceRequest {
                product_key,
                device_name,
                ..
            }
            | Topic::ServiceReply {
                product_key,
                device_name,
                ..
            }
            | Topic::PropertySet {
                product_key,
                device_name,
            }
            | Topic::PropertySetReply {
                product_key,
                device_name,
            }
            | Topic::PropertyGet {
                product_key,
                device_name,
            }
            | Topic::PropertyGetReply {
                product_key,
                device_name,
            }
            | Topic::RrpcRequest {
                product_key,
                device_name,
                ..
            }
            | Topic::RrpcResponse {
                product_key,
                device_name,
                ..
            }
            | Topic::ExtRrpc {
                product_key,
                device_name,
                ..
            }
            | Topic::DownRaw {
                product_key,
                device_name,
            }
            | Topic::DownRawReply {
                product_key,
                device_name,
            }
            | Topic::DownlinkReply {
                product_key,
                device_name,
            }
            | Topic::Status {
                product_key,
                device_name,
            } => Some((product_key, device_name)),
            Topic::ExtRrpcCustom { .. } => None,
        }
    }

    /// The RRPC message id carried in the topic, if any.
    pub fn message_id(&self) -> Option<MessageId> {
        match self {
            Topic::RrpcRequest { message_id, .. }
            | Topic::RrpcResponse { message_id, .. }
            | Topic::ExtRrpc { message_id, .. }
            | Topic::ExtRrpcCustom { message_id, .. } => Some(*message_id),
            _ => None,
        }
    }
}

fn device(pk: &str, dn: &str) -> Option<(ProductKey, DeviceName)> {
    Some((ProductKey::new(pk).ok()?, DeviceName::new(dn).ok()?))
}

fn sys_topic(product_key: ProductKey, device_name: DeviceName, tail: &[&str]) -> Option<Topic> {
    let topic = match tail {
        ["thing", "service", "property", "set"] => Topic::PropertySet {
            product_key,
            device_name,
        },
        ["thing", "service", "property", "set_reply"] => Topic::PropertySetReply {
            product_key,
            device_name,
        },
        ["thing", "service", "property", "get"] => Topic::PropertyGet {
            product_key,
            device_name,
        },
        ["thing", "service", "property", "get_reply"] => Topic::PropertyGetReply {
            product_key,
            device_name,
        },
        ["thing", "service", id] => match id.strip_suffix("_reply").map(Identifier::new) {
            Some(Ok(identifier)) => Topic::ServiceReply {
                product_key,
                device_name,
                identifier,
            },
            _ => Topic::ServiceRequest {
                product_key,
                device_name,
                identifier: Identifier::new(*id).ok()?,
            },
        },
        ["rrpc", "request", mid] => Topic::RrpcRequest {
            product_key,
            device_name,
            message_id: mid.parse().ok()?,
        },
        ["rrpc", "response", mid] => Topic::RrpcResponse {
            product_key,
            device_name,
            message_id: mid.parse().ok()?,
        },
        ["thing", "model", "down_raw"] => Topic::DownRaw {
            product_key,
            device_name,
        },
        ["thing", "model", "down_raw_reply"] => Topic::DownRawReply {
            product_key,
            device_name,
        },
        ["thing", "downlink", "reply", "message"] => Topic::DownlinkReply {
            product_key,
            device_name,
        },
        _ => return None,
    };
    Some(topic)
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::ServiceRequest {
                product_key,
                device_name,
                identifier,
            } => {
                write!(
                    f,
                    "/sys/{product_key}/{device_name}/thing/service/{identifier}"
                )
            }
            Topic::ServiceReply {
                product_key,
                device_name,
                identifier,
            } => {
                write!(
                    f,
                    "/sys/{product_key}/{device_name}/thing/service/{identifier}_reply"
                )
            }
            Topic::PropertySet {
                product_key,
                device_name,
            } => {
                write!(
                    f,
                    "/sys/{product_key}/{device_name}/thing/service/property/set"
                )
            }
            Topic::PropertySetReply {
                product_key,
                device_name,
            } => {
                write!(
                    f,
                    "/sys/{product_key}/{device_name}/thing/service/property/set_reply"
                )
            }
            Topic::PropertyGet {
                product_key,
                device_name,
            } => {
                write!(
                    f,
                    "/sys/{product_key}/{device_name}/thing/service/property/get"
                )
            }
            Topic::PropertyGetReply {
                product_key,
                device_name,
            } => {
                write!(
                    f,
                    "/sys/{product_key}/{device_name}/thing/service/property/get_reply"
                )
            }
            Topic::RrpcRequest {
                product_key,
                device_name,
                message_id,
            } => {
                write!(
                    f,
                    "/sys/{product_key}/{device_name}/rrpc/request/{message_id}"
                )
            }
            Topic::RrpcResponse {
                product_key,
                device_name,
                message_id,
            } => {
                write!(
                    f,
                    "/sys/{product_key}/{device_name}/rrpc/response/{message_id}"
                )
            }
            Topic::ExtRrpc {
                message_id,
                product_key,
                device_name,
                identifier,
            } => {
                write!(
                    f,
                    "/ext/rrpc/{message_id}/sys/{product_key}/{device_name}/thing/service/{identifier}"
                )
            }
            Topic::ExtRrpcCustom { message_id, topic } => {
                write!(f, "/ext/rrpc/{message_id}{topic}")
            }
            Topic::DownRaw {
                product_key,
                device_name,
            } => {
                write!(f, "/sys/{product_key}/{device_name}/thing/model/down_raw")
            }
            Topic::DownRawReply {
                product_key,
                device_name,
            } => {
                write!(
                    f,
                    "/sys/{product_key}/{device_name}/thing/model/down_raw_reply"
                )
            }
            Topic::DownlinkReply {
                product_key,
                device_name,
            } => {
                write!(
                    f,
                    "/sys/{product_key}/{device_name}/thing/downlink/reply/message"
                )
            }
            Topic::Status {
                product_key,
                device_name,
            } => {
                write!(f, "/as/mqtt/status/{product_key}/{device_name}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pk() -> ProductKey {
        ProductKey::new("a1TestPk001").unwrap()
    }
    fn dn() -> DeviceName {
        DeviceName::new("dev1").unwrap()
    }

    #[test]
    fn documented_forms() {
        let cases = [
            (
                "/sys/a1TestPk001/dev1/thing/service/Calibrate",
                Topic::ServiceRequest {
                    product_key: pk(),
                    device_name: dn(),
                    identifier: Identifier::new("Calibrate").unwrap(),
                },
            ),
            (
                "/sys/a1TestPk001/dev1/thing/service/Calibrate_reply",
                Topic::ServiceReply {
                    product_key: pk(),
                    device_name: dn(),
                    identifier: Identifier::new("Calibrate").unwrap(),
                },
            ),
            (
                "/sys/a1TestPk001/dev1/thing/service/property/set",
                Topic::PropertySet {
                    product_key: pk(),
                    device_name: dn(),
                },
            ),
            (
                "/sys/a1TestPk001/dev1/rrpc/request/443859344534",
                Topic::RrpcRequest {
                    product_key: pk(),
                    device_name: dn(),
                    message_id: MessageId::from_u64(443859344534),
                },
            ),
            (
                "/sys/a1TestPk001/dev1/rrpc/response/443859344534",
                Topic::RrpcResponse {
                    product_key: pk(),
                    device_name: dn(),
                    message_id: MessageId::from_u64(443859344534),
                },
            ),
            (
                "/ext/rrpc/42/sys/a1TestPk001/dev1/thing/service/Calibrate",
                Topic::ExtRrpc {
                    message_id: MessageId::from_u64(42),
                    product_key: pk(),
                    device_name: dn(),
                    identifier: Identifier::new("Calibrate").unwrap(),
                },
            ),
            (
                "/ext/rrpc/42/a1TestPk001/dev1/user/cmd",
                Topic::ExtRrpcCustom {
                    message_id: MessageId::from_u64(42),
                    topic: "/a1TestPk001/dev1/user/cmd".to_owned(),
                },
            ),
            (
                "/sys/a1TestPk001/dev1/thing/downlink/reply/message",
                Topic::DownlinkReply {
                    product_key: pk(),
                    device_name: dn(),
                },
            ),
            (
                "/as/mqtt/status/a1TestPk001/dev1",
                Topic::Status {
                    product_key: pk(),
                    device_name: dn(),
                },
            ),
        ];
        for (text, topic) in cases {
            assert_eq!(Topic::parse(text).unwrap(), topic, "{text}");
            assert_eq!(topic.to_string(), text);
        }
        let t = Topic::parse("/ext/rrpc/42/sys/a1TestPk001/dev1/thing/service/Calibrate").unwrap();
        assert_eq!(t.message_id(), Some(MessageId::from_u64(42)));
        assert_eq!(t.device(), Some((&pk(), &dn())));
    }

    #[test]
    fn rejects_foreign_and_malformed_topics() {
        for bad in [
            "",
            "sys/a/b",
            "/sys/a1TestPk001",
            "/sys/a1TestPk001/dev1/thing/service/",
            "/sys/a1TestPk001/dev1/thing/service/bad-id",
            "/sys/a1TestPk001/d/thing/service/x",
            "/sys/a1TestPk001/dev1/rrpc/request/abc",
            "/ext/rrpc/x/sys/a/b",
            "/ext/rrpc/1",
            "/ext/rrpc/1/",
            "/ext/rrpc/1/a//b",
            "/ext/rrpc/1/a/+",
            "/other/topic",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad}");
        }
    }

    fn arb_pk() -> impl Strategy<Value = ProductKey> {
        "[A-Za-z0-9]{1,32}".prop_map(|s| ProductKey::new(s).unwrap())
    }
    fn arb_dn() -> impl Strategy<Value = DeviceName> {
        "[A-Za-z0-9_@.:-]{4,32}".prop_map(|s| DeviceName::new(s).unwrap())
    }
    fn arb_id() -> impl Strategy<Value = Identifier> {
        "([A-Za-z0-9_]{1,30}:)?[A-Za-z0-9_]{1,50}"
            .prop_filter("reply-looking identifiers are ambiguous by design", |s| {
                !s.ends_with("_reply") && s != "property"
            })
            .prop_map(|s| Identifier::new(s).unwrap())
    }
    fn arb_mid() -> impl Strategy<Value = MessageId> {
        any::<u64>().prop_map(MessageId::from_u64)
    }

    fn arb_topic() -> impl Strategy<Value = Topic> {
        prop_oneof![
            (arb_pk(), arb_dn(), arb_id()).prop_map(|(product_key, device_name, identifier)| {
                Topic::ServiceRequest {
                    product_key,
                    device_name,
                    identifier,
                }
            }),
            (arb_pk(), arb_dn(), arb_id()).prop_map(|(product_key, device_name, identifier)| {
                Topic::ServiceReply {
                    product_key,
                    device_name,
                    identifier,
                }
            }),
            (arb_pk(), arb_dn()).prop_map(|(product_key, device_name)| Topic::PropertySet {
                product_key,
                device_name
            }),
            (arb_pk(), arb_dn()).prop_map(|(product_key, device_name)| Topic::PropertySetReply {
                product_key,
                device_name
            }),
            (arb_pk(), arb_dn()).prop_map(|(product_key, device_name)| Topic::PropertyGet {
                product_key,
                device_name
            }),
            (arb_pk(), arb_dn()).prop_map(|(product_key, device_name)| Topic::PropertyGetReply {
                product_key,
                device_name
            }),
            (arb_pk(), arb_dn(), arb_mid()).prop_map(|(product_key, device_name, message_id)| {
                Topic::RrpcRequest {
                    product_key,
                    device_name,
                    message_id,
                }
            }),
            (arb_pk(), arb_dn(), arb_mid()).prop_map(|(product_key, device_name, message_id)| {
                Topic::RrpcResponse {
                    product_key,
                    device_name,
                    message_id,
                }
            }),
            (arb_mid(), arb_pk(), arb_dn(), arb_id()).prop_map(
                |(message_id, product_key, device_name, identifier)| Topic::ExtRrpc {
                    message_id,
                    product_key,
                    device_name,
                    identifier
                }
            ),
            (arb_mid(), "(/[a-z0-9_]{1,8}){1,5}")
                .prop_map(|(message_id, topic)| Topic::ExtRrpcCustom { message_id, topic }),
            (arb_pk(), arb_dn()).prop_map(|(product_key, device_name)| Topic::DownRaw {
                product_key,
                device_name
            }),
            (arb_pk(), arb_dn()).prop_map(|(product_key, device_name)| Topic::DownRawReply {
                product_key,
                device_name
            }),
            (arb_pk(), arb_dn()).prop_map(|(product_key, device_name)| Topic::DownlinkReply {
                product_key,
                device_name
            }),
            (arb_pk(), arb_dn()).prop_map(|(product_key, device_name)| Topic::Status {
                product_key,
                device_name
            }),
        ]
    }

    proptest! {
        #[test]
        fn build_then_parse_is_identity(topic in arb_topic()) {
            prop_assert_eq!(Topic::parse(&topic.to_string()).unwrap(), topic);
        }

        #[test]
        fn parse_never_panics(s in "(/[a-z0-9A-Z_+#.:@-]{0,12}){0,9}") {
            let _ = Topic::parse(&s);
        }
    }
}
