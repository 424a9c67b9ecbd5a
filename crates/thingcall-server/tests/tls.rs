//! TLS and WebSocket listeners: devices over every transport answer calls,
//! HTTPS carries the API, `--require-tls-devices` refuses plaintext
//! logins, hostile peers (plaintext to a TLS port, a stalled handshake, a
//! TLS 1.0 hello, garbage after the handshake, bad WebSocket upgrades, text
//! and oversized frames) get a clean close while the server keeps serving,
//! handshakes count against the connection limit, a reloaded certificate
//! serves new handshakes while open connections stay, and the device
//! namespaces the official SDKs subscribe to are open (and NTP answered)
//! for the device itself only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use thingcall_core::{DeviceName, ProductKey};
use thingcall_gateway::GatewayConfig;
use thingcall_gateway::client::{self, CredentialOptions, Reader, Transport, Writer};
use thingcall_gateway::mqttbytes::QoS;
use thingcall_gateway::mqttbytes::v4::{
    ConnectReturnCode, Packet, Publish, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use thingcall_server::ServerConfig;
use thingcall_transport::DeviceKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn tls_of(h: &Harness) -> &TlsListeners {
    h.tls.as_ref().unwrap()
}

fn over(ca: &Path, tls: bool, websocket: bool) -> Transport {
    Transport {
        tls: tls.then(|| client::tls_trusting(ca).unwrap()),
        websocket,
    }
}

fn key(pk: &str, dn: &str) -> DeviceKey {
    DeviceKey::new(ProductKey::new(pk).unwrap(), DeviceName::new(dn).unwrap())
}

async fn calibrate(http: &str, iot_id: &str) -> serde_json::Value {
    let (_, body) = call(
        http,
        "InvokeThingService",
        &[
            ("IotId", iot_id),
            ("Identifier", "Calibrate"),
            ("Args", r#"{"Offset":1.5}"#),
        ],
    )
    .await;
    body
}

fn connector(ca: &Path) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(client::tls_trusting(ca).unwrap())
}

/// A signed GET over HTTPS; returns the status and the JSON body.
async fn https_call(
    addr: &str,
    ca: &Path,
    action: &str,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut params = common(action);
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let query = signed_query(params, "GET");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_name("127.0.0.1");
    let mut tls = connector(ca).connect(name, tcp).await.unwrap();
    let req = format!("GET /?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked or not, the JSON object is between the first { and last }.
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    (status, serde_json::from_str(json).unwrap())
}

fn rustls_name(host: &str) -> tokio_rustls::rustls::pki_types::ServerName<'static> {
    tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap()
}

/// Reads until the peer closes; true when it closed within `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A gateway counter from `/metrics`.
async fn metric(http: &str, event: &str) -> u64 {
    series(
        http,
        &format!("thingcall_gateway_events_total{{event=\"{event}\"}}"),
    )
    .await
}

/// One series' value from `/metrics`.
async fn series(http: &str, name: &str) -> u64 {
    let (_, _, text) = raw(http, "GET", "/metrics", &[], b"").await;
    let needle = format!("{name} ");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(needle.as_str())
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_answer_over_every_transport_and_https_carries_the_api() {
    let h = Harness::start_tls(ServerConfig::default(), GatewayConfig::default()).await;
    let t = tls_of(&h);
    let pk = product(&h.http, "Tls_1").await;
    let ways = [
        ("tls-on-mqtt", h.mqtt.clone(), over(&t.ca, true, false)),
        ("via-mqtts", t.mqtts.clone(), over(&t.ca, true, false)),
        ("via-ws", t.mqtt_ws.clone(), over(&t.ca, false, true)),
        ("via-wss", t.mqtt_wss.clone(), over(&t.ca, true, true)),
        ("via-plain", h.mqtt.clone(), over(&t.ca, false, false)),
    ];
    let mut stops = Vec::new();
    let mut ids = Vec::new();
    for (name, addr, transport) in ways {
        let (iot_id, secret) = device(&h.http, &pk, name).await;
        stops.push(simulate_over(&addr, transport, &pk, name, &secret));
        wait_status(&h.http, &iot_id, "ONLINE").await;
        ids.push((name, iot_id));
    }
    for (name, iot_id) in &ids {
        let body = calibrate(&h.http, iot_id).await;
        assert_eq!(body["Success"], true, "{name}: {body}");
        assert!(body["Data"]["Result"].is_string(), "{name}: {body}");
        // The same call through the HTTPS listener.
        let (status, body) = https_call(
            &t.https,
            &t.ca,
            "InvokeThingService",
            &[
                ("IotId", iot_id),
                ("Identifier", "Calibrate"),
                ("Args", r#"{"Offset":2}"#),
            ],
        )
        .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["Success"], true, "{name}: {body}");
    }
    drop(stops);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_refuses_plaintext_logins_on_every_listener() {
    let gateway = GatewayConfig {
        require_tls: true,
        ..GatewayConfig::default()
    };
    let h = Harness::start_tls(ServerConfig::default(), gateway).await;
    let t = tls_of(&h);
    let pk = product(&h.http, "Tls_2").await;
    let (_, secret) = device(&h.http, &pk, "strict").await;
    let creds = client::credentials(&key(&pk, "strict"), &secret, CredentialOptions::default());
    let cases = [
        (
            h.mqtt.clone(),
            over(&t.ca, false, false),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            t.mqtt_ws.clone(),
            over(&t.ca, false, true),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            h.mqtt.clone(),
            over(&t.ca, true, false),
            ConnectReturnCode::Success,
        ),
        (
            t.mqtts.clone(),
            over(&t.ca, true, false),
            ConnectReturnCode::Success,
        ),
        (
            t.mqtt_wss.clone(),
            over(&t.ca, true, true),
            ConnectReturnCode::Success,
        ),
    ];
    for (addr, transport, want) in cases {
        let (ack, _r, _w) =
            client::connect_over(&addr, &transport, client::connect_packet(&creds, 60, true))
                .await
                .unwrap();
        assert_eq!(ack.code, want, "{addr} tls={}", transport.tls.is_some());
    }
    assert_eq!(metric(&h.http, "plaintext_logins_refused").await, 2);
    h.stop().await;
}

/// A TLS 1.0 ClientHello (record and hello version 3.1, one CBC suite, no
/// extensions).
fn tls10_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x01];
    hello.extend([7u8; 32]); // random
    hello.push(0); // no session id
    hello.extend([0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    hello.extend([0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(handshake);
    record
}

/// A raw WebSocket upgrade; returns the status line.
async fn upgrade_status(addr: &str, path: &str, protocol: Option<&str>) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let proto = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    text.lines().next().unwrap_or("").to_owned()
}

/// A WebSocket client to the plain ws listener with the mqtt subprotocol.
async fn ws_client(addr: &str) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let mut req = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "mqtt"
    );
    ws
}

/// Reads WebSocket messages until the connection ends; returns the close
/// code received, if any.
async fn close_code<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return Some(frame.code.into()),
            Ok(Some(Ok(_))) => {}
            Ok(None) | Ok(Some(Err(_))) => return None,
            Err(_) => panic!("the server did not close the WebSocket"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_get_a_clean_close_and_the_server_keeps_serving() {
    let gateway = GatewayConfig {
        handshake_timeout: Duration::from_secs(1),
        max_packet: 16 * 1024,
        ..GatewayConfig::default()
    };
    let config = ServerConfig {
        tls_handshake_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let h = Harness::start_tls(config, gateway).await;
    let t = tls_of(&h);
    let limit = Duration::from_secs(4);

    // Plaintext MQTT to the TLS-only port.
    let pk = product(&h.http, "Tls_3").await;
    let (iot_id, secret) = device(&h.http, &pk, "steady").await;
    let creds = client::credentials(&key(&pk, "steady"), &secret, CredentialOptions::default());
    assert!(
        client::connect(&t.mqtts, client::connect_packet(&creds, 60, true))
            .await
            .is_err()
    );

    // A client that stops mid-handshake, on each TLS listener: closed once
    // the handshake limit is over.
    for addr in [&t.mqtts, &h.mqtt, &t.mqtt_wss, &t.https] {
        let mut tcp = tokio::net::TcpStream::connect(addr.as_str()).await.unwrap();
        tcp.write_all(&tls10_client_hello()[..12]).await.unwrap();
        let started = Instant::now();
        assert!(closed_within(&mut tcp, limit).await, "{addr}");
        assert!(started.elapsed() >= Duration::from_millis(900), "{addr}");
    }
    // A silent client on the MQTT port (which waits for a first byte).
    let mut silent = tokio::net::TcpStream::connect(h.mqtt.as_str())
        .await
        .unwrap();
    assert!(closed_within(&mut silent, limit).await);

    // A TLS 1.0 hello: an alert, then the end.
    for addr in [&t.mqtts, &h.mqtt, &t.https] {
        let mut tcp = tokio::net::TcpStream::connect(addr.as_str()).await.unwrap();
        tcp.write_all(&tls10_client_hello()).await.unwrap();
        let mut first = [0u8; 1];
        let n = tokio::time::timeout(limit, tcp.read(&mut first))
            .await
            .unwrap()
            .unwrap_or(0);
        assert!(n == 0 || first[0] == 0x15, "{addr}: {first:?}");
        assert!(closed_within(&mut tcp, limit).await, "{addr}");
    }

    // Garbage after a good handshake.
    for addr in [&t.mqtts, &h.mqtt] {
        let tcp = tokio::net::TcpStream::connect(addr.as_str()).await.unwrap();
        let mut tls = connector(&t.ca)
            .connect(rustls_name("127.0.0.1"), tcp)
            .await
            .unwrap();
        tls.write_all(&[0xff; 64]).await.unwrap();
        tls.flush().await.unwrap();
        assert!(closed_within(&mut tls, limit).await, "{addr}");
    }

    // WebSocket upgrades the gateway does not serve.
    assert!(
        upgrade_status(&t.mqtt_ws, "/mqtt", None)
            .await
            .contains(" 400 ")
    );
    assert!(
        upgrade_status(&t.mqtt_ws, "/mqtt", Some("chat"))
            .await
            .contains(" 400 ")
    );
    assert!(
        upgrade_status(&t.mqtt_ws, "/other", Some("mqtt"))
            .await
            .contains(" 404 ")
    );
    let mut plain_http = tokio::net::TcpStream::connect(t.mqtt_ws.as_str())
        .await
        .unwrap();
    plain_http
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut plain_http, limit).await);

    // A text frame: close code 1003.
    let mut ws = ws_client(&t.mqtt_ws).await;
    ws.send(Message::text("CONNECT?")).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1003));

    // A frame over the packet limit: close code 1009 (or the end).
    let mut ws = ws_client(&t.mqtt_ws).await;
    let _ = ws.send(Message::binary(vec![0x10u8; 64 * 1024])).await;
    let code = close_code(&mut ws).await;
    assert!(code.is_none() || code == Some(1009), "{code:?}");

    // Through all of it, the server served: a device over wss answers.
    let stop = simulate_over(&t.mqtt_wss, over(&t.ca, true, true), &pk, "steady", &secret);
    wait_status(&h.http, &iot_id, "ONLINE").await;
    let body = calibrate(&h.http, &iot_id).await;
    assert_eq!(body["Success"], true, "{body}");
    // Plaintext, three stalled (mqtts, mqtt, wss), two TLS 1.0 on the MQTT
    // listeners; the four bad upgrades.
    assert!(metric(&h.http, "tls_handshakes_failed").await >= 6);
    assert!(metric(&h.http, "websocket_upgrades_failed").await >= 4);
    let https_failed = "thingcall_http_events_total{event=\"tls_handshakes_failed\"}";
    assert!(series(&h.http, https_failed).await >= 2);
    drop(stop);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_in_progress_count_against_the_connection_limit() {
    let gateway = GatewayConfig {
        max_connections: 2,
        handshake_timeout: Duration::from_secs(2),
        ..GatewayConfig::default()
    };
    let h = Harness::start_tls(ServerConfig::default(), gateway).await;
    let t = tls_of(&h);
    // Two handshakes that never finish hold both slots.
    let mut a = tokio::net::TcpStream::connect(t.mqtts.as_str())
        .await
        .unwrap();
    let mut b = tokio::net::TcpStream::connect(t.mqtt_wss.as_str())
        .await
        .unwrap();
    a.write_all(&[0x16, 0x03]).await.unwrap();
    b.write_all(&[0x16, 0x03]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third connection, on any device listener, is closed at once.
    for addr in [&h.mqtt, &t.mqtt_ws] {
        // The reset may even beat the connect.
        if let Ok(mut c) = tokio::net::TcpStream::connect(addr.as_str()).await {
            assert!(
                closed_within(&mut c, Duration::from_millis(500)).await,
                "{addr}"
            );
        }
    }
    assert!(metric(&h.http, "connections_over_limit").await >= 2);
    // The stalled handshakes end, and their slots serve a device again.
    assert!(closed_within(&mut a, Duration::from_secs(4)).await);
    assert!(closed_within(&mut b, Duration::from_secs(4)).await);
    let pk = product(&h.http, "Tls_4").await;
    let (_, secret) = device(&h.http, &pk, "after").await;
    let creds = client::credentials(&key(&pk, "after"), &secret, CredentialOptions::default());
    let (ack, _r, _w) = client::connect_over(
        &t.mqtts,
        &over(&t.ca, true, false),
        client::connect_packet(&creds, 60, true),
    )
    .await
    .unwrap();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_serves_new_handshakes_while_open_connections_stay() {
    let h = Harness::start_tls(ServerConfig::default(), GatewayConfig::default()).await;
    let t = tls_of(&h);
    let pk = product(&h.http, "Tls_5").await;
    let (iot_id, secret) = device(&h.http, &pk, "long-lived").await;
    let stop = simulate_over(
        &t.mqtts,
        over(&t.ca, true, false),
        &pk,
        "long-lived",
        &secret,
    );
    wait_status(&h.http, &iot_id, "ONLINE").await;

    // Another CA's certificate replaces the files.
    let other = thingcall_tls::demo::ensure(&temp_dir("tls-other")).unwrap();
    let files = t.server_tls.files().clone();
    let before = t.server_tls.current_certificate();
    // A broken certificate first: refused, the old one serves on.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\n!!\n").unwrap();
    assert!(t.server_tls.reload().is_err());
    assert_eq!(t.server_tls.current_certificate(), before);
    std::fs::copy(&other.files.key, &files.key).unwrap();
    std::fs::copy(&other.files.cert, &files.cert).unwrap();
    t.server_tls.reload().unwrap();

    // New handshakes show the new certificate: the old CA no longer
    // verifies it, the new one does.
    let tcp = tokio::net::TcpStream::connect(t.mqtts.as_str())
        .await
        .unwrap();
    assert!(
        connector(&t.ca)
            .connect(rustls_name("127.0.0.1"), tcp)
            .await
            .is_err()
    );
    let tcp = tokio::net::TcpStream::connect(t.https.as_str())
        .await
        .unwrap();
    connector(&other.ca)
        .connect(rustls_name("localhost"), tcp)
        .await
        .unwrap();
    // The device connected before the reload is still there and answers.
    let body = calibrate(&h.http, &iot_id).await;
    assert_eq!(body["Success"], true, "{body}");
    drop(stop);
    h.stop().await;
}

async fn login(h: &Harness, pk: &str, dn: &str, secret: &str) -> (Reader, Writer) {
    let creds = client::credentials(&key(pk, dn), secret, CredentialOptions::default());
    let (ack, r, w) = client::connect(&h.mqtt, client::connect_packet(&creds, 60, true))
        .await
        .unwrap();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    (r, w)
}

async fn suback(r: &mut Reader) -> Vec<SubscribeReasonCode> {
    loop {
        if let Packet::SubAck(a) = r.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            return a.return_codes;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_namespaces_are_open_to_their_device_only_and_ntp_is_answered() {
    let h = Harness::start(ServerConfig::default()).await;
    let pk = product(&h.http, "Tls_6").await;
    let (_, secret) = device(&h.http, &pk, "node-like").await;
    let (mut r, mut w) = login(&h, &pk, "node-like", &secret).await;
    // What the official Node device SDK subscribes to at start, and more.
    let own = [
        format!("/shadow/get/{pk}/node-like"),
        format!("/ext/session/{pk}/node-like/combine/login_reply"),
        format!("/ext/session/{pk}/node-like/combine/logout_reply"),
        format!("/ext/ntp/{pk}/node-like/response"),
        format!("/ota/device/upgrade/{pk}/node-like"),
        format!("/{pk}/node-like/user/get"),
        format!("/sys/{pk}/node-like/thing/event/property/post_reply"),
    ];
    let others = [
        format!("/shadow/get/{pk}/someone"),
        format!("/ext/session/{pk}/someone/combine/login_reply"),
        format!("/ext/ntp/{pk}/someone/response"),
        format!("/ota/device/upgrade/{pk}/someone"),
        format!("/{pk}/someone/user/get"),
        format!("/sys/{pk}/someone/thing/service/+"),
        "/shadow/#".to_owned(),
        "/ext/#".to_owned(),
        "#".to_owned(),
    ];
    let all = own.iter().chain(others.iter());
    let sub = Subscribe::new_many(all.map(|f| SubscribeFilter::new(f.clone(), QoS::AtMostOnce)));
    w.send(&Packet::Subscribe(sub)).await.unwrap();
    let codes = suback(&mut r).await;
    for (i, f) in own.iter().chain(others.iter()).enumerate() {
        let granted = matches!(codes[i], SubscribeReasonCode::Success(_));
        assert_eq!(granted, i < own.len(), "{f}: {:?}", codes[i]);
    }

    // NTP: the answer carries the device's time and the server's two times.
    let sent = r#"{"deviceSendTime":"1700000000000"}"#;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    w.send(&Packet::Publish(Publish::new(
        format!("/ext/ntp/{pk}/node-like/request"),
        QoS::AtMostOnce,
        sent,
    )))
    .await
    .unwrap();
    let answer = loop {
        if let Packet::Publish(p) = r.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            break p;
        }
    };
    assert_eq!(answer.topic, format!("/ext/ntp/{pk}/node-like/response"));
    let v: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(v["deviceSendTime"], "1700000000000");
    let recv: i64 = v["serverRecvTime"].as_str().unwrap().parse().unwrap();
    let send: i64 = v["serverSendTime"].as_str().unwrap().parse().unwrap();
    assert!(recv >= before - 1000 && send >= recv, "{v}");

    // Publishing in another device's namespace still ends the connection.
    w.send(&Packet::Publish(Publish::new(
        format!("/ext/ntp/{pk}/someone/request"),
        QoS::AtMostOnce,
        sent,
    )))
    .await
    .unwrap();
    let end = r.recv_timeout(Duration::from_secs(5)).await;
    assert!(end.is_err(), "{end:?}");
    h.stop().await;
}
