//! Device MQTT credentials for one-device-one-secret authentication
//! (spec digest §5.2).
//!
//! ```text
//! client id: {id}|securemode=3,signmethod=hmacsha1,timestamp=789|
//! username:  {deviceName}&{productKey}
//! password:  hex(HMAC(deviceSecret, "clientId{id}deviceName{dn}productKey{pk}timestamp{ts}"))
//! ```
//!
//! The timestamp is left out of the content when the client id has none,
//! `signmethod` defaults to `hmacmd5`, and the password's hex is compared
//! without regard to case.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use thingcall_core::secret::constant_time_eq;

use crate::digest::{hex, hmac_md5, hmac_sha1, hmac_sha256};

/// The longest bare client id accepted (Alibaba documents 64).
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// The HMAC used for the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignMethod {
    /// `hmacmd5` (the default when `signmethod` is absent).
    HmacMd5,
    /// `hmacsha1`.
    HmacSha1,
    /// `hmacsha256`.
    HmacSha256,
}

impl SignMethod {
    /// The client-id spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SignMethod::HmacMd5 => "hmacmd5",
            SignMethod::HmacSha1 => "hmacsha1",
            SignMethod::HmacSha256 => "hmacsha256",
        }
    }
}

impl FromStr for SignMethod {
    type Err = ClientIdError;
    fn from_str(s: &str) -> Result<SignMethod, ClientIdError> {
        // Devices in the field write these in either case.
        match s.to_ascii_lowercase().as_str() {
            "hmacmd5" => Ok(SignMethod::HmacMd5),
            "hmacsha1" => Ok(SignMethod::HmacSha1),
            "hmacsha256" => Ok(SignMethod::HmacSha256),
            _ => Err(ClientIdError(format!("unsupported signmethod {s:?}"))),
        }
    }
}

impl fmt::Display for SignMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A malformed MQTT client id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdError(String);

impl fmt::Display for ClientIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed MQTT client id: {}", self.0)
    }
}

impl std::error::Error for ClientIdError {}

/// An MQTT client id with its `|k=v,...|` extension block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttClientId {
    id: String,
    params: BTreeMap<String, String>,
}

impl MqttClientId {
    /// A client id with no extension parameters yet.
    pub fn new(id: impl Into<String>) -> MqttClientId {
        MqttClientId {
            id: id.into(),
            params: BTreeMap::new(),
        }
    }

    /// Sets an extension parameter (builder style).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> MqttClientId {
        self.params.insert(key.to_owned(), value.into());
        self
    }

    /// Parses `id|k=v,k2=v2|`. Whitespace around keys and values and a
    /// trailing comma are tolerated; unknown keys are kept. A client id
    /// without `|` has no parameters.
    pub fn parse(raw: &str) -> Result<MqttClientId, ClientIdError> {
        let (id, block) = match raw.split_once('|') {
            None => (raw, None),
            Some((id, rest)) => {
                let block = rest.strip_suffix('|').ok_or_else(|| {
                    ClientIdError("the extension block is not closed with '|'".into())
                })?;
                if block.contains('|') {
                    return Err(ClientIdError("more than one extension block".into()));
                }
                (id, Some(block))
            }
        };
        let id = id.trim();
        if id.is_empty() {
            return Err(ClientIdError("the client id is empty".into()));
        }
        if id.len() > MAX_CLIENT_ID_LEN {
            return Err(ClientIdError(format!(
                "the client id is longer than {MAX_CLIENT_ID_LEN} characters"
            )));
        }
        let mut params = BTreeMap::new();
        for item in block.unwrap_or("").split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| ClientIdError(format!("parameter {item:?} has no '='")))?;
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(ClientIdError(format!("parameter {item:?} has no name")));
            }
            if params.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(ClientIdError(format!("parameter {key:?} is given twice")));
            }
        }
        Ok(MqttClientId {
            id: id.to_owned(),
            params,
        })
    }

    /// The bare client id (before the first `|`): part of the password
    /// content.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every extension parameter, known or not.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    /// One extension parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// `securemode` (2 TLS, 3 plain TCP, -2 dynamic registration).
    pub fn secure_mode(&self) -> Option<&str> {
        self.param("securemode")
    }

    /// `signmethod`, `hmacmd5` when absent.
    pub fn sign_method(&self) -> Result<SignMethod, ClientIdError> {
        self.param("signmethod")
            .map_or(Ok(SignMethod::HmacMd5), str::parse)
    }

    /// `timestamp`, when given.
    pub fn timestamp(&self) -> Option<&str> {
        self.param("timestamp")
    }

    /// The `ext` bitmap (bit 0: extended `/ext/rrpc/` RRPC). A value that
    /// is not a number counts as 0.
    pub fn ext(&self) -> u32 {
        self.param("ext").and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// True when `ext` bit 0 is set: sync calls use `/ext/rrpc/...`.
    pub fn ext_rrpc(&self) -> bool {
        self.ext() & 1 == 1
    }

    /// True for `_ss=1`: the device expects its system topics without
    /// subscribing.
    pub fn auto_subscribe(&self) -> bool {
        self.param("_ss") == Some("1")
    }

    /// `_v`: the SDK version.
    pub fn sdk_version(&self) -> Option<&str> {
        self.param("_v")
    }

    /// `lan`: the SDK language.
    pub fn language(&self) -> Option<&str> {
        self.param("lan")
    }
}

impl fmt::Display for MqttClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)?;
        if self.params.is_empty() {
            return Ok(());
        }
        f.write_str("|")?;
        for (i, (k, v)) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_str("|")
    }
}

/// The MQTT username: `deviceName&productKey`.
pub fn username(device_name: &str, product_key: &str) -> String {
    format!("{device_name}&{product_key}")
}

/// Splits a username into `(deviceName, productKey)`.
pub fn parse_username(username: &str) -> Option<(&str, &str)> {
    let (dn, pk) = username.split_once('&')?;
    (!dn.is_empty() && !pk.is_empty() && !pk.contains('&')).then_some((dn, pk))
}

/// The signed content: parameter names sorted, each followed by its value.
pub fn password_content(
    client_id: &str,
    device_name: &str,
    product_key: &str,
    timestamp: Option<&str>,
) -> String {
    let mut s = format!("clientId{client_id}deviceName{device_name}productKey{product_key}");
    if let Some(ts) = timestamp {
        s.push_str("timestamp");
        s.push_str(ts);
    }
    s
}

/// The password for `content`: lower-case hex HMAC keyed by the device
/// secret.
pub fn password(method: SignMethod, device_secret: &str, content: &str) -> String {
    let key = device_secret.as_bytes();
    let mac = match method {
        SignMethod::HmacMd5 => hmac_md5(key, content.as_bytes()),
        SignMethod::HmacSha1 => hmac_sha1(key, content.as_bytes()),
        SignMethod::HmacSha256 => hmac_sha256(key, content.as_bytes()),
    };
    hex(&mac)
}

/// Checks a CONNECT's password against the device secret, in constant time
/// and without regard to hex case.
pub fn verify_password(
    client_id: &MqttClientId,
    device_name: &str,
    product_key: &str,
    device_secret: &str,
    given: &str,
) -> Result<bool, ClientIdError> {
    let method = client_id.sign_method()?;
    let content = password_content(
        client_id.id(),
        device_name,
        product_key,
        client_id.timestamp(),
    );
    let expected = password(method, device_secret, &content);
    Ok(constant_time_eq(
        expected.as_bytes(),
        given.to_ascii_lowercase().as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_linkkit_and_c_sdk_forms() {
        let c = MqttClientId::parse("a1TestPk001&dev1|securemode=3,signmethod=hmacsha1,ext=1,_ss=1,lan=Python,_v=1.2.13,timestamp=1700000000|").unwrap();
        assert_eq!(c.id(), "a1TestPk001&dev1");
        assert_eq!(c.sign_method().unwrap(), SignMethod::HmacSha1);
        assert!(c.ext_rrpc());
        assert!(c.auto_subscribe());
        assert_eq!(c.language(), Some("Python"));
        assert_eq!(c.sdk_version(), Some("1.2.13"));
        assert_eq!(c.timestamp(), Some("1700000000"));

        let c = MqttClientId::parse("pk.dn|timestamp=2524608000000,_ss=1,_v=sdk-c-4.2.0,securemode=2,signmethod=hmacsha256,ext=3,|").unwrap();
        assert_eq!(c.ext(), 3);
        assert!(c.ext_rrpc());
        assert_eq!(c.secure_mode(), Some("2"));

        let c = MqttClientId::parse("id| securemode = 3 , gw=1 , custom=x |").unwrap();
        assert_eq!(c.secure_mode(), Some("3"));
        assert_eq!(c.param("custom"), Some("x"));
        assert_eq!(c.sign_method().unwrap(), SignMethod::HmacMd5, "default");
        assert!(!c.ext_rrpc());

        let c = MqttClientId::parse("plain").unwrap();
        assert!(c.params().is_empty());
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "|securemode=3|",
            "id|securemode=3",
            "id|a|b|",
            "id|novalue|",
            "id|=1|",
            "id|a=1,a=2|",
            &"x".repeat(65),
        ] {
            assert!(MqttClientId::parse(bad).is_err(), "{bad}");
        }
        let c = MqttClientId::parse("id|signmethod=hmacsha512|").unwrap();
        assert!(c.sign_method().is_err());
    }

    #[test]
    fn display_round_trips() {
        let c = MqttClientId::new("pk.dn")
            .with("securemode", "3")
            .with("signmethod", "hmacsha256");
        assert_eq!(c.to_string(), "pk.dn|securemode=3,signmethod=hmacsha256|");
        assert_eq!(MqttClientId::parse(&c.to_string()).unwrap(), c);
    }

    #[test]
    fn usernames() {
        assert_eq!(username("dev1", "pk"), "dev1&pk");
        assert_eq!(parse_username("dev1&pk"), Some(("dev1", "pk")));
        assert_eq!(parse_username("dev1"), None);
        assert_eq!(parse_username("&pk"), None);
        assert_eq!(parse_username("a&b&c"), None);
    }
}
