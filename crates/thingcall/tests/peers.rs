//! Generic MQTT peers: `mosquitto_sub` and `mosquitto_pub`, logging in with
//! the credentials `thingcall device credentials` prints, talk to the
//! gateway like any device.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use thingcall_core::{
    DeviceName, Identifier, ManualClock, MessageId, ProductKey, Qos, Secret, UnixMillis,
};
use thingcall_gateway::{Gateway, GatewayConfig, MapRegistry};
use thingcall_transport::{
    Delivery, DeliveryKind, DeliveryOutcome, DeviceKey, ReplyVia, Transport, TransportEvent,
};

fn credentials() -> (String, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_thingcall"))
        .args([
            "device",
            "credentials",
            "--product-key",
            "a1TestPk001",
            "--device-name",
            "mosq1",
            "--device-secret",
            "mosq-secret",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    (field("client_id"), field("username"), field("password"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_are_devices_too() {
    let required = std::env::var("THINGCALL_REQUIRE_SDK").is_ok_and(|v| v == "1");
    if Command::new("mosquitto_sub")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            !required,
            "THINGCALL_REQUIRE_SDK=1 but mosquitto_sub is not installed"
        );
        eprintln!("skipped: mosquitto clients are not installed");
        return;
    }
    let device = DeviceKey::new(
        ProductKey::new("a1TestPk001").unwrap(),
        DeviceName::new("mosq1").unwrap(),
    );
    let registry = Arc::new(MapRegistry::new());
    registry.insert(device.clone(), Secret::new("mosq-secret"));
    let gw = Gateway::new(
        GatewayConfig::default(),
        registry,
        Arc::new(ManualClock::new(UnixMillis::new(0))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let g = gw.clone();
    tokio::spawn(async move { g.serve(listener, std::future::pending()).await });
    let mut events = gw.subscribe();
    let (client_id, username, password) = credentials();
    let login = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-i",
        &client_id,
        "-u",
        &username,
        "-P",
        &password,
        "-V",
        "mqttv311",
        "-k",
        "60",
    ];

    let sub = tokio::process::Command::new("mosquitto_sub")
        .args(login)
        .args([
            "-t",
            "/sys/a1TestPk001/mosq1/thing/service/+",
            "-q",
            "1",
            "-C",
            "1",
            "-v",
            "-W",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let identifier = Identifier::new("Reboot").unwrap();
    let delivery = || Delivery {
        device: device.clone(),
        message_id: MessageId::from_u64(7),
        kind: DeliveryKind::Async {
            identifier: identifier.clone(),
        },
        qos: Qos::AtLeastOnce,
        payload: br#"{"id":"7","version":"1.0","params":{},"method":"thing.service.Reboot"}"#
            .to_vec(),
    };
    // Until mosquitto_sub's SUBSCRIBE is in, the message has no subscriber.
    let mut sent = false;
    for _ in 0..200 {
        if let Ok(d) = gw.deliver(delivery()).await
            && d.outcome == DeliveryOutcome::Sent
        {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(sent, "mosquitto_sub never subscribed");
    let out = tokio::time::timeout(Duration::from_secs(20), sub.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.starts_with("/sys/a1TestPk001/mosq1/thing/service/Reboot {\"id\":\"7\""),
        "{printed}"
    );

    let status = tokio::process::Command::new("mosquitto_pub")
        .args(login)
        .args([
            "-t",
            "/sys/a1TestPk001/mosq1/thing/service/Reboot_reply",
            "-q",
            "1",
            "-m",
            r#"{"id":"7","code":200,"data":{}}"#,
        ])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let reply = loop {
        if let TransportEvent::Reply(r) =
            tokio::time::timeout(Duration::from_secs(20), events.recv())
                .await
                .unwrap()
                .unwrap()
        {
            break r;
        }
    };
    assert_eq!(reply.device, device);
    assert_eq!(reply.message_id, Some(MessageId::from_u64(7)));
    assert_eq!(
        reply.via,
        ReplyVia::Async {
            identifier: "Reboot".into()
        }
    );

    // A wrong password is refused.
    let status = tokio::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            &client_id,
            "-u",
            &username,
            "-P",
            "00ff",
            "-V",
            "mqttv311",
        ])
        .args([
            "-t",
            "/sys/a1TestPk001/mosq1/thing/service/x_reply",
            "-m",
            "{}",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(!status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_simulate_answers_through_the_gateway() {
    let registry = Arc::new(MapRegistry::new());
    let keys: Vec<DeviceKey> = (1..=2)
        .map(|i| {
            DeviceKey::new(
                ProductKey::new("a1TestPk001").unwrap(),
                DeviceName::new(format!("sim-{i}")).unwrap(),
            )
        })
        .collect();
    for k in &keys {
        registry.insert(k.clone(), Secret::new("sim-secret"));
    }
    let gw = Gateway::new(
        GatewayConfig::default(),
        registry,
        Arc::new(ManualClock::new(UnixMillis::new(0))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let g = gw.clone();
    tokio::spawn(async move { g.serve(listener, std::future::pending()).await });
    let mut events = gw.subscribe();
    let tsl = format!(
        "{}/../thingcall-tsl/test-models/calibrator-all-types.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_thingcall"))
        .args([
            "device",
            "simulate",
            "--mqtt",
            &addr,
            "--product-key",
            "a1TestPk001",
            "--device-name",
            "sim",
        ])
        .args([
            "--device-secret",
            "sim-secret",
            "--tsl",
            &tsl,
            "--ext",
            "--count",
            "2",
            "--latency",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if keys.iter().all(|k| gw.is_online(k)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (i, k) in keys.iter().enumerate() {
        let identifier = Identifier::new("Calibrate").unwrap();
        let id = MessageId::from_u64(50 + i as u64);
        let payload =
            thingcall_core::AlinkRequest::for_service(id, &identifier, serde_json::json!({}))
                .to_vec();
        let kind = DeliveryKind::Rrpc {
            identifier,
            form: thingcall_transport::RrpcForm::Auto,
        };
        gw.deliver(Delivery {
            device: k.clone(),
            message_id: id,
            kind,
            qos: Qos::AtMostOnce,
            payload,
        })
        .await
        .unwrap();
        let reply = loop {
            if let TransportEvent::Reply(r) =
                tokio::time::timeout(Duration::from_secs(20), events.recv())
                    .await
                    .unwrap()
                    .unwrap()
            {
                break r;
            }
        };
        assert_eq!(
            (&reply.device, reply.message_id, reply.reply.code),
            (k, Some(id), 200)
        );
    }
    // The simulator prints each answered call after sending the reply:
    // read its output until both lines are there, then stop it.
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let want = [
        "a1TestPk001/sim-1 Calibrate id=50 via=ext-rrpc code=200",
        "a1TestPk001/sim-2 Calibrate id=51 via=ext-rrpc code=200",
    ];
    tokio::time::timeout(Duration::from_secs(20), async {
        while !want.iter().all(|w| printed.contains(w)) {
            let n = tokio::io::AsyncBufReadExt::read_line(&mut out, &mut printed)
                .await
                .unwrap();
            assert!(n > 0, "the simulator stopped: {printed}");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("missing lines: {printed}"));
    assert!(printed.starts_with("simulating 2 device(s)"), "{printed}");
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
