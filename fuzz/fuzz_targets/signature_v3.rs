//! `Authorization` header parsing and the whole v3 verification policy on
//! arbitrary headers, query and body: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thingcall_core::{Secret, UnixMillis};
use thingcall_sign::policy::{InMemoryNonceStore, KeyState, V3Request, VerifyPolicy, verify_v3};
use thingcall_sign::v3::Authorization;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Authorization::parse(&text);
    // Lines are headers (`name: value`) until an empty line; then the
    // query line, then the body.
    let mut lines = text.split('\n');
    let mut headers = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let query = lines.next().unwrap_or_default().to_owned();
    let body: Vec<u8> = lines.collect::<Vec<_>>().join("\n").into_bytes();
    let keys = |id: &str| {
        (id == "testid").then(|| KeyState {
            secret: Secret::new("testsecret"),
            active: true,
        })
    };
    let nonces = InMemoryNonceStore::new();
    for method in ["GET", "POST"] {
        let request = V3Request {
            method,
            path: "/",
            raw_query: &query,
            headers: &headers,
            body: &body,
        };
        let _ = verify_v3(
            &request,
            &keys,
            &nonces,
            UnixMillis::new(1_700_000_000_000),
            &VerifyPolicy::default(),
        );
    }
});
