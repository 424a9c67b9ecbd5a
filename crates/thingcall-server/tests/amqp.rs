//! Server-side subscription over AMQP 1.0 with the official samples'
//! library: python-qpid-proton in the shape of Alibaba's Python sample,
//! provisioning through the official Python SDK, a linkkit device over
//! MQTTS. Skipped without the peers unless `THINGCALL_REQUIRE_SDK=1` (CI).

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
async fn proton_sample_receives_replies_and_status_at_least_once() {
    let Some(python) = python_with("aliyunsdkiot, linkkit, proton") else {
        return;
    };
    let h = Harness::start_tls(ServerConfig::default(), GatewayConfig::default()).await;
    let t = h.tls.as_ref().unwrap();
    let script = compat()
        .join("amqp_proton.py")
        .to_string_lossy()
        .into_owned();
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
            t.amqps.replace("127.0.0.1", "localhost"),
            KEY_ID.into(),
            KEY_SECRET.into(),
            model,
            ca.clone(),
        ],
        &[
            ("ALIBABA_CLOUD_CA_BUNDLE", ca.clone()),
            ("SSL_CERT_FILE", ca),
        ],
    )
    .await;
    h.stop().await;
}
