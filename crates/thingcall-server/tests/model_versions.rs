//! Compiled thing models follow the published version, not its name: a
//! version name published again after it was pruned validates against the
//! new text, and the cache of compiled models never outgrows what the
//! registry keeps.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::*;
use thingcall_server::ServerConfig;

/// The demo model with `Calibrate`'s `Offset` turned into text.
fn text_offset_model() -> String {
    let mut doc: serde_json::Value = serde_json::from_str(MODEL).unwrap();
    for s in doc["services"].as_array_mut().unwrap() {
        if s["identifier"] == "Calibrate" {
            s["inputData"][0]["dataType"] =
                serde_json::json!({"type": "text", "specs": {"length": "16"}});
        }
    }
    doc.to_string()
}

/// Invokes `Calibrate` on a device that never connected: valid Args end in
/// `iot.device.InactiveDevice`, invalid ones in InvokeThingServiceFailed.
async fn calibrate_code(a: &str, iot_id: &str, args: &str) -> String {
    let (_, body) = call(
        a,
        "InvokeThingService",
        &[
            ("IotId", iot_id),
            ("Identifier", "Calibrate"),
            ("Args", args),
        ],
    )
    .await;
    body["Code"].as_str().unwrap_or_default().to_owned()
}

async fn compiled_models(a: &str) -> u64 {
    let (_, _, text) = raw(a, "GET", "/metrics", &[], b"").await;
    text.lines()
        .find_map(|l| l.strip_prefix("thingcall_compiled_models "))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_version_name_gets_its_own_validators() {
    let h = Harness::start(ServerConfig::default()).await;
    let a = h.http.as_str();
    // `product` publishes the demo model (Offset is a float).
    let pk = product(a, "Versions_1").await;
    let (iot_id, _) = device(a, &pk, "dev1").await;
    ok(
        a,
        "PublishThingModel",
        &[("ProductKey", &pk), ("ModelVersion", "v1")],
    )
    .await;
    assert_eq!(
        calibrate_code(a, &iot_id, r#"{"Offset":1.5}"#).await,
        "iot.device.InactiveDevice"
    );
    // Ten more versions push v1 out of the ten that are kept.
    for n in 2..=11 {
        ok(
            a,
            "PublishThingModel",
            &[("ProductKey", &pk), ("ModelVersion", &format!("v{n}"))],
        )
        .await;
    }
    // v1 again, now with a text Offset.
    let text_model = text_offset_model();
    ok(
        a,
        "ImportThingModelTsl",
        &[("ProductKey", &pk), ("TslStr", &text_model)],
    )
    .await;
    ok(
        a,
        "PublishThingModel",
        &[("ProductKey", &pk), ("ModelVersion", "v1")],
    )
    .await;
    assert_eq!(
        calibrate_code(a, &iot_id, r#"{"Offset":"abc"}"#).await,
        "iot.device.InactiveDevice",
        "the new v1 takes text"
    );
    assert_eq!(
        calibrate_code(a, &iot_id, r#"{"Offset":1.5}"#).await,
        "iot.device.InvokeThingServiceFailed",
        "and no longer a number"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_models_are_evicted_with_pruned_versions_and_deleted_products() {
    let h = Harness::start(ServerConfig::default()).await;
    let a = h.http.as_str();
    let pk = product(a, "Versions_2").await;
    let (iot_id, _) = device(a, &pk, "dev1").await;
    for n in 0..30 {
        ok(
            a,
            "PublishThingModel",
            &[("ProductKey", &pk), ("ModelVersion", &format!("r{n}"))],
        )
        .await;
        // Each call compiles the version in use.
        calibrate_code(a, &iot_id, r#"{"Offset":1.5}"#).await;
    }
    let cached = compiled_models(a).await;
    assert!(
        (1..=10).contains(&cached),
        "{cached} compiled models cached for a product that keeps 10 versions"
    );
    ok(a, "DeleteProduct", &[("ProductKey", &pk)]).await;
    assert_eq!(compiled_models(a).await, 0);
    h.stop().await;
}
