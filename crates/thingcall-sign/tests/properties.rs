//! Properties of signing and verification.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use proptest::prelude::*;
use thingcall_core::encoding::percent_encode;
use thingcall_core::{Secret, UnixMillis};
use thingcall_sign::device::MqttClientId;
use thingcall_sign::policy::{KeyState, NonceStore, V3Request, VerifyPolicy, verify_v3};
use thingcall_sign::{v1, v3};

/// Strings with the characters signers get wrong: unicode, `* ~ + / & =`,
/// spaces, `%`, and empty values.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9 *~+/&=%:!'()温度é😀_.-]{1,16}",
        any::<String>().prop_map(|s| s.chars().filter(|c| *c != '\0').take(12).collect()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z][A-Za-z0-9.]{0,12}", "[a-zA-Z0-9 *~+/&=温é]{1,8}"]
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::btree_map(name(), value(), 1..12)
        .prop_map(|m| {
            m.into_iter()
                .filter(|(k, _)| k != "Signature")
                .collect::<Vec<_>>()
        })
        .prop_filter("need one parameter", |v| !v.is_empty())
}

fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{1,30}"
}

/// Replaces the character at `pos` (mod length) with a different one.
fn mutate(s: &str, pos: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return "x".to_owned();
    }
    let i = pos % chars.len();
    let replacement = if chars[i] == 'a' { 'b' } else { 'a' };
    chars
        .iter()
        .enumerate()
        .map(|(j, c)| if j == i { replacement } else { *c })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn v1_sign_then_verify(params in params(), secret in secret(), post in any::<bool>()) {
        let method = if post { "POST" } else { "GET" };
        let sig = v1::sign(method, &params, &secret);
        prop_assert!(v1::check(method, &params, &secret, &sig).matched);
    }

    #[test]
    fn v1_one_pass_and_two_pass_strings_agree(params in params(), post in any::<bool>()) {
        let method = if post { "POST" } else { "GET" };
        prop_assert_eq!(v1::string_to_sign_of(method, &params), v1::string_to_sign(method, &v1::canonical_query(&params)));
    }

    #[test]
    fn v1_is_invariant_under_reordering(params in params(), secret in secret(), seed in any::<u64>()) {
        let sig = v1::sign("GET", &params, &secret);
        let mut shuffled = params.clone();
        // A deterministic shuffle driven by the seed.
        let n = shuffled.len();
        for i in (1..n).rev() {
            let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        prop_assert_eq!(v1::sign("GET", &shuffled, &secret), sig);
    }

    #[test]
    fn v1_any_change_breaks_the_signature(params in params(), secret in secret(), which in any::<usize>(), pos in any::<usize>(), part in 0u8..4) {
        let sig = v1::sign("GET", &params, &secret);
        let mut changed = params.clone();
        let i = which % changed.len();
        let (mut method, mut key) = ("GET".to_owned(), secret.clone());
        match part {
            0 => changed[i].1 = mutate(&changed[i].1, pos),
            1 => {
                changed[i].0 = mutate(&changed[i].0, pos);
                prop_assume!(changed[i].0 != "Signature");
                prop_assume!(!params.iter().any(|(k, _)| *k == changed[i].0));
            }
            2 => method = "POST".to_owned(),
            _ => key = mutate(&secret, pos),
        }
        prop_assert!(!v1::check(&method, &changed, &key, &sig).matched);
    }

    #[test]
    fn client_id_parser_never_panics(s in any::<String>()) {
        if let Ok(id) = MqttClientId::parse(&s) {
            let _ = id.sign_method();
            let _ = id.ext();
            // What parses prints back to something that parses the same.
            prop_assert_eq!(MqttClientId::parse(&id.to_string()).unwrap(), id);
        }
    }

    #[test]
    fn client_id_parser_never_panics_on_block_shapes(s in "[a-z&.]{0,8}\\|([ a-z_=0-9,|]{0,30})") {
        let _ = MqttClientId::parse(&s);
    }
}

// ------------------------------------------------------------------- v3

struct Fresh;
impl NonceStore for Fresh {
    fn check_and_record(&self, _: &str, _: &str, _: UnixMillis, _: UnixMillis) -> bool {
        true
    }
}

const DATE: &str = "2026-11-26T03:49:18Z";

fn keys(id: &str) -> Option<KeyState> {
    (id == "testid").then(|| KeyState {
        secret: Secret::new("testsecret"),
        active: true,
    })
}

struct Signed {
    raw_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn sign_v3(params: &[(String, String)], body: &[u8], extra: &[(String, String)]) -> Signed {
    let raw_query: String = params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), "127.0.0.1:8080".into()),
        ("x-acs-action".into(), "InvokeThingService".into()),
        ("x-acs-content-sha256".into(), v3::content_sha256(body)),
        ("x-acs-date".into(), DATE.into()),
        ("x-acs-signature-nonce".into(), "n1".into()),
        ("x-acs-version".into(), "2018-01-20".into()),
    ];
    headers.extend(extra.iter().cloned());
    headers.sort();
    let canonical_query = v3::canonical_query(&raw_query).unwrap();
    let hashed = v3::content_sha256(body);
    let parts = v3::SignedParts {
        method: "POST",
        path: "/",
        canonical_query: &canonical_query,
        headers: &headers,
        hashed_payload: &hashed,
    };
    let sig = v3::sign(&parts, "testsecret");
    let auth = v3::authorization("testid", &headers, &sig);
    headers.push(("Authorization".into(), auth));
    Signed {
        raw_query,
        headers,
        body: body.to_vec(),
    }
}

fn verify(s: &Signed, method: &str) -> Result<(), thingcall_core::ApiError> {
    let now = UnixMillis::parse_iso8601_seconds(DATE).unwrap();
    let req = V3Request {
        method,
        path: "/",
        raw_query: &s.raw_query,
        headers: &s.headers,
        body: &s.body,
    };
    verify_v3(&req, &keys, &Fresh, now, &VerifyPolicy::default()).map(|_| ())
}

fn header_value() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/;=.,*-]{1,20}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn v3_sign_then_verify_in_any_order(params in params(), body in proptest::collection::vec(any::<u8>(), 0..32), ua in header_value(), seed in any::<u64>()) {
        let mut signed = sign_v3(&params, &body, &[("user-agent".into(), ua)]);
        prop_assert!(verify(&signed, "POST").is_ok());
        // Reorder the headers and the query pairs: still valid.
        let n = signed.headers.len() as u64;
        signed.headers.rotate_left((seed % n) as usize);
        let mut pairs: Vec<&str> = signed.raw_query.split('&').collect();
        pairs.reverse();
        signed.raw_query = pairs.join("&");
        prop_assert!(verify(&signed, "POST").is_ok());
    }

    #[test]
    fn v3_any_change_breaks_the_signature(params in params(), body in proptest::collection::vec(any::<u8>(), 1..32), which in any::<usize>(), pos in any::<usize>(), part in 0u8..4) {
        let mut signed = sign_v3(&params, &body, &[]);
        let mut method = "POST";
        match part {
            0 => {
                let i = which % params.len();
                let mut changed = params.clone();
                changed[i].1 = mutate(&changed[i].1, pos);
                signed.raw_query = changed.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&");
            }
            1 => {
                let i = which % (signed.headers.len() - 1);
                let h = &mut signed.headers[i];
                prop_assume!(h.0 != "x-acs-date" && h.0 != "x-acs-content-sha256");
                h.1 = mutate(&h.1, pos);
            }
            2 => {
                let i = pos % signed.body.len();
                signed.body[i] ^= 1;
            }
            _ => method = "GET",
        }
        prop_assert!(verify(&signed, method).is_err());
    }
}
