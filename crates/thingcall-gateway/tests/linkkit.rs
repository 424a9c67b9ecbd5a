//! The official Python device SDK, `aliyun-iot-linkkit`, connects to the
//! gateway unchanged and answers one sync (RRPC) and one async service.
//!
//! It runs with the Python named by `THINGCALL_SDK_PYTHON` (or the
//! workspace's `.venv`). CI installs linkkit there and sets
//! `THINGCALL_REQUIRE_SDK=1`, which turns a missing SDK into a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use thingcall_core::{
    AlinkRequest, DeviceName, Identifier, ManualClock, MessageId, ProductKey, Qos, Secret,
    UnixMillis,
};
use thingcall_gateway::{Gateway, GatewayConfig, MapRegistry};
use thingcall_transport::{
    Delivery, DeliveryKind, DeviceKey, ReplyVia, RrpcForm, Transport, TransportEvent,
};
use tokio::io::{AsyncBufReadExt, BufReader};

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("THINGCALL_SDK_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    venv.exists().then_some(venv)
}

fn has_linkkit(python: &PathBuf) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import linkkit"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkkit_answers_sync_and_async_services() {
    let required = std::env::var("THINGCALL_REQUIRE_SDK").is_ok_and(|v| v == "1");
    let python = match python() {
        Some(p) if has_linkkit(&p) => p,
        _ => {
            assert!(
                !required,
                "THINGCALL_REQUIRE_SDK=1 but no Python with aliyun-iot-linkkit was found"
            );
            eprintln!(
                "skipped: no .venv with aliyun-iot-linkkit (run .ci/run or set THINGCALL_SDK_PYTHON)"
            );
            return;
        }
    };
    let device = DeviceKey::new(
        ProductKey::new("a1TestPk001").unwrap(),
        DeviceName::new("linkkit1").unwrap(),
    );
    let registry = Arc::new(MapRegistry::new());
    registry.insert(device.clone(), Secret::new("linkkit-secret"));
    let gw = Gateway::new(
        GatewayConfig::default(),
        registry,
        Arc::new(ManualClock::new(UnixMillis::new(0))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let g = gw.clone();
    tokio::spawn(async move { g.serve(listener, std::future::pending()).await });
    let mut events = gw.subscribe();

    let compat = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/compat");
    let mut child = tokio::process::Command::new(&python)
        .arg(compat.join("linkkit_device.py"))
        .args([
            &port.to_string(),
            "a1TestPk001",
            "linkkit1",
            "linkkit-secret",
        ])
        .arg(compat.join("model.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut expect = async |prefix: &str| -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .expect("linkkit timed out")
                .unwrap()
                .expect("linkkit exited");
            eprintln!("linkkit: {line}");
            if line.starts_with(prefix) {
                return line;
            }
        }
    };
    assert_eq!(expect("connected").await, "connected 0");
    expect("enabled").await;
    assert!(gw.is_online(&device));

    let deliver = |id: u64, identifier: &str, sync: bool, params: serde_json::Value| {
        let identifier = Identifier::new(identifier).unwrap();
        let payload =
            AlinkRequest::for_service(MessageId::from_u64(id), &identifier, params).to_vec();
        let kind = if sync {
            DeliveryKind::Rrpc {
                identifier,
                form: RrpcForm::Auto,
            }
        } else {
            DeliveryKind::Async { identifier }
        };
        Delivery {
            device: device.clone(),
            message_id: MessageId::from_u64(id),
            kind,
            qos: Qos::AtMostOnce,
            payload,
        }
    };
    let next_reply = async |events: &mut tokio::sync::mpsc::Receiver<TransportEvent>| loop {
        if let TransportEvent::Reply(r) =
            tokio::time::timeout(Duration::from_secs(20), events.recv())
                .await
                .expect("no reply")
                .unwrap()
        {
            return r;
        }
    };

    // Sync: linkkit sent ext=1, so the extended RRPC form is used.
    let d = gw
        .deliver(deliver(
            4242,
            "Calibrate",
            true,
            serde_json::json!({"Offset": 1.5}),
        ))
        .await
        .unwrap();
    assert_eq!(
        d.topic,
        "/ext/rrpc/4242/sys/a1TestPk001/linkkit1/thing/service/Calibrate"
    );
    assert!(expect("call Calibrate").await.contains("\"Offset\": 1.5"));
    let r = next_reply(&mut events).await;
    assert_eq!(
        (r.message_id, r.via.clone(), r.reply.code),
        (Some(MessageId::from_u64(4242)), ReplyVia::Rrpc, 200)
    );
    assert_eq!(r.reply.data, serde_json::json!({"Result": 1}));

    // Async: published on thing/service/Reboot, answered on Reboot_reply.
    gw.deliver(deliver(
        4343,
        "Reboot",
        false,
        serde_json::json!({"Delay": 3}),
    ))
    .await
    .unwrap();
    expect("call Reboot").await;
    let r = next_reply(&mut events).await;
    assert_eq!(
        r.via,
        ReplyVia::Async {
            identifier: "Reboot".into()
        }
    );
    assert_eq!(
        (r.message_id, r.reply.code),
        (Some(MessageId::from_u64(4343)), 200)
    );

    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}
