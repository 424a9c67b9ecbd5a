//! Property and event posts: checked against the product's published thing
//! model and answered on `..._reply` with Alibaba's codes; unanswered when
//! the device did not subscribe to the reply or sent no Alink JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish};
use thingcall_core::{DeviceName, ManualClock, ProductKey, Secret, UnixMillis};
use thingcall_gateway::client::{self, CredentialOptions, Reader, Writer};
use thingcall_gateway::{Gateway, GatewayConfig, MapRegistry};
use thingcall_transport::DeviceKey;
use thingcall_tsl::CompiledModel;

const SECRET: &str = "post-secret";
const PK: &str = "a1PostPk001";

fn model(file: &str) -> Arc<CompiledModel> {
    let text = std::fs::read_to_string(format!(
        "{}/../thingcall-tsl/test-models/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    Arc::new(CompiledModel::compile(thingcall_tsl::check_str(&text).unwrap()).unwrap())
}

async fn device(with_model: bool, auto_subscribe: bool) -> (Gateway, Reader, Writer) {
    let registry = Arc::new(MapRegistry::new());
    let key = DeviceKey::new(
        ProductKey::new(PK).unwrap(),
        DeviceName::new("dev1").unwrap(),
    );
    registry.insert(key.clone(), Secret::new(SECRET));
    if with_model {
        registry.set_model(key.product_key.clone(), model("iotkit-embedded-model.json"));
    }
    let clock = Arc::new(ManualClock::new(UnixMillis::new(1_700_000_000_000)));
    let gateway = Gateway::new(GatewayConfig::default(), registry, clock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let g = gateway.clone();
    tokio::spawn(async move { g.serve(listener, std::future::pending()).await });
    let creds = client::credentials(
        &key,
        SECRET,
        CredentialOptions {
            auto_subscribe,
            ..Default::default()
        },
    );
    let (ack, r, w) = client::connect(&addr, client::connect_packet(&creds, 60, true))
        .await
        .unwrap();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    (gateway, r, w)
}

async fn post(w: &mut Writer, topic: &str, body: &str) {
    let mut p = Publish::new(
        format!("/sys/{PK}/dev1/thing/event/{topic}"),
        QoS::AtLeastOnce,
        body,
    );
    p.pkid = 7;
    w.send(&Packet::Publish(p)).await.unwrap();
}

/// The next reply: (topic, body); None when nothing comes within 500 ms.
async fn reply(r: &mut Reader) -> Option<(String, serde_json::Value)> {
    loop {
        match r.recv_timeout(Duration::from_millis(500)).await {
            Ok(Packet::Publish(p)) => {
                return Some((p.topic, serde_json::from_slice(&p.payload).unwrap()));
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn posts_are_checked_against_the_model_and_answered() {
    let (gateway, mut r, mut w) = device(true, true).await;
    let cases = [
        // (topic, body, code)
        (
            "property/post",
            r#"{"id":"1","version":"1.0","params":{"LightStatus":1},"method":"thing.event.property.post"}"#,
            200,
        ),
        (
            "property/post",
            r#"{"id":"2","params":{"LightStatus":{"value":0,"time":1700000000000}}}"#,
            200,
        ),
        ("property/post", r#"{"id":"3","params":{}}"#, 200),
        (
            "property/post",
            r#"{"id":"4","params":{"LightStatus":"on"}}"#,
            6308,
        ),
        ("property/post", r#"{"id":"5","params":{"Nope":1}}"#, 6320),
        (
            "property/post",
            r#"{"id":"6","params":{"LightStatus":{"value":1,"time":"soon"}}}"#,
            6326,
        ),
        (
            "Error/post",
            r#"{"id":"7","params":{"ErrorCode":0},"method":"thing.event.Error.post"}"#,
            200,
        ),
        ("Error/post", r#"{"id":"8","params":{"ErrorCode":5}}"#, 6309),
        ("Missing/post", r#"{"id":"9","params":{}}"#, 6320),
    ];
    for (topic, body, code) in cases {
        post(&mut w, topic, body).await;
        let (t, v) = reply(&mut r)
            .await
            .unwrap_or_else(|| panic!("no reply to {body}"));
        assert_eq!(t, format!("/sys/{PK}/dev1/thing/event/{topic}_reply"));
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["id"], sent["id"], "{v}");
        assert_eq!(v["code"], code, "{body}: {v}");
        assert_eq!(v["data"], serde_json::json!({}));
        assert_eq!(v["version"], "1.0");
        if code == 200 {
            assert_eq!(v["message"], "success");
        } else {
            assert!(!v["message"].as_str().unwrap().is_empty());
        }
    }
    assert_eq!(v_method(&mut w, &mut r).await, "thing.event.Error.post");
    // Not Alink JSON: no id to answer; counted.
    post(&mut w, "property/post", "not json").await;
    assert!(reply(&mut r).await.is_none());
    assert_eq!(gateway.metrics().get("bad_payloads"), 1);
    assert_eq!(gateway.metrics().get("posts_accepted"), 5);
    assert_eq!(gateway.metrics().get("posts_refused"), 5);
}

async fn v_method(w: &mut Writer, r: &mut Reader) -> String {
    post(w, "Error/post", r#"{"id":"10","params":{"ErrorCode":0}}"#).await;
    let (_, v) = reply(r).await.unwrap();
    v["method"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn without_a_model_only_an_empty_post_passes() {
    let (_g, mut r, mut w) = device(false, true).await;
    post(&mut w, "property/post", r#"{"id":"1","params":{}}"#).await;
    assert_eq!(reply(&mut r).await.unwrap().1["code"], 200);
    post(
        &mut w,
        "property/post",
        r#"{"id":"2","params":{"LightStatus":1}}"#,
    )
    .await;
    assert_eq!(reply(&mut r).await.unwrap().1["code"], 6320);
}

#[tokio::test]
async fn a_device_that_did_not_subscribe_gets_no_reply() {
    let (gateway, mut r, mut w) = device(true, false).await;
    post(
        &mut w,
        "property/post",
        r#"{"id":"1","params":{"LightStatus":1}}"#,
    )
    .await;
    assert!(reply(&mut r).await.is_none());
    assert_eq!(gateway.metrics().get("posts_accepted"), 1);
}
