//! Signing and verification on the request hot path.

#![allow(missing_docs, clippy::unwrap_used)] // criterion macros; bench code

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use thingcall_core::{Secret, UnixMillis};
use thingcall_sign::device::{MqttClientId, password, password_content, verify_password};
use thingcall_sign::policy::{KeyState, NonceStore, V3Request, VerifyPolicy, verify_v1, verify_v3};
use thingcall_sign::{v1, v3};

/// A nonce store that accepts everything, so the benchmark measures the
/// signature and not the growth of a nonce table.
struct Fresh;
impl NonceStore for Fresh {
    fn check_and_record(&self, _: &str, _: &str, _: UnixMillis, _: UnixMillis) -> bool {
        true
    }
}

fn invoke_params() -> Vec<(String, String)> {
    [
        ("ProductKey", "a1TestPk001"),
        ("DeviceName", "dev1"),
        ("Identifier", "Calibrate"),
        (
            "Args",
            r#"{"Offset":1.5,"Mode":1,"Operator":"bob","StartAt":"1700000000000"}"#,
        ),
        ("Version", "2018-01-20"),
        ("Action", "InvokeThingService"),
        ("Format", "JSON"),
        ("RegionId", "cn-shanghai"),
        ("Timestamp", "2026-11-26T03:49:17Z"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureType", ""),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "40fb262e1e1e20d58497fd2f067400a6"),
        ("AccessKeyId", "testid"),
        ("Qos", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn benches(c: &mut Criterion) {
    let mut params = invoke_params();
    c.bench_function("v1_sign_invoke_16_params", |b| {
        b.iter(|| v1::sign("POST", black_box(&params), "testsecret"))
    });

    let signature = v1::sign("POST", &params, "testsecret");
    params.push(("Signature".into(), signature));
    assert_eq!(params.len(), 16);
    let keys = |id: &str| {
        (id == "testid").then(|| KeyState {
            secret: Secret::new("testsecret"),
            active: true,
        })
    };
    let now = UnixMillis::parse_iso8601_seconds("2026-11-26T03:50:00Z").unwrap();
    let policy = VerifyPolicy::default();
    c.bench_function("v1_verify_invoke_16_params", |b| {
        b.iter(|| verify_v1("POST", black_box(&params), &keys, &Fresh, now, &policy).unwrap())
    });

    let query = "Args=%7B%22Offset%22%3A1.5%7D&DeviceName=dev+1&Identifier=Calibrate&ProductKey=a1TestPk001";
    let mut signed: Vec<(String, String)> = [
        ("accept", "application/json"),
        ("host", "127.0.0.1:18080"),
        ("x-acs-action", "InvokeThingService"),
        ("x-acs-content-sha256", v3::EMPTY_BODY_SHA256),
        ("x-acs-date", "2026-11-26T03:49:18Z"),
        ("x-acs-signature-nonce", "b6868c23405dc3ceee9a215fefeb1ab0"),
        ("x-acs-version", "2018-01-20"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let canonical_query = v3::canonical_query(query).unwrap();
    let parts = v3::SignedParts {
        method: "POST",
        path: "/",
        canonical_query: &canonical_query,
        headers: &signed,
        hashed_payload: v3::EMPTY_BODY_SHA256,
    };
    let sig = v3::sign(&parts, "testsecret");
    let auth = v3::authorization("testid", &signed, &sig);
    signed.push(("Authorization".into(), auth));
    let request = V3Request {
        method: "POST",
        path: "/",
        raw_query: query,
        headers: &signed,
        body: b"",
    };
    c.bench_function("v3_verify_invoke", |b| {
        b.iter(|| verify_v3(black_box(&request), &keys, &Fresh, now, &policy).unwrap())
    });

    let client_id = MqttClientId::parse(
        "a1TestPk001&dev1|securemode=3,signmethod=hmacsha1,ext=1,_ss=1,lan=Python,_v=1.2.13,timestamp=1700000000|",
    )
    .unwrap();
    let pw = password(
        client_id.sign_method().unwrap(),
        "secret",
        &password_content(client_id.id(), "dev1", "a1TestPk001", client_id.timestamp()),
    );
    c.bench_function("mqtt_password_verify_hmacsha1", |b| {
        b.iter(|| {
            verify_password(
                black_box(&client_id),
                "dev1",
                "a1TestPk001",
                "secret",
                black_box(&pw),
            )
            .unwrap()
        })
    });
}

criterion_group!(sign, benches);
criterion_main!(sign);
