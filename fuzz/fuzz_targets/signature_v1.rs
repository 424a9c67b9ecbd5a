//! The whole v1 verification policy on decoded parameters. Arbitrary
//! parameters never panic it; the same parameters signed with the right
//! key and a fresh timestamp always verify, and verify only once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thingcall_core::{Secret, UnixMillis};
use thingcall_sign::policy::{InMemoryNonceStore, KeyState, VerifyPolicy, verify_v1};
use thingcall_sign::v1;

const SIGNED: [&str; 6] = [
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
];

fuzz_target!(|data: &[u8]| {
    let mut pairs = Vec::new();
    if thingcall_wire::form::decode_pairs(data, &mut pairs).is_err() {
        return;
    }
    let keys = |id: &str| {
        (id == "testid").then(|| KeyState {
            secret: Secret::new("testsecret"),
            active: true,
        })
    };
    let nonces = InMemoryNonceStore::new();
    let now = UnixMillis::new(1_700_000_000_000);
    let policy = VerifyPolicy::default();
    for method in ["GET", "POST"] {
        let _ = verify_v1(method, &pairs, &keys, &nonces, now, &policy);
    }

    let mut signed: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| !SIGNED.contains(&k.as_str()))
        .collect();
    for (k, v) in [
        ("AccessKeyId", "testid"),
        ("SignatureMethod", v1::SIGNATURE_METHOD),
        ("SignatureVersion", v1::SIGNATURE_VERSION),
        ("SignatureNonce", "fuzz-nonce"),
        ("Timestamp", "2023-11-14T22:13:20Z"),
    ] {
        signed.push((k.to_owned(), v.to_owned()));
    }
    let signature = v1::sign("POST", &signed, "testsecret");
    signed.push(("Signature".to_owned(), signature));
    let first = verify_v1("POST", &signed, &keys, &nonces, now, &policy);
    assert!(
        first.is_ok(),
        "a correctly signed request failed: {first:?}"
    );
    let replay = verify_v1("POST", &signed, &keys, &nonces, now, &policy);
    assert!(replay.is_err(), "a nonce was accepted twice");
});
