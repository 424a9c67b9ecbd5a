//! Several `thingcall serve` nodes on one PostgreSQL database and a
//! three-server NATS cluster, as processes: the official SDKs drive them,
//! devices move between them, and nodes and NATS servers fail under load.
//!
//! They run when `THINGCALL_TEST_POSTGRES` names a server and `nats-server`
//! is installed; CI sets `THINGCALL_REQUIRE_CLUSTER=1`, which turns a
//! missing part into a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code
#![allow(clippy::zombie_processes)] // children are waited for by their owners

mod common;
#[path = "cluster/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::*;
use thingcall_core::{DeviceName, ProductKey};
use thingcall_gateway::client::{self, ClientError, CredentialOptions};
use thingcall_gateway::mqttbytes::v4::{ConnectReturnCode, Packet};
use thingcall_transport::DeviceKey;

fn python() -> Option<PathBuf> {
    let python = match std::env::var("THINGCALL_SDK_PYTHON") {
        Ok(p) => PathBuf::from(p),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    };
    let ok = std::process::Command::new(&python)
        .args([
            "-c",
            "import aliyunsdkiot, linkkit, alibabacloud_iot20180120",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("THINGCALL_REQUIRE_SDK").as_deref() != Ok("1"),
        "THINGCALL_REQUIRE_SDK=1 but {} lacks the official SDKs",
        python.display()
    );
    eprintln!("skipped: no Python with the official SDKs");
    None
}

/// An MQTT session of a device, opened by hand (clean session or not).
async fn login(
    mqtt: &str,
    pk: &str,
    dn: &str,
    secret: &str,
    clean: bool,
) -> Result<(client::Reader, client::Writer), ConnectReturnCode> {
    let key = DeviceKey::new(ProductKey::new(pk).unwrap(), DeviceName::new(dn).unwrap());
    let creds = client::credentials(&key, secret, CredentialOptions::default());
    let (ack, reader, writer) = client::connect(mqtt, client::connect_packet(&creds, 60, clean))
        .await
        .unwrap();
    if ack.code == ConnectReturnCode::Success {
        Ok((reader, writer))
    } else {
        Err(ack.code)
    }
}

/// Every node tells the same status of the device.
async fn status_everywhere(nodes: &[&Node], pk: &str, dn: &str, expected: &str) {
    for node in nodes {
        assert_eq!(
            status(&node.http, pk, dn).await,
            expected,
            "on {}",
            node.name
        );
    }
}

/// An async `Reboot` call through a node (QoS 1 when `qos1`).
async fn reboot(http: &str, pk: &str, dn: &str, delay: u32, qos1: bool) -> serde_json::Value {
    let args = format!(r#"{{"Delay":{delay}}}"#);
    let mut params = vec![
        ("ProductKey", pk),
        ("DeviceName", dn),
        ("Identifier", "Reboot"),
        ("Args", args.as_str()),
    ];
    if qos1 {
        params.push(("Qos", "1"));
    }
    api(http, "InvokeThingService", &params).await
}

/// Reads until the gateway closes the session; how long that took.
async fn closed_within(reader: &mut client::Reader, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match reader
            .recv_timeout(limit.saturating_sub(start.elapsed()))
            .await
        {
            Ok(_) => continue,
            Err(ClientError::Closed | ClientError::Io(_)) => return start.elapsed(),
            Err(e) => panic!("the session was not closed within {limit:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_drive_a_three_node_cluster() {
    let Some(python) = python() else { return };
    let Some(c) = Cluster::start("sdk", 3).await else {
        return;
    };
    let (a, b, cc) = (c.node("A"), c.node("B"), c.node("C"));
    let port = |addr: &str| addr.rsplit(':').next().unwrap().to_owned();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/compat/cluster_sdk.py");
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(&python)
            .arg(&script)
            .args([&a.http, &b.http, &cc.http])
            .args([port(&b.mqtt), port(&cc.mqtt)])
            .args([common::ID, common::SECRET])
            .arg(model_path())
            .arg(env!("CARGO_BIN_EXE_thingcall"))
            .output(),
    )
    .await
    .expect("the SDK script timed out")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // A nonce used on node A is refused on node B (and on A again).
    let query = signed_query(
        "GetDeviceStatus",
        &[("IotId", "nobody")],
        "cross-node-nonce",
    );
    let first = get(&a.http, &query).await;
    assert_ne!(first["Code"], "SignatureNonceUsed", "{first}");
    for node in [b, a, cc] {
        let again = get(&node.http, &query).await;
        assert_eq!(
            again["Code"], "SignatureNonceUsed",
            "node {}: {again}",
            node.name
        );
    }

    // Every node labels its metrics with itself.
    let metrics = reqwest_metrics(&b.http).await;
    assert!(
        metrics.contains("thingcall_devices_online{node=\"node-B\"}"),
        "{metrics}"
    );
}

async fn reqwest_metrics(http: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_the_registry_follow_devices_across_nodes() {
    let Some(c) = Cluster::start("sessions", 3).await else {
        return;
    };
    let (a, b, cc) = (c.node("A"), c.node("B"), c.node("C"));
    let pk = product(&a.http, "Sessions").await;
    let (_, secret) = device(&a.http, &pk, "mover").await;

    // Registered on A: known on C within a second.
    let took = eventually(
        "a new device is known on C",
        Duration::from_secs(1),
        || async { status(&cc.http, &pk, "mover").await == "UNACTIVE" },
    )
    .await;
    eprintln!("registration reached node C in {took:?}");

    // Never activated: InactiveDevice from every node. Once activated and
    // offline everywhere: OFFLINE at once, from every node.
    for node in [a, b, cc] {
        let (r, _) = calibrate(&node.http, &pk, "mover").await;
        assert_eq!(r["Code"], "iot.device.InactiveDevice", "{r}");
    }
    drop(login(&b.mqtt, &pk, "mover", &secret, true).await.unwrap());
    // Presence travels between nodes as events: each node shows the
    // activation a moment apart.
    for node in [a, b, cc] {
        eventually("offline on every node", Duration::from_secs(2), || async {
            status(&node.http, &pk, "mover").await == "OFFLINE"
        })
        .await;
    }
    for node in [a, b, cc] {
        let (r, took) = calibrate(&node.http, &pk, "mover").await;
        assert_eq!(r["Code"], "iot.messagebroker.OFFLINE", "{r}");
        assert!(took < Duration::from_millis(500), "{took:?}");
    }

    // Logged in on A, then on B: A's session is closed within 1 s.
    let (mut on_a, _wa) = login(&a.mqtt, &pk, "mover", &secret, true).await.unwrap();
    eventually("online on C", Duration::from_secs(2), || async {
        status(&cc.http, &pk, "mover").await == "ONLINE"
    })
    .await;
    let (mut on_b, _wb) = login(&b.mqtt, &pk, "mover", &secret, true).await.unwrap();
    let took = closed_within(&mut on_a, Duration::from_secs(1)).await;
    eprintln!("the session on A closed {took:?} after the login on B");
    status_everywhere(&[a, b, cc], &pk, "mover", "ONLINE").await;

    // Disabled through A: disconnected on B within 1 s, refused on C.
    let r = api(
        &a.http,
        "DisableThing",
        &[("ProductKey", &pk), ("DeviceName", "mover")],
    )
    .await;
    assert_eq!(r["Success"], true, "{r}");
    let took = closed_within(&mut on_b, Duration::from_secs(1)).await;
    eprintln!("the session on B closed {took:?} after DisableThing on A");
    let refused = login(&cc.mqtt, &pk, "mover", &secret, true).await;
    assert!(refused.is_err(), "a disabled device logged in on C");
    status_everywhere(&[a, b, cc], &pk, "mover", "DISABLE").await;
    let r = api(
        &b.http,
        "EnableThing",
        &[("ProductKey", &pk), ("DeviceName", "mover")],
    )
    .await;
    assert_eq!(r["Success"], true, "{r}");
    eventually("enabled on C", Duration::from_secs(1), || async {
        login(&cc.mqtt, &pk, "mover", &secret, true).await.is_ok()
    })
    .await;

    // Deleted through C: gone on A within a second.
    let (_, other_secret) = device(&cc.http, &pk, "short-lived").await;
    eventually("known on A", Duration::from_secs(1), || async {
        status(&a.http, &pk, "short-lived").await == "UNACTIVE"
    })
    .await;
    let (mut on_a2, _w) = login(&a.mqtt, &pk, "short-lived", &other_secret, true)
        .await
        .unwrap();
    let r = api(
        &cc.http,
        "DeleteDevice",
        &[("ProductKey", &pk), ("DeviceName", "short-lived")],
    )
    .await;
    assert_eq!(r["Success"], true, "{r}");
    closed_within(&mut on_a2, Duration::from_secs(1)).await;
    let r = api(
        &a.http,
        "GetDeviceStatus",
        &[("ProductKey", &pk), ("DeviceName", "short-lived")],
    )
    .await;
    assert_eq!(r["Code"], "iot.device.NotExistedDevice", "{r}");
    c.assert_no_secret_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_notices_catches_up_before_it_answers() {
    let Some(mut c) = Cluster::start("catch-up", 2).await else {
        return;
    };
    let a_http = c.node("A").http.clone();
    let pk = product(&a_http, "CatchUp").await;

    // Node B's listening connection is cut: what A changes meanwhile
    // reaches B all the same.
    let url = std::env::var("THINGCALL_TEST_POSTGRES").unwrap();
    let db = common::database_name(&c.dir);
    let admin = url
        .rsplit_once('/')
        .map_or(url.as_str(), |(b, _)| b)
        .to_owned()
        + "/"
        + &db;
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let cut = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 2, "one listener per node");
    device(&a_http, &pk, "while-cut").await;
    let b_http = c.node("B").http.clone();
    eventually(
        "B sees the device registered while cut",
        Duration::from_secs(2),
        || async { status(&b_http, &pk, "while-cut").await == "UNACTIVE" },
    )
    .await;

    // Node B stopped; A changes the registry; B restarted knows it at its
    // first answer.
    assert!(c.node_mut("B").terminate().success());
    device(&a_http, &pk, "while-down").await;
    c.node_mut("B").restart(&[]);
    let b_http = c.node("B").http.clone();
    assert_eq!(status(&b_http, &pk, "while-down").await, "UNACTIVE");

    // An AccessKey given to a restarted node A reaches B within a second.
    assert!(c.node_mut("A").terminate().success());
    c.node_mut("A").restart(&[
        ("--access-key-id", "second-key"),
        ("--access-key-secret", "second-secret"),
    ]);
    let took = eventually(
        "the new AccessKey works on B",
        Duration::from_secs(1),
        || async {
            let q = signed_query_as(
                "second-key",
                "second-secret",
                "GetDeviceStatus",
                &[("ProductKey", &pk), ("DeviceName", "while-down")],
                &format!("k2-{}", rand_tag()),
            );
            get(&b_http, &q).await["Success"] == true
        },
    )
    .await;
    eprintln!("a new AccessKey reached node B in {took:?} (after node A started)");
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_stays_on_its_node() {
    let Some(c) = Cluster::start("persistent", 2).await else {
        return;
    };
    let (a, b) = (c.node("A"), c.node("B"));
    let pk = product(&a.http, "Persistent").await;
    let (_, secret) = device(&a.http, &pk, "keeper").await;

    // A clean-session-0 device subscribes on A, then goes away.
    let (mut rd, mut wr) = login(&a.mqtt, &pk, "keeper", &secret, false).await.unwrap();
    let topic = format!("/sys/{pk}/keeper/thing/service/+");
    wr.send(&Packet::Subscribe(
        thingcall_gateway::mqttbytes::v4::Subscribe::new(
            &topic,
            thingcall_gateway::mqttbytes::QoS::AtLeastOnce,
        ),
    ))
    .await
    .unwrap();
    assert!(matches!(
        rd.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        Packet::SubAck(_)
    ));
    drop((rd, wr));
    eventually("offline on B", Duration::from_secs(2), || async {
        status(&b.http, &pk, "keeper").await == "OFFLINE"
    })
    .await;

    // An async QoS 1 call through B is queued in A's kept session...
    let r = reboot(&b.http, &pk, "keeper", 1, true).await;
    assert_eq!(r["Success"], true, "queued for the kept session: {r}");

    // ... and delivered when the device comes back to A.
    let (mut rd, wr) = login(&a.mqtt, &pk, "keeper", &secret, false).await.unwrap();
    let delivered = loop {
        match rd.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            Packet::Publish(p) if p.topic.ends_with("/thing/service/Reboot") => break p,
            _ => continue,
        }
    };
    assert!(String::from_utf8_lossy(&delivered.payload).contains("Delay"));
    drop((rd, wr));

    // The documented limit: a device that returns to another node starts
    // a new session there; what was queued on the old node is dropped.
    eventually("offline", Duration::from_secs(2), || async {
        status(&b.http, &pk, "keeper").await == "OFFLINE"
    })
    .await;
    let r = reboot(&a.http, &pk, "keeper", 2, true).await;
    assert_eq!(r["Success"], true, "{r}");
    let (mut rd, mut wr) = login(&b.mqtt, &pk, "keeper", &secret, false).await.unwrap();
    wr.send(&Packet::Subscribe(
        thingcall_gateway::mqttbytes::v4::Subscribe::new(
            &topic,
            thingcall_gateway::mqttbytes::QoS::AtLeastOnce,
        ),
    ))
    .await
    .unwrap();
    assert!(matches!(
        rd.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        Packet::SubAck(_)
    ));
    match rd.recv_timeout(Duration::from_secs(1)).await {
        Err(ClientError::Timeout) => {}
        other => panic!("the queued message followed the device to B: {other:?}"),
    }
    // The old node let the kept session go: calls now reach B.
    let r = reboot(&a.http, &pk, "keeper", 3, false).await;
    assert_eq!(r["Success"], true, "{r}");
    let got = rd.recv_timeout(Duration::from_secs(5)).await.unwrap();
    assert!(matches!(got, Packet::Publish(_)), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_no_record_and_its_devices_move() {
    let Some(mut c) = Cluster::start("kill", 3).await else {
        return;
    };
    let a_http = c.node("A").http.clone();
    let c_http = c.node("C").http.clone();
    let pk = product(&a_http, "Kill9").await;
    // Devices reach node B through the balancer; slow ones keep calls in
    // flight.
    c.balancer.route_to(&[&c.node("B").mqtt]);
    let mut sims = Vec::new();
    for i in 0..4 {
        let dn = format!("kill-{i}");
        let (_, secret) = device(&a_http, &pk, &dn).await;
        sims.push(Sim::start(&c.balancer.addr, &pk, &dn, &secret, 1500));
    }
    for i in 0..4 {
        let dn = format!("kill-{i}");
        eventually("online", Duration::from_secs(10), || async {
            status(&a_http, &pk, &dn).await == "ONLINE"
        })
        .await;
    }
    // Async calls acknowledged before the kill: their records survive.
    let mut acknowledged = Vec::new();
    for i in 0..4 {
        let dn = format!("kill-{i}");
        let r = reboot(&a_http, &pk, &dn, 1, false).await;
        assert_eq!(r["Success"], true, "{r}");
        acknowledged.push((dn, r["Data"]["MessageId"].as_str().unwrap().to_owned()));
    }
    // Sync calls in flight through A and C when B dies.
    let mut calls = Vec::new();
    for i in 0..8 {
        let http = if i % 2 == 0 {
            a_http.clone()
        } else {
            c_http.clone()
        };
        let pk = pk.clone();
        calls.push(tokio::spawn(async move {
            calibrate(&http, &pk, &format!("kill-{}", i % 4)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.balancer.route_to(&[&c.node("A").mqtt, &c.node("C").mqtt]);
    c.node_mut("B").kill9();
    for call in calls {
        let (r, took) = call.await.unwrap();
        let code = r["Code"].as_str().unwrap_or("");
        assert!(
            code == "iot.messagebroker.TIMEOUT" || code == "iot.messagebroker.OFFLINE",
            "{r}"
        );
        assert!(took < Duration::from_millis(5800), "{took:?}: {r}");
    }
    // The devices reconnect (to A or C) and answer again.
    for i in 0..4 {
        let dn = format!("kill-{i}");
        eventually(
            "the device answers again",
            Duration::from_secs(15),
            || async { calibrate(&c_http, &pk, &dn).await.0["Success"] == true },
        )
        .await;
    }
    // No acknowledged record is lost.
    for (dn, _id) in acknowledged {
        let r = api(
            &c_http,
            "QueryDeviceServiceData",
            &[
                ("ProductKey", &pk),
                ("DeviceName", &dn),
                ("StartTime", "0"),
                ("EndTime", "9999999999999"),
                ("PageSize", "50"),
                ("Asc", "1"),
            ],
        )
        .await;
        let list = r["Data"]["List"]["ServiceInfo"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let reboots = list.iter().filter(|x| x["Identifier"] == "Reboot").count();
        assert_eq!(reboots, 1, "the acknowledged async call of {dn} lost: {r}");
    }
    drop(sims);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_routed_around_within_seconds() {
    let Some(c) = Cluster::start("freeze", 2).await else {
        return;
    };
    let (a, b) = (c.node("A"), c.node("B"));
    let pk = product(&a.http, "Freeze").await;
    let (_, secret) = device(&a.http, &pk, "iced").await;
    let _sim = Sim::start(&b.mqtt, &pk, "iced", &secret, 0);
    eventually("online", Duration::from_secs(10), || async {
        status(&a.http, &pk, "iced").await == "ONLINE"
    })
    .await;
    let (first, _) = calibrate(&a.http, &pk, "iced").await;
    assert_eq!(first["Success"], true, "{first}");

    b.freeze();
    let frozen_at = Instant::now();
    // Calls fail within the budget, never hang; within 10 s the cluster no
    // longer routes to the frozen node (OFFLINE at once). A call starts
    // every 250 ms, each on its own.
    let mut calls = Vec::new();
    while frozen_at.elapsed() < Duration::from_secs(12) {
        let (http, pk) = (a.http.clone(), pk.clone());
        let started = frozen_at.elapsed();
        calls.push(tokio::spawn(async move {
            let (r, took) = calibrate(&http, &pk, "iced").await;
            (started, r, took)
        }));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut routed_around = None;
    for call in calls {
        let (started, r, took) = call.await.unwrap();
        let code = r["Code"].as_str().unwrap_or("");
        assert!(
            code == "iot.messagebroker.TIMEOUT" || code == "iot.messagebroker.OFFLINE",
            "{r}"
        );
        assert!(took < Duration::from_millis(5800), "{took:?}");
        if code == "iot.messagebroker.OFFLINE" && took < Duration::from_millis(500) {
            routed_around.get_or_insert(started);
        }
    }
    let routed_around = routed_around.expect("still routed to the frozen node after 12 s");
    eprintln!("calls to the frozen node's device were refused at once from {routed_around:?}");
    assert!(routed_around < Duration::from_secs(10), "{routed_around:?}");
    assert_eq!(status(&a.http, &pk, "iced").await, "OFFLINE");

    // Thawed, it rejoins and its device answers again.
    b.thaw();
    eventually(
        "answers after the thaw",
        Duration::from_secs(15),
        || async { calibrate(&a.http, &pk, "iced").await.0["Success"] == true },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_nats_server_heals_within_seconds() {
    let Some(mut c) = Cluster::start("nats-loss", 2).await else {
        return;
    };
    let a_http = c.node("A").http.clone();
    let b_mqtt = c.node("B").mqtt.clone();
    let pk = product(&a_http, "NatsLoss").await;
    let (_, secret) = device(&a_http, &pk, "steady").await;
    let _sim = Sim::start(&b_mqtt, &pk, "steady", &secret, 0);
    eventually("online", Duration::from_secs(10), || async {
        status(&a_http, &pk, "steady").await == "ONLINE"
    })
    .await;
    let (r, _) = calibrate(&a_http, &pk, "steady").await;
    assert_eq!(r["Success"], true, "{r}");
    // The server node B (which holds the device) is connected to dies;
    // then the one node A (which takes the calls) is connected to.
    for node in ["node-B", "node-A"] {
        let victim = c
            .nats
            .server_of(&format!("thingcall {node}"))
            .expect("the node is connected to a server");
        c.nats.kill(victim);
        let took = eventually("calls succeed again", Duration::from_secs(10), || async {
            calibrate(&a_http, &pk, "steady").await.0["Success"] == true
        })
        .await;
        eprintln!("NATS server {victim} (of {node}) killed: calls succeed again after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_answers_its_calls_then_lets_its_devices_go() {
    let Some(mut c) = Cluster::start("drain", 3).await else {
        return;
    };
    let a_http = c.node("A").http.clone();
    let pk = product(&a_http, "Drain").await;
    c.balancer.route_to(&[&c.node("B").mqtt]);
    let mut sims = Vec::new();
    for i in 0..3 {
        let dn = format!("drain-{i}");
        let (_, secret) = device(&a_http, &pk, &dn).await;
        sims.push(Sim::start(&c.balancer.addr, &pk, &dn, &secret, 1000));
        eventually("online", Duration::from_secs(10), || async {
            status(&a_http, &pk, &dn).await == "ONLINE"
        })
        .await;
    }
    // Calls in flight through A to B's slow devices when B is told to go.
    let mut calls = Vec::new();
    for i in 0..6 {
        let (http, pk) = (a_http.clone(), pk.clone());
        calls.push(tokio::spawn(async move {
            calibrate(&http, &pk, &format!("drain-{}", i % 3)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.balancer.route_to(&[&c.node("A").mqtt, &c.node("C").mqtt]);
    let started = Instant::now();
    let status_b = c.node_mut("B").terminate();
    assert!(status_b.success(), "{status_b}");
    eprintln!("node B drained and stopped in {:?}", started.elapsed());
    for call in calls {
        let (r, _) = call.await.unwrap();
        assert_eq!(
            r["Success"], true,
            "a call in flight was dropped by the drain: {r}"
        );
    }
    // The devices moved on by themselves and answer through every node.
    for i in 0..3 {
        let dn = format!("drain-{i}");
        for http in [&a_http, &c.node("C").http] {
            eventually(
                "answers after the move",
                Duration::from_secs(10),
                || async { calibrate(http, &pk, &dn).await.0["Success"] == true },
            )
            .await;
        }
    }
    drop(sims);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_completes_its_record_on_the_node_that_receives_it() {
    let Some(c) = Cluster::start("late", 2).await else {
        return;
    };
    let (a, b) = (c.node("A"), c.node("B"));
    let pk = product(&a.http, "Late").await;
    let (_, secret) = device(&a.http, &pk, "slowpoke").await;
    // Answers 6 s after each call: after the 5 s budget.
    let _sim = Sim::start(&b.mqtt, &pk, "slowpoke", &secret, 6000);
    eventually("online", Duration::from_secs(10), || async {
        status(&a.http, &pk, "slowpoke").await == "ONLINE"
    })
    .await;
    let (r, took) = calibrate(&a.http, &pk, "slowpoke").await;
    assert_eq!(r["Code"], "iot.messagebroker.TIMEOUT", "{r}");
    assert!(took < Duration::from_millis(5800), "{took:?}");
    // The reply reaches node B a second later; B completes the record A
    // wrote, and every node shows it.
    for node in [a, b] {
        eventually(
            "the late reply recorded",
            Duration::from_secs(5),
            || async {
                let r = api(
                    &node.http,
                    "QueryDeviceServiceData",
                    &[
                        ("ProductKey", &pk),
                        ("DeviceName", "slowpoke"),
                        ("StartTime", "0"),
                        ("EndTime", "9999999999999"),
                        ("Asc", "1"),
                    ],
                )
                .await;
                r["Data"]["List"]["ServiceInfo"]
                    .as_array()
                    .is_some_and(|l| {
                        l.len() == 1
                            && l[0]["OutputData"]
                                .as_str()
                                .is_some_and(|o| o.contains("\"code\":200"))
                    })
            },
        )
        .await;
    }
}

/// A login is checked against the store, not only against the node's
/// mirror: a device registered through one node logs in on another at
/// once, and one disabled or deleted through one node is refused on
/// another at once, before any change notice could have arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_checked_against_the_store_on_every_node() {
    let Some(c) = Cluster::start("logins", 2).await else {
        return;
    };
    let (a, b) = (c.node("A"), c.node("B"));
    let pk = product(&a.http, "Logins").await;
    for i in 0..5 {
        let dn = format!("fresh-{i}");
        let (_, secret) = device(&a.http, &pk, &dn).await;
        let session = login(&b.mqtt, &pk, &dn, &secret, true).await;
        assert!(
            session.is_ok(),
            "{dn} registered through A was refused on B"
        );
        eventually("online on B", Duration::from_secs(2), || async {
            status(&b.http, &pk, &dn).await == "ONLINE"
        })
        .await;
        drop(session);
        let r = api(
            &a.http,
            "DisableThing",
            &[("ProductKey", &pk), ("DeviceName", &dn)],
        )
        .await;
        assert_eq!(r["Success"], true, "{r}");
        let refused = login(&b.mqtt, &pk, &dn, &secret, true).await;
        assert!(refused.is_err(), "{dn} disabled through A logged in on B");
        let r = api(
            &a.http,
            "DeleteDevice",
            &[("ProductKey", &pk), ("DeviceName", &dn)],
        )
        .await;
        assert_eq!(r["Success"], true, "{r}");
        let refused = login(&b.mqtt, &pk, &dn, &secret, true).await;
        assert!(refused.is_err(), "{dn} deleted through A logged in on B");
    }
}

/// A connection to the cluster's database, as its owner.
async fn database(c: &Cluster) -> tokio_postgres::Client {
    let url = std::env::var("THINGCALL_TEST_POSTGRES").unwrap();
    let db = common::database_name(&c.dir);
    let url = url
        .rsplit_once('/')
        .map_or(url.as_str(), |(b, _)| b)
        .to_owned()
        + "/"
        + &db;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Transactions the cluster's database has counted (every statement a
/// node runs outside a transaction is one).
async fn transactions(db: &tokio_postgres::Client) -> i64 {
    let row = db
        .query_one(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database
             WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

/// Reads of the tables a login is checked against (`devices`,
/// `tombstones`), as the cluster's database counts them.
async fn login_table_reads(db: &tokio_postgres::Client) -> i64 {
    let row = db
        .query_one(
            "SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0)::bigint
             FROM pg_stat_user_tables WHERE relname IN ('devices', 'tombstones')",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

/// Reads of the login tables once the counts have settled: a backend
/// reports its statistics when it goes idle, and up to 10 s later when it
/// reported less than a second before.
async fn settled_login_table_reads(db: &tokio_postgres::Client) -> i64 {
    let start = Instant::now();
    let mut last = login_table_reads(db).await;
    let mut steady_since = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = login_table_reads(db).await;
        if now != last {
            (last, steady_since) = (now, Instant::now());
        } else if steady_since.elapsed() >= Duration::from_secs(11) {
            break;
        }
    }
    last
}

/// One series' value from a node's `/metrics` (0 when absent).
async fn series(http: &str, name: &str) -> u64 {
    let text = reqwest_metrics(http).await;
    let needle = format!("{name} ");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(needle.as_str())
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// CONNECT with a password signed with `secret`; the CONNACK's code.
async fn connack(mqtt: &str, pk: &str, dn: &str, secret: &str) -> ConnectReturnCode {
    let key = DeviceKey::new(ProductKey::new(pk).unwrap(), DeviceName::new(dn).unwrap());
    let creds = client::credentials(&key, secret, CredentialOptions::default());
    let (ack, _r, _w) = client::connect(mqtt, client::connect_packet(&creds, 60, true))
        .await
        .unwrap();
    ack.code
}

/// A flood of CONNECTs that prove no secret reaches no store: the node
/// refuses a wrong password from its mirror, and a device its mirror does
/// not know after waiting for the mirror, not for PostgreSQL. A login
/// that proves its secret is still checked against the store, so a device
/// disabled through another node is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logins_on_a_cluster_node_cost_no_store_query() {
    let Some(c) = Cluster::start("bad-logins", 2).await else {
        return;
    };
    let (a, b) = (c.node("A"), c.node("B"));
    let pk = product(&a.http, "BadLogins").await;
    let (_, secret) = device(&a.http, &pk, "target").await;
    eventually("known on B", Duration::from_secs(2), || async {
        status(&b.http, &pk, "target").await == "UNACTIVE"
    })
    .await;
    let db = database(&c).await;
    let reads_before = settled_login_table_reads(&db).await;
    let before = transactions(&db).await;

    // 300 wrong passwords for a device B knows, 40 logins of devices
    // nobody registered, all through B.
    let started = Instant::now();
    let mut floods = Vec::new();
    for _ in 0..10 {
        let (mqtt, pk) = (b.mqtt.clone(), pk.clone());
        floods.push(tokio::spawn(async move {
            for _ in 0..30 {
                let code = connack(&mqtt, &pk, "target", "not-the-secret").await;
                assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
            }
        }));
    }
    for i in 0..40 {
        let (mqtt, pk) = (b.mqtt.clone(), pk.clone());
        floods.push(tokio::spawn(async move {
            let code = connack(&mqtt, &pk, &format!("nobody-{i}"), "any").await;
            assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
        }));
    }
    for f in floods {
        f.await.unwrap();
    }
    eprintln!("340 bad CONNECTs refused in {:?}", started.elapsed());
    let reads = settled_login_table_reads(&db).await - reads_before;
    let spent = transactions(&db).await - before;
    eprintln!(
        "the database counted {spent} transactions and {reads} reads of the login tables meanwhile"
    );
    // One store check per CONNECT would be 340 reads (and as many
    // transactions); the nodes' own housekeeping reads neither table.
    assert!(
        reads < 10,
        "{reads} reads of the login tables for 340 refused CONNECTs"
    );
    assert!(spent < 200, "{spent} transactions for 340 refused CONNECTs");
    let checks =
        |check: &str| format!("thingcall_login_checks_total{{node=\"node-B\",check=\"{check}\"}}");
    assert_eq!(series(&b.http, &checks("refused_by_mirror")).await, 340);
    assert_eq!(series(&b.http, &checks("store")).await, 0);

    // The right secret logs in, after one store check.
    let session = login(&b.mqtt, &pk, "target", &secret, true).await;
    assert!(session.is_ok(), "the device's own secret was refused");
    assert_eq!(series(&b.http, &checks("store")).await, 1);
    drop(session);
    // Disabled through A: refused on B at once, before any change notice.
    let r = api(
        &a.http,
        "DisableThing",
        &[("ProductKey", &pk), ("DeviceName", "target")],
    )
    .await;
    assert_eq!(r["Success"], true, "{r}");
    assert_eq!(
        connack(&b.mqtt, &pk, "target", &secret).await,
        ConnectReturnCode::NotAuthorized
    );
}

/// A sync call that waits 5 s for its device does not hold a catch-up
/// back: the node lets the request gate go once the call is resolved, so
/// a catch-up after a lost listener connection takes the gate at once,
/// and the requests behind it are answered within a fraction of a second,
/// from a mirror that has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_call_waiting_for_its_device_does_not_stall_a_catch_up() {
    let Some(c) = Cluster::start("gate", 2).await else {
        return;
    };
    let (a, b) = (c.node("A"), c.node("B"));
    let pk = product(&a.http, "Gate").await;
    let (_, secret) = device(&a.http, &pk, "mute").await;
    // Answers 6 s after each call: after the 5 s budget.
    let _sim = Sim::start(&b.mqtt, &pk, "mute", &secret, 6000);
    eventually("online on B", Duration::from_secs(10), || async {
        status(&b.http, &pk, "mute").await == "ONLINE"
    })
    .await;

    let b_http = b.http.clone();
    let (pk2, started) = (pk.clone(), Instant::now());
    let call = tokio::spawn(async move { calibrate(&b_http, &pk2, "mute").await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Every node's listener connection is cut; each reconnects and catches
    // up holding its gate alone, while B's call waits for its device.
    let db = database(&c).await;
    let cut = db
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 2, "one listener per node");
    device(&a.http, &pk, "while-cut").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut slowest = Duration::ZERO;
    let mut caught_up = None;
    while started.elapsed() < Duration::from_millis(2500) {
        let asked = Instant::now();
        let now = status(&b.http, &pk, "while-cut").await;
        slowest = slowest.max(asked.elapsed());
        if now == "UNACTIVE" && caught_up.is_none() {
            caught_up = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "requests on B took at most {slowest:?}; B caught up {caught_up:?} after the call began"
    );
    assert!(!call.is_finished(), "the sync call should still be waiting");
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited {slowest:?}"
    );
    assert!(
        caught_up.is_some(),
        "B never showed the device registered while cut"
    );
    let (r, took) = call.await.unwrap();
    assert_eq!(r["Code"], "iot.messagebroker.TIMEOUT", "{r}");
    assert!(took >= Duration::from_secs(5), "{took:?}");
}
