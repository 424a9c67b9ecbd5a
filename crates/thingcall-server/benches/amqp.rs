//! Server-side subscription (AMQP 1.0), in one run:
//!
//! 1. delivery rate to one consumer that accepts each message: a backlog of
//!    `--messages N` (100,000) property posts from `--devices D` (100)
//!    devices is queued with no consumer, then one consumer drains it; with
//!    per-device order (the default) and without, so the cost of the order
//!    is a ratio from the same run;
//! 2. latency from a device's post to its delivery to the consumer, p50 and
//!    p99, with devices posting at half the rate phase 1 measured, for
//!    `--seconds S` (10);
//! 3. memory while a consumer that never grants credit is attached and N
//!    messages queue: the server's resident memory before and after, and
//!    the backlog count.
//!
//! Everything runs in this process: the server (SQLite store), the devices
//! (raw MQTT clients publishing QoS 0 posts) and the consumer
//! (`thingcall_amqp::client`, the one `thingcall subscribe` uses).
//! `cargo bench -p thingcall-server --bench amqp` (`--test` runs a small
//! smoke version).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)] // bench code

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thingcall_amqp::client::{SubscribeTo, subscribe};
use thingcall_core::{DeviceName, ProductKey, Secret};
use thingcall_gateway::GatewayConfig;
use thingcall_gateway::client::{self, CredentialOptions, Writer};
use thingcall_gateway::mqttbytes::QoS;
use thingcall_gateway::mqttbytes::v4::{Packet, Publish};
use thingcall_server::{Listeners, Server, ServerConfig, ServerOptions, SystemClock};
use thingcall_transport::DeviceKey;

mod support;

use support::*;

/// The allocator the `thingcall` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn temp(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "thingcall-bench-amqp-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Running {
    http: String,
    mqtt: String,
    amqp: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    dir: std::path::PathBuf,
}

async fn start(tag: &str, per_device_order: bool) -> Running {
    let dir = temp(tag);
    let mut config = ServerConfig::default();
    config.amqp.broker.per_device_order = per_device_order;
    let options = ServerOptions {
        config,
        gateway: GatewayConfig::default(),
        data_dir: dir.clone(),
        store: Default::default(),
        secrets_key: Default::default(),
        access_key: Some((KEY_ID.to_owned(), Secret::new(KEY_SECRET))),
        cluster: None,
    };
    let server = Server::open(options, Arc::new(SystemClock)).await.unwrap();
    let bind = || async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap().to_string();
        (l, a)
    };
    let (http, h) = bind().await;
    let (mqtt, m) = bind().await;
    let (amqp, a) = bind().await;
    let listeners = Listeners {
        amqp: Some(amqp),
        ..Listeners::plain(http, mqtt)
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server.serve_on(listeners, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Running {
        http: h,
        mqtt: m,
        amqp: a,
        stop,
        task,
        dir,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A product with the demo model, `n` devices, a group subscribed to the
/// product's device data; the devices connected.
async fn setup(r: &Running, n: usize) -> (String, Vec<(String, Writer)>) {
    let pk = raw_answer(
        &r.http,
        "CreateProduct",
        &[
            ("ProductName".into(), "AmqpBench".into()),
            ("NodeType".into(), "0".into()),
            ("AliyunCommodityCode".into(), "iothub_senior".into()),
            ("DataFormat".into(), "1".into()),
        ],
    )
    .await["ProductKey"]
        .as_str()
        .unwrap()
        .to_owned();
    raw_answer(
        &r.http,
        "ImportThingModelTsl",
        &[
            ("ProductKey".into(), pk.clone()),
            ("TslStr".into(), MODEL.into()),
        ],
    )
    .await;
    raw_answer(
        &r.http,
        "PublishThingModel",
        &[("ProductKey".into(), pk.clone())],
    )
    .await;
    let group = raw_answer(
        &r.http,
        "CreateConsumerGroup",
        &[("GroupName".into(), "bench_group".into())],
    )
    .await["GroupId"]
        .as_str()
        .unwrap()
        .to_owned();
    raw_answer(
        &r.http,
        "CreateSubscribeRelation",
        &[
            ("ProductKey".into(), pk.clone()),
            ("Type".into(), "AMQP".into()),
            ("ConsumerGroupIds.1".into(), group.clone()),
            ("DeviceDataFlag".into(), "true".into()),
        ],
    )
    .await;
    let mut devices = Vec::new();
    for i in 0..n {
        let dn = format!("dev-{i:05}");
        let reg = raw_answer(
            &r.http,
            "RegisterDevice",
            &[
                ("ProductKey".into(), pk.clone()),
                ("DeviceName".into(), dn.clone()),
            ],
        )
        .await;
        let secret = reg["Data"]["DeviceSecret"].as_str().unwrap().to_owned();
        let key = DeviceKey::new(ProductKey::new(&pk).unwrap(), DeviceName::new(&dn).unwrap());
        let creds = client::credentials(&key, &secret, CredentialOptions::default());
        let (_, mut reader, writer) =
            client::connect(&r.mqtt, client::connect_packet(&creds, 60, true))
                .await
                .unwrap();
        // Nothing is sent to the devices; keep their sockets drained.
        tokio::spawn(async move { while reader.recv().await.is_ok() {} });
        devices.push((dn, writer));
    }
    (
        group,
        devices
            .into_iter()
            .map(|(dn, w)| (format!("{pk}/{dn}"), w))
            .collect(),
    )
}

fn post(key: &str, id: u64) -> Packet {
    let (pk, dn) = key.split_once('/').unwrap();
    let body = format!(
        r#"{{"id":"{id}","version":"1.0","params":{{"Brightness":{}}},"method":"thing.event.property.post"}}"#,
        id % 100
    );
    Packet::Publish(Publish::new(
        format!("/sys/{pk}/{dn}/thing/event/property/post"),
        QoS::AtMostOnce,
        body.into_bytes(),
    ))
}

/// Posts `n` messages round-robin over the devices, as fast as they go.
async fn post_all(devices: &mut [(String, Writer)], n: u64, first_id: u64) {
    let count = devices.len() as u64;
    for i in 0..n {
        let (key, w) = &mut devices[(i % count) as usize];
        w.send(&post(key, first_id + i)).await.unwrap();
    }
}

async fn backlog(r: &Running, group: &str) -> u64 {
    raw_answer(
        &r.http,
        "QueryConsumerGroupStatus",
        &[("GroupId".into(), group.into())],
    )
    .await["AccumulationCount"]
        .as_u64()
        .unwrap_or(0)
}

async fn wait_backlog(r: &Running, group: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while backlog(r, group).await < n {
        assert!(Instant::now() < deadline, "the backlog never reached {n}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn consumer(r: &Running, group: &str, client_id: &str) -> SubscribeTo {
    SubscribeTo {
        endpoint: format!("amqp://{}", r.amqp),
        tls: None,
        access_key_id: KEY_ID.into(),
        access_key_secret: Secret::new(KEY_SECRET),
        consumer_group_id: group.into(),
        client_id: client_id.into(),
        iot_instance_id: None,
        credit: 1000,
    }
}

/// Phase 1: drain a queued backlog of `n`; messages per second and CPU per
/// message.
async fn drain(per_device_order: bool, devices_n: usize, n: u64) -> (f64, Duration) {
    let r = start(
        if per_device_order {
            "ordered"
        } else {
            "unordered"
        },
        per_device_order,
    )
    .await;
    let (group, mut devices) = setup(&r, devices_n).await;
    post_all(&mut devices, n, 1).await;
    wait_backlog(&r, &group, n).await;
    let to = consumer(&r, &group, "drain");
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut got = 0u64;
    subscribe(&to, |_| {
        got += 1;
        got < n
    })
    .await
    .unwrap();
    let elapsed = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    r.stop().await;
    (n as f64 / elapsed.as_secs_f64(), cpu / n as u32)
}

/// Phase 2: p50/p99 from post to delivery at `rate` messages per second.
async fn latency(devices_n: usize, rate: f64, seconds: u64) -> (Duration, Duration, usize) {
    let r = start("latency", true).await;
    let (group, mut devices) = setup(&r, devices_n).await;
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let total = (rate * seconds as f64) as u64;
    let to = consumer(&r, &group, "latency");
    let (s2, l2) = (Arc::clone(&sent), Arc::clone(&lat));
    let consumer_task = tokio::spawn(async move {
        let mut got = 0u64;
        subscribe(&to, move |m| {
            let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
            let id: u64 = body["requestId"].as_str().unwrap().parse().unwrap();
            if let Some(at) = s2.lock().unwrap().remove(&id) {
                l2.lock().unwrap().push(at.elapsed());
            }
            got += 1;
            got < total
        })
        .await
        .unwrap();
    });
    // Let the consumer attach before the first post.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gap = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let count = devices.len() as u64;
    for i in 0..total {
        let due = t0 + gap * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (key, w) = &mut devices[(i % count) as usize];
        sent.lock().unwrap().insert(i, Instant::now());
        w.send(&post(key, i)).await.unwrap();
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), consumer_task).await;
    r.stop().await;
    let mut lat = lat.lock().unwrap().clone();
    lat.sort_unstable();
    let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    (pick(0.50), pick(0.99), lat.len())
}

/// Phase 3: memory while `n` messages queue behind a consumer that never
/// grants credit.
async fn stingy(devices_n: usize, n: u64) -> (u64, u64, u64) {
    use fe2o3_amqp::link::receiver::CreditMode;
    use fe2o3_amqp::sasl_profile::SaslProfile;
    let r = start("stingy", true).await;
    let (group, mut devices) = setup(&r, devices_n).await;
    let user = thingcall_sign::amqp::username(
        "stingy",
        thingcall_sign::SignMethod::HmacSha1,
        "1",
        KEY_ID,
        &group,
        None,
    );
    let password = thingcall_sign::amqp::AmqpUsername::parse(&user)
        .unwrap()
        .password(KEY_SECRET);
    let mut conn = fe2o3_amqp::Connection::builder()
        .container_id("stingy")
        .sasl_profile(SaslProfile::Plain {
            username: user,
            password,
        })
        .idle_time_out(60_000u32)
        .open(format!("amqp://{}", r.amqp).as_str())
        .await
        .unwrap();
    let mut session = fe2o3_amqp::Session::begin(&mut conn).await.unwrap();
    let _receiver = fe2o3_amqp::Receiver::builder()
        .name("stingy")
        .source("default")
        .credit_mode(CreditMode::Manual)
        .attach(&mut session)
        .await
        .unwrap();
    // Warm up allocator pools with a first tenth, then measure.
    post_all(&mut devices, n / 10, 1).await;
    wait_backlog(&r, &group, n / 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib();
    post_all(&mut devices, n - n / 10, n).await;
    wait_backlog(&r, &group, n).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib();
    let queued = backlog(&r, &group).await;
    drop(session);
    drop(conn);
    r.stop().await;
    (before, after, queued)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--test");
    let n = arg(&args, "--messages", if smoke { 2_000 } else { 100_000 });
    let devices = arg(&args, "--devices", if smoke { 10 } else { 100 }) as usize;
    let seconds = arg(&args, "--seconds", if smoke { 1 } else { 10 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (ordered, ordered_cpu) = drain(true, devices, n).await;
        let (unordered, unordered_cpu) = drain(false, devices, n).await;
        println!(
            "drain {n} messages, one consumer, accept each: per-device order {ordered:.0}/s ({} us CPU each); without {unordered:.0}/s ({} us CPU each); ratio {:.2}",
            ordered_cpu.as_micros(),
            unordered_cpu.as_micros(),
            ordered / unordered
        );
        let rate = (ordered / 2.0).max(100.0);
        let (p50, p99, samples) = latency(devices, rate, seconds).await;
        println!(
            "post to delivery at {rate:.0}/s for {seconds} s: p50 {:.2} ms, p99 {:.2} ms ({samples} samples)",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        let (before, after, queued) = stingy(devices, n).await;
        println!(
            "consumer without credit while {queued} messages queue: RSS {before} KiB -> {after} KiB ({:+} KiB, {:.1} bytes per queued message)",
            after as i64 - before as i64,
            (after as f64 - before as f64) * 1024.0 / (queued as f64 * 0.9)
        );
    });
}
