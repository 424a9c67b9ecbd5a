//! The verification policy: each failure gets its code, in the documented
//! order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // test code; case tables

use thingcall_core::{ErrorCode, Secret, UnixMillis};
use thingcall_sign::policy::{
    InMemoryNonceStore, KeyState, V3Request, VerifyPolicy, verify_v1, verify_v3,
};
use thingcall_sign::{v1, v3};

const TS: &str = "2026-11-26T03:49:17Z";

fn now() -> UnixMillis {
    UnixMillis::parse_iso8601_seconds(TS).unwrap()
}

fn keys(id: &str) -> Option<KeyState> {
    match id {
        "testid" => Some(KeyState {
            secret: Secret::new("testsecret"),
            active: true,
        }),
        "disabled" => Some(KeyState {
            secret: Secret::new("testsecret"),
            active: false,
        }),
        _ => None,
    }
}

fn signed(overrides: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = [
        ("Action", "InvokeThingService"),
        ("Version", "2018-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", "testid"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "nonce-1"),
        ("SignatureType", ""),
        ("Timestamp", TS),
        ("Args", "{}"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        params.retain(|(n, _)| n != k);
        if let Some(v) = v {
            params.push((k.to_string(), v.to_string()));
        }
    }
    let sig = v1::sign("GET", &params, "testsecret");
    params.push(("Signature".into(), sig));
    params
}

fn code(
    params: &[(String, String)],
    nonces: &InMemoryNonceStore,
    at: UnixMillis,
) -> Result<(), String> {
    verify_v1("GET", params, &keys, nonces, at, &VerifyPolicy::default())
        .map(|_| ())
        .map_err(|e| e.wire_code().to_owned())
}

#[test]
fn v1_accepts_a_good_request_once() {
    let nonces = InMemoryNonceStore::new();
    let params = signed(&[]);
    let ok = verify_v1(
        "GET",
        &params,
        &keys,
        &nonces,
        now(),
        &VerifyPolicy::default(),
    )
    .unwrap();
    assert_eq!(ok.access_key_id, "testid");
    assert_eq!(ok.nonce, "nonce-1");
    assert_eq!(
        code(&params, &nonces, now()),
        Err("SignatureNonceUsed".into())
    );
    // The same nonce under a fresh timestamp is still a replay.
    let again = signed(&[("Timestamp", Some("2026-11-26T03:50:00Z"))]);
    assert_eq!(
        code(&again, &nonces, now()),
        Err("SignatureNonceUsed".into())
    );
}

#[test]
fn v1_failure_codes() {
    let n = InMemoryNonceStore::new();
    let cases: Vec<(&str, Vec<(String, String)>, UnixMillis, &str)> = vec![
        (
            "missing AccessKeyId",
            signed(&[("AccessKeyId", None)]),
            now(),
            "MissingAccessKeyId",
        ),
        (
            "missing nonce",
            signed(&[("SignatureNonce", None)]),
            now(),
            "MissingSignatureNonce",
        ),
        (
            "missing timestamp",
            signed(&[("Timestamp", None)]),
            now(),
            "MissingTimestamp",
        ),
        (
            "missing method",
            signed(&[("SignatureMethod", None)]),
            now(),
            "MissingSignatureMethod",
        ),
        (
            "unknown key",
            signed(&[("AccessKeyId", Some("nobody"))]),
            now(),
            "InvalidAccessKeyId.NotFound",
        ),
        (
            "disabled key",
            signed(&[("AccessKeyId", Some("disabled"))]),
            now(),
            "InvalidAccessKeyId.Inactive",
        ),
        (
            "bad timestamp format",
            signed(&[("Timestamp", Some("2026-11-26 03:49:17"))]),
            now(),
            "InvalidTimeStamp.Format",
        ),
        (
            "timestamp too old",
            signed(&[]),
            now().add_millis(15 * 60 * 1000 + 1000),
            "InvalidTimeStamp.Expired",
        ),
        (
            "timestamp in the future",
            signed(&[]),
            now().add_millis(-(15 * 60 * 1000 + 1000)),
            "InvalidTimeStamp.Expired",
        ),
        (
            "HMAC-SHA256 method",
            signed(&[("SignatureMethod", Some("HMAC-SHA256"))]),
            now(),
            "IncompleteSignature",
        ),
        (
            "version 2.0",
            signed(&[("SignatureVersion", Some("2.0"))]),
            now(),
            "IncompleteSignature",
        ),
    ];
    for (what, params, at, expected) in cases {
        assert_eq!(code(&params, &n, at), Err(expected.to_owned()), "{what}");
    }
    assert!(n.is_empty(), "failed requests must not burn nonces");
    // At the edge of the window the request is still accepted.
    assert_eq!(
        code(&signed(&[]), &n, now().add_millis(15 * 60 * 1000)),
        Ok(())
    );
}

#[test]
fn v1_mismatch_quotes_the_string_to_sign() {
    let n = InMemoryNonceStore::new();
    let mut params = signed(&[]);
    params.retain(|(k, _)| k != "Args");
    params.push(("Args".into(), "{\"tampered\":1}".into()));
    let err = verify_v1("GET", &params, &keys, &n, now(), &VerifyPolicy::default()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::SignatureDoesNotMatch);
    assert_eq!(err.http_status(), 400);
    let sts = v1::string_to_sign("GET", &v1::canonical_query(&params));
    assert_eq!(
        err.message(),
        format!(
            "Specified signature is not matched with our calculation. server string to sign is:{sts}"
        )
    );
    // aliyunsdkcore compares `Message.split(':')[1]` with its own string.
    assert_eq!(err.message().split(':').nth(1), Some(sts.as_str()));
    assert!(n.is_empty(), "a bad signature must not burn the nonce");
    // A duplicated signature parameter is a parameter error, not a mismatch.
    let mut dup = signed(&[]);
    dup.push(("Signature".into(), "x".into()));
    assert_eq!(code(&dup, &n, now()), Err("InvalidParameter".into()));
}

#[test]
fn custom_window() {
    let n = InMemoryNonceStore::new();
    let policy = VerifyPolicy {
        window_millis: 60_000,
    };
    let err = verify_v1(
        "GET",
        &signed(&[]),
        &keys,
        &n,
        now().add_millis(61_000),
        &policy,
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidTimeStampExpired);
}

fn v3_request(
    body: &[u8],
    declared_hash: Option<&str>,
    algorithm: &str,
    key: &str,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), "127.0.0.1:18080".into()),
        ("x-acs-action".into(), "InvokeThingService".into()),
        ("x-acs-date".into(), TS.into()),
        ("x-acs-signature-nonce".into(), "v3-nonce".into()),
        ("x-acs-version".into(), "2018-01-20".into()),
    ];
    if let Some(h) = declared_hash {
        headers.push(("x-acs-content-sha256".into(), h.into()));
    }
    headers.sort();
    let cq = v3::canonical_query("DeviceName=dev+1&ProductKey=a1TestPk001").unwrap();
    let hashed = v3::content_sha256(body);
    let parts = v3::SignedParts {
        method: "POST",
        path: "/",
        canonical_query: &cq,
        headers: &headers,
        hashed_payload: &hashed,
    };
    let sig = v3::sign(&parts, "testsecret");
    let auth = v3::authorization(key, &headers, &sig).replacen(v3::ALGORITHM, algorithm, 1);
    headers.push(("Authorization".into(), auth));
    headers
}

fn v3_code(
    headers: &[(String, String)],
    body: &[u8],
    nonces: &InMemoryNonceStore,
) -> Result<(), String> {
    let req = V3Request {
        method: "POST",
        path: "/",
        raw_query: "DeviceName=dev+1&ProductKey=a1TestPk001",
        headers,
        body,
    };
    verify_v3(&req, &keys, nonces, now(), &VerifyPolicy::default())
        .map(|_| ())
        .map_err(|e| e.wire_code().to_owned())
}

#[test]
fn v3_checks() {
    let n = InMemoryNonceStore::new();
    let body = b"a=1";
    let good = v3_request(
        body,
        Some(&v3::content_sha256(body)),
        v3::ALGORITHM,
        "testid",
    );
    assert_eq!(v3_code(&good, body, &n), Ok(()));
    assert_eq!(v3_code(&good, body, &n), Err("SignatureNonceUsed".into()));

    let n = InMemoryNonceStore::new();
    let no_hash = v3_request(body, None, v3::ALGORITHM, "testid");
    assert_eq!(
        v3_code(&no_hash, body, &n),
        Ok(()),
        "the hash defaults to the body's"
    );

    let n = InMemoryNonceStore::new();
    let wrong_hash = v3_request(body, Some(v3::EMPTY_BODY_SHA256), v3::ALGORITHM, "testid");
    assert_eq!(
        v3_code(&wrong_hash, body, &n),
        Err("InvalidParameter".into())
    );
    assert_eq!(
        v3_code(&good, b"a=2", &n),
        Err("InvalidParameter".into()),
        "body altered after signing"
    );
    let sm3 = v3_request(body, None, "ACS3-HMAC-SM3", "testid");
    assert_eq!(v3_code(&sm3, body, &n), Err("IncompleteSignature".into()));
    let unknown = v3_request(body, None, v3::ALGORITHM, "nobody");
    assert_eq!(
        v3_code(&unknown, body, &n),
        Err("InvalidAccessKeyId.NotFound".into())
    );
    let mut unsigned = no_hash.clone();
    unsigned.push(("x-acs-extra".into(), "1".into()));
    assert_eq!(
        v3_code(&unsigned, body, &n),
        Err("IncompleteSignature".into()),
        "every x-acs-* header must be signed"
    );
    let mut garbled = no_hash.clone();
    garbled.last_mut().unwrap().1 = "ACS3-HMAC-SHA256 nonsense".into();
    assert_eq!(
        v3_code(&garbled, body, &n),
        Err("IncompleteSignature".into())
    );
    let mut tampered = no_hash.clone();
    tampered[0].1 = "evil.example:80".into();
    let err = v3_code(&tampered, body, &n).unwrap_err();
    assert_eq!(err, "SignatureDoesNotMatch");
    assert!(n.is_empty());
}
