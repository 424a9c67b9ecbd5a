//! Signatures made by the official Python SDK (`aliyun-python-sdk-core`)
//! verify here, for a few hundred random parameter sets.
//!
//! The test runs `tests/sdk/sign_with_aliyunsdkcore.py` with the Python
//! named by `THINGCALL_SDK_PYTHON` (or `.venv/bin/python` at the workspace
//! root). CI installs the SDK into that venv and sets
//! `THINGCALL_REQUIRE_SDK=1`, which turns a missing SDK into a failure; a
//! developer machine without the venv skips the test with a notice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

mod common;

use std::path::PathBuf;
use std::process::Command;

use thingcall_core::{Secret, UnixMillis};
use thingcall_sign::policy::{InMemoryNonceStore, KeyState, VerifyPolicy, verify_v1};
use thingcall_sign::v1;

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("THINGCALL_SDK_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    venv.exists().then_some(venv)
}

#[test]
fn official_python_sdk_signatures_verify() {
    let required = std::env::var("THINGCALL_REQUIRE_SDK").is_ok_and(|v| v == "1");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/sign_with_aliyunsdkcore.py");
    let Some(python) = python() else {
        assert!(
            !required,
            "THINGCALL_REQUIRE_SDK=1 but no Python with aliyunsdkcore was found"
        );
        eprintln!(
            "skipped: no .venv with aliyun-python-sdk-core (run .ci/run or set THINGCALL_SDK_PYTHON)"
        );
        return;
    };
    let output = Command::new(&python)
        .arg(&script)
        .arg("300")
        .arg("20261126")
        .output()
        .expect("run python");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !required && stderr.contains("No module named 'aliyunsdkcore'") {
            eprintln!("skipped: {} has no aliyunsdkcore", python.display());
            return;
        }
        panic!("the SDK script failed: {stderr}");
    }
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut checked = 0;
    for line in stdout.lines() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let method = case["method"].as_str().unwrap();
        let url = case["url"].as_str().unwrap();
        let secret = case["secret"].as_str().unwrap();
        let mut params = common::decode_query(url.strip_prefix("/?").unwrap());
        for (k, v) in case["body"].as_object().unwrap() {
            params.push((k.clone(), v.as_str().unwrap().to_owned()));
        }
        let signature = params
            .iter()
            .find(|(k, _)| k == "Signature")
            .unwrap()
            .1
            .clone();

        // The server's string-to-sign is byte for byte the SDK's.
        let check = v1::check(method, &params, secret, &signature);
        assert_eq!(
            check.string_to_sign,
            case["string_to_sign"].as_str().unwrap(),
            "{line}"
        );
        assert!(check.matched, "{line}");

        // And the full policy accepts it at the SDK's own timestamp.
        let ts = params
            .iter()
            .find(|(k, _)| k == "Timestamp")
            .unwrap()
            .1
            .clone();
        let now = UnixMillis::parse_iso8601_seconds(&ts).unwrap();
        let owned = secret.to_owned();
        let keys = move |id: &str| {
            (id == "testid").then(|| KeyState {
                secret: Secret::new(owned.clone()),
                active: true,
            })
        };
        verify_v1(
            method,
            &params,
            &keys,
            &InMemoryNonceStore::new(),
            now,
            &VerifyPolicy::default(),
        )
        .unwrap();
        checked += 1;
    }
    assert_eq!(checked, 300);
}
