//! The v3 signature, `ACS3-HMAC-SHA256` (spec digest §2.9).
//!
//! ```text
//! CanonicalRequest = METHOD \n PATH \n CanonicalQuery \n
//!                    (name:trim(value) \n)* \n SignedHeaders \n HashedPayload
//! StringToSign     = "ACS3-HMAC-SHA256" \n hex(SHA256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(secret, StringToSign))
//! ```
//!
//! The canonical query decodes the raw query first (so `+` counts as a
//! space, as the tea SDK sends it) and re-encodes every name and value with
//! RFC 3986. The canonical headers are exactly those named in the
//! `Authorization` header, lower-cased; `host` includes the port.

use std::fmt;

use thingcall_core::encoding::{percent_encode_into, percent_encoded_len};
use thingcall_core::secret::constant_time_eq;

use crate::digest::{hex, hmac_sha256, sha256_hex};

/// The algorithm name.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// SHA-256 of the empty body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Lower-case hex SHA-256 of a body (the `x-acs-content-sha256` value).
pub fn content_sha256(body: &[u8]) -> String {
    sha256_hex(body)
}

/// A query string that is not valid form encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed query string: {}", self.0)
    }
}

impl std::error::Error for QueryError {}

fn form_decode(raw: &str) -> Result<String, QueryError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let digits = bytes
                    .get(i + 1..i + 3)
                    .and_then(|d| std::str::from_utf8(d).ok());
                match digits.and_then(|d| u8::from_str_radix(d, 16).ok()) {
                    Some(b) if digits.is_some_and(|d| d.bytes().all(|c| c.is_ascii_hexdigit())) => {
                        out.push(b)
                    }
                    _ => return Err(QueryError(format!("bad percent-encoding in {raw:?}"))),
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError(format!("{raw:?} is not UTF-8 once decoded")))
}

/// The canonical query string of a raw (still encoded) query.
pub fn canonical_query(raw_query: &str) -> Result<String, QueryError> {
    let mut pairs = Vec::new();
    for segment in raw_query.split('&').filter(|s| !s.is_empty()) {
        let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
        pairs.push((form_decode(name)?, form_decode(value)?));
    }
    Ok(canonical_query_of_pairs(&pairs))
}

/// The canonical query string of decoded pairs.
pub fn canonical_query_of_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut sorted: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_unstable();
    encode_sorted(&sorted)
}

/// `encode(name)=encode(value)` joined with `&`, in the order given: the
/// canonical form both signature versions use.
pub(crate) fn encode_sorted(sorted: &[(&str, &str)]) -> String {
    let len: usize = sorted
        .iter()
        .map(|(k, v)| percent_encoded_len(k) + percent_encoded_len(v) + 2)
        .sum();
    let mut out = String::with_capacity(len);
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(k, &mut out);
        out.push('=');
        percent_encode_into(v, &mut out);
    }
    out
}

/// The parts of a request that v3 signs.
#[derive(Clone, Debug)]
pub struct SignedParts<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Canonical URI (`/` for RPC-style APIs).
    pub path: &'a str,
    /// The canonical query (see [`canonical_query`]).
    pub canonical_query: &'a str,
    /// `(lower-case name, value)` for each signed header, in `SignedHeaders`
    /// order.
    pub headers: &'a [(String, String)],
    /// The hashed payload (`x-acs-content-sha256`).
    pub hashed_payload: &'a str,
}

/// Builds the canonical request.
pub fn canonical_request(parts: &SignedParts<'_>) -> String {
    let mut out = String::with_capacity(256 + parts.canonical_query.len());
    out.push_str(parts.method);
    out.push('\n');
    out.push_str(parts.path);
    out.push('\n');
    out.push_str(parts.canonical_query);
    out.push('\n');
    for (name, value) in parts.headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value.trim());
        out.push('\n');
    }
    out.push('\n');
    for (i, (name, _)) in parts.headers.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(name);
    }
    out.push('\n');
    out.push_str(parts.hashed_payload);
    out
}

/// `ACS3-HMAC-SHA256\n` + hex(SHA-256(canonical request)).
pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// The hex signature of a string-to-sign.
pub fn signature_of(string_to_sign: &str, secret: &str) -> String {
    hex(&hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()))
}

/// Signs request parts: returns the hex signature.
pub fn sign(parts: &SignedParts<'_>, secret: &str) -> String {
    signature_of(&string_to_sign(&canonical_request(parts)), secret)
}

/// The `Authorization` header value for a signature.
pub fn authorization(access_key_id: &str, headers: &[(String, String)], signature: &str) -> String {
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    format!(
        "{ALGORITHM} Credential={access_key_id},SignedHeaders={},Signature={signature}",
        names.join(";")
    )
}

/// A parsed `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The algorithm (only `ACS3-HMAC-SHA256` is accepted by the verifier).
    pub algorithm: String,
    /// `Credential`: the AccessKey id.
    pub credential: String,
    /// `SignedHeaders`, lower-cased, in the order given.
    pub signed_headers: Vec<String>,
    /// `Signature` (hex).
    pub signature: String,
}

impl Authorization {
    /// Parses `ALGO Credential=..,SignedHeaders=a;b,Signature=..`. Spaces
    /// after commas are tolerated; each part must appear exactly once.
    pub fn parse(value: &str) -> Option<Authorization> {
        let (algorithm, rest) = value.trim().split_once(' ')?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (key, val) = part.trim().split_once('=')?;
            let slot = match key.trim() {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                _ => return None,
            };
            if slot.replace(val.trim()).is_some() {
                return None;
            }
        }
        let signed_headers: Vec<String> = signed?
            .split(';')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let (credential, signature) = (credential?, signature?);
        if credential.is_empty() || signature.is_empty() || signed_headers.is_empty() {
            return None;
        }
        Some(Authorization {
            algorithm: algorithm.to_owned(),
            credential: credential.to_owned(),
            signed_headers,
            signature: signature.to_owned(),
        })
    }
}

/// Compares a hex signature in constant time, ignoring hex case.
pub fn signatures_match(expected: &str, given: &str) -> bool {
    constant_time_eq(expected.as_bytes(), given.to_ascii_lowercase().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_is_a_space_and_sorting_is_by_name() {
        assert_eq!(
            canonical_query("b=dev+1&a=%7B%7D&c").unwrap(),
            "a=%7B%7D&b=dev%201&c="
        );
        assert!(canonical_query("a=%zz").is_err());
        assert!(canonical_query("a=%C3%28").is_err());
    }

    #[test]
    fn authorization_header() {
        let a = Authorization::parse(
            "ACS3-HMAC-SHA256 Credential=id, SignedHeaders=host;X-Acs-Date,Signature=ab",
        )
        .unwrap();
        assert_eq!(a.credential, "id");
        assert_eq!(a.signed_headers, ["host", "x-acs-date"]);
        assert_eq!(a.signature, "ab");
        for bad in [
            "",
            "ACS3-HMAC-SHA256",
            "ACS3-HMAC-SHA256 Credential=id",
            "ACS3-HMAC-SHA256 Credential=id,SignedHeaders=host",
            "ACS3-HMAC-SHA256 Credential=id,SignedHeaders=host,Signature=a,Signature=b",
            "ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature=a",
            "ACS3-HMAC-SHA256 Credential=id,SignedHeaders=;,Signature=a",
            "ACS3-HMAC-SHA256 Credential=id,Bogus=1,SignedHeaders=host,Signature=a",
        ] {
            assert!(Authorization::parse(bad).is_none(), "{bad}");
        }
    }
}
