//! Building signed requests: pure functions of the action, the parameters,
//! the credentials, the time and the nonce.
//!
//! v1 requests follow `aliyun-python-sdk-core` byte for byte: `POST /?` with
//! the business parameters first, then `Version`, `Action`, `Format`,
//! `RegionId`, `Timestamp`, `SignatureMethod`, `SignatureType` (empty),
//! `SignatureVersion`, `SignatureNonce`, `AccessKeyId`, `Signature`, and an
//! empty body. A query over 16 KiB moves the business parameters into a
//! form body (the signature covers both) so large thing models fit.

use thingcall_core::UnixMillis;
use thingcall_sign::{v1, v3};
use thingcall_wire::Format;
use thingcall_wire::form::encode_pairs;

use crate::credentials::Credentials;

/// The longest query string a request puts its business parameters in.
pub const MAX_QUERY: usize = 16 * 1024;

/// A request ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    /// HTTP method.
    pub method: &'static str,
    /// Path and query, e.g. `/?Action=...`.
    pub path_and_query: String,
    /// Headers to send (besides `Host`, which the HTTP client sets).
    pub headers: Vec<(String, String)>,
    /// The body (empty or a form).
    pub body: Vec<u8>,
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A v1 (HMAC-SHA1) request.
#[allow(clippy::too_many_arguments)] // each input is one part of the signed string
pub fn v1_request(
    action: &str,
    business: &[(String, String)],
    credentials: &Credentials,
    region: &str,
    format: Format,
    timestamp: UnixMillis,
    nonce: &str,
) -> SignedRequest {
    let ts = timestamp.to_iso8601_seconds();
    let mut common: Vec<(&str, &str)> = vec![
        ("Version", thingcall_core::API_VERSION),
        ("Action", action),
        ("Format", format.as_str()),
        ("RegionId", region),
        ("Timestamp", &ts),
        ("SignatureMethod", v1::SIGNATURE_METHOD),
        ("SignatureType", ""),
        ("SignatureVersion", v1::SIGNATURE_VERSION),
        ("SignatureNonce", nonce),
        ("AccessKeyId", &credentials.access_key_id),
    ];
    if let Some(token) = &credentials.security_token {
        common.push(("SecurityToken", token.expose()));
    }
    let business_ref: Vec<(&str, &str)> = business
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let all: Vec<(&str, &str)> = business_ref.iter().chain(common.iter()).copied().collect();
    let signature = v1::sign("POST", &all, credentials.access_key_secret.expose());
    let headers = vec![
        ("x-acs-action".to_owned(), action.to_owned()),
        (
            "x-acs-version".to_owned(),
            thingcall_core::API_VERSION.to_owned(),
        ),
    ];
    let in_query = encode_pairs(
        all.iter()
            .copied()
            .chain(std::iter::once(("Signature", signature.as_str()))),
    );
    if in_query.len() <= MAX_QUERY {
        return SignedRequest {
            method: "POST",
            path_and_query: format!("/?{in_query}"),
            headers,
            body: Vec::new(),
        };
    }
    let query = encode_pairs(
        common
            .iter()
            .copied()
            .chain(std::iter::once(("Signature", signature.as_str()))),
    );
    let mut headers = headers;
    headers.push(("content-type".to_owned(), FORM.to_owned()));
    SignedRequest {
        method: "POST",
        path_and_query: format!("/?{query}"),
        headers,
        body: encode_pairs(business_ref).into_bytes(),
    }
}

/// A v3 (ACS3-HMAC-SHA256) request for `host` (with the port, as the
/// `Host` header will carry it).
pub fn v3_request(
    action: &str,
    business: &[(String, String)],
    credentials: &Credentials,
    host: &str,
    timestamp: UnixMillis,
    nonce: &str,
) -> SignedRequest {
    let mut sorted: Vec<(&str, &str)> = business
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    let query = encode_pairs(sorted.iter().copied());
    let (query, body, form) = if query.len() <= MAX_QUERY {
        (query, Vec::new(), false)
    } else {
        (String::new(), query.into_bytes(), true)
    };
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host.to_owned()),
        ("x-acs-action".into(), action.to_owned()),
        ("x-acs-content-sha256".into(), v3::content_sha256(&body)),
        ("x-acs-date".into(), timestamp.to_iso8601_seconds()),
        ("x-acs-signature-nonce".into(), nonce.to_owned()),
        (
            "x-acs-version".into(),
            thingcall_core::API_VERSION.to_owned(),
        ),
    ];
    if let Some(token) = &credentials.security_token {
        headers.push(("x-acs-security-token".into(), token.expose().to_owned()));
    }
    if form {
        headers.push(("content-type".into(), FORM.into()));
    }
    headers.sort();
    let canonical_query = v3::canonical_query_of_pairs(&decoded(&query));
    let hashed = headers
        .iter()
        .find(|(k, _)| k == "x-acs-content-sha256")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let parts = v3::SignedParts {
        method: "POST",
        path: "/",
        canonical_query: &canonical_query,
        headers: &headers,
        hashed_payload: &hashed,
    };
    let signature = v3::sign(&parts, credentials.access_key_secret.expose());
    let authorization = v3::authorization(&credentials.access_key_id, &headers, &signature);
    headers.retain(|(k, _)| k != "host");
    headers.push(("authorization".into(), authorization));
    let path_and_query = if query.is_empty() {
        "/".to_owned()
    } else {
        format!("/?{query}")
    };
    SignedRequest {
        method: "POST",
        path_and_query,
        headers,
        body,
    }
}

/// The decoded pairs of an encoded query we built ourselves.
fn decoded(query: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let _ = thingcall_wire::form::decode_pairs(query.as_bytes(), &mut out);
    out
}

/// A random nonce: 32 hex digits, like the Python SDK's.
pub fn random_nonce() -> String {
    let mut bytes = [0u8; 16];
    // A failing OS random source leaves zeros; the server would then refuse
    // the reused nonce rather than accept a replay.
    let _ = getrandom::fill(&mut bytes);
    let mut s = String::with_capacity(32);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_parameters_move_to_the_body() {
        let creds = Credentials::new("id", "secret");
        let big = vec![("TslStr".to_owned(), "x".repeat(MAX_QUERY + 1))];
        let r = v1_request(
            "ImportThingModelTsl",
            &big,
            &creds,
            "cn-shanghai",
            Format::Json,
            UnixMillis::new(0),
            "n",
        );
        assert!(r.path_and_query.len() < 1024);
        assert!(r.body.starts_with(b"TslStr=xxx"));
        let r = v3_request(
            "ImportThingModelTsl",
            &big,
            &creds,
            "h:1",
            UnixMillis::new(0),
            "n",
        );
        assert_eq!(r.path_and_query, "/");
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| k == "content-type" && v == FORM)
        );
        assert_eq!(random_nonce().len(), 32);
        assert_ne!(random_nonce(), random_nonce());
    }
}
