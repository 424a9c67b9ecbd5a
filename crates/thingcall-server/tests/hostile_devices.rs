//! A logged-in device of the same product (Y) tries to answer calls meant
//! for another device (X) by publishing replies on its own topics with X's
//! message ids: known ids on every reply path (system RRPC, extended RRPC,
//! async `_reply`, after a sync timeout) and blind guesses over a window.
//! The caller and X's records must only ever see X's answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::time::Duration;

use common::*;
use thingcall_core::{DeviceName, ProductKey};
use thingcall_gateway::client::{self, CredentialOptions, Reader, Writer};
use thingcall_gateway::mqttbytes::QoS;
use thingcall_gateway::mqttbytes::v4::{Packet, Publish, Subscribe, SubscribeFilter};
use thingcall_server::ServerConfig;
use thingcall_transport::DeviceKey;

struct Device {
    reader: Reader,
    writer: Writer,
}

impl Device {
    async fn connect(h: &Harness, pk: &str, name: &str, secret: &str, ext: bool) -> Device {
        let key = DeviceKey::new(ProductKey::new(pk).unwrap(), DeviceName::new(name).unwrap());
        let creds = client::credentials(
            &key,
            secret,
            CredentialOptions {
                ext,
                ..Default::default()
            },
        );
        let (ack, reader, writer) =
            client::connect(&h.mqtt, client::connect_packet(&creds, 60, true))
                .await
                .unwrap();
        assert_eq!(
            ack.code,
            thingcall_gateway::mqttbytes::v4::ConnectReturnCode::Success
        );
        let mut d = Device { reader, writer };
        let filters = [
            format!("/sys/{pk}/{name}/rrpc/request/+"),
            format!("/sys/{pk}/{name}/thing/service/+"),
            format!("/ext/rrpc/+/sys/{pk}/{name}/thing/service/+"),
        ];
        let sub = Subscribe::new_many(
            filters
                .iter()
                .map(|f| SubscribeFilter::new(f.clone(), QoS::AtMostOnce)),
        );
        d.writer.send(&Packet::Subscribe(sub)).await.unwrap();
        loop {
            if let Packet::SubAck(_) = d.reader.recv_timeout(Duration::from_secs(5)).await.unwrap()
            {
                break;
            }
        }
        d
    }

    /// The next request: (topic, message id).
    async fn request(&mut self) -> (String, String) {
        loop {
            if let Packet::Publish(p) = self
                .reader
                .recv_timeout(Duration::from_secs(5))
                .await
                .unwrap()
            {
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                return (p.topic, v["id"].as_str().unwrap().to_owned());
            }
        }
    }

    async fn publish(&mut self, topic: &str, payload: String) {
        self.writer
            .send(&Packet::Publish(Publish::new(
                topic,
                QoS::AtMostOnce,
                payload.into_bytes(),
            )))
            .await
            .unwrap();
    }
}

fn reply(id: &str, code: u32, data: &str) -> String {
    format!(r#"{{"id":"{id}","code":{code},"data":{data}}}"#)
}

const X_DATA: &str = r#"{"Result":1,"By":"devx"}"#;
const Y_DATA: &str = r#"{"Result":0,"By":"devy"}"#;

async fn setup(config: ServerConfig, ext: bool) -> (Harness, String, String, Device, Device) {
    let h = Harness::start(config).await;
    let a = h.http.clone();
    let pk = product(&a, "Hostile_1").await;
    let (x_id, x_secret) = device(&a, &pk, "devx").await;
    let (y_id, y_secret) = device(&a, &pk, "devy").await;
    let x = Device::connect(&h, &pk, "devx", &x_secret, ext).await;
    let y = Device::connect(&h, &pk, "devy", &y_secret, ext).await;
    wait_status(&a, &x_id, "ONLINE").await;
    wait_status(&a, &y_id, "ONLINE").await;
    (h, pk, x_id, x, y)
}

async fn invoke(http: String, iot_id: String, identifier: &'static str) -> serde_json::Value {
    let (_, body) = call(
        &http,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", identifier),
            ("Args", "{}"),
        ],
    )
    .await;
    body
}

/// X's record with this message id, once it has the wanted code.
async fn record(http: &str, iot_id: &str, message_id: &str, code_done: bool) -> serde_json::Value {
    for _ in 0..200 {
        let body = ok(
            http,
            "QueryDeviceServiceData",
            &[
                ("IotId", iot_id),
                ("StartTime", "0"),
                ("EndTime", "9999999999999"),
                ("PageSize", "50"),
            ],
        )
        .await;
        let list = body["Data"]["List"]["ServiceInfo"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(r) = list.into_iter().find(|r| {
            r["OutputData"]
                .as_str()
                .is_some_and(|o| o.contains(message_id))
                || !code_done
        }) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no completed record for {message_id}");
}

async fn rejected(http: &str) -> u64 {
    let (_, _, text) = raw(http, "GET", "/metrics", &[], b"").await;
    text.lines()
        .filter(|l| l.starts_with("thingcall_replies_rejected_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A sync call over system RRPC: Y answers first on its own response topic
/// with X's id; the caller still gets X's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_replies_of_another_device_are_ignored() {
    for ext in [false, true] {
        let (h, pk, x_id, mut x, mut y) = setup(ServerConfig::default(), ext).await;
        let call = tokio::spawn(invoke(h.http.clone(), x_id.clone(), "Calibrate"));
        let (topic, id) = x.request().await;
        let forged_topic = if ext {
            assert!(topic.starts_with("/ext/rrpc/"), "{topic}");
            format!("/ext/rrpc/{id}/sys/{pk}/devy/thing/service/Calibrate")
        } else {
            assert!(topic.contains("/rrpc/request/"), "{topic}");
            format!("/sys/{pk}/devy/rrpc/response/{id}")
        };
        y.publish(&forged_topic, reply(&id, 200, Y_DATA)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !call.is_finished(),
            "a forged reply settled X's call (ext={ext})"
        );
        let answer_topic = topic.replace("/rrpc/request/", "/rrpc/response/");
        x.publish(&answer_topic, reply(&id, 200, X_DATA)).await;
        let body = call.await.unwrap();
        assert_eq!(body["Success"], true, "{body}");
        let result = body["Data"]["Result"].as_str().unwrap();
        assert!(result.contains("devx"), "ext={ext}: {result}");
        let r = record(&h.http, &x_id, &id, true).await;
        let output = r["OutputData"].as_str().unwrap();
        assert!(
            output.contains("devx") && !output.contains("devy"),
            "{output}"
        );
        assert!(rejected(&h.http).await >= 1);
        h.stop().await;
    }
}

/// An async call: X answers, then Y sends a "reply" with X's id on its own
/// `_reply` topic; X's record keeps X's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_replies_of_another_device_are_ignored() {
    let (h, pk, x_id, mut x, mut y) = setup(ServerConfig::default(), false).await;
    let body = invoke(h.http.clone(), x_id.clone(), "Reboot").await;
    let id = body["Data"]["MessageId"].as_str().unwrap().to_owned();
    let (topic, seen) = x.request().await;
    assert_eq!(seen, id);
    x.publish(
        &format!("{topic}_reply"),
        reply(&id, 200, r#"{"Accepted":1,"By":"devx"}"#),
    )
    .await;
    let r = record(&h.http, &x_id, &id, true).await;
    assert!(r["OutputData"].as_str().unwrap().contains("devx"));
    let before = rejected(&h.http).await;
    y.publish(
        &format!("/sys/{pk}/devy/thing/service/Reboot_reply"),
        reply(&id, 500, r#"{"Accepted":0,"By":"devy"}"#),
    )
    .await;
    // Wait until the forged reply has been seen and turned away.
    for _ in 0..200 {
        if rejected(&h.http).await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rejected(&h.http).await > before,
        "the forged reply was not counted"
    );
    let r = record(&h.http, &x_id, &id, true).await;
    let output = r["OutputData"].as_str().unwrap();
    assert!(
        output.contains("devx") && !output.contains("devy"),
        "{output}"
    );
    h.stop().await;
}

/// A sync call that timed out: Y's late "reply" with X's id does not
/// complete X's record; X's own late reply does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_replies_of_another_device_are_ignored() {
    let config = ServerConfig {
        sync_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let (h, pk, x_id, mut x, mut y) = setup(config, false).await;
    let body = invoke(h.http.clone(), x_id.clone(), "Calibrate").await;
    assert_eq!(body["Code"], "iot.messagebroker.TIMEOUT", "{body}");
    let (topic, id) = x.request().await;
    let before = rejected(&h.http).await;
    y.publish(
        &format!("/sys/{pk}/devy/rrpc/response/{id}"),
        reply(&id, 200, Y_DATA),
    )
    .await;
    for _ in 0..200 {
        if rejected(&h.http).await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rejected(&h.http).await > before);
    x.publish(
        &topic.replace("/rrpc/request/", "/rrpc/response/"),
        reply(&id, 200, X_DATA),
    )
    .await;
    let r = record(&h.http, &x_id, &id, true).await;
    let output = r["OutputData"].as_str().unwrap();
    assert!(
        output.contains("devx") && !output.contains("devy"),
        "{output}"
    );
    h.stop().await;
}

/// Y does not know X's id and guesses: every id the old time-based scheme
/// could have given within a second either side of the call. None of them
/// settles X's call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_guesses_over_a_window_settle_nothing() {
    let (h, pk, x_id, mut x, mut y) = setup(ServerConfig::default(), false).await;
    let started = thingcall_core::Clock::now(&thingcall_server::SystemClock).get();
    let call = tokio::spawn(invoke(h.http.clone(), x_id.clone(), "Calibrate"));
    let (topic, id) = x.request().await;
    let centre = started.max(0) as u64;
    for ms in centre.saturating_sub(1000)..=centre + 1000 {
        let guess = (ms * 1_000_000).to_string();
        y.publish(
            &format!("/sys/{pk}/devy/rrpc/response/{guess}"),
            reply(&guess, 200, Y_DATA),
        )
        .await;
    }
    // And the right id too, on Y's own topic, as a device that learned it.
    y.publish(
        &format!("/sys/{pk}/devy/rrpc/response/{id}"),
        reply(&id, 200, Y_DATA),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "a guessed reply settled X's call");
    x.publish(
        &topic.replace("/rrpc/request/", "/rrpc/response/"),
        reply(&id, 200, X_DATA),
    )
    .await;
    let body = call.await.unwrap();
    assert!(
        body["Data"]["Result"].as_str().unwrap().contains("devx"),
        "{body}"
    );
    let r = record(&h.http, &x_id, &id, true).await;
    assert!(!r["OutputData"].as_str().unwrap().contains("devy"));
    // Y is still connected: it is not disconnected for stray replies.
    let y_status = ok(
        &h.http,
        "GetDeviceStatus",
        &[("ProductKey", &pk), ("DeviceName", "devy")],
    )
    .await;
    assert_eq!(y_status["Data"]["Status"], "ONLINE");
    h.stop().await;
}

/// A device that is online but subscribes to nothing never sees a call: a
/// sync call is answered at once with `iot.messagebroker.HALFCONN` instead
/// of waiting out the timeout, and both sync and async calls are recorded
/// with that code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_subscriptions_is_half_connected() {
    let h = Harness::start(ServerConfig {
        sync_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    })
    .await;
    let a = h.http.clone();
    let pk = product(&a, "Half_1").await;
    let (iot_id, secret) = device(&a, &pk, "half").await;
    let key = DeviceKey::new(
        ProductKey::new(pk.as_str()).unwrap(),
        DeviceName::new("half").unwrap(),
    );
    let creds = client::credentials(&key, &secret, CredentialOptions::default());
    let (_ack, _reader, _writer) =
        client::connect(&h.mqtt, client::connect_packet(&creds, 60, true))
            .await
            .unwrap();
    wait_status(&a, &iot_id, "ONLINE").await;
    let started = std::time::Instant::now();
    let body = invoke(a.clone(), iot_id.clone(), "Calibrate").await;
    assert_eq!(body["Code"], "iot.messagebroker.HALFCONN", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );
    let body = invoke(a.clone(), iot_id.clone(), "Reboot").await;
    assert_eq!(body["Success"], true, "{body}");
    let listed = ok(
        &a,
        "QueryDeviceServiceData",
        &[
            ("IotId", &iot_id),
            ("StartTime", "0"),
            ("EndTime", "9999999999999"),
        ],
    )
    .await;
    let n = listed["Data"]["List"]["ServiceInfo"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(n, 2, "{listed}");
    h.stop().await;
}
