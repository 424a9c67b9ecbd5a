//! The official peers over TLS and WebSocket, changed only in endpoint and
//! CA: the classic and tea Python SDKs over HTTPS, linkkit over MQTT/TLS,
//! paho-mqtt over ws:// and wss://, and the official Node device SDK over
//! mqtts:// on the plain MQTT port and over wss:// (with `@alicloud/pop-core`
//! over HTTPS). Skipped without the SDKs unless `THINGCALL_REQUIRE_SDK=1`
//! (CI), like `sdk.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use thingcall_gateway::GatewayConfig;
use thingcall_server::ServerConfig;

fn compat() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

fn required() -> bool {
    std::env::var("THINGCALL_REQUIRE_SDK").is_ok_and(|v| v == "1")
}

fn python_with(module: &str) -> Option<PathBuf> {
    let python = match std::env::var("THINGCALL_SDK_PYTHON") {
        Ok(p) => PathBuf::from(p),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    };
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        !required(),
        "THINGCALL_REQUIRE_SDK=1 but {} cannot import {module}",
        python.display()
    );
    eprintln!("skipped: no Python with {module}");
    None
}

fn port(addr: &str) -> String {
    addr.rsplit(':').next().unwrap().to_owned()
}

/// Runs a script with `env`; it must print OK last.
async fn run(program: &PathBuf, args: &[String], env: &[(&str, String)]) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the SDK script timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
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
    run(
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
    let modules = compat().join("node_modules/alibabacloud-iot-device-sdk");
    let node = PathBuf::from("node");
    if !modules.exists()
        || std::process::Command::new(&node)
            .arg("--version")
            .output()
            .is_err()
    {
        assert!(
            !required(),
            "THINGCALL_REQUIRE_SDK=1 but node or alibabacloud-iot-device-sdk is missing"
        );
        eprintln!("skipped: no node_modules/alibabacloud-iot-device-sdk");
        return;
    }
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
        run(
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
