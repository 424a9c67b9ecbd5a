//! The official peers over TLS and WebSocket, changed only in endpoint and
//! CA: the classic and tea Python SDKs over HTTPS, linkkit over MQTT/TLS,
//! paho-mqtt over ws:// and wss://, and the official Node device SDK over
//! mqtts:// on the plain MQTT port and over wss:// (with `@alicloud/pop-core`
//! over HTTPS). Skipped without the SDKs unless `THINGCALL_REQUIRE_SDK=1`
//! (CI), like `sdk.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

mod common;

use std::path::PathBuf;

use common::peers::*;
use common::*;
use thingcall_gateway::GatewayConfig;
use thingcall_server::ServerConfig;

fn port(addr: &str) -> String {
    addr.rsplit(':').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdks_linkkit_and_paho_over_tls_and_websocket() {
    let Some(python) = python_with("aliyunsdkiot, alibabacloud_iot20180120, linkkit, paho") else {
        return;
    };
    let h = Harness::start_tls(ServerConfig::default(), GatewayConfig::default()).await;
    let t = h.tls.as_ref().unwrap();
    let script = compat().join("tls_peers.py").to_string_lossy().into_owned();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("demo/model.json")
        .to_string_lossy()
        .into_owned();
    let ca = t.ca.to_string_lossy().into_owned();
    run_script(
        &python,
        &[
            script,
            t.https.clone(),
            port(&t.mqtts),
            port(&t.mqtt_ws),
            port(&t.mqtt_wss),
            KEY_ID.into(),
            KEY_SECRET.into(),
            model,
            ca.clone(),
        ],
        &[("ALIBABA_CLOUD_CA_BUNDLE", ca)],
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_device_sdk_over_mqtts_on_the_plain_port_and_over_wss() {
    let Some(node) = node_with("alibabacloud-iot-device-sdk") else {
        return;
    };
    let h = Harness::start_tls(ServerConfig::default(), GatewayConfig::default()).await;
    let t = h.tls.as_ref().unwrap();
    let pk = product(&h.http, "NodeTls_1").await;
    let script = compat()
        .join("node_device_tls.js")
        .to_string_lossy()
        .into_owned();
    let ca = t.ca.to_string_lossy().into_owned();
    for (dn, broker) in [
        ("node-mqtts", format!("mqtts://127.0.0.1:{}", port(&h.mqtt))),
        (
            "node-wss",
            format!("wss://127.0.0.1:{}/mqtt", port(&t.mqtt_wss)),
        ),
    ] {
        let (_, secret) = device(&h.http, &pk, dn).await;
        run_script(
            &node,
            &[
                script.clone(),
                format!("https://{}", t.https),
                KEY_ID.into(),
                KEY_SECRET.into(),
                pk.clone(),
                dn.into(),
                secret,
                broker,
                "someone-else".into(),
            ],
            &[("NODE_EXTRA_CA_CERTS", ca.clone())],
        )
        .await;
    }
    h.stop().await;
}
