//! Alink JSON messages for service calls (spec digest §5.4).
//!
//! A request goes from the platform to the device:
//! `{"id":"123","version":"1.0","params":{...},"method":"thing.service.X"}`.
//! The device answers `{"id":"123","code":200,"data":{...},"message":"success"}`.
//!
//! Parsing is tolerant: unknown keys (`sys`, `localizedMsg`, ...) are
//! ignored and `id` may be a JSON string or number. Output always writes
//! `id` as a string, because linkkit concatenates it with a string.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::ids::{Identifier, MessageId};

/// The Alink `version` thingcall writes.
pub const ALINK_VERSION: &str = "1.0";

/// An Alink message id: written as a JSON string, read from a string or a
/// number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlinkId(String);

impl AlinkId {
    /// Wraps any id string.
    pub fn new(id: impl Into<String>) -> AlinkId {
        AlinkId(id.into())
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a platform [`MessageId`], when it is one (decimal digits).
    pub fn message_id(&self) -> Option<MessageId> {
        self.0.parse().ok()
    }
}

impl From<MessageId> for AlinkId {
    fn from(id: MessageId) -> AlinkId {
        AlinkId(id.to_string())
    }
}

impl fmt::Display for AlinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for AlinkId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AlinkId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AlinkId, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = AlinkId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AlinkId, E> {
                Ok(AlinkId(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<AlinkId, E> {
                Ok(AlinkId(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AlinkId, E> {
                Ok(AlinkId(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AlinkId, E> {
                Ok(AlinkId(v.to_string()))
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

/// A service request from the platform to a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlinkRequest {
    /// The message id.
    pub id: AlinkId,
    /// Protocol version, `1.0` (any value is accepted on input).
    #[serde(default = "default_version")]
    pub version: String,
    /// The call's arguments: an object, or for `property.get` a list of names.
    #[serde(default)]
    pub params: Value,
    /// `thing.service.{identifier}`, or `thing.service.property.set|get`.
    #[serde(default)]
    pub method: String,
}

fn default_version() -> String {
    ALINK_VERSION.to_owned()
}

impl AlinkRequest {
    /// The request for a service call with the platform's message id.
    pub fn for_service(id: MessageId, identifier: &Identifier, params: Value) -> AlinkRequest {
        AlinkRequest {
            id: id.into(),
            version: ALINK_VERSION.to_owned(),
            params,
            method: service_method(identifier),
        }
    }

    /// Parses a request payload.
    pub fn from_slice(payload: &[u8]) -> Result<AlinkRequest, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Encodes the request as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serialising a Value-bearing struct into memory cannot fail: all map
        // keys are strings.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The service identifier named by `method`, if it is a service method.
    pub fn service_identifier(&self) -> Option<&str> {
        match self.method.as_str() {
            "thing.service.property.set" => Some("set"),
            "thing.service.property.get" => Some("get"),
            m => m.strip_prefix("thing.service.").filter(|s| !s.is_empty()),
        }
    }
}

/// The Alink `method` for a service identifier: `thing.service.{id}`, with
/// the built-in `set`/`get` mapped to `thing.service.property.set|get`.
pub fn service_method(identifier: &Identifier) -> String {
    match identifier.as_str() {
        "set" => "thing.service.property.set".to_owned(),
        "get" => "thing.service.property.get".to_owned(),
        other => format!("thing.service.{other}"),
    }
}

/// A device's reply to a service request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlinkReply {
    /// Echo of the request id (RRPC replies are correlated by topic instead,
    /// because some SDKs do not echo it).
    #[serde(default = "empty_id")]
    pub id: AlinkId,
    /// Result code: 200 for success (spec digest §3.4).
    #[serde(deserialize_with = "code_from_number_or_string")]
    pub code: i64,
    /// The service's output (an object following `outputData`).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// Optional human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn empty_id() -> AlinkId {
    AlinkId(String::new())
}

fn code_from_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct CodeVisitor;
    impl Visitor<'_> for CodeVisitor {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer code")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("code out of range"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            v.trim()
                .parse()
                .map_err(|_| E::custom(format!("code {v:?} is not an integer")))
        }
    }
    d.deserialize_any(CodeVisitor)
}

impl AlinkReply {
    /// A success reply (`code` 200).
    pub fn success(id: AlinkId, data: Value) -> AlinkReply {
        AlinkReply {
            id,
            code: 200,
            data,
            message: Some("success".to_owned()),
        }
    }

    /// Parses a reply payload.
    pub fn from_slice(payload: &[u8]) -> Result<AlinkReply, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Encodes the reply as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// True for `code` 200.
    pub fn is_success(&self) -> bool {
        self.code == 200
    }

    /// The `data` member as compact JSON text, `{}` when absent: the API's
    /// `Data.Result`.
    pub fn data_json(&self) -> String {
        if self.data.is_null() {
            "{}".to_owned()
        } else {
            self.data.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_encodes_id_as_string() {
        let req = AlinkRequest::for_service(
            MessageId::from_u64(105917531),
            &Identifier::new("SetWeight").unwrap(),
            json!({"NewWeight": 100.8}),
        );
        let v: Value = serde_json::from_slice(&req.to_vec()).unwrap();
        assert_eq!(
            v,
            json!({"id":"105917531","version":"1.0","params":{"NewWeight":100.8},"method":"thing.service.SetWeight"})
        );
        assert_eq!(AlinkRequest::from_slice(&req.to_vec()).unwrap(), req);
    }

    #[test]
    fn set_and_get_methods() {
        assert_eq!(
            service_method(&Identifier::new("set").unwrap()),
            "thing.service.property.set"
        );
        assert_eq!(
            service_method(&Identifier::new("get").unwrap()),
            "thing.service.property.get"
        );
        let req = AlinkRequest::from_slice(
            br#"{"id":1,"method":"thing.service.property.set","params":{}}"#,
        )
        .unwrap();
        assert_eq!(req.service_identifier(), Some("set"));
        assert_eq!(req.version, "1.0");
    }

    #[test]
    fn tolerant_reply_parsing() {
        let r = AlinkReply::from_slice(
            br#"{"id":"105917531","code":200,"data":{"OldWeight":100.101},"sys":{"ack":0},"localizedMsg":"x"}"#,
        )
        .unwrap();
        assert_eq!(r.id.as_str(), "105917531");
        assert_eq!(r.id.message_id(), Some(MessageId::from_u64(105917531)));
        assert!(r.is_success());
        assert_eq!(r.data_json(), r#"{"OldWeight":100.101}"#);

        let r = AlinkReply::from_slice(br#"{"id":7,"code":"460"}"#).unwrap();
        assert_eq!(r.id.as_str(), "7");
        assert_eq!(r.code, 460);
        assert_eq!(r.data_json(), "{}");

        assert!(AlinkReply::from_slice(b"not json").is_err());
        assert!(
            AlinkReply::from_slice(br#"{"id":"1"}"#).is_err(),
            "code is required"
        );
        assert!(AlinkReply::from_slice(br#"{"id":[1],"code":200}"#).is_err());
        assert!(AlinkReply::from_slice(br#"{"id":"1","code":"abc"}"#).is_err());
    }
}
