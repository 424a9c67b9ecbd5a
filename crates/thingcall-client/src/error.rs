//! The client's error: gateway and business failures told apart, with the
//! request id kept.

use std::fmt;

/// What kind of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The API gateway refused the request (HTTP 4xx/5xx): signature,
    /// parameters, throttling.
    Gateway,
    /// The IoT service answered `Success=false` (HTTP 200).
    Business,
    /// No answer: connection refused, reset, or the read timed out.
    Transport,
    /// An answer that is not a response of this API.
    Decode,
    /// The client is misconfigured (credentials, endpoint).
    Config,
}

/// A failed call.
#[derive(Clone, Debug)]
pub struct Error {
    kind: ErrorKind,
    code: Option<String>,
    message: String,
    request_id: Option<String>,
    http_status: Option<u16>,
    timed_out: bool,
}

impl Error {
    pub(crate) fn config(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Config,
            code: None,
            message: message.into(),
            request_id: None,
            http_status: None,
            timed_out: false,
        }
    }

    pub(crate) fn transport(message: impl Into<String>, timed_out: bool) -> Error {
        Error {
            kind: ErrorKind::Transport,
            code: None,
            message: message.into(),
            request_id: None,
            http_status: None,
            timed_out,
        }
    }

    pub(crate) fn decode(status: u16, message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Decode,
            code: None,
            message: message.into(),
            request_id: None,
            http_status: Some(status),
            timed_out: false,
        }
    }

    pub(crate) fn gateway(status: u16, code: String, message: String, request_id: String) -> Error {
        Error {
            kind: ErrorKind::Gateway,
            code: Some(code),
            message,
            request_id: Some(request_id),
            http_status: Some(status),
            timed_out: false,
        }
    }

    pub(crate) fn business(code: String, message: String, request_id: String) -> Error {
        Error {
            kind: ErrorKind::Business,
            code: Some(code),
            message,
            request_id: Some(request_id),
            http_status: Some(200),
            timed_out: false,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The Alibaba code (`SignatureDoesNotMatch`, `iot.messagebroker.TIMEOUT`, ...).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The server's message, or a description of the local failure.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `RequestId` of the response, for support tickets.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The HTTP status, when a response came back.
    pub fn http_status(&self) -> Option<u16> {
        self.http_status
    }

    /// A gateway error.
    pub fn is_gateway(&self) -> bool {
        self.kind == ErrorKind::Gateway
    }

    /// A business error (`Success=false`).
    pub fn is_business(&self) -> bool {
        self.kind == ErrorKind::Business
    }

    /// The device was offline (`iot.messagebroker.OFFLINE`).
    pub fn is_device_offline(&self) -> bool {
        self.code() == Some("iot.messagebroker.OFFLINE")
    }

    /// The device did not answer in time (`iot.messagebroker.TIMEOUT`), or
    /// the HTTP read timed out.
    pub fn is_timeout(&self) -> bool {
        self.timed_out || self.code() == Some("iot.messagebroker.TIMEOUT")
    }

    /// The signature was refused (`SignatureDoesNotMatch`).
    pub fn is_signature_mismatch(&self) -> bool {
        self.code() == Some("SignatureDoesNotMatch")
    }

    /// Throttled by the gateway (`Throttling`, `Throttling.User`, ...).
    pub fn is_throttling(&self) -> bool {
        self.is_gateway() && self.code().is_some_and(|c| c.starts_with("Throttling"))
    }

    /// Worth retrying: connection failures (not read timeouts, which may
    /// have reached the device), throttling, and `ServiceUnavailable`.
    /// Business errors never are.
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            ErrorKind::Transport => !self.timed_out,
            ErrorKind::Gateway => self.is_throttling() || self.code() == Some("ServiceUnavailable"),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates() {
        let offline = Error::business("iot.messagebroker.OFFLINE".into(), "m".into(), "r".into());
        assert!(offline.is_device_offline() && offline.is_business() && !offline.is_retryable());
        assert_eq!(offline.request_id(), Some("r"));
        let timeout = Error::business("iot.messagebroker.TIMEOUT".into(), "m".into(), "r".into());
        assert!(timeout.is_timeout() && !timeout.is_retryable());
        let sig = Error::gateway(400, "SignatureDoesNotMatch".into(), "m".into(), "r".into());
        assert!(sig.is_signature_mismatch() && sig.is_gateway() && !sig.is_retryable());
        assert!(
            Error::gateway(400, "Throttling.User".into(), "m".into(), "r".into()).is_retryable()
        );
        assert!(
            Error::gateway(503, "ServiceUnavailable".into(), "m".into(), "r".into()).is_retryable()
        );
        assert!(Error::transport("refused", false).is_retryable());
        let read_timeout = Error::transport("read timed out", true);
        assert!(read_timeout.is_timeout() && !read_timeout.is_retryable());
        assert_eq!(sig.to_string(), "SignatureDoesNotMatch: m");
    }
}
