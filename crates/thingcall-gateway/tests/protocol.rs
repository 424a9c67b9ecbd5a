//! The gateway over real TCP on port 0: authentication, ACL, sessions,
//! RRPC forms, QoS 1 redelivery and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use thingcall_core::{
    AlinkReply, DeviceName, Identifier, ManualClock, MessageId, ProductKey, Qos, Secret, UnixMillis,
};
use thingcall_gateway::client::{self, CredentialOptions, Credentials, Reader, Writer};
use thingcall_gateway::{Gateway, GatewayConfig, MapRegistry};
use thingcall_sign::SignMethod;
use thingcall_transport::{
    Delivery, DeliveryKind, DeliveryOutcome, DeviceKey, EventStream, ReplyVia, RrpcForm, Transport,
    TransportError, TransportEvent,
};

const SECRET: &str = "s3cr3t-device-secret";

fn dev(name: &str) -> DeviceKey {
    DeviceKey::new(
        ProductKey::new("a1TestPk001").unwrap(),
        DeviceName::new(name).unwrap(),
    )
}

struct Harness {
    gateway: Gateway,
    registry: Arc<MapRegistry>,
    addr: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(config: GatewayConfig) -> Harness {
    let registry = Arc::new(MapRegistry::new());
    for name in ["dev1", "dev2", "dev3"] {
        registry.insert(dev(name), Secret::new(SECRET));
    }
    let clock = Arc::new(ManualClock::new(UnixMillis::new(1_700_000_000_000)));
    let gateway = Gateway::new(config, registry.clone(), clock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let g = gateway.clone();
    tokio::spawn(async move {
        g.serve(listener, async {
            let _ = stopped.await;
        })
        .await
    });
    Harness {
        gateway,
        registry,
        addr,
        _stop: stop,
    }
}

fn creds(name: &str, opts: CredentialOptions) -> Credentials {
    client::credentials(&dev(name), SECRET, opts)
}

async fn connect_with(
    h: &Harness,
    c: &Credentials,
    keep_alive: u16,
    clean: bool,
) -> (ConnectReturnCode, Reader, Writer) {
    let (ack, r, w) = client::connect(&h.addr, client::connect_packet(c, keep_alive, clean))
        .await
        .unwrap();
    (ack.code, r, w)
}

async fn online(h: &Harness, c: &Credentials) -> (Reader, Writer) {
    let (code, r, w) = connect_with(h, c, 60, true).await;
    assert_eq!(code, ConnectReturnCode::Success);
    (r, w)
}

async fn subscribe(r: &mut Reader, w: &mut Writer, filters: &[&str]) -> Vec<SubscribeReasonCode> {
    let filters: Vec<SubscribeFilter> = filters
        .iter()
        .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce))
        .collect();
    w.send(&Packet::Subscribe(Subscribe::new_many(filters)))
        .await
        .unwrap();
    match r.recv_timeout(Duration::from_secs(5)).await.unwrap() {
        Packet::SubAck(ack) => ack.return_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

async fn next_publish(r: &mut Reader) -> Publish {
    loop {
        match r.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            Packet::Publish(p) => return p,
            Packet::PingResp | Packet::PubAck(_) => {}
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

async fn closed(r: &mut Reader) -> bool {
    loop {
        match r.recv_timeout(Duration::from_secs(5)).await {
            Err(client::ClientError::Closed) | Err(client::ClientError::Io(_)) => return true,
            Err(client::ClientError::Timeout) => return false,
            Err(client::ClientError::Codec(_)) => return true,
            Ok(_) => {}
        }
    }
}

/// A device-side PUBLISH (QoS 1 needs a packet id).
fn publish(topic: &str, qos: QoS, payload: &[u8]) -> Packet {
    let mut p = Publish::new(topic, qos, payload.to_vec());
    if qos == QoS::AtLeastOnce {
        p.pkid = 1;
    }
    Packet::Publish(p)
}

fn delivery(name: &str, id: u64, kind: DeliveryKind, qos: Qos) -> Delivery {
    Delivery {
        device: dev(name),
        message_id: MessageId::from_u64(id),
        kind,
        qos,
        payload: format!(
            r#"{{"id":"{id}","version":"1.0","params":{{}},"method":"thing.service.Calibrate"}}"#
        )
        .into_bytes(),
    }
}

fn rrpc() -> DeliveryKind {
    DeliveryKind::Rrpc {
        identifier: Identifier::new("Calibrate").unwrap(),
        form: RrpcForm::Auto,
    }
}

async fn next_reply(events: &mut EventStream) -> thingcall_transport::DeviceReply {
    loop {
        if let TransportEvent::Reply(r) =
            tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap()
        {
            return r;
        }
    }
}

#[tokio::test]
async fn authenticates_each_sign_method() {
    let h = start(GatewayConfig::default()).await;
    for method in [
        SignMethod::HmacMd5,
        SignMethod::HmacSha1,
        SignMethod::HmacSha256,
    ] {
        let c = creds(
            "dev1",
            CredentialOptions {
                sign_method: method,
                ..Default::default()
            },
        );
        let (code, _r, _w) = connect_with(&h, &c, 60, true).await;
        assert_eq!(code, ConnectReturnCode::Success, "{method:?}");
        // Upper-case hex is accepted too.
        let upper = Credentials {
            password: c.password.to_uppercase(),
            ..c.clone()
        };
        assert_eq!(
            connect_with(&h, &upper, 60, true).await.0,
            ConnectReturnCode::Success,
            "{method:?} upper"
        );
        let wrong = Credentials {
            password: "00".repeat(c.password.len() / 2),
            ..c
        };
        assert_eq!(
            connect_with(&h, &wrong, 60, true).await.0,
            ConnectReturnCode::BadUserNamePassword,
            "{method:?}"
        );
    }
    assert!(h.gateway.metrics().get("connects_refused") >= 3);
}

#[tokio::test]
async fn connack_codes() {
    let h = start(GatewayConfig::default()).await;
    let good = creds("dev1", CredentialOptions::default());
    let cases: Vec<(&str, Credentials, u16, ConnectReturnCode)> = vec![
        (
            "unclosed extension block",
            Credentials {
                client_id: "a1TestPk001.dev1|securemode=3".into(),
                ..good.clone()
            },
            60,
            ConnectReturnCode::BadClientId,
        ),
        (
            "unknown signmethod",
            Credentials {
                client_id: "a1TestPk001.dev1|signmethod=hmacsha512|".into(),
                ..good.clone()
            },
            60,
            ConnectReturnCode::BadClientId,
        ),
        (
            "keepalive too short",
            good.clone(),
            10,
            ConnectReturnCode::BadClientId,
        ),
        (
            "keepalive too long",
            good.clone(),
            1201,
            ConnectReturnCode::BadClientId,
        ),
        (
            "username without &",
            Credentials {
                username: "dev1".into(),
                ..good.clone()
            },
            60,
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "unknown device",
            creds("nobody", CredentialOptions::default()),
            60,
            ConnectReturnCode::BadUserNamePassword,
        ),
    ];
    for (what, c, ka, expected) in cases {
        assert_eq!(connect_with(&h, &c, ka, true).await.0, expected, "{what}");
    }
    h.registry.set_enabled(&dev("dev2"), false);
    assert_eq!(
        connect_with(&h, &creds("dev2", CredentialOptions::default()), 60, true)
            .await
            .0,
        ConnectReturnCode::NotAuthorized
    );
    h.registry.delete(&dev("dev3"));
    assert_eq!(
        connect_with(&h, &creds("dev3", CredentialOptions::default()), 60, true)
            .await
            .0,
        ConnectReturnCode::NotAuthorized
    );
}

#[tokio::test]
async fn acl_denies_foreign_topics() {
    let h = start(GatewayConfig::default()).await;
    let (mut r, mut w) = online(&h, &creds("dev1", CredentialOptions::default())).await;
    let codes = subscribe(
        &mut r,
        &mut w,
        &[
            "/sys/a1TestPk001/dev1/thing/service/+",
            "/sys/a1TestPk001/dev2/thing/service/+",
            "#",
        ],
    )
    .await;
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure
        ]
    );
    assert_eq!(h.gateway.metrics().get("acl_denied_subscribes"), 2);

    w.send(&publish(
        "/sys/a1TestPk001/dev2/thing/service/x_reply",
        QoS::AtMostOnce,
        b"{}",
    ))
    .await
    .unwrap();
    assert!(
        closed(&mut r).await,
        "a publish outside the namespace closes the connection"
    );
    assert_eq!(h.gateway.metrics().get("acl_denied_publishes"), 1);
}

#[tokio::test]
async fn second_login_kicks_the_first() {
    let h = start(GatewayConfig::default()).await;
    let c = creds("dev1", CredentialOptions::default());
    let (mut r1, _w1) = online(&h, &c).await;
    let (mut r2, mut w2) = online(&h, &c).await;
    assert!(closed(&mut r1).await);
    assert_eq!(h.gateway.metrics().get("sessions_kicked"), 1);
    // The new session is the one that works.
    subscribe(&mut r2, &mut w2, &["/sys/a1TestPk001/dev1/rrpc/request/+"]).await;
    h.gateway
        .deliver(delivery("dev1", 5, rrpc(), Qos::AtMostOnce))
        .await
        .unwrap();
    assert_eq!(
        next_publish(&mut r2).await.topic,
        "/sys/a1TestPk001/dev1/rrpc/request/5"
    );
    assert!(h.gateway.is_online(&dev("dev1")));
}

#[tokio::test(start_paused = false)]
async fn silent_connections_are_dropped_after_one_and_a_half_keepalives() {
    let h = start(GatewayConfig {
        min_keepalive: 1,
        ..GatewayConfig::default()
    })
    .await;
    let c = creds("dev1", CredentialOptions::default());
    let (code, mut r, _w) = connect_with(&h, &c, 1, true).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let started = std::time::Instant::now();
    assert!(closed(&mut r).await);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    assert_eq!(h.gateway.metrics().get("keepalive_timeouts"), 1);
    assert!(!h.gateway.is_online(&dev("dev1")));
}

#[tokio::test]
async fn auto_subscribed_devices_get_system_topics_and_both_rrpc_forms_work() {
    let h = start(GatewayConfig::default()).await;
    let mut events = h.gateway.subscribe();
    // ext=1,_ss=1 (linkkit style): no SUBSCRIBE, extended RRPC.
    let (mut r1, mut w1) = online(
        &h,
        &creds(
            "dev1",
            CredentialOptions {
                ext: true,
                auto_subscribe: true,
                ..Default::default()
            },
        ),
    )
    .await;
    let d = h
        .gateway
        .deliver(delivery("dev1", 11, rrpc(), Qos::AtMostOnce))
        .await
        .unwrap();
    assert_eq!(d.outcome, DeliveryOutcome::Sent);
    let p = next_publish(&mut r1).await;
    assert_eq!(
        p.topic,
        "/ext/rrpc/11/sys/a1TestPk001/dev1/thing/service/Calibrate"
    );
    // The reply comes back on the same topic; correlated by the topic's id
    // even though the Alink id differs.
    let reply = AlinkReply::from_slice(br#"{"id":"999","code":200,"data":{"Result":1}}"#).unwrap();
    w1.send(&publish(&p.topic, QoS::AtMostOnce, &reply.to_vec()))
        .await
        .unwrap();
    let got = next_reply(&mut events).await;
    assert_eq!(
        (got.device.clone(), got.message_id, got.via.clone()),
        (dev("dev1"), Some(MessageId::from_u64(11)), ReplyVia::Rrpc)
    );
    assert_eq!(got.reply.data["Result"], 1);

    // Async service to the _ss device as well.
    h.gateway
        .deliver(delivery(
            "dev1",
            12,
            DeliveryKind::Async {
                identifier: Identifier::new("Reboot").unwrap(),
            },
            Qos::AtLeastOnce,
        ))
        .await
        .unwrap();
    let p = next_publish(&mut r1).await;
    assert_eq!(p.topic, "/sys/a1TestPk001/dev1/thing/service/Reboot");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    w1.send(&Packet::PubAck(PubAck::new(p.pkid))).await.unwrap();
    w1.send(&publish(
        "/sys/a1TestPk001/dev1/thing/service/Reboot_reply",
        QoS::AtMostOnce,
        br#"{"id":"12","code":200,"data":{}}"#,
    ))
    .await
    .unwrap();
    let got = next_reply(&mut events).await;
    assert_eq!(got.message_id, Some(MessageId::from_u64(12)));
    assert_eq!(
        got.via,
        ReplyVia::Async {
            identifier: "Reboot".into()
        }
    );

    // A plain device (no ext, no _ss) sees nothing until it subscribes,
    // then gets the system RRPC form.
    let (mut r2, mut w2) = online(&h, &creds("dev2", CredentialOptions::default())).await;
    let d = h
        .gateway
        .deliver(delivery("dev2", 21, rrpc(), Qos::AtMostOnce))
        .await
        .unwrap();
    assert_eq!(d.outcome, DeliveryOutcome::NoSubscriber);
    subscribe(&mut r2, &mut w2, &["/sys/a1TestPk001/dev2/rrpc/request/+"]).await;
    h.gateway
        .deliver(delivery("dev2", 22, rrpc(), Qos::AtMostOnce))
        .await
        .unwrap();
    let p = next_publish(&mut r2).await;
    assert_eq!(p.topic, "/sys/a1TestPk001/dev2/rrpc/request/22");
    w2.send(&publish(
        "/sys/a1TestPk001/dev2/rrpc/response/22",
        QoS::AtLeastOnce,
        br#"{"id":"22","code":200,"data":{"v":2}}"#,
    ))
    .await
    .unwrap();
    let got = next_reply(&mut events).await;
    assert_eq!(
        (got.device, got.message_id),
        (dev("dev2"), Some(MessageId::from_u64(22)))
    );
    assert_eq!(h.gateway.metrics().get("replies_received"), 3);
}

#[tokio::test]
async fn qos1_is_kept_for_persistent_sessions_and_redelivered() {
    let h = start(GatewayConfig::default()).await;
    let c = creds("dev1", CredentialOptions::default());
    let (code, mut r, mut w) = connect_with(&h, &c, 60, false).await;
    assert_eq!(code, ConnectReturnCode::Success);
    subscribe(&mut r, &mut w, &["/sys/a1TestPk001/dev1/thing/service/+"]).await;
    w.send(&Packet::Disconnect).await.unwrap();
    assert!(closed(&mut r).await);
    // Wait until the gateway has noticed.
    for _ in 0..50 {
        if !h.gateway.is_online(&dev("dev1")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reboot = || DeliveryKind::Async {
        identifier: Identifier::new("Reboot").unwrap(),
    };
    assert_eq!(
        h.gateway
            .deliver(delivery("dev1", 31, reboot(), Qos::AtMostOnce))
            .await,
        Err(TransportError::Offline),
        "QoS 0 is not kept"
    );
    let d = h
        .gateway
        .deliver(delivery("dev1", 32, reboot(), Qos::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(d.outcome, DeliveryOutcome::Queued);

    let (code, mut r, w) = connect_with(&h, &c, 60, false).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let p = next_publish(&mut r).await;
    assert_eq!(p.topic, "/sys/a1TestPk001/dev1/thing/service/Reboot");
    assert!(String::from_utf8_lossy(&p.payload).contains("\"32\""));
    // Not acknowledged: after a reconnect it comes again, marked DUP.
    drop(w);
    drop(r);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, mut r, mut w) = connect_with(&h, &c, 60, false).await;
    let p = next_publish(&mut r).await;
    assert!(p.dup);
    w.send(&Packet::PubAck(PubAck::new(p.pkid))).await.unwrap();
    assert!(h.gateway.metrics().get("messages_redelivered") >= 2);

    // A clean session forgets everything.
    let (code, _r, _w) = connect_with(&h, &c, 60, true).await;
    assert_eq!(code, ConnectReturnCode::Success);
}

#[tokio::test]
async fn bad_input_is_counted_and_never_crashes_the_gateway() {
    let h = start(GatewayConfig {
        max_packet: 1024,
        ..GatewayConfig::default()
    })
    .await;
    let c = creds("dev1", CredentialOptions::default());

    // Garbage instead of CONNECT.
    let stream = tokio::net::TcpStream::connect(&h.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    tokio::io::AsyncWriteExt::write_all(&mut wr, &[0xff, 0x03, 1, 2, 3])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::io::AsyncReadExt::read(&mut rd, &mut buf)
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");

    // A malformed frame after CONNECT.
    let (mut r, mut w) = online(&h, &c).await;
    w.send_raw(&[0x30, 0x02, 0xff, 0xff]).await.unwrap();
    assert!(closed(&mut r).await);

    // An oversized publish.
    let (mut r, mut w) = online(&h, &c).await;
    w.send(&publish(
        "/sys/a1TestPk001/dev1/rrpc/response/1",
        QoS::AtMostOnce,
        &[b'x'; 4096],
    ))
    .await
    .unwrap();
    assert!(closed(&mut r).await);
    assert_eq!(h.gateway.metrics().get("oversized_frames"), 1);

    // A reply that is not JSON is dropped and counted; the connection stays.
    let (mut r, mut w) = online(&h, &c).await;
    w.send(&publish(
        "/sys/a1TestPk001/dev1/rrpc/response/1",
        QoS::AtLeastOnce,
        b"not json",
    ))
    .await
    .unwrap();
    match r.recv_timeout(Duration::from_secs(5)).await.unwrap() {
        Packet::PubAck(_) => {}
        other => panic!("{other:?}"),
    }
    w.send(&Packet::PingReq).await.unwrap();
    assert_eq!(
        r.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        Packet::PingResp
    );
    assert_eq!(h.gateway.metrics().get("bad_payloads"), 1);
    assert!(h.gateway.metrics().get("malformed_frames") >= 2);

    // And the gateway still serves.
    let (mut r2, mut w2) = online(&h, &creds("dev2", CredentialOptions::default())).await;
    w2.send(&Packet::PingReq).await.unwrap();
    assert_eq!(
        r2.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        Packet::PingResp
    );
}

#[tokio::test]
async fn disconnect_closes_the_session_and_reports_presence() {
    let h = start(GatewayConfig::default()).await;
    let mut events = h.gateway.subscribe();
    let (mut r, _w) = online(&h, &creds("dev1", CredentialOptions::default())).await;
    match tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap()
    {
        TransportEvent::Presence(p) => assert!(p.online && p.client_addr.is_some()),
        other => panic!("{other:?}"),
    }
    assert!(h.gateway.disconnect(&dev("dev1"), "device disabled").await);
    assert!(closed(&mut r).await);
    match tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap()
    {
        TransportEvent::Presence(p) => {
            assert!(!p.online);
            assert_eq!(p.reason, "device disabled");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.gateway
            .deliver(delivery("dev1", 1, rrpc(), Qos::AtMostOnce))
            .await,
        Err(TransportError::Offline)
    );
}

/// Credentials that sign `timestamp` (in whatever unit the SDK uses).
fn creds_at(name: &str, timestamp: Option<&str>) -> Credentials {
    use thingcall_sign::device::{MqttClientId, password, password_content, username};
    let device = dev(name);
    let (pk, dn) = (device.product_key.as_str(), device.device_name.as_str());
    let bare = format!("{pk}&{dn}");
    let mut id = MqttClientId::new(bare.as_str())
        .with("securemode", "3")
        .with("signmethod", "hmacsha1");
    if let Some(ts) = timestamp {
        id = id.with("timestamp", ts);
    }
    Credentials {
        client_id: id.to_string(),
        username: username(dn, pk),
        password: password(
            SignMethod::HmacSha1,
            SECRET,
            &password_content(&bare, dn, pk, timestamp),
        ),
    }
}

/// The signed CONNECT timestamp: never checked by default (Alibaba checks
/// no window, and the C SDK signs a constant from 2050), checked against
/// the gateway's clock when a window is configured, in seconds or in
/// milliseconds.
#[tokio::test]
async fn connect_timestamps_are_checked_only_when_a_window_is_set() {
    // The harness clock stands at 1_700_000_000_000 ms.
    let cases: [(&str, Option<&str>, ConnectReturnCode); 7] = [
        ("now, ms", Some("1700000000000"), ConnectReturnCode::Success),
        (
            "now, s (linkkit)",
            Some("1700000000"),
            ConnectReturnCode::Success,
        ),
        (
            "14 min ago",
            Some("1699999160000"),
            ConnectReturnCode::Success,
        ),
        (
            "20 min ago (a replayed CONNECT)",
            Some("1699998800000"),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "the C SDK's constant",
            Some("2524608000000"),
            ConnectReturnCode::BadUserNamePassword,
        ),
        ("none", None, ConnectReturnCode::BadUserNamePassword),
        (
            "not a number",
            Some("soon"),
            ConnectReturnCode::BadUserNamePassword,
        ),
    ];
    let open = start(GatewayConfig::default()).await;
    let strict = start(GatewayConfig {
        timestamp_window: Some(Duration::from_secs(15 * 60)),
        ..GatewayConfig::default()
    })
    .await;
    for (what, ts, want) in cases {
        let c = creds_at("dev1", ts);
        assert_eq!(
            connect_with(&open, &c, 60, true).await.0,
            ConnectReturnCode::Success,
            "default, {what}"
        );
        assert_eq!(
            connect_with(&strict, &c, 60, true).await.0,
            want,
            "15 min window, {what}"
        );
    }
}
