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

// ------------------------------------------------------------ hostile peers
//
// The endpoint against fe2o3-amqp's client and raw sockets: each bad
// sign-in, link or frame is refused or closed with a condition, and the
// server keeps serving good consumers.

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use thingcall_sign::SignMethod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A product with a published model, a device, a group subscribed to the
/// product's device data and status changes.
struct Provisioned {
    pk: String,
    iot_id: String,
    secret: String,
    group: String,
}

async fn provision(h: &Harness, tag: &str) -> Provisioned {
    let pk = product(&h.http, &format!("Amqp_{tag}")).await;
    let (iot_id, secret) = device(&h.http, &pk, "dev1").await;
    let group = ok(
        &h.http,
        "CreateConsumerGroup",
        &[("GroupName", &format!("g_{tag}"))],
    )
    .await["GroupId"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &h.http,
        "CreateSubscribeRelation",
        &[
            ("ProductKey", &pk),
            ("Type", "AMQP"),
            ("ConsumerGroupIds.1", &group),
            ("DeviceDataFlag", "true"),
            ("DeviceStatusChangeFlag", "true"),
        ],
    )
    .await;
    Provisioned {
        pk,
        iot_id,
        secret,
        group,
    }
}

fn credentials(group: &str, client_id: &str, key_secret: &str) -> SaslProfile {
    let user = thingcall_sign::amqp::username(
        client_id,
        SignMethod::HmacSha1,
        "1573489088171",
        KEY_ID,
        group,
        None,
    );
    let parsed = thingcall_sign::amqp::AmqpUsername::parse(&user).unwrap();
    SaslProfile::Plain {
        password: parsed.password(key_secret),
        username: user,
    }
}

async fn connect(
    addr: &str,
    profile: SaslProfile,
    idle_ms: Option<u32>,
) -> Result<ConnectionHandle<()>, fe2o3_amqp::connection::OpenError> {
    let mut b = Connection::builder()
        .container_id("test-client")
        .sasl_profile(profile);
    if let Some(ms) = idle_ms {
        b = b.idle_time_out(ms);
    }
    b.open(format!("amqp://{addr}").as_str()).await
}

/// Waits for the server to close `conn` and returns its condition.
async fn closed_with(conn: &mut ConnectionHandle<()>) -> ErrorCondition {
    match tokio::time::timeout(std::time::Duration::from_secs(20), conn.on_close())
        .await
        .expect("the server closes the connection in time")
    {
        Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(e)) => e.condition,
        other => panic!("expected a close with an error, got {other:?}"),
    }
}

/// Receives one message, as a (topic, body) pair, and accepts it.
async fn receive(rx: &mut Receiver) -> (String, serde_json::Value, String) {
    let d = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv::<Body<Value>>())
        .await
        .expect("a message in time")
        .unwrap();
    let props = d.message().application_properties.clone().unwrap();
    let topic = match props.get("topic") {
        Some(SimpleValue::String(s)) => s.clone(),
        other => panic!("topic {other:?}"),
    };
    let id = match props.get("messageId") {
        Some(SimpleValue::String(s)) => s.clone(),
        other => panic!("messageId {other:?}"),
    };
    assert!(matches!(
        props.get("generateTime"),
        Some(SimpleValue::Long(_))
    ));
    let body = match d.body() {
        Body::Data(batch) => {
            let data: Vec<u8> = batch.iter().flat_map(|d| d.0.to_vec()).collect();
            serde_json::from_slice(&data).unwrap()
        }
        other => panic!("a data section, got {other:?}"),
    };
    rx.accept(&d).await.unwrap();
    (topic, body, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_and_unknown_groups_are_refused_at_sign_in() {
    let h = Harness::start(ServerConfig::default()).await;
    let p = provision(&h, "auth").await;
    // A wrong secret, an unknown group, a username that is no username.
    for profile in [
        credentials(&p.group, "c1", "not-the-secret"),
        credentials("NoSuchGroup", "c1", KEY_SECRET),
        SaslProfile::Plain {
            username: "no-pipes".into(),
            password: "x".into(),
        },
    ] {
        let refused = connect(&h.amqp, profile, Some(60_000)).await;
        assert!(
            matches!(
                refused,
                Err(fe2o3_amqp::connection::OpenError::SaslError { .. })
            ),
            "{refused:?}"
        );
    }
    // The default group exists for every account.
    let mut good = connect(
        &h.amqp,
        credentials("DEFAULT_GROUP", "c1", KEY_SECRET),
        Some(60_000),
    )
    .await
    .unwrap();
    let mut session = Session::begin(&mut good).await.unwrap();
    let rx = Receiver::attach(&mut session, "r", "default")
        .await
        .unwrap();
    rx.close().await.unwrap();
    // With its one link gone, the server closes the connection itself.
    let _ = session.end().await;
    let _ = good.close().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_idle_time_out_a_sender_link_and_a_second_link_are_refused() {
    let h = Harness::start(ServerConfig::default()).await;
    let p = provision(&h, "links").await;
    // An Open without idle-time-out, or outside 30-300 s (fe2o3, like
    // proton, advertises half the value it is given).
    for idle in [None, Some(10_000), Some(700_000)] {
        let mut c = connect(&h.amqp, credentials(&p.group, "c1", KEY_SECRET), idle)
            .await
            .unwrap();
        assert_eq!(
            closed_with(&mut c).await,
            ErrorCondition::AmqpError(AmqpError::NotAllowed),
            "{idle:?}"
        );
    }
    // A sender link: consumer groups only receive.
    let mut c = connect(
        &h.amqp,
        credentials(&p.group, "c1", KEY_SECRET),
        Some(60_000),
    )
    .await
    .unwrap();
    let mut session = Session::begin(&mut c).await.unwrap();
    let _ = Sender::attach(&mut session, "s", "anywhere").await;
    assert_eq!(
        closed_with(&mut c).await,
        ErrorCondition::AmqpError(AmqpError::NotAllowed)
    );
    // A second receiver is refused; the first keeps receiving.
    let mut c = connect(
        &h.amqp,
        credentials(&p.group, "c1", KEY_SECRET),
        Some(60_000),
    )
    .await
    .unwrap();
    let mut session = Session::begin(&mut c).await.unwrap();
    let mut first = Receiver::attach(&mut session, "r1", "default")
        .await
        .unwrap();
    let second = Receiver::attach(&mut session, "r2", "default").await;
    if let Ok(mut r) = second {
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), r.recv::<Body<Value>>())
            .await
            .expect("the second link is detached in time");
        assert!(got.is_err(), "the second link must not receive");
    }
    let _sim = simulate(&h.mqtt, &p.pk, "dev1", &p.secret).await;
    let (topic, body, _) = receive(&mut first).await;
    assert_eq!(topic, format!("/as/mqtt/status/{}/dev1", p.pk));
    assert_eq!(body["status"], "online");
    assert_eq!(body["iotId"], p.iot_id.as_str());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_in_time_and_garbage_frames_are_closed_and_the_server_keeps_serving() {
    let mut config = ServerConfig::default();
    config.amqp.endpoint.link_timeout = std::time::Duration::from_millis(800);
    config.amqp.endpoint.auth_timeout = std::time::Duration::from_secs(2);
    let h = Harness::start(config).await;
    let p = provision(&h, "deadline").await;
    // Signed in, but no link.
    let mut idle = connect(
        &h.amqp,
        credentials(&p.group, "c1", KEY_SECRET),
        Some(60_000),
    )
    .await
    .unwrap();
    assert_eq!(
        closed_with(&mut idle).await,
        ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded)
    );
    // Garbage before, inside and after the SASL header; a peer that says
    // nothing. Each is closed, none takes the server down.
    let frames: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"AMQP\x03\x01\x00\x00\xff\xff\xff\xff\x02\x01\x00\x00garbage",
        b"AMQP\x03\x01\x00\x00\x00\x00\x00\x08\x02\x01\x00\x00",
        b"",
    ];
    for bytes in frames {
        let mut s = tokio::net::TcpStream::connect(&h.amqp).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server closes {bytes:?} in time");
    }
    let mut good = connect(
        &h.amqp,
        credentials(&p.group, "c2", KEY_SECRET),
        Some(60_000),
    )
    .await
    .unwrap();
    let mut session = Session::begin(&mut good).await.unwrap();
    let mut rx = Receiver::attach(&mut session, "r", "default")
        .await
        .unwrap();
    let _sim = simulate(&h.mqtt, &p.pk, "dev1", &p.secret).await;
    let (topic, _, _) = receive(&mut rx).await;
    assert!(topic.starts_with("/as/mqtt/status/"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_survives_a_restart_and_a_consumer_without_credit_holds_nothing() {
    let mut config = ServerConfig::default();
    config.amqp.broker.ack_timeout = std::time::Duration::from_secs(2);
    let h = Harness::start(config).await;
    let p = provision(&h, "restart").await;
    // Messages queue while nobody consumes: online, an async reply.
    let sim = simulate(&h.mqtt, &p.pk, "dev1", &p.secret).await;
    wait_status(&h.http, &p.iot_id, "ONLINE").await;
    let called = ok(
        &h.http,
        "InvokeThingService",
        &[
            ("IotId", &p.iot_id),
            ("Identifier", "Reboot"),
            ("Args", r#"{"Delay":1}"#),
        ],
    )
    .await;
    let message_id = called["Data"]["MessageId"].as_str().unwrap().to_owned();
    // The reply is recorded (and queued) before the status query shows it.
    for _ in 0..100 {
        let status = ok(
            &h.http,
            "QueryConsumerGroupStatus",
            &[("GroupId", &p.group)],
        )
        .await;
        if status["AccumulationCount"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = ok(
        &h.http,
        "QueryConsumerGroupStatus",
        &[("GroupId", &p.group)],
    )
    .await;
    assert_eq!(status["AccumulationCount"], 2, "{status}");
    drop(sim);
    // A consumer that never grants credit holds nothing back for long.
    let mut stingy = connect(
        &h.amqp,
        credentials(&p.group, "stingy", KEY_SECRET),
        Some(60_000),
    )
    .await
    .unwrap();
    let mut session = Session::begin(&mut stingy).await.unwrap();
    let _held = Receiver::builder()
        .name("r")
        .source("default")
        .credit_mode(CreditMode::Manual)
        .attach(&mut session)
        .await
        .unwrap();
    let h = h.restart().await;
    let mut c = connect(
        &h.amqp,
        credentials(&p.group, "c1", KEY_SECRET),
        Some(60_000),
    )
    .await
    .unwrap();
    let mut session = Session::begin(&mut c).await.unwrap();
    let mut rx = Receiver::attach(&mut session, "r", "default")
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(receive(&mut rx).await);
    }
    let status_topic = format!("/as/mqtt/status/{}/dev1", p.pk);
    let states: Vec<&str> = got
        .iter()
        .filter(|(t, _, _)| *t == status_topic)
        .map(|(_, b, _)| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["online", "offline"], "per-device order: {got:?}");
    let (_, reply, _) = got
        .iter()
        .find(|(t, _, _)| t.ends_with("/thing/downlink/reply/message"))
        .expect("the async reply");
    assert_eq!(reply["requestId"].to_string(), message_id);
    assert_eq!(reply["code"], 200);
    assert_eq!(
        reply["topic"],
        format!("/sys/{}/dev1/thing/service/Reboot", p.pk)
    );
    let status = ok(
        &h.http,
        "QueryConsumerGroupStatus",
        &[("GroupId", &p.group)],
    )
    .await;
    assert_eq!(
        status["ClientConnectionStatusList"]["ConsumerGroupClientConnectionInfo"][0]["ClientId"],
        "c1"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_actions_as_the_sdks_call_them() {
    let h = Harness::start(ServerConfig::default()).await;
    let p = provision(&h, "actions").await;
    let list = ok(
        &h.http,
        "QueryConsumerGroupList",
        &[("CurrentPage", "1"), ("PageSize", "10")],
    )
    .await;
    let names: Vec<&str> = list["Data"]["ConsumerGroupDTO"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["GroupName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DEFAULT_GROUP", "g_actions"]);
    let (_, dup) = call(
        &h.http,
        "CreateConsumerGroup",
        &[("GroupName", "g_actions")],
    )
    .await;
    assert_eq!(dup["Code"], "iot.consumergroup.AlreadyExistedGroupName");
    let (_, short) = call(&h.http, "CreateConsumerGroup", &[("GroupName", "ab")]).await;
    assert_eq!(short["Code"], "iot.common.InvalidFormattedParameter");
    ok(
        &h.http,
        "UpdateConsumerGroup",
        &[("GroupId", &p.group), ("NewGroupName", "renamed")],
    )
    .await;
    let one = ok(
        &h.http,
        "QueryConsumerGroupByGroupId",
        &[("GroupId", &p.group)],
    )
    .await;
    assert_eq!(one["Data"]["GroupName"], "renamed");
    let (_, default) = call(
        &h.http,
        "DeleteConsumerGroup",
        &[("GroupId", "DEFAULT_GROUP")],
    )
    .await;
    assert_eq!(
        default["Code"],
        "iot.consumergroup.DefaultGroupCannotBeChanged"
    );
    let q = ok(
        &h.http,
        "QuerySubscribeRelation",
        &[("ProductKey", &p.pk), ("Type", "AMQP")],
    )
    .await;
    assert_eq!(q["DeviceDataFlag"], true);
    assert_eq!(q["DeviceLifeCycleFlag"], false);
    assert_eq!(q["ConsumerGroupIds"], serde_json::json!([p.group]));
    ok(
        &h.http,
        "CreateConsumerGroupSubscribeRelation",
        &[("ConsumerGroupId", "DEFAULT_GROUP"), ("ProductKey", &p.pk)],
    )
    .await;
    let q = ok(
        &h.http,
        "QuerySubscribeRelation",
        &[("ProductKey", &p.pk), ("Type", "AMQP")],
    )
    .await;
    assert_eq!(
        q["ConsumerGroupIds"],
        serde_json::json!([p.group, "DEFAULT_GROUP"])
    );
    ok(
        &h.http,
        "ResetConsumerGroupPosition",
        &[("GroupId", &p.group)],
    )
    .await;
    ok(&h.http, "DeleteConsumerGroup", &[("GroupId", &p.group)]).await;
    let (_, gone) = call(
        &h.http,
        "QueryConsumerGroupByGroupId",
        &[("GroupId", &p.group)],
    )
    .await;
    assert_eq!(gone["Code"], "iot.consumergroup.NotExistedConsumerGroup");
    let q = ok(
        &h.http,
        "QuerySubscribeRelation",
        &[("ProductKey", &p.pk), ("Type", "AMQP")],
    )
    .await;
    assert_eq!(q["ConsumerGroupIds"], serde_json::json!(["DEFAULT_GROUP"]));
    ok(
        &h.http,
        "DeleteSubscribeRelation",
        &[("ProductKey", &p.pk), ("Type", "AMQP")],
    )
    .await;
    let (_, none) = call(
        &h.http,
        "QuerySubscribeRelation",
        &[("ProductKey", &p.pk), ("Type", "AMQP")],
    )
    .await;
    assert_eq!(none["Code"], "iot.subscribe.NotExistedSubscribeRelation");
    let (_, missing) = call(
        &h.http,
        "CreateSubscribeRelation",
        &[("ProductKey", &p.pk), ("Type", "AMQP")],
    )
    .await;
    assert_eq!(missing["Code"], "MissingParameter", "{missing}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rhea_sample_receives_replies_and_status_at_least_once() {
    let Some(node) = node_with("rhea") else {
        return;
    };
    let h = Harness::start_tls(ServerConfig::default(), GatewayConfig::default()).await;
    let t = h.tls.as_ref().unwrap();
    let pk = product(&h.http, "RheaAmqp").await;
    let (_, secret) = device(&h.http, &pk, "node-dev").await;
    let script = compat().join("amqp_rhea.js").to_string_lossy().into_owned();
    let amqps_port = port(&t.amqps);
    run_script(
        &node,
        &[
            script,
            format!("https://{}", t.https.replace("127.0.0.1", "localhost")),
            KEY_ID.into(),
            KEY_SECRET.into(),
            pk,
            "node-dev".into(),
            secret,
            format!("mqtts://localhost:{}", port(&t.mqtts)),
            "localhost".into(),
            amqps_port,
        ],
        &[("NODE_EXTRA_CA_CERTS", t.ca.to_string_lossy().into_owned())],
    )
    .await;
    h.stop().await;
}
