//! The official cloud SDKs drive thingcall unchanged: the classic Python SDK
//! (v1 signatures) with linkkit as the device, the tea SDK
//! (`alibabacloud_iot20180120`, v3 and v2 signatures) and `@alicloud/pop-core`
//! (Node, GET and POST).
//!
//! They run with the Python named by `THINGCALL_SDK_PYTHON` (or the
//! workspace's `.venv`) and the `node_modules` in `tests/compat`. CI installs
//! both and sets `THINGCALL_REQUIRE_SDK=1`, which turns a missing SDK into a
//! failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

mod common;

use std::path::PathBuf;

use common::peers::*;
use common::*;
use thingcall_server::ServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_python_sdk_and_linkkit() {
    let Some(python) = python_with("aliyunsdkiot, linkkit") else {
        return;
    };
    let h = Harness::start(ServerConfig::default()).await;
    let mqtt_port = h.mqtt.rsplit(':').next().unwrap().to_owned();
    let script = compat()
        .join("classic_sdk.py")
        .to_string_lossy()
        .into_owned();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("demo/model.json")
        .to_string_lossy()
        .into_owned();
    run_script(
        &python,
        &[
            script,
            h.http.clone(),
            mqtt_port,
            KEY_ID.into(),
            KEY_SECRET.into(),
            model,
        ],
        &[],
    )
    .await;
    h.stop().await;
}

/// A server with an online simulated device; returns (harness, pk, dn, stop).
async fn with_device(name: &str) -> (Harness, String, String, tokio::sync::oneshot::Sender<()>) {
    let h = Harness::start(ServerConfig::default()).await;
    let pk = product(&h.http, name).await;
    let (iot_id, secret) = device(&h.http, &pk, "sdk-dev-1").await;
    let stop = simulate(&h.mqtt, &pk, "sdk-dev-1", &secret).await;
    wait_status(&h.http, &iot_id, "ONLINE").await;
    (h, pk, "sdk-dev-1".to_owned(), stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tea_sdk_with_v3_and_v2_signatures() {
    let Some(python) = python_with("alibabacloud_iot20180120") else {
        return;
    };
    let (h, pk, dn, stop) = with_device("Tea_1").await;
    let script = compat().join("tea_sdk.py").to_string_lossy().into_owned();
    run_script(
        &python,
        &[
            script,
            h.http.clone(),
            KEY_ID.into(),
            KEY_SECRET.into(),
            pk,
            dn,
        ],
        &[],
    )
    .await;
    let _ = stop.send(());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop_core_node_sdk_get_and_post() {
    let Some(node) = node_with("@alicloud/pop-core") else {
        return;
    };
    let (h, pk, dn, stop) = with_device("Pop_1").await;
    let script = compat().join("pop_core.js").to_string_lossy().into_owned();
    run_script(
        &node,
        &[
            script,
            format!("http://{}", h.http),
            KEY_ID.into(),
            KEY_SECRET.into(),
            pk,
            dn,
        ],
        &[],
    )
    .await;
    let _ = stop.send(());
    h.stop().await;
}
