//! The SASL PLAIN credentials of Alibaba's AMQP server-side subscription
//! (spec digest `amqp-subscription.md` §1.3).
//!
//! The username is `clientId|k=v,k=v,...|`: the client id before the first
//! `|`, then comma-separated pairs up to the last `|`, in any order. The
//! password is the standard base64 of an HMAC keyed by the AccessKey
//! secret over `authId=...&timestamp=...` (`aksign`), with
//! `&securityToken=...` between them for `ststoken` (keys sorted).
//!
//! Rules taken from the official samples: sign methods in any case
//! (`Hmacsha1` from Go), an empty or `""` value is an absent one, and the
//! timestamp is not checked for freshness (the Node sample hard-codes a
//! 2019 value).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;

use crate::SignMethod;
use crate::digest::{hmac_md5, hmac_sha1, hmac_sha256};
use thingcall_core::secret::constant_time_eq;

/// The longest client id accepted.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// How the password is derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// `aksign`: an AccessKey pair signs.
    AkSign,
    /// `ststoken`: an STS token from `AssumeRole` is signed along.
    StsToken,
}

/// A parsed SASL PLAIN username: who connects, to which consumer group.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUsername {
    /// The client id (the text before the first `|`).
    pub client_id: String,
    /// `authMode`.
    pub auth_mode: AuthMode,
    /// `signMethod`.
    pub sign_method: SignMethod,
    /// `timestamp`, as sent (signed as text).
    pub timestamp: String,
    /// `authId`: the AccessKey id.
    pub auth_id: String,
    /// `consumerGroupId`.
    pub consumer_group_id: String,
    /// `iotInstanceId`, when given.
    pub iot_instance_id: Option<String>,
    /// `securityToken` (`ststoken` only).
    security_token: Option<String>,
}

impl fmt::Debug for AmqpUsername {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpUsername")
            .field("client_id", &self.client_id)
            .field("auth_mode", &self.auth_mode)
            .field("sign_method", &self.sign_method)
            .field("timestamp", &self.timestamp)
            .field("auth_id", &self.auth_id)
            .field("consumer_group_id", &self.consumer_group_id)
            .field("iot_instance_id", &self.iot_instance_id)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why a username cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsernameError(String);

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsernameError {}

fn fail(message: impl Into<String>) -> UsernameError {
    UsernameError(message.into())
}

impl AmqpUsername {
    /// Parses `clientId|k=v,...|`.
    pub fn parse(raw: &str) -> Result<AmqpUsername, UsernameError> {
        let first = raw
            .find('|')
            .ok_or_else(|| fail("the username has no |key=value,...| part"))?;
        let last = raw.rfind('|').unwrap_or(first);
        if last == first {
            return Err(fail("the username's key=value part is not closed by |"));
        }
        let client_id = &raw[..first];
        if client_id.is_empty() || client_id.chars().count() > MAX_CLIENT_ID_LEN {
            return Err(fail("the client id must be 1 to 64 characters"));
        }
        let mut pairs = BTreeMap::new();
        for pair in raw[first + 1..last].split(',') {
            if pair.trim().is_empty() {
                continue;
            }
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| fail(format!("{pair:?} is not key=value")))?;
            let v = v.trim();
            // `iotInstanceId=` and `iotInstanceId=""` both mean absent.
            if v.is_empty() || v == "\"\"" {
                continue;
            }
            pairs.insert(k.trim().to_owned(), v.to_owned());
        }
        let mut take = |key: &str| pairs.remove(key);
        let auth_mode = match take("authMode").as_deref() {
            Some("aksign") => AuthMode::AkSign,
            Some("ststoken") => AuthMode::StsToken,
            Some(other) => return Err(fail(format!("authMode {other:?} is not supported"))),
            None => return Err(fail("the username has no authMode")),
        };
        let sign_method = take("signMethod")
            .ok_or_else(|| fail("the username has no signMethod"))?
            .parse::<SignMethod>()
            .map_err(|e| fail(e.to_string()))?;
        let timestamp = take("timestamp").ok_or_else(|| fail("the username has no timestamp"))?;
        let auth_id = take("authId").ok_or_else(|| fail("the username has no authId"))?;
        let consumer_group_id =
            take("consumerGroupId").ok_or_else(|| fail("the username has no consumerGroupId"))?;
        let iot_instance_id = take("iotInstanceId");
        let security_token = take("securityToken");
        if auth_mode == AuthMode::StsToken && security_token.is_none() {
            return Err(fail("authMode=ststoken needs a securityToken"));
        }
        Ok(AmqpUsername {
            client_id: client_id.to_owned(),
            auth_mode,
            sign_method,
            timestamp,
            auth_id,
            consumer_group_id,
            iot_instance_id,
            security_token,
        })
    }

    /// The signed text: `authId=..[&securityToken=..]&timestamp=..`.
    pub fn content(&self) -> String {
        match &self.security_token {
            Some(token) => format!(
                "authId={}&securityToken={token}&timestamp={}",
                self.auth_id, self.timestamp
            ),
            None => format!("authId={}&timestamp={}", self.auth_id, self.timestamp),
        }
    }

    /// The password a client holding `access_key_secret` sends.
    pub fn password(&self, access_key_secret: &str) -> String {
        password(self.sign_method, access_key_secret, &self.content())
    }

    /// Checks `given` against the password `access_key_secret` makes, in
    /// constant time.
    pub fn verify(&self, access_key_secret: &str, given: &[u8]) -> bool {
        constant_time_eq(self.password(access_key_secret).as_bytes(), given)
    }
}

/// Builds the username an official sample sends (`aksign`).
pub fn username(
    client_id: &str,
    sign_method: SignMethod,
    timestamp: &str,
    access_key_id: &str,
    consumer_group_id: &str,
    iot_instance_id: Option<&str>,
) -> String {
    format!(
        "{client_id}|authMode=aksign,signMethod={sign_method},timestamp={timestamp},authId={access_key_id},iotInstanceId={},consumerGroupId={consumer_group_id}|",
        iot_instance_id.unwrap_or("")
    )
}

/// Standard base64 (with padding) of the HMAC of `content`.
pub fn password(method: SignMethod, access_key_secret: &str, content: &str) -> String {
    let key = access_key_secret.as_bytes();
    let mac = match method {
        SignMethod::HmacMd5 => hmac_md5(key, content.as_bytes()),
        SignMethod::HmacSha1 => hmac_sha1(key, content.as_bytes()),
        SignMethod::HmacSha256 => hmac_sha256(key, content.as_bytes()),
    };
    base64::engine::general_purpose::STANDARD.encode(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_username_parses_in_any_key_order() {
        let doc = "c1|authMode=aksign,signMethod=hmacsha1,timestamp=1573489088171,authId=AK,iotInstanceId=,consumerGroupId=DEFAULT_GROUP|";
        let u = AmqpUsername::parse(doc).unwrap();
        assert_eq!(u.client_id, "c1");
        assert_eq!(u.sign_method, SignMethod::HmacSha1);
        assert_eq!(u.iot_instance_id, None);
        assert_eq!(u.consumer_group_id, "DEFAULT_GROUP");
        let reordered = "c1|iotInstanceId=\"\",consumerGroupId=DEFAULT_GROUP,authId=AK,timestamp=1573489088171,signMethod=Hmacsha1,authMode=aksign|";
        let r = AmqpUsername::parse(reordered).unwrap();
        assert_eq!(r, u);
        assert_eq!(u.content(), "authId=AK&timestamp=1573489088171");
    }

    #[test]
    fn passwords_match_the_samples_computation() {
        // base64(HMAC-SHA1("secret", "authId=AK&timestamp=1573489088171")),
        // as Python's `base64.b64encode(hmac.new(...).digest())` prints it.
        let u = AmqpUsername::parse(&username(
            "c1",
            SignMethod::HmacSha1,
            "1573489088171",
            "AK",
            "G",
            None,
        ))
        .unwrap();
        let p = u.password("secret");
        assert_eq!(p.len(), 28);
        assert!(p.ends_with('='));
        assert!(u.verify("secret", p.as_bytes()));
        assert!(!u.verify("other", p.as_bytes()));
        assert!(!u.verify("secret", b""));
    }

    #[test]
    fn malformed_usernames_are_refused_with_a_reason() {
        for bad in [
            "",
            "c1",
            "c1|authMode=aksign",
            "|authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=A,consumerGroupId=G|",
            "c1|authMode=appkey,signMethod=hmacsha1,timestamp=1,authId=A,consumerGroupId=G|",
            "c1|authMode=aksign,signMethod=sha1,timestamp=1,authId=A,consumerGroupId=G|",
            "c1|authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=A|",
            "c1|authMode=ststoken,signMethod=hmacsha1,timestamp=1,authId=A,consumerGroupId=G|",
            "c1|authMode=aksign,signMethod,timestamp=1,authId=A,consumerGroupId=G|",
        ] {
            assert!(AmqpUsername::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_security_token_is_signed_and_never_printed() {
        let u = AmqpUsername::parse("c|authMode=ststoken,securityToken=TOKEN,signMethod=hmacsha256,consumerGroupId=G,authId=A,timestamp=5|").unwrap();
        assert_eq!(u.content(), "authId=A&securityToken=TOKEN&timestamp=5");
        assert!(!format!("{u:?}").contains("TOKEN"));
    }
}
