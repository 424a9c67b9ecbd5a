//! Validated identifiers.
//!
//! Each type checks its format on construction, so a value that exists is a
//! valid one. The rules come from the Alibaba docs (spec digest §1.2, §4.6 and
//! `management-apis.md` §0.4); where Alibaba only shows examples, the rule is
//! our choice and is written in `docs/COMPATIBILITY.md`.

use std::fmt;
use std::str::FromStr;

use crate::error::{ApiError, ErrorCode};

/// Which identifier failed to validate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdKind {
    /// [`ProductKey`]
    ProductKey,
    /// [`DeviceName`]
    DeviceName,
    /// [`IotId`]
    IotId,
    /// [`Identifier`]
    Identifier,
    /// [`AccessKeyId`]
    AccessKeyId,
    /// [`MessageId`]
    MessageId,
    /// [`RequestId`]
    RequestId,
}

impl IdKind {
    /// The wire parameter name of this identifier.
    pub fn param_name(self) -> &'static str {
        match self {
            IdKind::ProductKey => "ProductKey",
            IdKind::DeviceName => "DeviceName",
            IdKind::IotId => "IotId",
            IdKind::Identifier => "Identifier",
            IdKind::AccessKeyId => "AccessKeyId",
            IdKind::MessageId => "MessageId",
            IdKind::RequestId => "RequestId",
        }
    }

    fn rule(self) -> &'static str {
        match self {
            IdKind::ProductKey => "1-32 letters and digits",
            IdKind::DeviceName => "4-32 characters of letters, digits and - _ @ . :",
            IdKind::IotId => "1-64 characters of letters, digits, - and _",
            IdKind::Identifier => {
                "1-50 letters, digits and _, optionally prefixed by a 1-30 character module id and ':'"
            }
            IdKind::AccessKeyId => "1-128 characters of letters, digits, '.', '-' and '_'",
            IdKind::MessageId => "1-20 decimal digits within the u64 range",
            IdKind::RequestId => "1-64 printable ASCII characters",
        }
    }
}

/// A value that does not satisfy an identifier's format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdError {
    kind: IdKind,
    empty: bool,
}

impl IdError {
    fn new(kind: IdKind, value: &str) -> IdError {
        IdError {
            kind,
            empty: value.is_empty(),
        }
    }

    /// Which identifier failed.
    pub fn kind(&self) -> IdKind {
        self.kind
    }

    /// True when the value was empty (which some codes treat separately).
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// The Alibaba code for this failure at the API edge.
    pub fn to_api_error(&self) -> ApiError {
        let code = match (self.kind, self.empty) {
            (IdKind::ProductKey, true) => ErrorCode::NullProductKey,
            (IdKind::ProductKey, false) => ErrorCode::InvalidFormattedProductkey,
            (IdKind::DeviceName, true) => ErrorCode::NullDeviceName,
            (IdKind::DeviceName, false) => ErrorCode::InvalidFormattedDeviceName,
            (IdKind::IotId, _) => ErrorCode::InvalidIotId,
            (IdKind::Identifier, _) => ErrorCode::InvokeThingServiceFailed,
            (IdKind::AccessKeyId, _) => ErrorCode::InvalidAccessKeyIdNotFound,
            (IdKind::MessageId, _) | (IdKind::RequestId, _) => {
                return ApiError::invalid_parameter(self.kind.param_name(), self);
            }
        };
        ApiError::with_detail(code, self)
    }
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.empty {
            write!(f, "{} must not be empty", self.kind.param_name())
        } else {
            write!(f, "{} must be {}", self.kind.param_name(), self.kind.rule())
        }
    }
}

impl std::error::Error for IdError {}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> ApiError {
        e.to_api_error()
    }
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:expr, $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a value.
            pub fn new(value: impl Into<String>) -> Result<$name, IdError> {
                let value = value.into();
                let check: fn(&str) -> bool = $check;
                if check(&value) { Ok($name(value)) } else { Err(IdError::new($kind, &value)) }
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Unwraps the value.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<$name, IdError> {
                $name::new(s)
            }
        }
    };
}

fn len_in(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
}

fn is_identifier_part(s: &str, max: usize) -> bool {
    len_in(s, 1, max) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

string_id!(
    /// A product's key, e.g. `a1TestPk001` (real keys are 11 letters and
    /// digits; thingcall accepts 1-32).
    ProductKey,
    IdKind::ProductKey,
    |s| len_in(s, 1, 32) && s.bytes().all(|b| b.is_ascii_alphanumeric())
);

string_id!(
    /// A device's name within its product: 4-32 characters of letters, digits
    /// and `- _ @ . :`.
    DeviceName,
    IdKind::DeviceName,
    |s| len_in(s, 4, 32)
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@' | b'.' | b':'))
);

string_id!(
    /// A device's globally unique id (opaque; 1-64 letters, digits, `-`, `_`).
    IotId,
    IdKind::IotId,
    |s| len_in(s, 1, 64) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
);

string_id!(
    /// A service identifier from the thing model: `Calibrate`, or
    /// `block:service` for a service of a custom module.
    Identifier,
    IdKind::Identifier,
    |s| match s.split_once(':') {
        Some((block, service)) => is_identifier_part(block, 30) && is_identifier_part(service, 50),
        None => is_identifier_part(s, 50),
    }
);

string_id!(
    /// An AccessKey id (`LTAI...`, or `STS.` ids for temporary credentials).
    AccessKeyId,
    IdKind::AccessKeyId,
    |s| len_in(s, 1, 128) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
);

string_id!(
    /// A response's request id (UUID-like, e.g. `57B144CF-09FC-4916-A272-A62902D5B207`).
    RequestId,
    IdKind::RequestId,
    |s| len_in(s, 1, 64) && s.bytes().all(|b| b.is_ascii_graphic())
);

impl Identifier {
    /// The custom module id, for `block:service` identifiers.
    pub fn block(&self) -> Option<&str> {
        self.0.split_once(':').map(|(block, _)| block)
    }

    /// The service part (the whole identifier for the default module).
    pub fn service(&self) -> &str {
        self.0
            .split_once(':')
            .map_or(&self.0, |(_, service)| service)
    }
}

impl RequestId {
    /// Formats 16 bytes (from the caller's random source) as an upper-case
    /// UUID-like id, the way Alibaba's gateway writes them.
    pub fn from_bytes(bytes: [u8; 16]) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut s = String::with_capacity(36);
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0x0f)] as char);
        }
        RequestId(s)
    }
}

/// The id of one downstream message: a decimal string, used at once as the
/// Alink `id`, the RRPC topic's `{messageId}` and the API's `Data.MessageId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(u64);

impl MessageId {
    /// Wraps a numeric id.
    pub const fn from_u64(id: u64) -> MessageId {
        MessageId(id)
    }

    /// The numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for MessageId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<MessageId, IdError> {
        // Leading '+' and whitespace are refused: the topic segment must be
        // exactly the decimal digits we sent.
        if !len_in(s, 1, 20) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::new(IdKind::MessageId, s));
        }
        s.parse::<u64>()
            .map(MessageId)
            .map_err(|_| IdError::new(IdKind::MessageId, s))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        for ok in ["dev1", "a-b_c@d.e:f", "abcd", &"x".repeat(32)] {
            assert!(DeviceName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "abc",
            "dev 1",
            "dev/1",
            "dév1",
            &"x".repeat(33),
            "dev+",
            "dev#",
        ] {
            let err = DeviceName::new(bad).unwrap_err();
            assert_eq!(err.kind(), IdKind::DeviceName);
            let code = err.to_api_error().code();
            if bad.is_empty() {
                assert_eq!(code, ErrorCode::NullDeviceName);
            } else {
                assert_eq!(code, ErrorCode::InvalidFormattedDeviceName, "{bad}");
            }
        }
    }

    #[test]
    fn product_keys() {
        assert!(ProductKey::new("a1TestPk001").is_ok());
        assert_eq!(
            ProductKey::new("").unwrap_err().to_api_error().code(),
            ErrorCode::NullProductKey
        );
        assert_eq!(
            ProductKey::new("a1-bad").unwrap_err().to_api_error().code(),
            ErrorCode::InvalidFormattedProductkey
        );
    }

    #[test]
    fn identifiers() {
        let id = Identifier::new("testFb:testService").unwrap();
        assert_eq!(id.block(), Some("testFb"));
        assert_eq!(id.service(), "testService");
        let id = Identifier::new("Calibrate").unwrap();
        assert_eq!(id.block(), None);
        assert_eq!(id.service(), "Calibrate");
        for bad in [
            "",
            ":x",
            "x:",
            "a:b:c",
            "has space",
            "dash-no",
            &"x".repeat(51),
        ] {
            assert!(Identifier::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_ids() {
        assert_eq!("42".parse::<MessageId>().unwrap().get(), 42);
        assert_eq!(
            MessageId::from_u64(u64::MAX).to_string(),
            u64::MAX.to_string()
        );
        for bad in ["", "+1", " 1", "1a", "18446744073709551616", "-1"] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn request_ids_look_like_alibabas() {
        let id = RequestId::from_bytes([0xab; 16]);
        assert_eq!(id.as_str(), "ABABABAB-ABAB-ABAB-ABAB-ABABABABABAB");
        assert!(RequestId::new(id.as_str()).is_ok());
    }
}
