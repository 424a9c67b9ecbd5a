//! The published vectors in `test-vectors/`, one check per case.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::decode_query;
use serde::Deserialize;
use thingcall_sign::device::{MqttClientId, password, password_content, username, verify_password};
use thingcall_sign::{SignMethod, v1, v3};

fn load<T: for<'de> Deserialize<'de>>(file: &str) -> T {
    let path = format!("{}/test-vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
}

#[derive(Deserialize)]
struct Cases<T> {
    cases: Vec<T>,
}

#[derive(Deserialize)]
struct V1Case {
    name: String,
    method: String,
    secret: String,
    #[serde(default)]
    params: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    raw_query: Option<String>,
    canonical: String,
    #[serde(default)]
    string_to_sign: Option<String>,
    signature: String,
}

#[test]
fn signature_v1_vectors() {
    let cases: Cases<V1Case> = load("signature-v1.json");
    assert!(cases.cases.len() >= 2);
    for case in cases.cases {
        let params: Vec<(String, String)> = match (&case.params, &case.raw_query) {
            (Some(map), _) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            (None, Some(raw)) => decode_query(raw),
            (None, None) => panic!("{}: no input", case.name),
        };
        let canonical = v1::canonical_query(&params);
        assert_eq!(canonical, case.canonical, "{}: canonical", case.name);
        let sts = v1::string_to_sign(&case.method, &canonical);
        if let Some(expected) = &case.string_to_sign {
            assert_eq!(&sts, expected, "{}: string to sign", case.name);
        }
        assert_eq!(
            v1::sign(&case.method, &params, &case.secret),
            case.signature,
            "{}: signature",
            case.name
        );
        let check = v1::check(&case.method, &params, &case.secret, &case.signature);
        assert!(check.matched, "{}", case.name);
        assert_eq!(check.string_to_sign, sts);
        // When the capture carries its Signature, it is the one computed.
        if let Some((_, sig)) = params.iter().find(|(k, _)| k == "Signature") {
            assert_eq!(sig, &case.signature, "{}: captured signature", case.name);
        }
    }
}

#[derive(Deserialize)]
struct V3Case {
    name: String,
    method: String,
    path: String,
    access_key_id: String,
    secret: String,
    query: String,
    body: String,
    headers: std::collections::BTreeMap<String, String>,
    canonical_request: String,
    hashed_canonical_request: String,
    signature: String,
    authorization: String,
}

#[test]
fn signature_v3_vectors() {
    let cases: Cases<V3Case> = load("signature-v3.json");
    assert!(!cases.cases.is_empty());
    for case in cases.cases {
        // BTreeMap order is the sorted, lower-cased order v3 signs in.
        let headers: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect();
        let canonical_query = v3::canonical_query(&case.query).unwrap();
        let hashed = v3::content_sha256(case.body.as_bytes());
        assert_eq!(
            Some(&hashed),
            case.headers.get("x-acs-content-sha256"),
            "{}",
            case.name
        );
        let parts = v3::SignedParts {
            method: &case.method,
            path: &case.path,
            canonical_query: &canonical_query,
            headers: &headers,
            hashed_payload: &hashed,
        };
        let canonical = v3::canonical_request(&parts);
        assert_eq!(
            canonical, case.canonical_request,
            "{}: canonical request",
            case.name
        );
        let sts = v3::string_to_sign(&canonical);
        assert_eq!(
            sts,
            format!("ACS3-HMAC-SHA256\n{}", case.hashed_canonical_request),
            "{}",
            case.name
        );
        let sig = v3::sign(&parts, &case.secret);
        assert_eq!(sig, case.signature, "{}: signature", case.name);
        assert_eq!(
            v3::authorization(&case.access_key_id, &headers, &sig),
            case.authorization,
            "{}",
            case.name
        );
        let parsed = v3::Authorization::parse(&case.authorization).unwrap();
        assert_eq!(parsed.credential, case.access_key_id);
        assert_eq!(parsed.signature, case.signature);
    }
}

#[derive(Deserialize)]
struct MqttCase {
    name: String,
    client_id: String,
    mqtt_client_id: String,
    username: String,
    device_name: String,
    product_key: String,
    device_secret: String,
    timestamp: String,
    signmethod: String,
    content: String,
    password: String,
}

#[test]
fn mqtt_password_vectors() {
    let cases: Cases<MqttCase> = load("mqtt-password.json");
    assert!(cases.cases.len() >= 2);
    for case in cases.cases {
        let id = MqttClientId::parse(&case.mqtt_client_id).unwrap();
        assert_eq!(id.id(), case.client_id, "{}", case.name);
        assert_eq!(
            id.timestamp(),
            Some(case.timestamp.as_str()),
            "{}",
            case.name
        );
        let method: SignMethod = case.signmethod.parse().unwrap();
        assert_eq!(id.sign_method().unwrap(), method);
        assert_eq!(
            username(&case.device_name, &case.product_key),
            case.username,
            "{}",
            case.name
        );
        let content = password_content(
            id.id(),
            &case.device_name,
            &case.product_key,
            id.timestamp(),
        );
        assert_eq!(content, case.content, "{}: content", case.name);
        let pw = password(method, &case.device_secret, &content);
        assert!(
            pw.eq_ignore_ascii_case(&case.password),
            "{}: password",
            case.name
        );
        for given in [case.password.to_uppercase(), case.password.to_lowercase()] {
            assert!(
                verify_password(
                    &id,
                    &case.device_name,
                    &case.product_key,
                    &case.device_secret,
                    &given
                )
                .unwrap()
            );
        }
        assert!(
            !verify_password(
                &id,
                &case.device_name,
                &case.product_key,
                "wrong",
                &case.password
            )
            .unwrap()
        );
    }
}
