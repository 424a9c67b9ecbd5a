//! A device that logs in, subscribes, and then never reads its socket: once
//! the socket buffers are full every write to it waits. The gateway must
//! still act on a new login, the keepalive deadline, a stalled write and
//! shutdown, and the old TCP connection must be gone (reset) quickly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Subscribe, SubscribeFilter};
use thingcall_core::{
    DeviceName, Identifier, ManualClock, MessageId, ProductKey, Qos, Secret, UnixMillis,
};
use thingcall_gateway::client::{self, CredentialOptions};
use thingcall_gateway::{Gateway, GatewayConfig, MapRegistry};
use thingcall_transport::{
    Delivery, DeliveryKind, DeviceKey, EventStream, RrpcForm, Transport, TransportError,
    TransportEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "s3cr3t-device-secret";

fn dev() -> DeviceKey {
    DeviceKey::new(
        ProductKey::new("a1TestPk001").unwrap(),
        DeviceName::new("dev1").unwrap(),
    )
}

struct Harness {
    gateway: Gateway,
    addr: String,
    events: EventStream,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(config: GatewayConfig) -> Harness {
    let registry = Arc::new(MapRegistry::new());
    registry.insert(dev(), Secret::new(SECRET));
    let clock = Arc::new(ManualClock::new(UnixMillis::new(1_700_000_000_000)));
    let gateway = Gateway::new(config, registry, clock);
    let events = gateway.subscribe();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let g = gateway.clone();
    let served = tokio::spawn(async move {
        g.serve(listener, async {
            let _ = stopped.await;
        })
        .await
    });
    Harness {
        gateway,
        addr,
        events,
        stop: Some(stop),
        served,
    }
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.write(&mut out, usize::MAX).unwrap();
    out.to_vec()
}

/// Reads exactly one small packet (CONNACK, SUBACK) byte by byte, so that
/// nothing beyond it is taken from the socket.
async fn read_small_packet(stream: &mut TcpStream) -> Packet {
    let mut buf = BytesMut::new();
    loop {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        buf.extend_from_slice(&byte);
        let mut probe = buf.clone();
        if let Ok(p) = Packet::read(&mut probe, usize::MAX) {
            return p;
        }
    }
}

/// Logs in with a tiny receive buffer, subscribes to RRPC requests, and
/// from then on never reads.
async fn stuck_device(addr: &str, keep_alive: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let creds = client::credentials(&dev(), SECRET, CredentialOptions::default());
    let connect = client::connect_packet(&creds, keep_alive, true);
    stream
        .write_all(&encode(&Packet::Connect(connect)))
        .await
        .unwrap();
    assert!(matches!(
        read_small_packet(&mut stream).await,
        Packet::ConnAck(_)
    ));
    let sub = Subscribe::new_many([SubscribeFilter::new(
        "/sys/a1TestPk001/dev1/rrpc/request/+".to_owned(),
        QoS::AtMostOnce,
    )]);
    stream
        .write_all(&encode(&Packet::Subscribe(sub)))
        .await
        .unwrap();
    assert!(matches!(
        read_small_packet(&mut stream).await,
        Packet::SubAck(_)
    ));
    stream
}

/// Sends calls of 64 KiB to the device until far more is queued than any
/// socket buffer holds, then gives the session time to block in a write.
async fn fill(gateway: &Gateway) {
    let payload = vec![b'x'; 64 * 1024];
    for id in 1..=200u64 {
        let delivery = Delivery {
            device: dev(),
            message_id: MessageId::from_u64(id),
            kind: DeliveryKind::Rrpc {
                identifier: Identifier::new("Calibrate").unwrap(),
                form: RrpcForm::Auto,
            },
            qos: Qos::AtMostOnce,
            payload: payload.clone(),
        };
        match gateway.deliver(delivery).await {
            Ok(_) | Err(TransportError::QueueFull) => {}
            Err(e) => panic!("delivery {id}: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Waits until the kernel reports the connection reset (the gateway closed
/// it with SO_LINGER 0), without reading: reading would unblock the writer.
async fn reset_within(stream: &TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(e)) = stream.take_error() {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn offline_reason(events: &mut EventStream, limit: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(TransportEvent::Presence(p))) if !p.online => return Some(p.reason),
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_login_replaces_a_session_blocked_in_a_write() {
    let h = start(GatewayConfig {
        write_stall_timeout: Duration::from_secs(120),
        ..GatewayConfig::default()
    })
    .await;
    let old = stuck_device(&h.addr, 60).await;
    fill(&h.gateway).await;
    let creds = client::credentials(&dev(), SECRET, CredentialOptions::default());
    let (ack, _r, _w) = client::connect(&h.addr, client::connect_packet(&creds, 60, true))
        .await
        .unwrap();
    assert_eq!(ack.code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success);
    let took = reset_within(&old, Duration::from_secs(1)).await;
    assert!(
        took.is_some(),
        "the replaced connection is still open 1 s after the new login"
    );
    assert_eq!(h.gateway.metrics().get("sessions_kicked"), 1);
    assert!(h.gateway.is_online(&dev()), "the new session stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keepalive_deadline_holds_while_a_write_is_blocked() {
    let mut h = start(GatewayConfig {
        min_keepalive: 1,
        write_stall_timeout: Duration::from_secs(120),
        ..GatewayConfig::default()
    })
    .await;
    // Keepalive 2 s: the device must be dropped 3 s after its last packet.
    let old = stuck_device(&h.addr, 2).await;
    let started = Instant::now();
    fill(&h.gateway).await;
    let reason = offline_reason(&mut h.events, Duration::from_secs(6)).await;
    assert_eq!(reason.as_deref(), Some("keepalive timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(reset_within(&old, Duration::from_secs(1)).await.is_some());
    assert_eq!(h.gateway.metrics().get("keepalive_timeouts"), 1);
    assert!(!h.gateway.is_online(&dev()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_progress_closes_the_session() {
    let mut h = start(GatewayConfig {
        write_stall_timeout: Duration::from_secs(1),
        ..GatewayConfig::default()
    })
    .await;
    let mut old = stuck_device(&h.addr, 60).await;
    fill(&h.gateway).await;
    // The device keeps pinging (it is alive, it just does not read), so
    // only the stall bound can close it.
    let ping = encode(&Packet::PingReq);
    let pinger = tokio::spawn(async move {
        for _ in 0..30 {
            if let Err(e) = old.write_all(&ping).await {
                return Some(e.kind());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        old.take_error().ok().flatten().map(|e| e.kind())
    });
    let reason = offline_reason(&mut h.events, Duration::from_secs(5)).await;
    assert_eq!(reason.as_deref(), Some("stopped reading (write stalled)"));
    assert_eq!(h.gateway.metrics().get("write_stalls"), 1);
    assert_eq!(h.gateway.metrics().get("keepalive_timeouts"), 0);
    // The device learns of the reset from its next ping.
    let seen = pinger.await.unwrap();
    assert!(
        matches!(
            seen,
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
        ),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_a_session_blocked_in_a_write() {
    let mut h = start(GatewayConfig {
        write_stall_timeout: Duration::from_secs(120),
        ..GatewayConfig::default()
    })
    .await;
    let old = stuck_device(&h.addr, 60).await;
    fill(&h.gateway).await;
    let _ = h.stop.take().unwrap().send(());
    h.served.await.unwrap().unwrap();
    assert!(
        reset_within(&old, Duration::from_secs(1)).await.is_some(),
        "shutdown left the blocked connection open"
    );
    assert_eq!(
        offline_reason(&mut h.events, Duration::from_secs(1))
            .await
            .as_deref(),
        Some("gateway shutting down")
    );
}
