//! The v1 RPC signature: `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`.
//!
//! 1. Take every parameter (query and form body) except `Signature`; empty
//!    values stay.
//! 2. Sort by name in byte order.
//! 3. Join `encode(name)=encode(value)` with `&`: the canonical string.
//! 4. `StringToSign = METHOD & %2F & encode(canonical)`.
//! 5. `Signature = base64(HMAC-SHA1(secret + "&", StringToSign))`.
//!
//! `encode` is RFC 3986 percent-encoding ([`thingcall_core::encoding`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use thingcall_core::encoding::{is_unreserved, percent_encode_into};
use thingcall_core::secret::constant_time_eq;

use crate::digest::hmac_sha1;

/// The only `SignatureMethod` v1 accepts.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
/// The only `SignatureVersion` v1 accepts.
pub const SIGNATURE_VERSION: &str = "1.0";

/// The parameters a v1 signature covers (all but `Signature`), sorted by
/// name in byte order. UTF-8 byte order is code-point order, which is what
/// the official SDKs' sorted dictionaries give.
fn signed_params<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Vec<(&str, &str)> {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .filter(|(k, _)| *k != "Signature")
        .collect();
    sorted.sort_unstable();
    sorted
}

/// The canonicalized query string of decoded parameters.
pub fn canonical_query<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    crate::v3::encode_sorted(&signed_params(params))
}

/// `METHOD&%2F&encode(canonical)`.
pub fn string_to_sign(method: &str, canonical: &str) -> String {
    let mut out = String::with_capacity(method.len() + 4 + canonical.len() * 5 / 4);
    out.push_str(method);
    out.push_str("&%2F&");
    percent_encode_into(canonical, &mut out);
    out
}

/// The string-to-sign of decoded parameters, built in one pass.
///
/// Equal to `string_to_sign(method, &canonical_query(params))`, but each
/// byte is encoded twice at once (`%` of the first encoding becomes `%25`)
/// instead of building and re-encoding the canonical string. Verification
/// runs this on every request.
pub fn string_to_sign_of<K: AsRef<str>, V: AsRef<str>>(method: &str, params: &[(K, V)]) -> String {
    let sorted = signed_params(params);
    let len: usize = sorted
        .iter()
        .map(|(k, v)| double_encoded_len(k) + double_encoded_len(v) + 6)
        .sum();
    let mut out: Vec<u8> = Vec::with_capacity(method.len() + 5 + len);
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(b"&%2F&");
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"%26");
        }
        push_double_encoded(k, &mut out);
        out.extend_from_slice(b"%3D");
        push_double_encoded(v, &mut out);
    }
    // Every byte pushed is ASCII.
    String::from_utf8(out).unwrap_or_default()
}

fn double_encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|b| if is_unreserved(b) { 1 } else { 5 })
        .sum()
}

fn push_double_encoded(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !is_unreserved(b) {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(&[
                b'%',
                b'2',
                b'5',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0x0f)],
            ]);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The base64 HMAC-SHA1 of a string-to-sign, keyed by `secret + "&"`.
pub fn signature_of(string_to_sign: &str, secret: &str) -> String {
    let mut key = Vec::with_capacity(secret.len() + 1);
    key.extend_from_slice(secret.as_bytes());
    key.push(b'&');
    STANDARD.encode(hmac_sha1(&key, string_to_sign.as_bytes()))
}

/// Signs decoded parameters: returns the base64 `Signature`.
pub fn sign<K: AsRef<str>, V: AsRef<str>>(method: &str, params: &[(K, V)], secret: &str) -> String {
    signature_of(&string_to_sign_of(method, params), secret)
}

/// The outcome of a v1 check: the server's string-to-sign is kept because
/// the mismatch error must quote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Whether the signature matched.
    pub matched: bool,
    /// The server's string-to-sign.
    pub string_to_sign: String,
}

/// Verifies a `Signature` in constant time.
pub fn check<K: AsRef<str>, V: AsRef<str>>(
    method: &str,
    params: &[(K, V)],
    secret: &str,
    signature: &str,
) -> Check {
    let sts = string_to_sign_of(method, params);
    let expected = signature_of(&sts, secret);
    Check {
        matched: constant_time_eq(expected.as_bytes(), signature.as_bytes()),
        string_to_sign: sts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_doc_vector() {
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ];
        assert_eq!(
            sign("GET", &params, "testsecret"),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
        let c = check("GET", &params, "testsecret", "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
        assert!(c.matched);
        assert!(
            !check(
                "POST",
                &params,
                "testsecret",
                "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
            )
            .matched
        );
    }

    #[test]
    fn one_pass_string_to_sign_matches_the_two_pass_one() {
        let params = [
            ("K温 *~+/&=%", "v温 *~+/&=%"),
            ("A", ""),
            ("Signature", "s"),
            ("b", "1"),
        ];
        assert_eq!(
            string_to_sign_of("POST", &params),
            string_to_sign("POST", &canonical_query(&params))
        );
    }

    #[test]
    fn signature_param_is_excluded_and_empty_values_kept() {
        let a = canonical_query(&[("B", ""), ("Signature", "x"), ("A", "1")]);
        assert_eq!(a, "A=1&B=");
    }
}
